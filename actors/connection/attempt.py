"""One connection attempt: a read loop, a reactor, a writer and the iqs waiting for answers.

An attempt lives in its own nursery for as long as its socket:

================ ==================================================================
task             what it does
================ ==================================================================
read loop        feeds the sans-IO ``ClientConnection`` and handles at once every
                 event that needs no waiting: handshake state, pings, iq answers
                 (to the ``query`` waiting for them), opening, closes; and the
                 timers (handshake deadline, QR rotation, keepalive)
reactor          runs the reactions that wait, one after another in the order
                 their events arrived: showing a QR or a pairing code, committing
                 the identity after
                 pairing, ``me.lid`` and routing info, pre-key planning and commits,
                 an upload retry's backoff. A retry that sleeps never delays a
                 ping's answer, the keepalive or any other stanza
writer           owns the sending side of the socket for every task but the read
                 loop: they hand their bytes to the outbound queue under one lock,
                 in the order the connection encrypted them (Noise counters allow
                 no other); such a sender waits only for room in the queue, never
                 for the socket, so a cancelled sender never tears a frame
================ ==================================================================

The reactor and the writer exist only while they have work (``OnDemandQueue``):
an idle open connection is the read loop waiting for the socket or its next timer.
The read loop writes its own frames (keepalive, pongs, acks, what the connection
queued) in place under the same lock when no frame waits for the writer, and
queues them behind when some do: it is cancelled only with the whole attempt, and
a keepalive exchange then starts no task at all.

``query(node)`` sends an iq from any task and waits for its answer within a deadline:
a map from iq id to waiter gets the answer from the read loop; no answer in time is
a ``QueryTimeout``; an attempt that ends fails every waiter with ``ConnectionLost``,
and every sender still waiting for room in the writer's queue.
The first of the tasks to see the end (a close, a protocol error, a lost socket)
records the ``Outcome`` and cancels the others.

The attempt asks its actor only what ``AttemptHost`` names.

Since 0.2.0.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from actors.connection.binary import BinaryNode
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
    PairingCode,
    PairingCodeUsed,
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
from actors.connection.errors import RemoteProtocolError, UntrustedServerError
from actors.connection.prekeys import MIN_PREKEY_COUNT, PRE_KEY_TYPE, upload_count
from actors.connection.transport import Channel, take_lock
from actors.errors import ConnectionLost, QueryTimeout, TransportClosed
from actors.events import connection_open, connection_paired
from actors.on_demand import OnDemandQueue
from actors.recorder import SessionMetrics
from runtime.errors import ReplyTimeout
from runtime.events import Event
from runtime.log import Logger
from runtime.reply import Reply
from stores.creds import AuthCreds, KeyPair

UPLOAD_ATTEMPTS = 3
OUTBOUND_FRAMES = 64
"""Frames queued for the writer before a sender waits (backpressure from the socket)."""
REACTIONS_QUEUED = 16
"""Reactions queued for the reactor before the read loop waits."""
KEEPALIVE_GRACE = 5.0
"""Seconds past the keepalive interval without traffic that count as a lost connection."""

Reaction = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class AttemptTimers:
    """The attempt's timeouts (from ``ConnectionSettings``)."""

    connect_timeout: float
    keepalive_interval: float
    query_timeout: float


@dataclass(frozen=True)
class Outcome:
    """How one connection attempt ended."""

    code: int
    detail: str
    opened: bool = False
    untrusted: bool = False
    """The server's certificate did not verify under the configured root: no retry
    can succeed, so the session ends instead of reconnecting."""

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


