"""The sandbox server, sans-IO: every connection's protocol state, bytes in, outputs out.

``ServerCore`` plays the WhatsApp server for many connections at once (h11 shape:
no sockets, no clock of its own). The I/O layer (:mod:`sandbox.server`) feeds it
``connect`` / ``receive`` / ``disconnected`` with the current time and carries out
the outputs: :class:`Send` bytes to a connection, :class:`Close` it, and tell a
waiting phone that its scan :class:`Linked` or :class:`LinkFailed`.

The server behaviour is PROTOCOL.md's "From connect to open, as the real Baileys
v7 client does it (observed)":

- handshake: ServerHello with the sandbox's own certificate chain;
- registration payload → ``iq type=set xmlns=md > pair-device > ref*``; ref *i*
  is the one a client shows from 60 s + 20 s·(i-1) (the first from 0 s) for 60 s
  (first) or 20 s, and a scan of it is accepted only then (plus a grace);
- a scan (:meth:`ServerCore.begin_scan` / :meth:`ServerCore.complete_scan`,
  called for the phone) → ``pair-success``; the ``pair-device-sign`` reply is
  checked (the device signature under the identity key the registration payload
  carried, details and account signature unchanged, key index) → the device is
  paired → ``stream:error code=515`` and close;
- login payload → ``success{t, lid}`` if the device is paired and its Noise
  static key is the one registered, else ``failure reason=401``; a second login
  of the same device replaces the first (``stream:error code=440 > conflict``);
- then pre-key count / upload / digest / rotate, passive, ping, abt props,
  blocklist and privacy iqs; any other iq gets ``error code=501``.

Messaging (0.2.0; the rules are :mod:`sandbox.routing`'s table): ``usync`` and
``encrypt/get > key`` are answered from the registry, ``w:g2 > query`` from
:mod:`sandbox.groups`; ``message`` and ``receipt`` stanzas of a logged-in device
are acked and routed to the devices they address, each waiting in that device's
offline queue until it acks; after ``success`` (and ``edge_routing``) a device
gets its queue in order, then ``ib > offline{count}``. Simulated contacts
(:mod:`sandbox.contacts`) are devices too: what is routed to one is handed to it
at once, and what it answers is routed like a client's stanza.

Since 0.1.0.
"""

from __future__ import annotations

import base64
import enum
import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError as ProtobufDecodeError

from actors.connection.binary import (
    S_WHATSAPP_NET,
    BinaryNode,
    DecodeError,
    MissingNodeError,
    decode_node,
    encode_node,
)
from actors.connection.errors import RemoteProtocolError
from actors.connection.framing import DEFAULT_MAX_FRAME_SIZE, encode_frame
from actors.connection.noise import (
    NEED_DATA,
    ClientFinish,
    ClientHello,
    Hello,
    NoiseResponder,
    NoiseTransport,
)
from actors.connection.pairing_code import LINK_CODE_TAG
from actors.connection.proto import wa_pb2
from sandbox import adv
from sandbox.accounts import Device, Registry, SignedPreKey
from sandbox.contacts import Contact, Contacts
from sandbox.errors import InvalidAccountError, ScanRejectedError, UnknownTargetError
from sandbox.groups import Group, Groups
from sandbox.identity import ServerIdentity
from sandbox.link_code import (
    CodeFinished,
    CodeHello,
    CodeTicket,
    LinkCodeRefused,
    hello_result,
    parse_companion_finish,
    parse_companion_hello,
    primary_hello,
    stage_of,
)
from sandbox.routing import Delivery, Routed, Router, key_bundle_result, key_of, usync_result
from stores.keys import KEY_BUNDLE_TYPE, verify

#: Status codes of ``stream:error`` / ``failure`` (Baileys' DisconnectReason).
RESTART_REQUIRED = 515
CONNECTION_REPLACED = 440
LOGGED_OUT = 401
BAD_SESSION = 500
BAD_REQUEST = 400
#: Seconds the server waits for the client to close after the 515 that follows a link.
RESTART_LINGER = 2.0


class ConnState(enum.Enum):
    """Where one connection is."""

    AWAIT_HELLO = "await_hello"
    AWAIT_FINISH = "await_finish"
    #: Registration payload received, refs sent, waiting for a scan.
    PAIRING = "pairing"
    #: pair-success sent, waiting for the client's pair-device-sign.
    AWAIT_SIGN = "await_sign"
    LOGGED_IN = "logged_in"
    #: The server sent its last word (515, failure, stream:error) and closes.
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(frozen=True)
class Send:
    """Write ``data`` (one websocket message) to connection ``conn_id``."""

    conn_id: int
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Close:
    """Close connection ``conn_id``: cleanly after what was sent, or ``abrupt``ly (TCP reset).

    ``linger`` (seconds, since 0.2.0): let the client close first, for up to that long.
    """

    conn_id: int
    abrupt: bool = False
    linger: float = 0.0


@dataclass(frozen=True)
class Linked:
    """The scan of ``ref`` completed: the device signed, it is paired as ``jid``."""

    ref: str
    jid: str
    lid: str


@dataclass(frozen=True)
class LinkFailed:
    """The scan of ``ref`` was accepted but the link did not complete; ``reason`` says why."""

    ref: str
    reason: str


Output = Send | Close | Linked | LinkFailed | CodeFinished


@dataclass(frozen=True)
class SandboxConfig:
    """How the server behaves; the defaults are the real server's as observed."""

    refs_per_pairing: int = 6
    first_ref_lifetime: float = 60.0
    ref_lifetime: float = 20.0
    #: How long after a ref's window a scan of it is still accepted (scan latency).
    ref_grace: float = 5.0
    #: Send ``ib > edge_routing`` after ``success`` (the next intro then carries it).
    send_edge_routing: bool = True
    #: The phone's platform name sent in ``pair-success > platform``.
    platform_name: str = "android"
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    #: Send ``ib > offline{count}`` after a login's queued stanzas (Baileys flushes
    #: its buffered events on it). Since 0.2.0.
    send_offline_marker: bool = True


