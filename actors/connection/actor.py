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
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import trio

from actors.connection.certs import WHATSAPP_ROOT, RootKey
from actors.connection.client import ClientConnection
from actors.connection.client_state import (
    ClientEvent,
    ClientState,
    Closed,
    DisconnectPolicy,
    DisconnectReason,
    HandshakeComplete,
    IqResult,
    LoginSuccess,
    NodeReceived,
    Opened,
    PairSuccess,
    Ping,
    PreKeyCount,
    PreKeyUploadResult,
    QrCode,
    RestartRequired,
    RoutingInfo,
    StreamError,
    policy_for_code,
)
from actors.connection.errors import RemoteProtocolError
from actors.connection.payload import ClientIdentity
from actors.connection.prekeys import MIN_PREKEY_COUNT, PRE_KEY_TYPE, plan_upload, upload_count
from actors.connection.transport import Channel, Transport, WebSocketTransport
from actors.errors import TransportClosed
from actors.messages import (
    CommitBatch,
    CommitKeysAndCreds,
    ConnectionInfo,
    ConnectionSnapshot,
    EndReason,
    KeysGet,
    LoadCreds,
    SaveCreds,
    SessionStatus,
    call_durable,
)
from runtime.actor import Actor, StopActor
from runtime.ref import ActorRef
from runtime.spec import Backoff
from stores.creds import AuthCreds, CredsPatch, KeyPair
from stores.keys import key_pair_from_plain
from stores.types import Batch

DEFAULT_URL = "wss://web.whatsapp.com/ws/chat"
LOGGED_OUT_MARK = "loggedOut"
"""The ``creds.extra`` key set (durably) once the server logged the device out."""

UPLOAD_ATTEMPTS = 3
MAX_IMMEDIATE_RESTARTS = 3
"""515s in a row (without reaching open) reconnected at once; later ones back off."""
UPLOAD_TIMEOUT = 30.0

EventSink = Callable[[dict[str, Any]], None]
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


@dataclass(frozen=True)
class Outcome:
    """How one connection attempt ended."""

    code: int
    detail: str
    opened: bool = False

    @property
    def policy(self) -> DisconnectPolicy:
        return policy_for_code(self.code)

    @property
    def reason(self) -> str:
        """The snake_case name of the code (``logged_out``, ``replaced``...)."""
        return reason_name(self.code)


def reason_name(code: int) -> str:
    """Event name of a close code: Baileys' DisconnectReason names in snake_case."""
    if code == DisconnectReason.CONNECTION_REPLACED:
        return "replaced"
    if code == 400:
        return "bad_handshake"
    reason = DisconnectReason.from_code(code)
    return reason.name.lower() if reason is not None else f"code_{code}"


