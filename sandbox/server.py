"""The sandbox on loopback: a trio-websocket server around :class:`sandbox.core.ServerCore`.

Usage::

    async with open_sandbox(host="127.0.0.1", port=0) as sb:
        sb.url                     # ws://127.0.0.1:PORT/ws/chat, for the client
        sb.root_public_key         # 32 bytes: the client's trust anchor
        linked = await sb.phone.scan(qr_string)
        other = sb.new_phone()     # a second account
        ann = sb.new_contact("Ann")  # a simulated contact (our Signal code)
        sb.contact_send(ann.jid, other_bot_jid, "hello")
        ann.messages               # what the contact received
        sb.create_group("Team", [ann.jid, other_bot_jid])
        sb.faults.stream_error(440)
        sb.statistics()

Every path but ``/sandbox/control`` speaks the WhatsApp protocol; that one is
the control channel (:mod:`sandbox.control`). Since 0.1.0.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    serve_websocket,
)

from sandbox.contacts import Contact, ContactMessage
from sandbox.control import CONTROL_PATH, serve_control
from sandbox.core import (
    BAD_SESSION,
    LOGGED_OUT,
    Close,
    ConnectionInfo,
    ConnState,
    CoreStatistics,
    Linked,
    LinkFailed,
    Output,
    SandboxConfig,
    Send,
    ServerCore,
)
from sandbox.errors import UnknownTargetError
from sandbox.groups import Group
from sandbox.identity import ServerIdentity
from sandbox.phone import LinkOutcome, Phone
from stores.keys import generate_key_pair

#: The path the WhatsApp client connects to (any path but the control one works).
CHAT_PATH = "/ws/chat"
#: Websocket message bound: above any frame the sandbox's frame limit allows.
MAX_MESSAGE_SIZE = 16 * 1024 * 1024

Target = int | str | None
"""A connection id, a device JID (its logged-in connections), or None: every live one
(past its handshake, not closing)."""


@dataclass(frozen=True)
class _Outbox:
    send: trio.MemorySendChannel[bytes | Close]


class Faults:
    """Fault controls of a running sandbox; each returns how many connections it hit."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox
        self._core = sandbox.core
        #: Seconds every server message waits before it is written.
        self.reply_delay = 0.0
        #: Stall new connections from their first byte (no ServerHello ever).
        self.stall_new_connections = False

    def __repr__(self) -> str:
        return f"Faults(reply_delay={self.reply_delay}, stall_new={self.stall_new_connections})"

    def drop(self, target: Target = None) -> int:
        """Cut connections without a websocket close (like a network loss)."""
        return self._each(target, self._core.drop)

    def stream_error(self, code: int, target: Target = None) -> int:
        """Send ``stream:error code=<code>`` (440 also carries ``conflict``) and close."""
        now = trio.current_time()
        return self._each(target, lambda c: self._core.stream_error(c, code, now))

    def failure(self, reason: int = LOGGED_OUT, target: Target = None) -> int:
        """Send ``failure reason=<reason>`` and close."""
        now = trio.current_time()
        return self._each(target, lambda c: self._core.failure(c, reason, now))

    def malformed_frame(self, target: Target = None) -> int:
        """Send a correctly encrypted frame that is not a binary node."""
        return self._each(target, self._core.malformed_frame)

    def undecryptable_frame(self, target: Target = None) -> int:
        """Send a frame that fails to decrypt."""
        return self._each(target, self._core.undecryptable_frame)

    def oversize_frame(self, target: Target = None) -> int:
        """Send a frame header declaring 16 MiB - 1 bytes."""
        return self._each(target, self._core.oversize_frame)

    def stall(self, target: Target = None) -> int:
        """Hold all traffic of connections (both ways) until :meth:`resume`."""
        ids = self._core.select(target)
        for conn_id in ids:
            self._core.stall(conn_id)
        return len(ids)

    def resume(self, target: Target = None) -> int:
        """End stalls: held output is sent, held input processed."""
        now = trio.current_time()
        return self._each(target, lambda c: self._core.resume(c, now))

    def delay_replies(self, seconds: float) -> None:
        """Make every message the server writes wait ``seconds`` first (0 to stop)."""
        self.reply_delay = seconds

    def refuse_logins(self, jid: str, reason: int = LOGGED_OUT) -> None:
        """Answer this device's logins with ``failure reason=<reason>``."""
        self._core.refuse_logins(jid, reason)

    def allow_logins(self, jid: str) -> None:
        """Accept this device's logins again."""
        self._core.refuse_logins(jid, None)

    def _each(self, target: Target, action: Callable[[int], list[Output]]) -> int:
        ids = self._core.select(target)
        for conn_id in ids:
            self._sb.dispatch(action(conn_id))
        return len(ids)