@dataclass(frozen=True)
class Registration:
    """What a registration payload told the server about a new device."""

    noise_key: bytes = field(repr=False)
    identity_key: bytes = field(repr=False)
    registration_id: int
    signed_pre_key: SignedPreKey
    platform: str


@dataclass(frozen=True)
class IssuedRef:
    """A pairing ref and when a scan of it is accepted (core time)."""

    ref: str
    conn_id: int
    index: int
    valid_from: float
    valid_until: float


@dataclass(frozen=True)
class ScanTicket:
    """A scan the server accepted: the connection to answer and the device to create."""

    ref: str
    conn_id: int
    user: str
    device_id: int
    key_index: int


@dataclass(frozen=True)
class ConnectionInfo:
    """A connection as tests see it."""

    conn_id: int
    state: ConnState
    jid: str | None
    routing_info: bytes | None = field(repr=False)
    stalled: bool


@dataclass(frozen=True)
class CoreStatistics:
    """Counters since the core started."""

    connections_open: int
    connections_total: int
    handshakes: int
    registrations: int
    logins: int
    logins_refused: int
    links: int
    link_failures: int
    accounts: int
    devices: int
    pre_key_uploads: int
    pings: int
    routed_intros: int
    protocol_errors: int
    unknown_iqs: int
    #: Since 0.2.0: message and receipt stanzas routed, addressed parts that reached no
    #: device (unknown, or not the recipient's), stanzas waiting for an ack,
    #: simulated contacts and groups.
    messages_routed: int = 0
    receipts_routed: int = 0
    stanzas_dropped: int = 0
    queued_stanzas: int = 0
    contacts: int = 0
    groups: int = 0
    #: Since 0.2.0: logins that replaced a live connection of the same device (440).
    logins_replaced: int = 0


@dataclass(eq=False)
class _PendingLink:
    ticket: ScanTicket
    iq_id: str
    signed: adv.SignedDeviceIdentity


@dataclass(eq=False)
class _Connection:
    conn_id: int
    responder: NoiseResponder
    state: ConnState = ConnState.AWAIT_HELLO
    transport: NoiseTransport | None = None
    routing_info: bytes | None = None
    noise_key: bytes = b""
    registration: Registration | None = None
    refs: list[IssuedRef] = field(default_factory=list)
    link: _PendingLink | None = None
    #: The companion's request for a pairing code, and whether the phone answered it.
    code: CodeHello | None = None
    code_answered: bool = False
    device: Device | None = None
    stalled: bool = False
    held_input: list[bytes] = field(default_factory=list)
    held_output: list[Output] = field(default_factory=list)
    iq_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))


class _Counters:
    def __init__(self) -> None:
        self.connections_total = 0
        self.handshakes = 0
        self.registrations = 0
        self.logins = 0
        self.logins_refused = 0
        self.links = 0
        self.link_failures = 0
        self.pre_key_uploads = 0
        self.pings = 0
        self.routed_intros = 0
        self.protocol_errors = 0
        self.unknown_iqs = 0
        self.logins_replaced = 0