class AttemptOver(Exception):
    """Raised inside an attempt's tasks: the attempt ended with ``outcome``."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.detail)
        self.outcome = outcome


class AttemptHost(Protocol):
    """What an attempt may ask of its connection actor, and nothing else."""

    @property
    def creds(self) -> AuthCreds:
        """The actor's current copy of the creds (read-only for the attempt)."""
        ...

    def me_id(self) -> str | None: ...

    def set_state(self, state: ClientState) -> None:
        """Report the connection's state to the session status."""
        ...

    def emit(self, event: Event) -> None:
        """Publish a session event."""
        ...

    @property
    def metrics(self) -> SessionMetrics:
        """The session's metrics recorder."""
        ...

    async def save_creds(self, creds: AuthCreds) -> None:
        """Adopt ``creds``; their changed fields go to the persister (not awaited)."""
        ...

    async def commit_identity(self, creds: AuthCreds) -> None:
        """Adopt the paired identity once it is durable."""
        ...

    async def keys_get(self, type_: str, ids: tuple[str, ...]) -> dict[str, Any]: ...

    async def prepare_prekeys(self, count: int) -> dict[int, KeyPair]:
        """``count`` new pre-keys durable (with the counters); the keys to upload."""
        ...

    async def show_qr(self, event: QrCode) -> None: ...

    async def show_pairing_code(self, event: PairingCode) -> None: ...

    async def stanza_received(self, node: BinaryNode) -> BinaryNode | None:
        """A stanza for the message layer (waits only for inbox room); an ack to send now."""
        ...