class Sandbox:
    """A running sandbox server (made by :func:`open_sandbox`)."""

    def __init__(self, core: ServerCore, on_event: Callable[[str], None] | None = None) -> None:
        self.core = core
        self.on_event = on_event
        """Told one line per connection opened or closed, pairing and login (or None)."""
        self._seen: dict[int, ConnState] = {}
        self.faults = Faults(self)
        self.url = ""
        self.control_url = ""
        self._outboxes: dict[int, _Outbox] = {}
        self._links: dict[str, trio.MemorySendChannel[LinkOutcome]] = {}
        self._phones: dict[str, Phone] = {}
        self._changed = trio.Event()
        self.phone = self.new_phone()

    def __repr__(self) -> str:
        return f"Sandbox(url={self.url!r}, core={self.core!r})"

    @property
    def root_public_key(self) -> bytes:
        """The root public key clients must trust (32 bytes)."""
        return self.core.identity.root_public_key

    def new_phone(self, *, user: str | None = None, biz_name: str | None = None) -> Phone:
        """A new account (a fresh phone number unless ``user``) and its phone."""
        key = generate_key_pair()
        account = self.core.registry.new_account(key.public, user=user, biz_name=biz_name)
        phone = Phone(self, key, account.user)
        self._phones[account.user] = phone
        return phone

    def phone_of(self, user: str) -> Phone:
        """The phone of account ``user`` made by this sandbox; UnknownTargetError if none."""
        found = self._phones.get(user)
        if found is None:
            raise UnknownTargetError(f"no phone {user!r} in the sandbox")
        return found

    def new_contact(self, name: str | None = None) -> Contact:
        """A new simulated contact (an account of its own). Since 0.2.0."""
        contact = self.core.add_contact(name)
        self._bump()
        return contact

    def contact_send(self, contact: str, to: str, text: str) -> str:
        """Have contact ``contact`` send ``text`` to a user or group JID; the message id.

        Since 0.2.0.
        """
        msg_id, outputs = self.core.contact_send(contact, to, text, trio.current_time())
        self.dispatch(outputs)
        self._bump()
        return msg_id

    def contact_messages(self, contact: str) -> list[ContactMessage]:
        """What contact ``contact`` received, oldest first. Since 0.2.0."""
        return list(self.core.contacts.get(contact).messages)

    def create_group(self, subject: str, participants: list[str]) -> Group:
        """A group of accounts or contacts; the first one creates it. Since 0.2.0."""
        group = self.core.create_group(subject, participants)
        self._bump()
        return group

    async def wait_contact_messages(self, contact: str, count: int) -> list[ContactMessage]:
        """Wait until contact ``contact`` received ``count`` messages; return them all.

        Unbounded: wrap it in ``trio.fail_after``. Since 0.2.0.
        """
        while len(self.core.contacts.get(contact).messages) < count:
            await self._changed.wait()
        return self.contact_messages(contact)

    def statistics(self) -> CoreStatistics:
        """Server counters (connections, logins, links, uploads, ...)."""
        return self.core.statistics()

    def connections(self) -> list[ConnectionInfo]:
        """The live connections."""
        return self.core.connections()

    async def wait_logged_in(self, jid: str) -> ConnectionInfo:
        """Wait until a connection is logged in as device ``jid``; return it.

        Unbounded: wrap it in ``trio.fail_after``.
        """
        while True:
            for info in self.core.connections():
                if info.jid == jid and info.state is ConnState.LOGGED_IN:
                    return info
            await self._changed.wait()

    async def wait_code_request(self, user: str) -> None:
        """Wait until a device asked for a pairing code for account ``user``.

        Unbounded: wrap it in ``trio.fail_after``. Since 0.2.0.
        """
        while not self.core.code_requested(user):
            await self._changed.wait()

    def _bump(self) -> None:
        # Wake every waiter: the core's state may have changed.
        self._changed.set()
        self._changed = trio.Event()

    # --- PhoneHost -----------------------------------------------------------------

    def now(self) -> float:
        """Trio's clock, the core's time base."""
        return trio.current_time()

    def wall_time(self) -> float:
        """Unix time."""
        return time.time()

    def dispatch(self, outputs: list[Output]) -> None:
        """Route the core's outputs to connection writers and waiting phones."""
        for output in outputs:
            if isinstance(output, (Send, Close)):
                outbox = self._outboxes.get(output.conn_id)
                if outbox is not None:
                    outbox.send.send_nowait(output.data if isinstance(output, Send) else output)
            else:
                if isinstance(output, Linked):
                    self._report(f"paired: the phone linked {output.jid}")
                elif isinstance(output, LinkFailed):
                    self._report(f"pairing failed: {output.reason}")
                waiter = self._links.pop(output.ref, None)
                if waiter is not None:
                    # The phone may have stopped waiting (cancelled): nobody to tell then.
                    with contextlib.suppress(trio.BrokenResourceError, trio.WouldBlock):
                        waiter.send_nowait(output)

    def expect_link(self, ref: str) -> trio.MemoryReceiveChannel[LinkOutcome]:
        """A channel for the next step of the link started with ``ref`` (its outcome)."""
        send, receive = trio.open_memory_channel[LinkOutcome](1)
        self._links[ref] = send
        return receive

    # --- connections -------------------------------------------------------------

    async def _handle(self, request: WebSocketRequest) -> None:
        if request.path == CONTROL_PATH:
            await serve_control(self, await request.accept())
            return
        ws = await request.accept()
        conn_id = self.core.connect()
        self._report(f"connection {conn_id} opened from {_peer(ws)}")
        if self.faults.stall_new_connections:
            self.core.stall(conn_id)
        send, receive = trio.open_memory_channel[bytes | Close](math.inf)
        self._outboxes[conn_id] = _Outbox(send)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, ws, receive, nursery.cancel_scope)
                while True:
                    try:
                        message = await ws.get_message()
                    except ConnectionClosed:
                        break
                    data = message.encode() if isinstance(message, str) else message
                    watched = self.on_event is not None
                    refused = self.core.statistics().logins_refused if watched else 0
                    self.dispatch(self.core.receive(conn_id, data, trio.current_time()))
                    if watched:
                        self._report_progress(conn_id, refused)
                    self._bump()
                nursery.cancel_scope.cancel()
        finally:
            del self._outboxes[conn_id]
            self._seen.pop(conn_id, None)
            self.dispatch(self.core.disconnected(conn_id, trio.current_time()))
            self._report(f"connection {conn_id} closed")
            self._bump()

    def _report(self, line: str) -> None:
        if self.on_event is not None:
            self.on_event(line)

    def _report_progress(self, conn_id: int, refused_before: int) -> None:
        """One line when connection ``conn_id`` asked to pair, logged in or was refused."""
        if self.core.statistics().logins_refused > refused_before:
            self._report(f"connection {conn_id}: login refused (the device is not paired here)")
        info = next((c for c in self.core.connections() if c.conn_id == conn_id), None)
        if info is None or self._seen.get(conn_id) is info.state:
            return
        self._seen[conn_id] = info.state
        if info.state is ConnState.PAIRING:
            self._report(f"connection {conn_id}: a new device asks to pair (QR codes sent)")
        elif info.state is ConnState.LOGGED_IN:
            self._report(f"connection {conn_id}: {info.jid} logged in")

    async def _write(
        self,
        ws: WebSocketConnection,
        outbox: trio.MemoryReceiveChannel[bytes | Close],
        scope: trio.CancelScope,
    ) -> None:
        try:
            async for item in outbox:
                if self.faults.reply_delay > 0:
                    await trio.sleep(self.faults.reply_delay)
                if isinstance(item, Close):
                    if item.linger > 0:
                        # The reader cancels this writer as soon as the client closes.
                        await trio.sleep(item.linger)
                    if item.abrupt:
                        # trio-websocket has no public "reset": closing its TCP stream
                        # is what a network loss looks like to the client.
                        await ws._close_stream()
                    else:
                        await ws.aclose()
                    break
                await ws.send_message(item)
        except ConnectionClosed:
            pass
        scope.cancel()