class _AttemptOver(Exception):
    """Internal: the current attempt ended with ``outcome``."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.detail)
        self.outcome = outcome


class ConnectionActor(Actor):
    """Connects, pairs or logs in, keeps the connection alive; see the module docstring."""

    def __init__(
        self,
        settings: ConnectionSettings,
        *,
        persister: ActorRef,
        signal_store: ActorRef,
        status: SessionStatus,
        emit: EventSink,
    ) -> None:
        self._settings = settings
        self._persister = persister
        self._signal_store = signal_store
        self._status = status
        self._emit = emit
        self._creds: AuthCreds | None = None
        self._rev = 0
        self._attempts = 0

    # --- lifecycle ----------------------------------------------------------------

    async def init(self) -> None:
        state = await call_durable(
            self._persister, LoadCreds(writer=True), timeout=self._settings.store_timeout
        )
        self._creds = state.creds
        self._rev = state.fence
        self._status.me = self._me_id()
        self.ctx.nursery.start_soon(self._main)

    async def terminate(self, reason: Any) -> None:
        if not self._status.ended.is_set():
            self._status.set_state(ClientState.CLOSED.value)

    async def handle_call(self, msg: Any) -> Any:
        if isinstance(msg, ConnectionInfo):
            return ConnectionSnapshot(
                state=self._status.state, attempts=self._attempts, me=self._me_id()
            )
        return await super().handle_call(msg)

    @property
    def creds(self) -> AuthCreds:
        if self._creds is None:
            raise RuntimeError("connection actor used before init")
        return self._creds

    def _me_id(self) -> str | None:
        me = self._creds.me if self._creds is not None else None
        value = me.get("id") if me else None
        return value if isinstance(value, str) else None

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
            self._status.set_state(ClientState.CLOSED.value)
            self.ctx.log.info(
                "connection_closed", code=outcome.code, reason=outcome.reason, detail=outcome.detail
            )
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
        update: dict[str, Any] = {
            "connection": "close",
            "reason": outcome.reason,
            "code": outcome.code,
            "detail": outcome.detail,
            "reconnect": reconnect,
        }
        if delay is not None:
            update["delay"] = delay
        self._emit({"connection_update": update})

    async def _mark_logged_out(self) -> None:
        marked = self.creds.copy()
        marked.extra[LOGGED_OUT_MARK] = True
        await self._commit_creds(marked)

    # --- one attempt ----------------------------------------------------------------------

    async def _attempt(self) -> Outcome:
        self._attempts += 1
        self._status.set_state(ClientState.CONNECTING.value)
        self._emit({"connection_update": {"connection": "connecting", "attempt": self._attempts}})
        self.ctx.log.info("connecting", url=self._settings.url, attempt=self._attempts)
        settings = self._settings
        conn = ClientConnection(
            creds=self.creds,
            identity=settings.identity,
            root=settings.root,
            qr_ttl=settings.qr_timeout,
        )
        attempt = _Attempt(self, conn)
        outcome: Outcome | None = None
        try:
            async with settings.transport.connect(settings.url) as channel:
                outcome = await attempt.run(channel)
        except TransportClosed as exc:
            if outcome is None:
                return Outcome(int(DisconnectReason.CONNECTION_CLOSED), exc.detail, attempt.opened)
            # Closing a socket the server already ended may fail: the outcome stands.
        assert outcome is not None
        return outcome

    # --- event reactions (called by _Attempt) ----------------------------------------------

    def next_rev(self) -> int:
        self._rev += 1
        return self._rev

    async def save_creds(self, creds: AuthCreds) -> None:
        """Adopt ``creds`` and hand the changed fields to the persister (coalesced, not awaited)."""
        patch = CredsPatch.between(self.creds, creds)
        self._creds = creds
        await self._persister.cast(SaveCreds(patch, self.next_rev()))

    async def _commit_creds(self, creds: AuthCreds) -> None:
        """Make the fields ``creds`` changed durable (awaited), then adopt ``creds``."""
        batch = Batch(patch=CredsPatch.between(self.creds, creds), rev=self.next_rev())
        await call_durable(
            self._persister, CommitBatch(batch), timeout=self._settings.store_timeout
        )
        self._creds = creds

    async def commit_identity(self, creds: AuthCreds) -> None:
        """Pairing: make the account identity durable before the reply goes out."""
        await self._commit_creds(creds)
        self._status.me = self._me_id()

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
            CommitKeysAndCreds(plan.key_batch(), patch, self.next_rev()),
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

    async def show_qr(self, event: QrCode) -> None:
        self._emit(
            {
                "connection_update": {
                    "connection": "connecting",
                    "qr": event.qr,
                    "qr_index": event.index,
                    "qr_ttl": event.ttl,
                }
            }
        )
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


class _Attempt:
    """One connection: reads, timers and the reactions to the core's events."""

    def __init__(self, actor: ConnectionActor, conn: ClientConnection) -> None:
        self.actor = actor
        self.conn = conn
        self.settings = actor._settings
        self.status = actor._status
        self.log = actor.ctx.log
        now = trio.current_time()
        self.handshake_deadline = now + self.settings.connect_timeout
        self.qr_deadline = math.inf
        self.next_ping = math.inf
        self.last_rx = now
        self.opened = False
        self.paired = False
        self.upload_keys: dict[int, KeyPair] = {}
        self.upload_failures = 0
        self.channel: Channel | None = None

    async def run(self, channel: Channel) -> Outcome:
        self.channel = channel
        try:
            await self.send(self.conn.start())
            self.status.set_state(ClientState.HANDSHAKING.value)
            while True:
                data = await self.receive()
                if data is None:
                    continue
                self.last_rx = trio.current_time()
                self.conn.receive_data(data)
                while events := self.conn.events():
                    for event in events:
                        await self.on_event(event)
                    await self.flush()
                await self.flush()
        except _AttemptOver as over:
            return over.outcome
        except RemoteProtocolError as exc:
            self.log.warning("protocol_error", error=str(exc), code=exc.error_status_hint)
            return Outcome(exc.error_status_hint, f"protocol error: {exc}", self.opened)
        except TransportClosed as exc:
            return Outcome(int(DisconnectReason.CONNECTION_CLOSED), exc.detail, self.opened)

    def over(self, code: int, detail: str) -> _AttemptOver:
        return _AttemptOver(Outcome(code, detail, self.opened))

    async def send(self, data: bytes) -> None:
        if data:
            assert self.channel is not None
            await self.channel.send(data)

    async def flush(self) -> None:
        await self.send(self.conn.data_to_send())

    def deadline(self) -> float:
        state = self.conn.state
        if state is ClientState.HANDSHAKING:
            return self.handshake_deadline
        if state is ClientState.OPEN:
            return min(self.next_ping, self.last_rx + self.settings.keepalive_interval + 5.0)
        if state is ClientState.PAIRING and not self.paired:
            return self.qr_deadline
        return self.last_rx + self.settings.query_timeout

    async def receive(self) -> bytes | None:
        assert self.channel is not None
        with trio.move_on_at(self.deadline()):
            return await self.channel.receive()
        await self.on_timer()
        return None

    async def on_timer(self) -> None:
        now = trio.current_time()
        state = self.conn.state
        if state is ClientState.HANDSHAKING:
            raise self.over(408, "connect timed out during the handshake")
        if state is ClientState.OPEN:
            if now >= self.last_rx + self.settings.keepalive_interval + 5.0:
                raise self.over(408, "keepalive: no traffic from the server")
            _iq_id, data = self.conn.keepalive_ping()
            self.next_ping = now + self.settings.keepalive_interval
            await self.send(data)
            return
        if state is ClientState.PAIRING and not self.paired:
            rotated = self.conn.rotate_qr()
            if isinstance(rotated, Closed):
                raise self.over(int(rotated.reason), rotated.detail)
            await self.on_qr(rotated)
            return
        raise self.over(408, f"no answer from the server in {state.value}")

    async def on_qr(self, event: QrCode) -> None:
        self.qr_deadline = trio.current_time() + event.ttl
        self.log.info("qr_shown", index=event.index, ttl=event.ttl)
        await self.actor.show_qr(event)

    async def on_event(self, event: ClientEvent) -> None:
        if isinstance(event, HandshakeComplete):
            state = ClientState.PAIRING if event.registering else ClientState.LOGGING_IN
            self.status.set_state(state.value)
            self.log.info("handshake_complete", registering=event.registering)
        elif isinstance(event, QrCode):
            await self.on_qr(event)
        elif isinstance(event, PairSuccess):
            await self.on_pair_success(event)
        elif isinstance(event, LoginSuccess):
            await self.on_login(event)
        elif isinstance(event, PreKeyCount):
            await self.on_count(event)
        elif isinstance(event, PreKeyUploadResult):
            await self.on_upload_result(event)
        elif isinstance(event, Opened):
            await self.on_opened(event)
        elif isinstance(event, Ping):
            await self.send(self.conn.send_node(event.response()))
        elif isinstance(event, RoutingInfo):
            creds = self.actor.creds.copy()
            creds.routing_info = event.routing_info
            await self.actor.save_creds(creds)
        elif isinstance(event, RestartRequired):
            raise self.over(event.code, "restart required")
        elif isinstance(event, StreamError):
            raise self.over(event.code, f"server ended the stream: {event.text}")
        elif isinstance(event, Closed):
            raise self.over(int(event.reason), event.detail)
        elif isinstance(event, (IqResult, NodeReceived)):
            pass  # keepalive answers; other stanzas belong to layers above (not built yet)

    async def on_pair_success(self, event: PairSuccess) -> None:
        self.paired = True
        self.qr_deadline = math.inf
        creds = event.update.apply(self.actor.creds)
        # Durable before the phone hears back: a crash now re-logs in, never re-pairs.
        await self.actor.commit_identity(creds)
        await self.send(self.conn.confirm_pairing())
        self.log.info("paired", me=event.update.me.get("id"))
        self.actor._emit(
            {"connection_update": {"is_new_login": True, "me": event.update.me.get("id")}}
        )

    async def on_login(self, event: LoginSuccess) -> None:
        creds = self.actor.creds
        me = dict(creds.me or {})
        if event.lid is not None:
            me["lid"] = event.lid
        else:
            me.pop("lid", None)  # Baileys: a success without lid erases it
        if me != (creds.me or {}):
            updated = creds.copy()
            updated.me = me
            await self.actor.save_creds(updated)

    async def on_count(self, event: PreKeyCount) -> None:
        if event.count is None:
            await self.send(self.conn.skip_prekey_upload())
            return
        creds = self.actor.creds
        newest = creds.next_pre_key_id - 1
        exists = False
        if newest > 0:
            found = await self.actor.keys_get(PRE_KEY_TYPE, (str(newest),))
            exists = str(newest) in found
        count = upload_count(
            event.count, newest_local_exists=exists, next_pre_key_id=creds.next_pre_key_id
        )
        self.log.info("prekey_count", server=event.count, upload=count)
        if count == 0:
            await self.send(self.conn.skip_prekey_upload())
            return
        self.upload_keys = await self.actor.prepare_prekeys(count)
        await self.send(self.conn.upload_prekeys(self.upload_keys))

    async def on_upload_result(self, event: PreKeyUploadResult) -> None:
        if event.ok:
            self.log.info("prekeys_uploaded", count=len(self.upload_keys))
            return
        self.upload_failures += 1
        self.log.warning("prekey_upload_failed", code=event.error_code, tries=self.upload_failures)
        if self.conn.state is not ClientState.LOGGING_IN:
            return
        if self.upload_failures >= UPLOAD_ATTEMPTS:
            await self.send(self.conn.skip_prekey_upload())
            return
        await trio.sleep(min(1.0 * 2**self.upload_failures, 10.0))
        await self.send(self.conn.upload_prekeys(self.upload_keys))

    async def on_opened(self, event: Opened) -> None:
        self.opened = True
        self.status.set_state(ClientState.OPEN.value)
        self.next_ping = trio.current_time() + self.settings.keepalive_interval
        me = self.actor._me_id()
        self.log.info("connection_open", me=me, digest_ok=event.digest_ok)
        self.actor._emit({"connection_update": {"connection": "open", "me": me}})
        if event.digest_ok is False:
            self.upload_keys = await self.actor.prepare_prekeys(MIN_PREKEY_COUNT)
            await self.send(self.conn.upload_prekeys(self.upload_keys))


__all__ = [
    "DEFAULT_URL",
    "LOGGED_OUT_MARK",
    "ConnectionActor",
    "ConnectionSettings",
    "Outcome",
    "default_reconnect",
    "reason_name",
]