class ServerCore:
    """Every connection of the sandbox server, its registry and its pairing refs. Sans-IO."""

    def __init__(
        self,
        *,
        identity: ServerIdentity | None = None,
        config: SandboxConfig | None = None,
        registry: Registry | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity if identity is not None else ServerIdentity.generate()
        self.config = config if config is not None else SandboxConfig()
        self.registry = registry if registry is not None else Registry()
        self._wall_clock = wall_clock
        self._connections: dict[int, _Connection] = {}
        self._ids = itertools.count(1)
        self._refs: dict[str, IssuedRef] = {}
        self._code_hellos: dict[str, int] = {}
        self._routing_infos: set[bytes] = set()
        self._count = _Counters()
        self.groups = Groups()
        self.contacts = Contacts(self.registry, self.groups)
        self.router = Router(self.registry, self.groups)

    def __repr__(self) -> str:
        return f"ServerCore(connections={len(self._connections)}, registry={self.registry!r})"

    # --- connection lifecycle ---------------------------------------------------

    def connect(self) -> int:
        """A new connection; returns its id."""
        conn_id = next(self._ids)
        responder = NoiseResponder(
            static_key=self.identity.static_key,
            cert_chain=self.identity.cert_chain,
            max_frame_size=self.config.max_frame_size,
        )
        self._connections[conn_id] = _Connection(conn_id, responder)
        self._count.connections_total += 1
        return conn_id

    def receive(self, conn_id: int, data: bytes, now: float) -> list[Output]:
        """Feed one websocket message from the client."""
        conn = self._live(conn_id)
        if conn is None:
            return []
        if conn.stalled:
            conn.held_input.append(data)
            return []
        out: list[Output] = []
        try:
            self._receive(conn, data, now, out)
        except RemoteProtocolError:
            # Whatever the client broke (handshake, framing, ciphertext, node), the
            # server drops the connection, as the real one does.
            self._count.protocol_errors += 1
            out += self._close(conn, now, abrupt=True)
        return self._gate(conn, out)

    def disconnected(self, conn_id: int, now: float) -> list[Output]:
        """The socket is gone; forget the connection (a pending link fails)."""
        conn = self._connections.pop(conn_id, None)
        if conn is None:
            return []
        conn.state = ConnState.CLOSED
        return self._forget(conn)

    # --- pairing, called for the phone --------------------------------------------

    def begin_scan(
        self, *, ref: str, noise_key: bytes, identity_key: bytes, user: str, now: float
    ) -> ScanTicket:
        """Accept a scan of ``ref`` by the phone of account ``user``, or ScanRejectedError."""
        issued = self._refs.get(ref)
        if issued is None:
            raise ScanRejectedError(f"ref {ref!r} was not issued by this sandbox (or is used up)")
        if now < issued.valid_from:
            raise ScanRejectedError(
                f"ref #{issued.index} is not shown yet (from {issued.valid_from})"
            )
        if now > issued.valid_until + self.config.ref_grace:
            raise ScanRejectedError(f"ref #{issued.index} expired at {issued.valid_until}")
        conn = self._live(issued.conn_id)
        if conn is None or conn.state is not ConnState.PAIRING or conn.link is not None:
            raise ScanRejectedError("the connection that showed this QR is no longer pairing")
        registration = conn.registration
        assert registration is not None  # PAIRING implies it
        if noise_key != registration.noise_key:
            raise ScanRejectedError("the QR's noise key is not the one the client registered")
        if identity_key != registration.identity_key:
            raise ScanRejectedError("the QR's identity key is not the one the client registered")
        self.registry.account(user)  # UnknownTargetError for a phone without an account
        device_id, key_index = self.registry.reserve_device(user)
        return ScanTicket(ref, conn.conn_id, user, device_id, key_index)

    def complete_scan(self, ticket: ScanTicket, device_identity: bytes, now: float) -> list[Output]:
        """Send ``pair-success`` carrying the phone's ADVSignedDeviceIdentityHMAC bytes.

        The server cannot check the HMAC (only phone and client know the adv
        secret); it checks what it can: the account signature under the account's
        identity key, and the key index it reserved.
        """
        conn = self._live(ticket.conn_id)
        if conn is None or conn.state is not ConnState.PAIRING or conn.registration is None:
            raise ScanRejectedError("the connection that showed this QR is no longer pairing")
        account = self.registry.account(ticket.user)
        try:
            signed, _, _ = adv.unwrap_hmac(device_identity)
            details = adv.DeviceIdentityDetails.decode(signed.details)
            adv.check_account_signature(signed, conn.registration.identity_key)
        except adv.AdvError as exc:
            raise ScanRejectedError(f"device identity from the phone: {exc}") from exc
        if signed.account_signature_key != account.identity_public:
            raise ScanRejectedError("device identity is not signed by the account's identity key")
        if details.key_index != ticket.key_index:
            raise ScanRejectedError(
                f"device identity key index {details.key_index}, reserved {ticket.key_index}"
            )
        registration = conn.registration
        device = Device(
            user=ticket.user,
            device_id=ticket.device_id,
            lid_user=account.lid_user,
            noise_key=registration.noise_key,
            identity_key=registration.identity_key,
            registration_id=registration.registration_id,
            key_index=ticket.key_index,
            platform=registration.platform,
            signed_pre_key=registration.signed_pre_key,
        )
        self.registry.add_device(device)
        iq_id = self._iq_id(conn)
        conn.link = _PendingLink(ticket, iq_id, signed)
        conn.state = ConnState.AWAIT_SIGN
        for issued in conn.refs:
            self._refs.pop(issued.ref, None)
        self._drop_code(conn)
        content = [
            BinaryNode("device-identity", {"key-index": str(ticket.key_index)}, device_identity),
            BinaryNode("platform", {"name": self.config.platform_name}),
            BinaryNode("device", {"jid": device.jid, "lid": device.lid}),
        ]
        if account.biz_name:
            content.append(BinaryNode("biz", {"name": account.biz_name}))
        node = BinaryNode(
            "iq",
            {"from": S_WHATSAPP_NET, "type": "set", "id": iq_id, "xmlns": "md", "t": self._t()},
            [BinaryNode("pair-success", {}, content)],
        )
        return self._gate(conn, self._send(conn, node))

    # --- pairing by code, called for the phone ---------------------------------------

    def begin_code_link(self, *, user: str, now: float) -> CodeTicket:
        """The phone of ``user`` takes up the newest code request for its number.

        ScanRejectedError when no connection is waiting for a code for ``user``, or its
        code outlived the connection's refs.
        """
        conn_id = self._code_hellos.get(user)
        conn = self._live(conn_id) if conn_id is not None else None
        if conn is None or conn.code is None or conn.state is not ConnState.PAIRING:
            raise ScanRejectedError(f"no device is waiting for a pairing code for {user}")
        if conn.code_answered:
            raise ScanRejectedError(f"the pairing code request for {user} was answered already")
        if conn.refs and now > conn.refs[-1].valid_until + self.config.ref_grace:
            raise ScanRejectedError(f"the pairing code request for {user} expired")
        code = conn.code
        return CodeTicket(code.ref, conn.conn_id, user, code.wrapped_companion_ephemeral)

    def code_requested(self, user: str) -> bool:
        """Whether a pairing connection waits for a code for ``user`` (not yet answered)."""
        conn_id = self._code_hellos.get(user)
        conn = self._live(conn_id) if conn_id is not None else None
        return conn is not None and conn.code is not None and not conn.code_answered

    def code_primary_hello(
        self, ticket: CodeTicket, primary_identity: bytes, wrapped_primary: bytes
    ) -> list[Output]:
        """Carry the phone's hello to the companion (the phone typed the code)."""
        conn = self._code_conn(ticket)
        conn.code_answered = True
        node = primary_hello(
            self._iq_id(conn), ticket.ref, primary_identity, wrapped_primary, self._t()
        )
        return self._gate(conn, self._send(conn, node))

    def code_scan_ticket(self, ticket: CodeTicket) -> ScanTicket:
        """The companion's bundle checked out on the phone: reserve its device as a scan does."""
        conn = self._code_conn(ticket)
        self.registry.account(ticket.user)
        device_id, key_index = self.registry.reserve_device(ticket.user)
        return ScanTicket(ticket.ref, conn.conn_id, ticket.user, device_id, key_index)

    def fail_code(self, ticket: CodeTicket, reason: str) -> list[Output]:
        """The phone gave up on this code (its bundle did not open): the request is void."""
        conn = self._live(ticket.conn_id)
        if conn is not None and conn.code is not None and conn.code.ref == ticket.ref:
            self._drop_code(conn)
        self._count.link_failures += 1
        return [LinkFailed(ticket.ref, reason)]

    def _code_conn(self, ticket: CodeTicket) -> _Connection:
        conn = self._live(ticket.conn_id)
        code = conn.code if conn is not None else None
        if conn is None or code is None or code.ref != ticket.ref:
            raise ScanRejectedError("the device that asked for this code is no longer pairing")
        if conn.state is not ConnState.PAIRING:
            raise ScanRejectedError("the device that asked for this code is no longer pairing")
        return conn

    def _drop_code(self, conn: _Connection) -> None:
        if conn.code is not None and self._code_hellos.get(conn.code.user) == conn.conn_id:
            del self._code_hellos[conn.code.user]
        conn.code = None
        conn.code_answered = False

    def _on_link_code(self, conn: _Connection, node: BinaryNode) -> list[Output]:
        """``iq xmlns=md > link_code_companion_reg``: the companion's hello or finish."""
        stage = stage_of(node)
        try:
            if stage == "companion_hello":
                return self._on_code_hello(conn, node)
            if stage == "companion_finish":
                return self._on_code_finish(conn, node)
            raise LinkCodeRefused(400, f"link_code_companion_reg: unknown stage {stage!r}")
        except LinkCodeRefused as exc:
            return self._send(conn, _error(node, exc.code, str(exc)))

    def _on_code_hello(self, conn: _Connection, node: BinaryNode) -> list[Output]:
        assert conn.registration is not None  # PAIRING implies it
        hello = parse_companion_hello(node, conn.registration.noise_key)
        try:
            self.registry.account(hello.user)
        except UnknownTargetError as exc:
            raise LinkCodeRefused(404, str(exc)) from exc
        self._drop_code(conn)
        conn.code = hello
        self._code_hellos[hello.user] = conn.conn_id
        return self._send(conn, hello_result(node, hello.ref))

    def _on_code_finish(self, conn: _Connection, node: BinaryNode) -> list[Output]:
        assert conn.registration is not None  # PAIRING implies it
        if conn.code is None or not conn.code_answered:
            raise LinkCodeRefused(400, "companion_finish before the phone's hello")
        finished = parse_companion_finish(node, conn.code, conn.registration.identity_key)
        return [*self._send(conn, _result(node)), finished]

    # --- faults and direct control ----------------------------------------------

    def select(self, target: int | str | None = None) -> list[int]:
        """Connection ids: one id, those logged in as a device JID, or (None) every live one.

        "Live" means past its handshake and not closing: the ones a fault can speak to.
        """
        if target is None:
            return [
                c.conn_id
                for c in self._connections.values()
                if c.transport is not None and self._live(c.conn_id) is not None
            ]
        if isinstance(target, int):
            if target not in self._connections:
                raise UnknownTargetError(f"no live connection {target}")
            return [target]
        device = self.registry.find(target)
        return [c.conn_id for c in self._connections.values() if c.device is device]

    def send_node(self, conn_id: int, node: BinaryNode) -> list[Output]:
        """Send any node on a connection past its handshake."""
        conn = self._require(conn_id)
        return self._gate(conn, self._send(conn, node))

    def stream_error(self, conn_id: int, code: int, now: float) -> list[Output]:
        """Send ``stream:error code=<code>`` (440 with ``conflict``) and close."""
        conn = self._require(conn_id)
        return self._gate(conn, self._stream_error(conn, code, now))

    def failure(self, conn_id: int, reason: int, now: float) -> list[Output]:
        """Send ``failure reason=<reason>`` and close."""
        conn = self._require(conn_id)
        out = self._send(
            conn, BinaryNode("failure", {"reason": str(reason), "location": "sandbox"})
        )
        return self._gate(conn, out + self._close(conn, now))

    def malformed_frame(self, conn_id: int) -> list[Output]:
        """Send a well-encrypted frame whose plaintext is not a binary node."""
        conn = self._require(conn_id)
        return self._gate(conn, [Send(conn_id, self._transport(conn).send(b"\x00\xff\xfe"))])

    def undecryptable_frame(self, conn_id: int) -> list[Output]:
        """Send a frame that does not decrypt (random ciphertext)."""
        conn = self._require(conn_id)
        return self._gate(conn, [Send(conn_id, encode_frame(os.urandom(48)))])

    def oversize_frame(self, conn_id: int) -> list[Output]:
        """Send a frame header declaring the largest length (16 MiB - 1) and a few bytes of it."""
        conn = self._require(conn_id)
        return self._gate(conn, [Send(conn_id, b"\xff\xff\xff" + os.urandom(64))])

    def drop(self, conn_id: int) -> list[Output]:
        """Cut the TCP connection without a websocket close (bypasses a stall)."""
        conn = self._require(conn_id)
        conn.state = ConnState.CLOSING
        return [Close(conn_id, abrupt=True)]

    def stall(self, conn_id: int) -> None:
        """Stop all traffic on a connection: input and output are held until ``resume``."""
        self._require(conn_id).stalled = True

    def resume(self, conn_id: int, now: float) -> list[Output]:
        """End a stall: what was held is sent, then what arrived meanwhile is processed."""
        conn = self._require(conn_id)
        conn.stalled = False
        out, conn.held_output = conn.held_output, []
        held, conn.held_input = conn.held_input, []
        for data in held:
            out += self.receive(conn_id, data, now)
        return out

    def refuse_logins(self, jid: str, reason: int | None = LOGGED_OUT) -> None:
        """Answer the device's logins with ``failure reason=<reason>`` (None: accept again)."""
        self.registry.find(jid).refused_login = reason

    def connections(self) -> list[ConnectionInfo]:
        """Every live connection."""
        return [
            ConnectionInfo(
                c.conn_id,
                c.state,
                c.device.jid if c.device is not None else None,
                c.routing_info,
                c.stalled,
            )
            for c in self._connections.values()
        ]

    def statistics(self) -> CoreStatistics:
        """Counters since start, and what is live now."""
        n = self._count
        return CoreStatistics(
            connections_open=len(self._connections),
            connections_total=n.connections_total,
            handshakes=n.handshakes,
            registrations=n.registrations,
            logins=n.logins,
            logins_refused=n.logins_refused,
            links=n.links,
            link_failures=n.link_failures,
            accounts=len(self.registry.accounts()),
            devices=self.registry.device_count,
            pre_key_uploads=n.pre_key_uploads,
            pings=n.pings,
            routed_intros=n.routed_intros,
            protocol_errors=n.protocol_errors,
            unknown_iqs=n.unknown_iqs,
            messages_routed=self.router.messages_routed,
            receipts_routed=self.router.receipts_routed,
            stanzas_dropped=self.router.stanzas_dropped,
            queued_stanzas=self.router.queues.total,
            contacts=len(self.contacts),
            groups=len(self.groups),
            logins_replaced=n.logins_replaced,
        )

    # --- contacts and groups ------------------------------------------------------

    def add_contact(self, name: str | None = None) -> Contact:
        """A new simulated contact (an account whose phone's keys are uploaded). Since 0.2.0."""
        return self.contacts.create(name)

    def contact_send(
        self, contact: str, to: str, text: str, now: float
    ) -> tuple[str, list[Output]]:
        """Have contact ``contact`` send ``text`` to a user or group JID; ``(id, outputs)``.

        UnknownTargetError for an unknown contact or recipient. Since 0.2.0.
        """
        sender = self.contacts.get(contact)
        msg_id, stanza = sender.send_text(to, text, self._now_ms())
        routed = self._routed(sender.device, stanza)
        reply = routed.reply
        if reply is not None and reply.attr("error"):
            raise UnknownTargetError(f"the server refused the message: error {reply.attr('error')}")
        return msg_id, self._deliver(routed.deliveries, now, 0)

    def create_group(self, subject: str, participants: list[str]) -> Group:
        """A group of accounts (user JIDs, either form); the first one creates it. Since 0.2.0."""
        if not participants:
            raise InvalidAccountError("a group needs at least its creator")
        members = [self.registry.account_of(jid).jid for jid in participants]
        return self.groups.create(subject, members[0], members[1:], int(self._wall_clock()))

    def pending(self, jid: str) -> list[BinaryNode]:
        """The stanzas waiting for device ``jid``'s ack, oldest first. Since 0.2.0."""
        return self.router.queues.pending(key_of(self.registry.find(jid)))

    # --- internals: plumbing ----------------------------------------------------

    def _live(self, conn_id: int) -> _Connection | None:
        conn = self._connections.get(conn_id)
        if conn is None or conn.state in (ConnState.CLOSING, ConnState.CLOSED):
            return None
        return conn

    def _require(self, conn_id: int) -> _Connection:
        conn = self._connections.get(conn_id)
        if conn is None:
            raise UnknownTargetError(f"no live connection {conn_id}")
        return conn

    def _gate(self, conn: _Connection, out: list[Output]) -> list[Output]:
        """Hold a stalled connection's sends and closes; pass the rest."""
        if not conn.stalled:
            return out
        mine = [o for o in out if isinstance(o, (Send, Close)) and o.conn_id == conn.conn_id]
        conn.held_output += mine
        return [o for o in out if o not in mine]

    def _transport(self, conn: _Connection) -> NoiseTransport:
        if conn.transport is None:
            raise UnknownTargetError(f"connection {conn.conn_id} has not finished its handshake")
        return conn.transport

    def _send(self, conn: _Connection, node: BinaryNode) -> list[Output]:
        return [Send(conn.conn_id, self._transport(conn).send(encode_node(node)))]

    def _close(
        self, conn: _Connection, now: float, *, abrupt: bool = False, linger: float = 0.0
    ) -> list[Output]:
        conn.state = ConnState.CLOSING
        return [*self._forget(conn), Close(conn.conn_id, abrupt=abrupt, linger=linger)]

    def _forget(self, conn: _Connection) -> list[Output]:
        for issued in conn.refs:
            self._refs.pop(issued.ref, None)
        conn.refs = []
        waiting = conn.code if conn.code_answered else None
        self._drop_code(conn)
        link, conn.link = conn.link, None
        if link is None:
            if waiting is None:
                return []
            # The phone waits for the companion's finish: it will not come.
            return [LinkFailed(waiting.ref, "connection closed before companion_finish")]
        self._count.link_failures += 1
        self.registry.remove_device(link.ticket.user, link.ticket.device_id)
        return [LinkFailed(link.ticket.ref, "connection closed before pair-device-sign")]

    def _stream_error(
        self, conn: _Connection, code: int, now: float, *, linger: float = 0.0
    ) -> list[Output]:
        children = [BinaryNode("conflict", {"type": "replaced"})] if code == 440 else None
        node = BinaryNode("stream:error", {"code": str(code)}, children)
        return self._send(conn, node) + self._close(conn, now, linger=linger)

    def _iq_id(self, conn: _Connection) -> str:
        return f"sb{conn.conn_id}.{next(conn.iq_ids)}"

    def _t(self) -> str:
        return str(int(self._wall_clock()))

    # --- internals: handshake -------------------------------------------------------

    def _receive(self, conn: _Connection, data: bytes, now: float, out: list[Output]) -> None:
        """Process ``data``, appending outputs to ``out`` as they arise.

        Outputs go straight into ``out`` so that those of good frames survive a
        bad frame later in the same message (the caller then appends the close).
        """
        if conn.transport is not None:
            conn.transport.receive_data(data)
            while conn.state not in (ConnState.CLOSING, ConnState.CLOSED):
                event = conn.transport.next_event()
                if event is NEED_DATA:
                    return
                out += self._on_node(conn, decode_node(event.payload), now)
            return
        responder = conn.responder
        responder.receive_data(data)
        while True:
            hello = responder.next_event()
            if hello is NEED_DATA:
                return
            if isinstance(hello, ClientHello):
                conn.routing_info = hello.routing_info
                if hello.routing_info is not None and hello.routing_info in self._routing_infos:
                    self._count.routed_intros += 1
                conn.state = ConnState.AWAIT_FINISH
                out.append(Send(conn.conn_id, responder.send(Hello())))
            elif isinstance(hello, ClientFinish):
                conn.transport = responder.transport
                conn.noise_key = hello.static_key
                self._count.handshakes += 1
                out += self._on_payload(conn, hello.payload, now)
                if conn.state is not ConnState.CLOSING:
                    self._receive(conn, b"", now, out)  # frames sent right behind the finish
                return

    def _on_payload(self, conn: _Connection, data: bytes, now: float) -> list[Output]:
        payload = wa_pb2.ClientPayload()
        try:
            payload.ParseFromString(data)
        except ProtobufDecodeError:
            self._count.protocol_errors += 1
            return self._failure(conn, BAD_REQUEST, now)
        if payload.HasField("devicePairingData") and not payload.passive:
            return self._on_registration(conn, payload, now)
        if payload.HasField("username"):
            return self._on_login(conn, payload, now)
        self._count.protocol_errors += 1
        return self._failure(conn, BAD_REQUEST, now)

    def _failure(self, conn: _Connection, reason: int, now: float) -> list[Output]:
        out = self._send(
            conn, BinaryNode("failure", {"reason": str(reason), "location": "sandbox"})
        )
        return out + self._close(conn, now)

    def _on_registration(
        self, conn: _Connection, payload: wa_pb2.ClientPayload, now: float
    ) -> list[Output]:
        registration = _registration(conn.noise_key, payload.devicePairingData)
        if registration is None:
            self._count.protocol_errors += 1
            return self._failure(conn, BAD_REQUEST, now)
        self._count.registrations += 1
        conn.registration = registration
        conn.state = ConnState.PAIRING
        refs = []
        cfg = self.config
        for index in range(cfg.refs_per_pairing):
            start = 0.0 if index == 0 else cfg.first_ref_lifetime + (index - 1) * cfg.ref_lifetime
            life = cfg.first_ref_lifetime if index == 0 else cfg.ref_lifetime
            ref = "2@" + base64.b64encode(os.urandom(33)).decode("ascii")
            issued = IssuedRef(ref, conn.conn_id, index, now + start, now + start + life)
            self._refs[ref] = issued
            refs.append(issued)
        conn.refs = refs
        node = BinaryNode(
            "iq",
            {"from": S_WHATSAPP_NET, "type": "set", "id": self._iq_id(conn), "xmlns": "md"},
            [BinaryNode("pair-device", {}, [BinaryNode("ref", {}, r.ref.encode()) for r in refs])],
        )
        return self._send(conn, node)

    def _on_login(
        self, conn: _Connection, payload: wa_pb2.ClientPayload, now: float
    ) -> list[Output]:
        device = self.registry.device(str(payload.username), payload.device)
        if device is None or not device.paired or device.noise_key != conn.noise_key:
            self._count.logins_refused += 1
            return self._failure(conn, LOGGED_OUT, now)
        if device.refused_login is not None:
            self._count.logins_refused += 1
            return self._failure(conn, device.refused_login, now)
        out: list[Output] = []
        for other in list(self._connections.values()):
            if other is not conn and other.device is device and self._live(other.conn_id):
                self._count.logins_replaced += 1
                out += self._gate(other, self._stream_error(other, CONNECTION_REPLACED, now))
        self._count.logins += 1
        conn.device = device
        conn.state = ConnState.LOGGED_IN
        out += self._send(conn, BinaryNode("success", {"t": self._t(), "lid": device.lid}))
        if self.config.send_edge_routing:
            info = os.urandom(12)
            self._routing_infos.add(info)
            device.routing_info = info
            routing = BinaryNode("edge_routing", {}, [BinaryNode("routing_info", {}, info)])
            out += self._send(conn, BinaryNode("ib", {}, [routing]))
        queued = self.router.queues.pending(key_of(device))
        for node in queued:
            out += self._send(conn, node)
        if self.config.send_offline_marker:
            offline = BinaryNode("offline", {"count": str(len(queued))})
            out += self._send(conn, BinaryNode("ib", {"from": S_WHATSAPP_NET}, [offline]))
        return out

    # --- internals: nodes ----------------------------------------------------------

    def _on_node(self, conn: _Connection, node: BinaryNode, now: float) -> list[Output]:
        if node.tag in ("message", "receipt", "ack") and conn.state is ConnState.LOGGED_IN:
            assert conn.device is not None
            if node.tag == "ack":
                self.router.on_ack(conn.device, node)
                return []
            routed = self._routed(conn.device, node)
            # The reply is encrypted (and so sent) before what the routing sends on to
            # others: a delivery may come back to this very connection (a contact's
            # receipt), and frames must leave in the order they were encrypted.
            out = self._send(conn, routed.reply) if routed.reply is not None else []
            return out + self._deliver(routed.deliveries, now, 0)
        if node.tag != "iq":
            return []  # ib, presence: nothing the sandbox answers
        kind = node.attr("type")
        iq_id = node.attr("id")
        if kind in ("result", "error"):
            if conn.link is not None and iq_id == conn.link.iq_id:
                return self._on_pair_device_sign(conn, node, now)
            return []
        if iq_id is None:
            raise MissingNodeError("iq[@id]", "an iq request needs an id")
        children = node.children()
        first = children[0].tag if children else None
        key = (node.attr("xmlns"), kind, first)
        if key == ("w:p", "get", "ping"):
            self._count.pings += 1
            return self._send(conn, _result(node))
        if key == ("md", "set", LINK_CODE_TAG) and conn.state is ConnState.PAIRING:
            return self._on_link_code(conn, node)
        if conn.state is ConnState.LOGGED_IN:
            assert conn.device is not None
            handler = _LOGGED_IN_IQS.get(key)
            if handler is not None:
                return self._send(conn, handler(self, conn.device, node))
        self._count.unknown_iqs += 1
        return self._send(conn, _error(node, 501, "feature-not-implemented"))

    def _on_pair_device_sign(self, conn: _Connection, node: BinaryNode, now: float) -> list[Output]:
        link = conn.link
        registration = conn.registration
        assert link is not None and registration is not None
        reason = _check_sign_reply(node, link, registration.identity_key)
        conn.link = None
        if reason is not None:
            self._count.link_failures += 1
            self.registry.remove_device(link.ticket.user, link.ticket.device_id)
            out: list[Output] = [LinkFailed(link.ticket.ref, reason)]
            return out + self._stream_error(conn, BAD_SESSION, now)
        device = self.registry.device(link.ticket.user, link.ticket.device_id)
        assert device is not None
        device.paired = True
        self._count.links += 1
        linked: list[Output] = [Linked(link.ticket.ref, device.jid, device.lid)]
        # The client reconnects on this 515; closing at once can overtake it: Baileys
        # decodes frames asynchronously and then reports the close (428), not the 515.
        restart = self._stream_error(conn, RESTART_REQUIRED, now, linger=RESTART_LINGER)
        return linked + restart

    # --- routing ---------------------------------------------------------------------

    def _routed(self, device: Device, node: BinaryNode) -> Routed:
        """Route a stanza ``device`` sent: the reply for it, and the deliveries to others."""
        t = self._t()
        if node.tag == "message":
            return self.router.on_message(device, node, t)
        if node.tag == "receipt":
            return self.router.on_receipt(device, node, t)
        return Routed(None)

    def _deliver(self, deliveries: list[Delivery], now: float, depth: int) -> list[Output]:
        """Queue each stanza for its device and send it where the device is logged in.

        A contact takes its stanza at once; what it answers (receipts, resends) is
        routed in turn. Contacts answer messages and retry receipts only, so the
        chain ends; ``depth`` guards it anyway.
        """
        out: list[Output] = []
        for delivery in deliveries:
            contact = self.contacts.of_device(delivery.device)
            if contact is not None:
                if depth >= _MAX_CONTACT_DEPTH:
                    continue
                for answer in contact.receive(delivery.node, self._now_ms()):
                    routed = self._routed(delivery.device, answer)
                    out += self._deliver(routed.deliveries, now, depth + 1)
                continue
            self.router.queues.push(key_of(delivery.device), delivery.node)
            for conn in self._connections.values():
                if conn.device is delivery.device and conn.state is ConnState.LOGGED_IN:
                    out += self._gate(conn, self._send(conn, delivery.node))
        return out

    def _now_ms(self) -> int:
        return int(self._wall_clock() * 1000)

    # --- iq handlers (logged in) ---------------------------------------------------

    def _iq_usync(self, device: Device, node: BinaryNode) -> BinaryNode:
        try:
            return _result(node, usync_result(self.registry, node))
        except MissingNodeError as exc:
            return _error(node, 400, str(exc))

    def _iq_key_bundles(self, device: Device, node: BinaryNode) -> BinaryNode:
        return _result(node, key_bundle_result(self.registry, node))

    def _iq_group(self, device: Device, node: BinaryNode) -> BinaryNode:
        group = self.groups.get(node.attr("to") or "")
        if group is None:
            return _error(node, 404, "item-not-found")
        attrs = {"from": group.jid, "type": "result", "id": node.require_attr("id")}
        return BinaryNode("iq", attrs, [group.metadata()])

    def _iq_count(self, device: Device, node: BinaryNode) -> BinaryNode:
        return _result(node, [BinaryNode("count", {"value": str(device.pre_key_count)})])

    def _iq_upload(self, device: Device, node: BinaryNode) -> BinaryNode:
        try:
            keys, signed = _parse_upload(node, device)
        except _BadRequest as exc:
            return _error(node, 400, str(exc))
        device.store_pre_keys(keys, signed)
        self._count.pre_key_uploads += 1
        return _result(node)

    def _iq_rotate(self, device: Device, node: BinaryNode) -> BinaryNode:
        try:
            signed = _parse_skey(node.require_child("rotate", "skey"), device.identity_key)
        except (_BadRequest, MissingNodeError) as exc:
            return _error(node, 400, str(exc))
        device.signed_pre_key = signed
        return _result(node)

    def _iq_digest(self, device: Device, node: BinaryNode) -> BinaryNode:
        digest = device.digest()
        if digest is None:
            return _error(node, 404, "item-not-found")
        skey = digest.signed_pre_key
        content = [
            BinaryNode("type", {}, KEY_BUNDLE_TYPE),
            BinaryNode("registration", {}, digest.registration_id.to_bytes(4, "big")),
            BinaryNode("identity", {}, digest.identity),
            BinaryNode(
                "skey",
                {},
                [
                    BinaryNode("id", {}, skey.key_id.to_bytes(3, "big")),
                    BinaryNode("value", {}, skey.public),
                    BinaryNode("signature", {}, skey.signature),
                ],
            ),
            BinaryNode(
                "list", {}, [BinaryNode("id", {}, i.to_bytes(3, "big")) for i in digest.pre_key_ids]
            ),
            BinaryNode("hash", {}, digest.hash),
        ]
        return _result(node, [BinaryNode("digest", {}, content)])

    def _iq_passive(self, device: Device, node: BinaryNode) -> BinaryNode:
        return _result(node)

    def _iq_tokens(self, device: Device, node: BinaryNode) -> BinaryNode:
        # Baileys issues privacy tokens after a send; the sandbox keeps none.
        return _result(node)

    def _iq_props(self, device: Device, node: BinaryNode) -> BinaryNode:
        return _result(node, [BinaryNode("props", {"protocol": "1"})])

    def _iq_blocklist(self, device: Device, node: BinaryNode) -> BinaryNode:
        return _result(node, [BinaryNode("list", {})])

    def _iq_privacy(self, device: Device, node: BinaryNode) -> BinaryNode:
        return _result(node, [BinaryNode("privacy", {})])


_Handler = Callable[[ServerCore, Device, BinaryNode], BinaryNode]
_LOGGED_IN_IQS: dict[tuple[str | None, str | None, str | None], _Handler] = {
    ("encrypt", "get", "count"): ServerCore._iq_count,
    ("encrypt", "set", "registration"): ServerCore._iq_upload,
    ("encrypt", "set", "rotate"): ServerCore._iq_rotate,
    ("encrypt", "get", "digest"): ServerCore._iq_digest,
    ("passive", "set", "active"): ServerCore._iq_passive,
    ("passive", "set", "passive"): ServerCore._iq_passive,
    ("abt", "get", "props"): ServerCore._iq_props,
    ("blocklist", "get", None): ServerCore._iq_blocklist,
    ("privacy", "get", "privacy"): ServerCore._iq_privacy,
    ("privacy", "set", "tokens"): ServerCore._iq_tokens,
    ("usync", "get", "usync"): ServerCore._iq_usync,
    ("encrypt", "get", "key"): ServerCore._iq_key_bundles,
    ("w:g2", "get", "query"): ServerCore._iq_group,
}
#: How deep contacts' answers may chain (a message → receipt → nothing).
_MAX_CONTACT_DEPTH = 4


class _BadRequest(ValueError):
    """An iq whose content breaks the rules; answered with error 400 naming what."""


def _result(request: BinaryNode, content: list[BinaryNode] | None = None) -> BinaryNode:
    attrs = {"from": S_WHATSAPP_NET, "type": "result", "id": request.require_attr("id")}
    return BinaryNode("iq", attrs, content)


def _error(request: BinaryNode, code: int, text: str) -> BinaryNode:
    attrs = {"from": S_WHATSAPP_NET, "type": "error", "id": request.require_attr("id")}
    return BinaryNode("iq", attrs, [BinaryNode("error", {"code": str(code), "text": text})])


def _registration(
    noise_key: bytes, data: wa_pb2.ClientPayload.DevicePairingRegistrationData
) -> Registration | None:
    """The registration's facts, or None if they break the rules (sizes, skey signature)."""
    sizes = {"eRegid": 4, "eKeytype": 1, "eIdent": 32, "eSkeyId": 3, "eSkeyVal": 32, "eSkeySig": 64}
    for name, size in sizes.items():
        if len(getattr(data, name)) != size:
            return None
    if data.eKeytype != KEY_BUNDLE_TYPE:
        return None
    identity = bytes(data.eIdent)
    signed = SignedPreKey(
        int.from_bytes(data.eSkeyId, "big"), bytes(data.eSkeyVal), bytes(data.eSkeySig)
    )
    if not verify(identity, KEY_BUNDLE_TYPE + signed.public, signed.signature):
        return None
    props = wa_pb2.DeviceProps()
    try:
        props.ParseFromString(data.deviceProps)
    except ProtobufDecodeError:
        return None
    return Registration(
        noise_key=noise_key,
        identity_key=identity,
        registration_id=int.from_bytes(data.eRegid, "big"),
        signed_pre_key=signed,
        platform=props.os or "unknown",
    )


def _check_sign_reply(node: BinaryNode, link: _PendingLink, identity_key: bytes) -> str | None:
    """Why the client's pair-device-sign reply is wrong, or None if it is right."""
    if node.attr("type") != "result":
        return "the client answered pair-success with an error"
    identity_node = node.child("pair-device-sign")
    identity_node = identity_node.child("device-identity") if identity_node else None
    if identity_node is None or not isinstance(identity_node.content, bytes):
        return "pair-device-sign > device-identity missing"
    if identity_node.attr("key-index") != str(link.ticket.key_index):
        return f"key-index {identity_node.attr('key-index')!r}, expected {link.ticket.key_index}"
    try:
        reply = adv.SignedDeviceIdentity.decode(identity_node.content)
    except adv.AdvError as exc:
        return str(exc)
    if reply.details != link.signed.details:
        return "the signed details differ from those in pair-success"
    if reply.account_signature != link.signed.account_signature:
        return "the account signature differs from the one in pair-success"
    if reply.account_signature_key:
        return "the reply still carries accountSignatureKey"
    try:
        adv.check_device_signature(reply, identity_key, link.signed.account_signature_key)
    except adv.AdvError as exc:
        return str(exc)
    return None


def _parse_skey(node: BinaryNode, identity: bytes) -> SignedPreKey:
    key_id = _sized(node, "id", 3)
    public = _sized(node, "value", 32)
    signature = _sized(node, "signature", 64)
    if not verify(identity, KEY_BUNDLE_TYPE + public, signature):
        raise _BadRequest("skey signature does not verify under the device identity")
    return SignedPreKey(int.from_bytes(key_id, "big"), public, signature)


def _parse_upload(node: BinaryNode, device: Device) -> tuple[dict[int, bytes], SignedPreKey]:
    try:
        registration = int.from_bytes(_sized(node, "registration", 4), "big")
        if _sized(node, "type", 1) != KEY_BUNDLE_TYPE:
            raise _BadRequest("type must be 05")
        if _sized(node, "identity", 32) != device.identity_key:
            raise _BadRequest("identity is not the device's registered identity key")
        if registration != device.registration_id:
            raise _BadRequest(
                f"registration {registration} is not the registered {device.registration_id}"
            )
        keys: dict[int, bytes] = {}
        for key in node.require_child("list").children("key"):
            keys[int.from_bytes(_sized(key, "id", 3), "big")] = _sized(key, "value", 32)
        signed = _parse_skey(node.require_child("skey"), device.identity_key)
    except MissingNodeError as exc:
        raise _BadRequest(str(exc)) from exc
    return keys, signed


def _sized(parent: BinaryNode, tag: str, size: int) -> bytes:
    child = parent.child(tag)
    if child is None or not isinstance(child.content, bytes) or len(child.content) != size:
        raise _BadRequest(f"{parent.tag}/{tag} must hold {size} bytes")
    return child.content


__all__ = [
    "BAD_SESSION",
    "CONNECTION_REPLACED",
    "LOGGED_OUT",
    "RESTART_REQUIRED",
    "Close",
    "ConnState",
    "ConnectionInfo",
    "CoreStatistics",
    "DecodeError",
    "IssuedRef",
    "LinkFailed",
    "Linked",
    "Output",
    "Registration",
    "SandboxConfig",
    "ScanTicket",
    "Send",
    "ServerCore",
]