def _peer(ws: WebSocketConnection) -> str:
    """Where a connection comes from; a client gone already (killed) has no address."""
    try:
        remote = ws.remote
    except OSError:
        return "a peer already gone"
    return remote if isinstance(remote, str) else f"{remote.address}:{remote.port}"


@asynccontextmanager
async def open_sandbox(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    identity: ServerIdentity | None = None,
    config: SandboxConfig | None = None,
    on_event: Callable[[str], None] | None = None,
) -> AsyncIterator[Sandbox]:
    """Serve a sandbox on ``host:port`` (0: any free port) for the body of the block.

    ``on_event`` (since 0.2.0) is told one line for each connection opened or closed,
    pairing asked, device paired (or not) and login (or refused login).
    """
    core = ServerCore(identity=identity, config=config)
    sandbox = Sandbox(core, on_event)
    async with trio.open_nursery() as nursery:
        server: WebSocketServer = await nursery.start(
            partial(
                serve_websocket,
                sandbox._handle,
                host,
                port,
                None,
                handler_nursery=nursery,
                max_message_size=MAX_MESSAGE_SIZE,
                disconnect_timeout=5,
            )
        )
        bound = server.port
        shown = f"[{host}]" if ":" in host else host
        sandbox.url = f"ws://{shown}:{bound}{CHAT_PATH}"
        sandbox.control_url = f"ws://{shown}:{bound}{CONTROL_PATH}"
        try:
            yield sandbox
        finally:
            nursery.cancel_scope.cancel()


__all__ = [
    "BAD_SESSION",
    "CHAT_PATH",
    "CONTROL_PATH",
    "Faults",
    "Sandbox",
    "Target",
    "open_sandbox",
]
