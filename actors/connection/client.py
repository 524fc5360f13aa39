"""The sans-IO client connection: Noise + framing + node codec + pairing + login steps.

Bytes in, events and bytes out, no sockets, no clocks (the h11/wsproto shape).
The connection actor owns the socket and the timers and drives it so::

    conn = ClientConnection(creds=creds, identity=identity, root=root)
    await ws.send(conn.start())
    while True:
        conn.receive_data(await ws.receive())
        for event in conn.events():          # or next_event() until NEED_DATA
            ...react (see below)...
        if out := conn.data_to_send():       # replies the core queued itself
            await ws.send(out)

Write bytes in the order they are handed out. Every method that returns bytes
returns the queued replies first, so the peer always receives frames in the
order they were encrypted.

What the actor does per event (see ``client_state`` for all of them):

- ``QrCode``: show it; after ``ttl`` seconds call ``rotate_qr()``; a ``Closed``
  answer (refs exhausted, 408) ends the connection;
- ``PairingCode`` (instead of QRs when ``pairing_phone`` is set): show it; after
  ``ttl`` seconds unused call ``expire_code()`` (408); ``PairingCodeUsed``: the
  phone answered, pair-success follows;
- ``PairSuccess``: commit ``update`` durably, *then* send ``confirm_pairing()``;
- ``RestartRequired``: reconnect at once (a fresh ClientConnection with the new creds);
- ``LoginSuccess``: store ``lid`` in ``me``; the count iq is already queued;
- ``PreKeyCount``: decide with ``prekeys.upload_count``; either plan
  (``prekeys.plan_upload``), commit keys + counters in one transaction, then
  send ``upload_prekeys(keys)``; or send ``skip_prekey_upload()``;
- ``PreKeyUploadResult(ok=False)``: retry ``upload_prekeys`` or skip;
- ``Opened``: connection open; ``digest_ok`` False means upload 5 more keys;
- ``Ping``: send ``send_node(event.response())``; ``RoutingInfo``: store it;
- ``StreamError`` / ``Closed``: close the socket; ``.policy`` says what next.

A ``RemoteProtocolError`` from ``next_event()`` closes the connection: its
``error_status_hint`` is the close code. Since 0.1.0.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from actors.connection.binary import SERVER_JID, BinaryNode, NodeTemplate, decode_node, encode_node
from actors.connection.certs import WHATSAPP_ROOT, RootKey
from actors.connection.client_state import (
    LOGIN_TRANSITIONS,
    TRANSITIONS,
    ClientEvent,
    ClientState,
    Closed,
    DisconnectReason,
    HandshakeComplete,
    IqResult,
    LoginStep,
    LoginSuccess,
    LoginTrigger,
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
    Trigger,
)
from actors.connection.errors import BAD_SESSION, LocalProtocolError, RemoteProtocolError
from actors.connection.framing import DEFAULT_MAX_FRAME_SIZE
from actors.connection.noise import (
    NEED_DATA,
    Finish,
    Hello,
    NeedData,
    NoiseInitiator,
    NoiseTransport,
    ServerHello,
)
from actors.connection.pairing import (
    VerifiedPairing,
    iq_result,
    parse_pair_device,
    verify_pair_success,
)
from actors.connection.pairing_code import (
    LINK_CODE_TAG,
    CodeRequest,
    display_code,
    new_code,
    notification_ack,
    parse_primary_hello,
)
from actors.connection.payload import ClientIdentity, client_payload
from actors.connection.prekeys import (
    IqError,
    active_iq,
    count_iq,
    digest_iq,
    parse_count_result,
    parse_digest_result,
    upload_iq,
)
from actors.connection.qr import FIRST_QR_TTL, NEXT_QR_TTL, build_qr
from stores.creds import AuthCreds, KeyPair

#: Baileys' stream:error child tags with a code of their own.
_STREAM_ERROR_CODES = {"conflict": int(DisconnectReason.CONNECTION_REPLACED)}
_MAX_CODE_DIGITS = 6


class IdGenerator:
    """Iq ids as Baileys makes them: ``<uint16>.<uint16>-<n>``, n counting from 1."""

    def __init__(self, prefix: str | None = None) -> None:
        if prefix is None:
            raw = secrets.token_bytes(4)
            prefix = f"{int.from_bytes(raw[:2], 'big')}.{int.from_bytes(raw[2:], 'big')}-"
        self.prefix = prefix
        self._epoch = 1

    def next(self) -> str:
        """A fresh id."""
        value = f"{self.prefix}{self._epoch}"
        self._epoch += 1
        return value


def keepalive_node(iq_id: str) -> BinaryNode:
    """``iq id to=@s.whatsapp.net type=get xmlns=w:p > ping`` (Baileys' keepalive)."""
    return BinaryNode(
        "iq",
        {"id": iq_id, "to": SERVER_JID, "type": "get", "xmlns": "w:p"},
        [BinaryNode("ping")],
    )


_KEEPALIVE = NodeTemplate(keepalive_node)
"""``keepalive_node``'s frame, encoded once: a ping encodes only its id."""


@dataclass(frozen=True)
class ClientStatistics:
    """A snapshot of a connection, for logs and tests."""

    state: ClientState
    login_step: LoginStep | None
    frames_sent: int
    frames_received: int
    pending_queries: int
    qr_refs_left: int


class ClientConnection:
    """One connection attempt of a linked device, from intro to close. Sans-IO.

    ``creds`` is read, never changed: pairing does not change it here (the actor
    commits ``PairSuccess.update`` and reconnects), and the one change made here
    (a pairing code's secret) goes into a copy, so the caller's object may be shared.
    The handshake state is dropped once the transport is up. ``root`` is the trust anchor of the
    server's certificate chain; ``now`` (unix seconds), when given, also checks
    validity windows. ``ephemeral`` and ``id_prefix`` exist for tests.
    ``qr_ttl`` overrides both QR lifetimes (Baileys' ``qrTimeout``).
    ``pairing_phone`` (digits): a new device asks for a pairing code for that
    number instead of showing QRs; ``pairing_code`` fixes the code (tests).
    """

    def __init__(
        self,
        *,
        creds: AuthCreds,
        identity: ClientIdentity | None = None,
        root: RootKey = WHATSAPP_ROOT,
        now: int | None = None,
        ephemeral: KeyPair | None = None,
        id_prefix: str | None = None,
        qr_ttl: float | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        pairing_phone: str | None = None,
        pairing_code: str | None = None,
    ) -> None:
        self._creds = creds
        self._identity = identity if identity is not None else ClientIdentity()
        self._noise: NoiseInitiator | None = NoiseInitiator(
            noise_key=creds.noise_key,
            ephemeral=ephemeral,
            routing_info=creds.routing_info,
            root=root,
            now=now,
            max_frame_size=max_frame_size,
        )
        self._transport: NoiseTransport | None = None
        self._ids = IdGenerator(id_prefix)
        self._qr_ttl = qr_ttl
        self.state = ClientState.CONNECTING
        self.login_step: LoginStep | None = None
        self._outbox = bytearray()
        self._error: RemoteProtocolError | None = None
        self._refs: list[str] = []
        self._qr_index = 0
        self._pairing_phone = pairing_phone
        self._fixed_code = pairing_code
        self._code: CodeRequest | None = None
        self._code_iqs: dict[str, str] = {}
        self._code_ttl = 0.0
        self._code_used = False
        self._pairing: VerifiedPairing | None = None
        self._pairing_confirmed = False
        self._login_iqs: dict[str, LoginStep] = {}
        self._uploads: set[str] = set()
        self._queries: set[str] = set()

    def __repr__(self) -> str:
        return f"ClientConnection(state={self.state.name}, login_step={self.login_step})"

    # --- moves ---------------------------------------------------------------

    def _move(self, trigger: Trigger) -> None:
        target = TRANSITIONS.get((self.state, trigger))
        if target is None:
            raise LocalProtocolError(f"client: {trigger.value} not allowed in {self.state.name}")
        self.state = target

    def _step(self, trigger: LoginTrigger, *, remote: bool = False) -> None:
        step = self.login_step
        target = LOGIN_TRANSITIONS.get((step, trigger)) if step is not None else None
        if target is None:
            where = step.name if step is not None else self.state.name
            message = f"client login: {trigger.value} not expected in {where}"
            if remote:
                raise RemoteProtocolError(message, error_status_hint=BAD_SESSION)
            raise LocalProtocolError(message)
        self.login_step = target

    def _end(self, event: ClientEvent) -> ClientEvent:
        if self.state is not ClientState.CLOSED:
            self._move(Trigger.ENDED)
        self.login_step = None
        return event

    # --- public API: sending ---------------------------------------------------

    def start(self) -> bytes:
        """The intro and ClientHello: the first bytes on the socket."""
        self._move(Trigger.START)
        return self._handshake().send(Hello())

    @property
    def has_data_to_send(self) -> bool:
        """Whether ``data_to_send()`` would return bytes (cheap: nothing is copied)."""
        return bool(self._outbox)

    def data_to_send(self) -> bytes:
        """Bytes the core queued itself (ClientFinish, acks, login iqs); write them now."""
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    def send_node(self, node: BinaryNode) -> bytes:
        """Queued bytes, then ``node`` encrypted and framed (only once the handshake is done)."""
        self._require_sendable()
        self._queue(node)
        return self.data_to_send()

    def query(self, node: BinaryNode) -> tuple[str, bytes]:
        """Send an iq and track its id: its answer comes back as ``IqResult``.

        An ``id`` attribute is added when the node has none (Baileys appends it last).
        """
        if node.tag != "iq":
            raise LocalProtocolError(f"client: query() sends iq nodes, got {node.tag!r}")
        iq_id = node.attrs.get("id")
        if not iq_id:
            iq_id = self._ids.next()
            node = BinaryNode(node.tag, {**node.attrs, "id": iq_id}, node.content)
        data = self.send_node(node)
        self._queries.add(iq_id)
        return iq_id, data

    def keepalive_ping(self) -> tuple[str, bytes]:
        """The keepalive iq (every 30 s while open); its answer is an ``IqResult``.

        The same bytes ``query(keepalive_node(id))`` sends, written from a template:
        only the id is encoded each time.
        """
        self._require_sendable()
        iq_id = self._ids.next()
        self._queue_payload(_KEEPALIVE.encode(iq_id))
        self._queries.add(iq_id)
        return iq_id, self.data_to_send()

    def next_id(self) -> str:
        """A fresh iq id."""
        return self._ids.next()

    def rotate_qr(self) -> QrCode | Closed:
        """The next QR once the current one expired; ``Closed`` (408) when refs ran out."""
        if self.state is not ClientState.PAIRING or self._pairing is not None or not self._qr_index:
            raise LocalProtocolError(f"client: no QR to rotate in {self.state.name}")
        if not self._refs:
            closed = Closed(DisconnectReason.TIMED_OUT, "QR refs attempts ended")
            self._end(closed)
            return closed
        return self._next_qr()

    def expire_code(self) -> Closed:
        """The code's time ran out (unused, or no pair-success after the phone took it): 408."""
        if self.state is not ClientState.PAIRING or self._code is None:
            raise LocalProtocolError(f"client: no pairing code to expire in {self.state.name}")
        if self._code_used:
            detail = "no pair-success after the phone took the code"
        else:
            detail = "pairing code expired unused"
        closed = Closed(DisconnectReason.TIMED_OUT, detail)
        self._end(closed)
        return closed

    def confirm_pairing(self) -> bytes:
        """The pair-device-sign reply: call once the PairSuccess update is durable."""
        if self.state is not ClientState.PAIRING or self._pairing is None:
            raise LocalProtocolError("client: confirm_pairing() needs a PairSuccess first")
        if self._pairing_confirmed:
            raise LocalProtocolError("client: pairing already confirmed")
        self._pairing_confirmed = True
        return self.send_node(self._pairing.reply)

    def upload_prekeys(self, keys: Mapping[int, KeyPair]) -> bytes:
        """The pre-key upload iq for ``keys`` (already durable!); answered by PreKeyUploadResult.

        During login: only after ``PreKeyCount`` (or a failed upload). When open:
        any time (after ``Opened(digest_ok=False)`` or a server request).
        """
        if not keys:
            raise LocalProtocolError("client: upload_prekeys() needs at least one key")
        if self.state is ClientState.LOGGING_IN:
            self._step(LoginTrigger.UPLOAD)
        elif self.state is not ClientState.OPEN:
            raise LocalProtocolError(f"client: cannot upload pre-keys in {self.state.name}")
        iq_id = self._ids.next()
        self._uploads.add(iq_id)
        return self.send_node(upload_iq(iq_id, self._creds, keys))

    def skip_prekey_upload(self) -> bytes:
        """Go on without uploading (server has enough, or the upload kept failing)."""
        if self.state is not ClientState.LOGGING_IN:
            raise LocalProtocolError(f"client: nothing to skip in {self.state.name}")
        self._step(LoginTrigger.SKIP_UPLOAD)
        return self._send_active()

    def close(self, reason: DisconnectReason = DisconnectReason.CONNECTION_CLOSED) -> Closed:
        """End the connection on our side (the actor then closes the socket)."""
        closed = Closed(reason, "closed locally")
        if self.state is not ClientState.CLOSED:
            self._end(closed)
        return closed

    # --- public API: receiving --------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the socket. Ignored once CLOSED (the stream is over)."""
        if self._error is not None:
            raise self._error
        if self.state is ClientState.CLOSED:
            return
        if self.state is ClientState.CONNECTING:
            raise LocalProtocolError("client: receive_data() before start()")
        if self._transport is not None:
            self._guard(self._transport.receive_data, data)
        else:
            self._guard(self._handshake().receive_data, data)

    def next_event(self) -> ClientEvent | NeedData:
        """The next event, or NEED_DATA; RemoteProtocolError (connection closed) on bad input."""
        if self._error is not None:
            raise self._error
        while True:
            if self.state in (ClientState.CLOSED, ClientState.CONNECTING):
                return NEED_DATA
            try:
                event = self._read()
            except RemoteProtocolError as exc:
                self._fail(exc)
                raise
            if event is NEED_DATA:
                return NEED_DATA
            if event is not None:
                return event

    def events(self) -> list[ClientEvent]:
        """Every event available now. An error after good events is raised by the next call."""
        out: list[ClientEvent] = []
        try:
            while not isinstance(event := self.next_event(), NeedData):
                out.append(event)
        except RemoteProtocolError:
            if not out:
                raise
        return out

    def statistics(self) -> ClientStatistics:
        """State, login step, frame counters, queries in flight, QR refs left."""
        stats = self._transport.statistics() if self._transport is not None else None
        return ClientStatistics(
            state=self.state,
            login_step=self.login_step,
            frames_sent=stats.frames_sent if stats else 0,
            frames_received=stats.frames_received if stats else 0,
            pending_queries=len(self._queries),
            qr_refs_left=len(self._refs),
        )

    # --- internals ------------------------------------------------------------

    def _guard(self, fn: Callable[[bytes], None], data: bytes) -> None:
        try:
            fn(data)
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise

    def _fail(self, exc: RemoteProtocolError) -> None:
        self._error = exc
        if self.state is not ClientState.CLOSED:
            self._move(Trigger.ENDED)
        self.login_step = None

    def _handshake(self) -> NoiseInitiator:
        if self._noise is None:
            raise LocalProtocolError(f"client: the handshake is over in {self.state.name}")
        return self._noise

    def _require_sendable(self) -> None:
        if self.state not in (ClientState.PAIRING, ClientState.LOGGING_IN, ClientState.OPEN):
            raise LocalProtocolError(f"client: cannot send a node in {self.state.name}")

    def _queue(self, node: BinaryNode) -> None:
        self._queue_payload(encode_node(node))

    def _queue_payload(self, payload: bytes) -> None:
        """An encoded node, encrypted and framed into the outbox."""
        if self._transport is None:
            raise LocalProtocolError(f"client: no transport in {self.state.name}")
        self._outbox += self._transport.send(payload)

    def _read(self) -> ClientEvent | NeedData | None:
        if self._transport is None:
            return self._read_handshake()
        frame = self._transport.next_event()
        if isinstance(frame, NeedData):
            return NEED_DATA
        return self._dispatch(decode_node(frame.payload))

    def _read_handshake(self) -> ClientEvent | NeedData:
        noise = self._handshake()
        event = noise.next_event()
        if isinstance(event, NeedData):
            return NEED_DATA
        if not isinstance(event, ServerHello):  # an initiator only ever reads a ServerHello
            raise RemoteProtocolError(f"client: unexpected handshake event {type(event).__name__}")
        registering = not (self._creds.me and self._creds.me.get("id"))
        payload = client_payload(self._creds, self._identity)
        self._outbox += noise.send(Finish(payload))
        self._transport = noise.transport
        # The handshake's keys, hashes and certificate are spent: keep only the transport.
        self._noise = None
        self._move(Trigger.SENT_REGISTRATION if registering else Trigger.SENT_LOGIN)
        if not registering:
            self.login_step = LoginStep.AWAIT_SUCCESS
        return HandshakeComplete(server_static=event.static_key, registering=registering)

    def _dispatch(self, node: BinaryNode) -> ClientEvent | None:
        tag = node.tag
        if tag == "stream:error":
            return self._end(_stream_error(node))
        if tag == "failure":
            code = _code(node.attrs.get("reason"), "failure@reason")
            return self._end(StreamError(code=code, text="failure", node=node))
        if tag == "xmlstreamend":
            return self._end(
                Closed(DisconnectReason.CONNECTION_CLOSED, "connection terminated by server")
            )
        if tag == "success":
            return self._on_success(node)
        if tag == "iq":
            return self._on_iq(node)
        if self._is_primary_hello(node):
            return self._on_primary_hello(node)
        if tag == "ib":
            if node.child("downgrade_webclient") is not None:
                # Baileys: "Multi-device beta not joined", multideviceMismatch.
                return self._end(
                    Closed(DisconnectReason.MULTIDEVICE_MISMATCH, "server sent downgrade_webclient")
                )
            edge = node.child("edge_routing")
            if edge is not None:
                info = edge.child("routing_info")
                if info is not None and isinstance(info.content, bytes) and info.content:
                    return RoutingInfo(info.content)
                raise RemoteProtocolError(
                    "ib/edge_routing: no routing_info bytes", error_status_hint=BAD_SESSION
                )
        return NodeReceived(node)

    def _on_success(self, node: BinaryNode) -> ClientEvent:
        if self.state is not ClientState.LOGGING_IN:
            raise RemoteProtocolError(
                f"client: success received in {self.state.name}", error_status_hint=BAD_SESSION
            )
        self._step(LoginTrigger.SUCCESS, remote=True)
        iq_id = self._ids.next()
        self._login_iqs[iq_id] = LoginStep.AWAIT_COUNT
        self._queue(count_iq(iq_id))
        t = node.attrs.get("t")
        return LoginSuccess(
            attrs=dict(node.attrs),
            lid=node.attrs.get("lid"),
            t=int(t) if t is not None and t.isdecimal() and len(t) < 20 else None,
        )

    def _on_iq(self, node: BinaryNode) -> ClientEvent | None:
        kind = node.attrs.get("type")
        iq_id = node.attrs.get("id")
        if kind in ("result", "error") and iq_id is not None:
            if iq_id in self._code_iqs:
                return self._on_code_result(self._code_iqs.pop(iq_id), node)
            if iq_id in self._login_iqs:
                return self._on_login_result(self._login_iqs.pop(iq_id), node)
            if iq_id in self._uploads:
                self._uploads.discard(iq_id)
                return self._on_upload_result(node)
            if iq_id in self._queries:
                self._queries.discard(iq_id)
                return IqResult(iq_id=iq_id, node=node)
        if kind == "get" and node.attrs.get("xmlns") == "urn:xmpp:ping" and iq_id:
            return Ping(iq_id)
        if node.child("pair-device") is not None and kind == "set":
            return self._on_pair_device(node)
        if node.child("pair-success") is not None:
            return self._on_pair_success(node)
        return NodeReceived(node)

    def _is_primary_hello(self, node: BinaryNode) -> bool:
        return (
            node.tag == "notification"
            and node.attrs.get("type") == LINK_CODE_TAG
            and self._pairing_phone is not None
            and self.state is ClientState.PAIRING
        )

    def _on_pair_device(self, node: BinaryNode) -> ClientEvent | None:
        if self.state is not ClientState.PAIRING or self._pairing is not None:
            raise RemoteProtocolError(
                f"client: pair-device received in {self.state.name}", error_status_hint=BAD_SESSION
            )
        parsed = parse_pair_device(node)
        self._queue(iq_result(parsed.iq_id))
        self._refs = list(parsed.refs)
        self._qr_index = 0
        if not self._refs:
            return self._end(Closed(DisconnectReason.TIMED_OUT, "pair-device carried no refs"))
        if self._pairing_phone is not None:
            self._request_code()  # PairingCode comes with the server's answer
            return None
        return self._next_qr()

    # --- pairing by code ----------------------------------------------------------

    def _request_code(self) -> None:
        """Send companion_hello once (a repeated pair-device keeps the first code)."""
        if self._code is not None:
            return
        assert self._pairing_phone is not None  # only called with one
        creds = self._creds
        self._code = CodeRequest(
            phone=self._pairing_phone,
            code=self._fixed_code or new_code(),
            ephemeral=creds.pairing_ephemeral_key_pair,
            identity=creds.signed_identity_key,
        )
        # The code lives as long as the refs' QRs would have, then the attempt ends.
        count = len(self._refs)
        if self._qr_ttl is not None:
            self._code_ttl = self._qr_ttl * count
        else:
            self._code_ttl = FIRST_QR_TTL + NEXT_QR_TTL * (count - 1)
        iq_id = self._ids.next()
        self._code_iqs[iq_id] = "companion_hello"
        self._queue(self._code.hello(iq_id, creds.noise_key.public, self._identity.browser))

    def _on_code_result(self, stage: str, node: BinaryNode) -> ClientEvent | None:
        if node.attrs.get("type") != "result":
            error = node.child("error")
            why = f"{error.attrs.get('code')} {error.attrs.get('text')}" if error else "no reason"
            detail = f"the server refused the pairing code {stage}: {why}"
            return self._end(Closed(DisconnectReason.BAD_SESSION, detail))
        if stage == "companion_hello" and self._code is not None:
            return PairingCode(code=display_code(self._code.code), ttl=self._code_ttl)
        return None

    def _on_primary_hello(self, node: BinaryNode) -> ClientEvent:
        code = self._code
        if self.state is not ClientState.PAIRING or code is None or self._pairing is not None:
            raise RemoteProtocolError(
                f"client: link code notification received in {self.state.name} without a code",
                error_status_hint=BAD_SESSION,
            )
        hello = parse_primary_hello(node)
        self._queue(notification_ack(node))
        iq_id = self._ids.next()
        finish, secret = code.finish(iq_id, hello)
        # pair-success is HMAC'd with this secret; it becomes durable with the identity.
        # Into a copy: the caller's creds object is never changed.
        self._creds = self._creds.copy()
        self._creds.adv_secret_key = secret
        self._creds.registered = True
        self._code_used = True
        self._code_iqs[iq_id] = "companion_finish"
        self._queue(finish)
        return PairingCodeUsed()

    def _next_qr(self) -> QrCode:
        ref = self._refs.pop(0)
        creds = self._creds
        if self._qr_ttl is not None:
            ttl = self._qr_ttl
        else:
            ttl = FIRST_QR_TTL if self._qr_index == 0 else NEXT_QR_TTL
        qr = build_qr(
            ref,
            creds.noise_key.public,
            creds.signed_identity_key.public,
            creds.adv_secret_key,
            self._identity.browser,
        )
        event = QrCode(qr=qr, ref=ref, ttl=ttl, index=self._qr_index)
        self._qr_index += 1
        return event

    def _on_pair_success(self, node: BinaryNode) -> ClientEvent:
        if self.state is not ClientState.PAIRING or self._pairing is not None:
            raise RemoteProtocolError(
                f"client: pair-success received in {self.state.name}",
                error_status_hint=BAD_SESSION,
            )
        verified = verify_pair_success(node, self._creds)
        self._pairing = verified
        self._refs = []
        return PairSuccess(
            update=verified.update,
            iq_id=verified.iq_id,
            key_index=verified.key_index,
            server_time=verified.server_time,
        )

    def _on_login_result(self, step: LoginStep, node: BinaryNode) -> ClientEvent | None:
        if step is LoginStep.AWAIT_COUNT:
            self._step(LoginTrigger.COUNT_RESULT, remote=True)
            try:
                count: int | None = parse_count_result(node)
            except IqError:
                count = None  # Baileys logs it and skips the upload
            return PreKeyCount(count)
        if step is LoginStep.AWAIT_ACTIVE:
            self._step(LoginTrigger.ACTIVE_RESULT, remote=True)
            if node.attrs.get("type") == "error":
                # Baileys: a failed passive iq skips the digest and opens anyway.
                self.login_step = None
                self._move(Trigger.OPENED)
                return Opened(digest_ok=None)
            iq_id = self._ids.next()
            self._login_iqs[iq_id] = LoginStep.AWAIT_DIGEST
            self._queue(digest_iq(iq_id))
            return None
        # AWAIT_DIGEST: the last login step.
        try:
            digest_ok: bool | None = parse_digest_result(node)
        except IqError:
            digest_ok = None  # Baileys logs it and opens
        self.login_step = None
        self._move(Trigger.OPENED)
        return Opened(digest_ok=digest_ok)

    def _on_upload_result(self, node: BinaryNode) -> ClientEvent:
        ok = node.attrs.get("type") == "result"
        error = node.child("error")
        code = error.attrs.get("code") if error is not None and not ok else None
        if self.state is ClientState.LOGGING_IN:
            self._step(LoginTrigger.UPLOAD_OK if ok else LoginTrigger.UPLOAD_FAILED, remote=True)
            if ok:
                self._send_active_queued()
        return PreKeyUploadResult(ok=ok, error_code=code)

    def _send_active_queued(self) -> None:
        iq_id = self._ids.next()
        self._login_iqs[iq_id] = LoginStep.AWAIT_ACTIVE
        self._queue(active_iq(iq_id))

    def _send_active(self) -> bytes:
        self._send_active_queued()
        return self.data_to_send()


def _code(text: str | None, where: str) -> int:
    if text is None:
        return int(DisconnectReason.BAD_SESSION)
    if not text.isdecimal() or len(text) > _MAX_CODE_DIGITS:
        raise RemoteProtocolError(
            f"{where}: {text[:20]!r} is not a status code", error_status_hint=BAD_SESSION
        )
    return int(text)


def _stream_error(node: BinaryNode) -> RestartRequired | StreamError:
    children = node.children()
    text = children[0].tag if children else "unknown"
    code_attr = node.attrs.get("code")
    if code_attr is not None:
        code = _code(code_attr, "stream:error@code")
    else:
        code = _STREAM_ERROR_CODES.get(text, int(DisconnectReason.BAD_SESSION))
    if code == DisconnectReason.RESTART_REQUIRED:
        return RestartRequired(code)
    return StreamError(code=code, text=text, node=node)


__all__ = [
    "ClientConnection",
    "ClientStatistics",
    "IdGenerator",
    "keepalive_node",
]