class Attempt:
    """One connection; see the module docstring. ``run`` once, ``query`` from any task."""

    def __init__(
        self, host: AttemptHost, conn: ClientConnection, timers: AttemptTimers, log: Logger
    ) -> None:
        self.host = host
        self.conn = conn
        self.timers = timers
        self.log = log
        now = trio.current_time()
        self.handshake_deadline = now + timers.connect_timeout
        self.qr_deadline = math.inf
        self.next_ping = math.inf
        self.last_rx = now
        self.opened = False
        self.paired = False
        self.pairing_by_code = False
        self.upload_keys: dict[int, KeyPair] = {}
        self.upload_failures = 0
        self._outcome: Outcome | None = None
        self._nursery: trio.Nursery | None = None
        self._channel: Channel | None = None
        self._send_lock = trio.Lock()
        self._outbound = OnDemandQueue[bytes](self._write, self.spawn, OUTBOUND_FRAMES)
        self._reactions = OnDemandQueue[Reaction](_react, self.spawn, REACTIONS_QUEUED)
        self._waiters: dict[str, Reply[BinaryNode]] = {}

    @property
    def is_open(self) -> bool:
        return self._outcome is None and self.conn.state is ClientState.OPEN

    # --- lifetime -------------------------------------------------------------------

    async def run(self, channel: Channel) -> Outcome:
        """Read, react and write on ``channel`` until the attempt ends; how it ended."""
        self._channel = channel
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self._guarded(self._read, channel)
        finally:
            self._nursery = self._channel = None
        assert self._outcome is not None  # every way out of the nursery records one
        return self._outcome

    def spawn(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` as a task of this attempt: an end it meets ends the attempt.

        Cancelled with the attempt; ``RuntimeError`` once the attempt is over.
        """
        if self._nursery is None:
            raise RuntimeError("the attempt is not running")
        self._nursery.start_soon(self._guarded, work)

    async def _guarded(self, task: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run one of the attempt's tasks; an end it meets becomes the attempt's outcome."""
        try:
            await task(*args)
        except AttemptOver as over:
            self._end(over.outcome)
        except UntrustedServerError as exc:
            self.log.error("untrusted_server", error=str(exc), code=exc.error_status_hint)
            self._end(Outcome(exc.error_status_hint, str(exc), self.opened, untrusted=True))
        except RemoteProtocolError as exc:
            self.log.warning("protocol_error", error=str(exc), code=exc.error_status_hint)
            self._end(self._outcome_of(exc.error_status_hint, f"protocol error: {exc}"))
        except TransportClosed as exc:
            self._end(self._outcome_of(int(DisconnectReason.CONNECTION_CLOSED), exc.detail))
        except ConnectionLost:
            pass  # a send after the end: the outcome is recorded already

    def _end(self, outcome: Outcome) -> None:
        if self._outcome is not None:
            return
        self._outcome = outcome
        waiters, self._waiters = self._waiters, {}
        for receipt in waiters.values():
            receipt.fail(self._lost())
        self._outbound.close()  # a sender waiting for room would wait for ever
        assert self._nursery is not None  # set by run before any task starts
        self._nursery.cancel_scope.cancel()

    def _outcome_of(self, code: int, detail: str) -> Outcome:
        return Outcome(code, detail, self.opened)

    def _lost(self) -> ConnectionLost:
        """What a sender gets once the attempt has ended (``_outcome`` is recorded)."""
        assert self._outcome is not None
        return ConnectionLost(self._outcome.code, self._outcome.detail)

    def over(self, code: int, detail: str) -> AttemptOver:
        return AttemptOver(self._outcome_of(code, detail))

    # --- sending --------------------------------------------------------------------

    async def send_with(self, produce: Callable[[], bytes]) -> None:
        """Hand what ``produce`` encrypts to the writer, in encryption order."""
        async with self._send_lock:
            if self._outcome is not None:
                raise self._lost()
            data = produce()
            if data:
                await self._queue_frame(data)

    async def _send_from_reader(self, produce: Callable[[], bytes]) -> None:
        """``send_with`` for the read loop: writes itself when the writer has nothing queued.

        The read loop is cancelled only with the whole attempt, so its write cannot
        tear a frame of a connection that lives on; writing in place spares a writer
        task per keepalive, pong and ack. Behind queued frames it queues, in order.
        A free lock is taken without ``acquire``'s trip through the scheduler: the
        write or the put is this call's checkpoint.
        """
        lock = self._send_lock
        await take_lock(lock)
        try:
            if self._outcome is not None:
                raise self._lost()
            data = produce()
            if not data:
                await trio.lowlevel.checkpoint()
            elif self._outbound.running or len(self._outbound):
                await self._queue_frame(data)
            else:
                # A socket that takes nothing must not hold the read loop past the
                # deadline its receive would have: that is a lost connection too.
                with trio.move_on_at(self._write_deadline()):
                    await self._write(data)
                    return
                raise self.over(408, "the server took no data and sent none in time")
        finally:
            lock.release()

    def _write_deadline(self) -> float:
        if self.conn.state is ClientState.HANDSHAKING:
            return self.handshake_deadline
        return self.last_rx + self.timers.keepalive_interval + KEEPALIVE_GRACE

    async def _queue_frame(self, data: bytes) -> None:
        try:
            await self._outbound.put(data)
        except trio.BrokenResourceError:
            raise self._lost() from None  # closed by _end only

    def next_id(self) -> str:
        """A fresh stanza id of this connection."""
        return self.conn.next_id()

    async def send_node(self, node: BinaryNode) -> None:
        """Send one stanza (from any task)."""
        await self.send_with(lambda: self.conn.send_node(node))

    async def query(self, node: BinaryNode, *, timeout: float | None = None) -> BinaryNode:  # noqa: ASYNC109 - a query's deadline is part of its protocol
        """Send an iq and return its answer (``type`` result or error).

        ``QueryTimeout`` after ``timeout`` seconds (default: the query timeout);
        ``ConnectionLost`` if the attempt ends first.
        """
        limit = self.timers.query_timeout if timeout is None else timeout
        receipt: Reply[BinaryNode] = Reply("connection", "iq")
        ids: list[str] = []

        def produce() -> bytes:
            iq_id, data = self.conn.query(node)
            # Registered before any checkpoint: the answer cannot be read earlier.
            self._waiters[iq_id] = receipt
            ids.append(iq_id)
            return data

        try:
            await self.send_with(produce)
            return await receipt.wait(limit)
        except ReplyTimeout:
            raise QueryTimeout(ids[0], limit) from None
        finally:
            if ids:
                self._waiters.pop(ids[0], None)

    async def _flush(self) -> None:
        """Write what the connection queued while handling events (nothing: no lock taken)."""
        if self.conn.has_data_to_send:
            await self._send_from_reader(self.conn.data_to_send)

    async def _write(self, data: bytes) -> None:
        assert self._channel is not None  # the writer runs only inside run
        await self._channel.send(data)

    # --- reacting -------------------------------------------------------------------

    async def _later(self, reaction: Reaction) -> None:
        """Queue a reaction that waits for the reactor (in event order)."""
        await self._reactions.put(reaction)

    # --- the read loop ----------------------------------------------------------------

    async def _read(self, channel: Channel) -> None:
        await self._send_from_reader(self.conn.start)
        self.host.set_state(ClientState.HANDSHAKING)
        while True:
            data = await self._receive(channel)
            if data is None:
                continue
            self.last_rx = trio.current_time()
            self.conn.receive_data(data)
            while events := self.conn.events():
                for event in events:
                    await self._on_event(event)
                await self._flush()
            await self._flush()

    def _deadline(self) -> float:
        state = self.conn.state
        if state is ClientState.HANDSHAKING:
            return self.handshake_deadline
        if state is ClientState.OPEN:
            silence = self.last_rx + self.timers.keepalive_interval + KEEPALIVE_GRACE
            return min(self.next_ping, silence)
        if state is ClientState.PAIRING and not self.paired:
            return self.qr_deadline
        return self.last_rx + self.timers.query_timeout

    async def _receive(self, channel: Channel) -> bytes | None:
        with trio.move_on_at(self._deadline()):
            return await channel.receive()
        await self._on_timer()
        return None

    async def _on_timer(self) -> None:
        now = trio.current_time()
        state = self.conn.state
        if state is ClientState.HANDSHAKING:
            raise self.over(408, "connect timed out during the handshake")
        if state is ClientState.OPEN:
            if now >= self.last_rx + self.timers.keepalive_interval + KEEPALIVE_GRACE:
                raise self.over(408, "keepalive: no traffic from the server")
            self.next_ping = now + self.timers.keepalive_interval
            await self._send_from_reader(lambda: self.conn.keepalive_ping()[1])
            return
        if state is ClientState.PAIRING and not self.paired:
            if self.pairing_by_code:
                expired = self.conn.expire_code()
                raise self.over(int(expired.reason), expired.detail)
            rotated = self.conn.rotate_qr()
            if isinstance(rotated, Closed):
                raise self.over(int(rotated.reason), rotated.detail)
            await self._on_qr(rotated)
            return
        raise self.over(408, f"no answer from the server in {state.value}")

    async def _on_event(self, event: ClientEvent) -> None:
        if isinstance(event, IqResult):
            waiter = self._waiters.pop(event.iq_id, None)
            if waiter is not None:
                waiter.resolve(event.node)
        elif isinstance(event, Ping):
            response = event.response()
            await self._send_from_reader(lambda: self.conn.send_node(response))
        elif isinstance(event, NodeReceived):
            # The messenger queues what needs waiting; an ack it answers goes out now.
            answer = await self.host.stanza_received(event.node)
            if answer is not None:
                await self._send_from_reader(lambda: self.conn.send_node(answer))
        elif isinstance(event, HandshakeComplete):
            state = ClientState.PAIRING if event.registering else ClientState.LOGGING_IN
            self.host.set_state(state)
            self.log.info("handshake_complete", registering=event.registering)
        elif isinstance(event, QrCode):
            await self._on_qr(event)
        elif isinstance(event, PairingCode):
            self.pairing_by_code = True
            self.qr_deadline = trio.current_time() + event.ttl
            self.log.info("pairing_code_shown", ttl=event.ttl)
            await self._later(lambda: self.host.show_pairing_code(event))
        elif isinstance(event, PairingCodeUsed):
            # The phone took the code: pair-success is due like any answer, not at the code's end.
            self.qr_deadline = trio.current_time() + self.timers.query_timeout
            self.log.info("pairing_code_entered")
        elif isinstance(event, PairSuccess):
            self.paired = True
            self.qr_deadline = math.inf
            await self._later(lambda: self._on_pair_success(event))
        elif isinstance(event, Opened):
            await self._on_opened(event)
        else:
            await self._on_login_event(event)

    async def _on_login_event(self, event: ClientEvent) -> None:
        if isinstance(event, LoginSuccess):
            await self._later(lambda: self._on_login(event))
        elif isinstance(event, RoutingInfo):
            await self._later(lambda: self._on_routing_info(event))
        elif isinstance(event, PreKeyCount):
            await self._later(lambda: self._on_count(event))
        elif isinstance(event, PreKeyUploadResult):
            await self._later(lambda: self._on_upload_result(event))
        elif isinstance(event, RestartRequired):
            raise self.over(event.code, "restart required")
        elif isinstance(event, StreamError):
            raise self.over(event.code, f"server ended the stream: {event.text}")
        elif isinstance(event, Closed):
            raise self.over(int(event.reason), event.detail)

    async def _on_qr(self, event: QrCode) -> None:
        self.qr_deadline = trio.current_time() + event.ttl
        self.log.info("qr_shown", index=event.index, ttl=event.ttl)
        await self._later(lambda: self.host.show_qr(event))

    async def _on_opened(self, event: Opened) -> None:
        self.opened = True
        self.host.set_state(ClientState.OPEN)
        self.next_ping = trio.current_time() + self.timers.keepalive_interval
        me = self.host.me_id()
        self.log.info("connection_open", me=me, digest_ok=event.digest_ok)
        self.host.emit(connection_open(me))
        if event.digest_ok is False:
            await self._later(lambda: self._upload(MIN_PREKEY_COUNT))

    # --- reactions (run by the reactor, in event order) -------------------------------

    async def _on_pair_success(self, event: PairSuccess) -> None:
        creds = event.update.apply(self.host.creds)
        # Durable before the phone hears back: a crash now re-logs in, never re-pairs.
        await self.host.commit_identity(creds)
        await self.send_with(self.conn.confirm_pairing)
        self.log.info("paired", me=event.update.me.get("id"))
        self.host.emit(connection_paired(event.update.me.get("id")))

    async def _on_login(self, event: LoginSuccess) -> None:
        creds = self.host.creds
        me = dict(creds.me or {})
        if event.lid is not None:
            me["lid"] = event.lid
        else:
            me.pop("lid", None)  # Baileys: a success without lid erases it
        if me != (creds.me or {}):
            updated = creds.copy()
            updated.me = me
            await self.host.save_creds(updated)

    async def _on_routing_info(self, event: RoutingInfo) -> None:
        if self.host.creds.routing_info == event.routing_info:
            return  # nothing to save, and the shared creds object stays shared
        creds = self.host.creds.copy()
        creds.routing_info = event.routing_info
        await self.host.save_creds(creds)

    async def _on_count(self, event: PreKeyCount) -> None:
        if event.count is None:
            await self.send_with(self.conn.skip_prekey_upload)
            return
        creds = self.host.creds
        newest = creds.next_pre_key_id - 1
        exists = False
        if newest > 0:
            found = await self.host.keys_get(PRE_KEY_TYPE, (str(newest),))
            exists = str(newest) in found
        count = upload_count(
            event.count, newest_local_exists=exists, next_pre_key_id=creds.next_pre_key_id
        )
        self.log.info("prekey_count", server=event.count, upload=count)
        if count == 0:
            await self.send_with(self.conn.skip_prekey_upload)
            return
        await self._upload(count)

    async def _upload(self, count: int) -> None:
        self.upload_keys = await self.host.prepare_prekeys(count)
        await self.send_with(lambda: self.conn.upload_prekeys(self.upload_keys))

    async def _on_upload_result(self, event: PreKeyUploadResult) -> None:
        if event.ok:
            self.log.info("prekeys_uploaded", count=len(self.upload_keys))
            self.host.metrics.prekeys_uploaded(len(self.upload_keys))
            self.upload_keys = {}  # uploaded and durable in the store: not kept decoded here
            return
        self.upload_failures += 1
        self.log.warning("prekey_upload_failed", code=event.error_code, tries=self.upload_failures)
        if self.conn.state is not ClientState.LOGGING_IN:
            return
        if self.upload_failures >= UPLOAD_ATTEMPTS:
            await self.send_with(self.conn.skip_prekey_upload)
            return
        await trio.sleep(min(1.0 * 2**self.upload_failures, 10.0))
        if self.conn.state is ClientState.LOGGING_IN:  # the login may have moved on meanwhile
            await self.send_with(lambda: self.conn.upload_prekeys(self.upload_keys))


async def _react(reaction: Reaction) -> None:
    await reaction()


__all__ = [
    "OUTBOUND_FRAMES",
    "UPLOAD_ATTEMPTS",
    "Attempt",
    "AttemptHost",
    "AttemptOver",
    "AttemptTimers",
    "Outcome",
    "reason_name",
]
