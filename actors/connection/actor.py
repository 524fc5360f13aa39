"""The connection actor: the transport plus the sans-IO ``ClientConnection``; all I/O is here.

One incarnation loads the durable creds from the persister, then connects, and
reconnects per the disconnect policy, until the session ends for good:

========================== ================================================================
close                      reaction
========================== ================================================================
515 restart required       reconnect at once (after pairing: the login with the new creds);
                           after 3 in a row that never reached open, back off as below
401 logged out             mark the creds logged out (durably, files kept), emit
                           ``connection_update{connection: close, reason: logged_out}``,
                           end the session for good
440 replaced               end the session, no reconnect loop (also 403, 411)
408/428/500/503, network,  reconnect after a capped, jittered backoff (``Config.reconnect``);
malformed frames, other    the backoff resets once a connection reached ``open``
========================== ================================================================

Durability rules (nothing acknowledged to the server before it is durable):

- pair-success: the new account identity is committed through the persister
  (``CommitBatch``, awaited) *before* the pair-device-sign reply is sent;
- pre-key top-up: the new keys and the creds counters are committed in ONE
  atomic commit through the signal store (``CommitKeysAndCreds``, awaited)
  *before* the upload is sent;
- other creds changes (``me.lid`` on login, routing info) are cast to the
  persister (coalesced).

Each attempt is an ``attempt.Attempt``: its own nursery with a read loop, a reactor
for the reactions that wait and a writer behind an outbound channel; it asks this
actor only what ``AttemptHost`` names. While an attempt is open, ``Query`` and
``SendNode`` calls reach it (answered with a ``Reply``; ``NotConnected`` when none
is open): the door the message layer sends through.

Creds have one owner, the persister. This actor keeps a copy to read, and sends
every change as a patch (the fields it changed) numbered by its revision; its
first load fences out changes a dead incarnation left on their way.

Timers: the first ``connect_timeout`` seconds cover the transport and the Noise
handshake; QR codes rotate after their lifetime and the last one ends the attempt
with 408 as the real client does; once open a keepalive ping goes out every
``keepalive_interval`` seconds and no traffic for ``keepalive_interval + 5``
seconds is a lost connection (408); before open, ``query_timeout`` seconds
without traffic end the attempt (408).

Since 0.1.0.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import trio

from actors.connection.attempt import Attempt, AttemptTimers, Outcome, reason_name
from actors.connection.binary import BinaryNode
from actors.connection.certs import WHATSAPP_ROOT, RootKey
from actors.connection.client import ClientConnection
from actors.connection.client_state import (
    ClientState,
    DisconnectPolicy,
    DisconnectReason,
    PairingCode,
    QrCode,
)
from actors.connection.messenger import Messenger, SendMessage
from actors.connection.payload import ClientIdentity
from actors.connection.prekeys import PRE_KEY_TYPE, plan_upload
from actors.connection.transport import Transport, WebSocketTransport
from actors.errors import NotConnected, SessionError, TransportClosed, UntrustedServer
from actors.events import (
    EventSink,
    connection_close,
    connection_connecting,
    connection_qr,
    pairing_code,
)
from actors.mail import (
    CommitBatch,
    CommitKeysAndCreds,
    ConnectionInfo,
    ConnectionSnapshot,
    KeysGet,
    LoadCreds,
    Query,
    SaveCreds,
    SendNode,
)
from actors.messaging.errors import MessagingError
from actors.recorder import NO_METRICS, SessionMetrics
from actors.signal.errors import SignalError
from actors.status import EndReason, SessionStatus
from runtime.actor import StopActor
from runtime.errors import ReplyAbandoned, ReplyTimeout
from runtime.events import Event
from runtime.ref import ActorRef
from runtime.reply import RepliesLater, Reply, call_durable
from runtime.spec import Backoff
from stores.creds import AuthCreds, CredsPatch, KeyPair
from stores.keys import key_pair_from_plain
from stores.types import Batch

DEFAULT_URL = "wss://web.whatsapp.com/ws/chat"
LOGGED_OUT_MARK = "loggedOut"
"""The ``creds.extra`` key set (durably) once the server logged the device out."""

MAX_IMMEDIATE_RESTARTS = 3
"""515s in a row (without reaching open) reconnected at once; later ones back off."""

QrCallback = Callable[[str], Awaitable[None] | None]


def default_reconnect() -> Backoff:
    """1 s, doubling, capped at 60 s, jittered down by up to half."""
    return Backoff(initial=1.0, factor=2.0, max_delay=60.0, jitter=0.5)


@dataclass(frozen=True)
class ConnectionSettings:
    """What the connection actor needs from the config (validated there)."""

    url: str = DEFAULT_URL
    root: RootKey = WHATSAPP_ROOT
    identity: ClientIdentity = field(default_factory=ClientIdentity)
    transport: Transport = field(default_factory=WebSocketTransport)
    keepalive_interval: float = 30.0
    connect_timeout: float = 20.0
    query_timeout: float = 60.0
    qr_timeout: float | None = None
    reconnect: Backoff = field(default_factory=default_reconnect)
    store_timeout: float = 30.0
    on_qr: QrCallback | None = None
    #: Digits of the account's phone number: a new device pairs by code, not QR.
    pairing_phone: str | None = None


class ConnectionActor(RepliesLater):
    """Connects, pairs or logs in, keeps the connection alive; see the module docstring."""

    def __init__(
        self,
        settings: ConnectionSettings,
        *,
        persister: ActorRef,
        signal_store: ActorRef,
        status: SessionStatus,
        emit: EventSink,
        metrics: SessionMetrics = NO_METRICS,
    ) -> None:
        self._settings = settings
        self.metrics = metrics
        self._persister = persister
        self._signal_store = signal_store
        self._status = status
        self._emit = emit
        self._creds: AuthCreds | None = None
        self._rev = 0
        self._attempts = 0
        self._live: Attempt | None = None
        self._messenger: Messenger | None = None

    # --- lifecycle ----------------------------------------------------------------

    async def init(self) -> None:
        state = await call_durable(
            self._persister, LoadCreds(writer=True), timeout=self._settings.store_timeout
        )
        self._creds = state.creds
        self._rev = state.fence
        self._status.me = self.me_id()
        self._messenger = Messenger(
            self, self._signal_store, self._settings.store_timeout, self.ctx.log
        )
        self.ctx.nursery.start_soon(self._main)

    async def terminate(self, reason: Any) -> None:
        if not self._status.ended.is_set():
            self._status.set_state(ClientState.CLOSED)

    async def handle_call(self, msg: Any) -> Any:
        if isinstance(msg, ConnectionInfo):
            return ConnectionSnapshot(
                state=self._status.state.value, attempts=self._attempts, me=self.me_id()
            )
        if isinstance(msg, Query):
            return self._on_live("query", lambda live: live.query(msg.node, timeout=msg.timeout))
        if isinstance(msg, SendNode):
            return self._on_live("send", lambda live: live.send_node(msg.node))
        if isinstance(msg, SendMessage):
            return self._on_live(
                "send_message", lambda _live: self.messenger.send_message(msg.jid, msg.content)
            )
        return await super().handle_call(msg)

    def _on_live(self, what: str, work: Callable[[Attempt], Awaitable[Any]]) -> Reply[Any]:
        """Answer at once with a reply; ``work`` runs on the open attempt as a task."""
        live = self._live
        if live is None or not live.is_open:
            reply: Reply[Any] = self.replies.issue(what)
            reply.fail(NotConnected(self.ctx.name, self._status.state.value))
            return reply
        # A timeout, a lost connection or a refused message is the caller's answer.
        answers = (SessionError, ReplyAbandoned, ReplyTimeout, MessagingError, SignalError)
        return self.reply_later(what, lambda: work(live), answers=answers)

    @property
    def creds(self) -> AuthCreds:
        if self._creds is None:
            raise RuntimeError("connection actor used before init")
        return self._creds

    def me_id(self) -> str | None:
        me = self._creds.me if self._creds is not None else None
        value = me.get("id") if me else None
        return value if isinstance(value, str) else None

    def set_state(self, state: ClientState) -> None:
        self._status.set_state(state)

    @property
    def messenger(self) -> Messenger:
        if self._messenger is None:
            raise RuntimeError("connection actor used before init")
        return self._messenger

    async def stanza_received(self, node: BinaryNode) -> BinaryNode | None:
        return await self.messenger.stanza_received(node)

    def emit(self, event: Event) -> None:
        self._emit(event)

    # --- the reconnect loop -----------------------------------------------------------

    async def _main(self) -> None:
        failures = 0
        restarts_in_row = 0  # 515s in a row without reaching open
        while True:
            if self.creds.extra.get(LOGGED_OUT_MARK):
                self._close_event(Outcome(401, "creds are marked logged out"), reconnect=False)
                self._finish(EndReason.LOGGED_OUT)
            outcome = await self._attempt()
            policy = outcome.policy
            if outcome.opened:
                failures = restarts_in_row = 0
            if policy is DisconnectPolicy.RECONNECT_NOW:
                restarts_in_row += 1
                if restarts_in_row > MAX_IMMEDIATE_RESTARTS:
                    # A server that answers every login with 515 must not get a hot loop.
                    policy = DisconnectPolicy.RECONNECT
            self._status.set_state(ClientState.CLOSED)
            self.ctx.log.info(
                "connection_closed", code=outcome.code, reason=outcome.reason, detail=outcome.detail
            )
            if outcome.untrusted:
                # A wrong or missing server_root_key: every retry would fail the same way.
                self._close_event(outcome, reconnect=False)
                self._status.end(EndReason.UNTRUSTED_SERVER, UntrustedServer(outcome.detail))
                raise StopActor()
            if policy is DisconnectPolicy.RECONNECT_NOW:
                self._close_event(outcome, reconnect=True, delay=0.0)
                continue
            if policy is DisconnectPolicy.RECONNECT:
                failures += 1
                delay = self._settings.reconnect.delay(failures)
                self._close_event(outcome, reconnect=True, delay=delay)
                await trio.sleep(delay)
                continue
            if policy is DisconnectPolicy.LOGGED_OUT:
                await self._mark_logged_out()
                self._close_event(outcome, reconnect=False)
                self._finish(EndReason.LOGGED_OUT)
            self._close_event(outcome, reconnect=False)
            self._finish(
                EndReason.REPLACED
                if outcome.code == DisconnectReason.CONNECTION_REPLACED
                else EndReason.REFUSED
            )

    def _finish(self, reason: EndReason) -> NoReturn:
        self._status.end(reason)
        raise StopActor()

    def _close_event(
        self, outcome: Outcome, *, reconnect: bool, delay: float | None = None
    ) -> None:
        self._emit(
            connection_close(
                reason=outcome.reason,
                code=outcome.code,
                detail=outcome.detail,
                reconnect=reconnect,
                delay=delay,
            )
        )

    async def _mark_logged_out(self) -> None:
        marked = self.creds.copy()
        marked.extra[LOGGED_OUT_MARK] = True
        await self._commit_creds(marked)

    # --- one attempt ----------------------------------------------------------------------

    async def _attempt(self) -> Outcome:
        self._attempts += 1
        self._status.set_state(ClientState.CONNECTING)
        self._emit(connection_connecting(self._attempts))
        self.ctx.log.info("connecting", url=self._settings.url, attempt=self._attempts)
        settings = self._settings
        conn = ClientConnection(
            creds=self.creds,
            identity=settings.identity,
            root=settings.root,
            qr_ttl=settings.qr_timeout,
            pairing_phone=settings.pairing_phone,
        )
        timers = AttemptTimers(
            connect_timeout=settings.connect_timeout,
            keepalive_interval=settings.keepalive_interval,
            query_timeout=settings.query_timeout,
        )
        attempt = Attempt(self, conn, timers, self.ctx.log)
        outcome: Outcome | None = None
        try:
            async with settings.transport.connect(settings.url) as channel:
                self._live = attempt
                self.messenger.attach(attempt)
                try:
                    outcome = await attempt.run(channel)
                finally:
                    self.messenger.detach()
                    self._live = None
        except TransportClosed as exc:
            if outcome is None:
                return Outcome(int(DisconnectReason.CONNECTION_CLOSED), exc.detail, attempt.opened)
            # Closing a socket the server already ended may fail: the outcome stands.
        assert outcome is not None
        return outcome

    # --- what an attempt may ask (AttemptHost) ----------------------------------------------

    def _next_rev(self) -> int:
        self._rev += 1
        return self._rev

    async def save_creds(self, creds: AuthCreds) -> None:
        """Adopt ``creds`` and hand the changed fields to the persister (coalesced, not awaited)."""
        patch = CredsPatch.between(self.creds, creds)
        self._creds = creds
        await self._persister.cast(SaveCreds(patch, self._next_rev(), result=creds))

    async def _commit_creds(self, creds: AuthCreds) -> None:
        """Make the fields ``creds`` changed durable (awaited), then adopt ``creds``."""
        batch = Batch(patch=CredsPatch.between(self.creds, creds), rev=self._next_rev())
        await call_durable(
            self._persister, CommitBatch(batch), timeout=self._settings.store_timeout
        )
        self._creds = creds

    async def commit_identity(self, creds: AuthCreds) -> None:
        """Pairing: make the account identity durable before the reply goes out."""
        await self._commit_creds(creds)
        self._status.me = self.me_id()

    async def keys_get(self, type_: str, ids: tuple[str, ...]) -> dict[str, Any]:
        found: dict[str, Any] = await call_durable(
            self._signal_store, KeysGet(type_, ids), timeout=self._settings.store_timeout
        )
        return found

    async def prepare_prekeys(self, count: int) -> dict[int, KeyPair]:
        """Plan ``count`` pre-keys, commit keys + counters atomically, return what to upload."""
        plan = plan_upload(self.creds, count)
        updated = plan.apply(self.creds)
        patch = CredsPatch.between(self.creds, updated)
        await call_durable(
            self._signal_store,
            CommitKeysAndCreds(plan.key_batch(), patch, self._next_rev()),
            timeout=self._settings.store_timeout,
        )
        self._creds = updated
        keys: dict[int, KeyPair] = dict(plan.new_keys)
        older = [str(i) for i in plan.upload_ids if i not in keys]
        if older:
            stored = await self.keys_get(PRE_KEY_TYPE, tuple(older))
            for key_id in older:
                if key_id in stored:
                    keys[int(key_id)] = key_pair_from_plain(stored[key_id], f"pre-key {key_id}")
        self.ctx.log.info(
            "prekeys_committed", count=count, generated=len(plan.new_keys), upload=len(keys)
        )
        return {key_id: keys[key_id] for key_id in sorted(keys)}

    async def show_pairing_code(self, event: PairingCode) -> None:
        self._emit(pairing_code(event.code))

    async def show_qr(self, event: QrCode) -> None:
        self._emit(connection_qr(event.qr, event.index, event.ttl))
        callback = self._settings.on_qr
        if callback is None:
            return
        try:
            result = callback(event.qr)
            if inspect.isawaitable(result):
                with trio.move_on_after(event.ttl):
                    await result
        except Exception as exc:
            self.ctx.log.error("on_qr_failed", error=repr(exc))


__all__ = [
    "DEFAULT_URL",
    "LOGGED_OUT_MARK",
    "ConnectionActor",
    "ConnectionSettings",
    "Outcome",
    "default_reconnect",
    "reason_name",
]
