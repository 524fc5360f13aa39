"""The WhatsApp Noise XX handshake and transport cipher, sans-IO (h11/wsproto shape).

Facts (PROTOCOL.md "Framing and Noise", Baileys ``lib/Utils/noise-handler.js``):

- protocol name ``Noise_XX_25519_AESGCM_SHA256\\0\\0\\0\\0`` is 32 bytes, so the
  initial hash ``h`` is the name itself and the chaining key ``ck = h``;
- ``h = SHA256(h || header)`` then ``h = SHA256(h || client ephemeral)``;
- ``mix_key(x)``: HKDF-SHA256(salt=ck, ikm=x, info='', 64 bytes) gives
  ``ck = out[:32]``, ``k = out[32:]`` and resets the counter to 0;
- handshake AES-256-GCM uses AAD = ``h``, then ``h = SHA256(h || ciphertext)``;
  one counter is shared by both directions; IV = 8 zero bytes + 32-bit BE counter;
- after ClientFinish, HKDF(salt=ck, ikm='', 64) splits into the client's write
  key (first 32 bytes) and read key (last 32); each direction then counts on
  its own, with empty AAD.

Message order (XX)::

    client  -> intro, ClientHello{ephemeral}
    server  -> ServerHello{ephemeral, enc(static), enc(CertChain)}
    client  -> ClientFinish{enc(noise static), enc(ClientPayload)}

Usage, client side::

    client = NoiseInitiator(noise_key=creds.noise_key)
    sock.send(client.send(Hello()))
    client.receive_data(sock.recv())         # until next_event() is a ServerHello
    sock.send(client.send(Finish(client_payload_bytes)))
    transport = client.transport              # encrypted frames from here on

Since 0.1.0.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from google.protobuf.message import DecodeError as ProtobufDecodeError

from actors.connection.certs import WHATSAPP_ROOT, RootKey, VerifiedCertChain, verify_cert_chain
from actors.connection.errors import (
    BAD_SESSION,
    LocalProtocolError,
    RemoteProtocolError,
)
from actors.connection.framing import (
    DEFAULT_MAX_FRAME_SIZE,
    HANDSHAKE_MAX_FRAME_SIZE,
    MAX_FRAME_LENGTH,
    NOISE_WA_HEADER,
    FrameSplitter,
    encode_frame,
    encode_intro,
    read_intro,
)
from actors.connection.proto import wa_pb2
from stores.creds import KeyPair
from stores.errors import InvalidValueError
from stores.keys import generate_key_pair, shared_secret

#: The Noise protocol name, padded to exactly 32 bytes (so it is used unhashed).
NOISE_MODE = b"Noise_XX_25519_AESGCM_SHA256\x00\x00\x00\x00"

_KEY_SIZE = 32
_MAX_COUNTER = 0xFFFFFFFF


# --- States and the one transition table --------------------------------------
#
# Rules:
# - an initiator starts IDLE, a responder AWAIT_CLIENT_HELLO;
# - ``send(event)`` and every event ``next_event()`` returns move the state by
#   TRANSITIONS[(role, state, type(event))]; a send not in the table is a
#   LocalProtocolError and changes nothing;
# - any RemoteProtocolError moves the handshake to ERROR for good; every later
#   call raises LocalProtocolError;
# - TRANSPORT is final: the handshake object only hands out ``.transport``.


class Role(enum.Enum):
    """Which side of the handshake a state machine plays."""

    INITIATOR = "initiator"
    RESPONDER = "responder"


class HandshakeState(enum.Enum):
    """Where a handshake is; see TRANSITIONS for what moves it."""

    IDLE = "idle"
    AWAIT_CLIENT_HELLO = "await_client_hello"
    AWAIT_SERVER_HELLO = "await_server_hello"
    SEND_SERVER_HELLO = "send_server_hello"
    SEND_CLIENT_FINISH = "send_client_finish"
    AWAIT_CLIENT_FINISH = "await_client_finish"
    TRANSPORT = "transport"
    ERROR = "error"


class NeedData(enum.Enum):
    """Sentinel type of ``NEED_DATA``: no complete event yet, feed more bytes."""

    NEED_DATA = "NEED_DATA"


NEED_DATA = NeedData.NEED_DATA


@dataclass(frozen=True)
class Hello:
    """Send this side's hello: ClientHello (initiator) or ServerHello (responder)."""


@dataclass(frozen=True)
class Finish:
    """Send ClientFinish carrying ``payload``, an encoded ClientPayload (initiator only)."""

    payload: bytes = field(repr=False)


@dataclass(frozen=True)
class ClientHello:
    """Received by the responder: the client's ephemeral key and intro routing info."""

    ephemeral: bytes
    routing_info: bytes | None


@dataclass(frozen=True)
class ServerHello:
    """Received by the initiator: the server's static key, its chain already verified."""

    static_key: bytes
    certificate: VerifiedCertChain


@dataclass(frozen=True)
class ClientFinish:
    """Received by the responder: the client's noise static key and its ClientPayload bytes."""

    static_key: bytes
    payload: bytes = field(repr=False)


@dataclass(frozen=True)
class Frame:
    """A decrypted transport frame (a binary node, for the node codec to decode)."""

    payload: bytes = field(repr=False)


SendEvent = Hello | Finish
HandshakeEvent = ClientHello | ServerHello | ClientFinish

_I, _R, _S = Role.INITIATOR, Role.RESPONDER, HandshakeState
TRANSITIONS: dict[tuple[Role, HandshakeState, type], HandshakeState] = {
    (_I, _S.IDLE, Hello): _S.AWAIT_SERVER_HELLO,
    (_I, _S.AWAIT_SERVER_HELLO, ServerHello): _S.SEND_CLIENT_FINISH,
    (_I, _S.SEND_CLIENT_FINISH, Finish): _S.TRANSPORT,
    (_R, _S.AWAIT_CLIENT_HELLO, ClientHello): _S.SEND_SERVER_HELLO,
    (_R, _S.SEND_SERVER_HELLO, Hello): _S.AWAIT_CLIENT_FINISH,
    (_R, _S.AWAIT_CLIENT_FINISH, ClientFinish): _S.TRANSPORT,
}
INITIAL_STATE = {Role.INITIATOR: _S.IDLE, Role.RESPONDER: _S.AWAIT_CLIENT_HELLO}
#: States in which the machine waits for a message from the peer.
AWAITING = {_S.AWAIT_CLIENT_HELLO, _S.AWAIT_SERVER_HELLO, _S.AWAIT_CLIENT_FINISH}


# --- Primitives ----------------------------------------------------------------


def _dh(private: bytes, public: bytes, what: str) -> bytes:
    if len(public) != _KEY_SIZE:
        raise RemoteProtocolError(f"{what}: public key is {len(public)} bytes, expected 32")
    try:
        return shared_secret(private, public)
    except InvalidValueError as exc:  # a low-order point gives no shared secret
        raise RemoteProtocolError(f"{what}: unusable public key ({exc})") from exc


def _hkdf(salt: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    out = HKDF(algorithm=hashes.SHA256(), length=64, salt=salt, info=b"").derive(ikm)
    return out[:32], out[32:]


#: The nonce of a counter: 8 zero bytes, then the counter as 32-bit big-endian.
_iv = struct.Struct(">8xI").pack


class _SymmetricState:
    """Hash, chaining key, handshake key and the one shared handshake counter."""

    def __init__(self, header: bytes) -> None:
        self.hash = NOISE_MODE
        self.chaining_key = NOISE_MODE
        self._cipher: AESGCM | None = None
        self.counter = 0
        self.authenticate(header)

    def authenticate(self, data: bytes) -> None:
        self.hash = hashlib.sha256(self.hash + data).digest()

    def mix_key(self, ikm: bytes) -> None:
        self.chaining_key, key = _hkdf(self.chaining_key, ikm)
        self._cipher = AESGCM(key)
        self.counter = 0

    def encrypt(self, plaintext: bytes) -> bytes:
        ciphertext = self._require_cipher().encrypt(_iv(self.counter), plaintext, self.hash)
        self.counter += 1
        self.authenticate(ciphertext)
        return ciphertext

    def decrypt(self, ciphertext: bytes, what: str) -> bytes:
        try:
            plaintext = self._require_cipher().decrypt(_iv(self.counter), ciphertext, self.hash)
        except InvalidTag as exc:
            raise RemoteProtocolError(f"{what}: authentication failed") from exc
        self.counter += 1
        self.authenticate(ciphertext)
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        return _hkdf(self.chaining_key, b"")

    def _require_cipher(self) -> AESGCM:
        if self._cipher is None:
            raise LocalProtocolError("noise: no key mixed in yet")
        return self._cipher


# --- Transport -----------------------------------------------------------------


@dataclass(frozen=True)
class TransportStatistics:
    """Counters of a transport: frames each way and bytes waiting to be split."""

    frames_sent: int
    frames_received: int
    buffered: int


class NoiseTransport:
    """Encrypted frames after the handshake, one counter per direction, empty AAD.

    ``send(payload) -> bytes`` gives the framed ciphertext; ``receive_data``
    then ``next_event()`` gives ``Frame`` events or ``NEED_DATA``. A frame that
    fails to decrypt raises RemoteProtocolError; the transport is then broken
    and every later call raises that error again.
    """

    def __init__(
        self,
        *,
        write_key: bytes,
        read_key: bytes,
        buffered: bytes = b"",
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        self._writer = AESGCM(write_key)
        self._reader = AESGCM(read_key)
        self._write_counter = 0
        self._read_counter = 0
        self._splitter = FrameSplitter(max_frame_size)
        self._splitter.receive_data(buffered)
        self._error: RemoteProtocolError | None = None

    def __repr__(self) -> str:
        return (
            f"NoiseTransport(sent={self._write_counter}, received={self._read_counter},"
            f" buffered={self._splitter.buffered})"
        )

    def encrypt(self, plaintext: bytes) -> bytes:
        """Encrypt one frame's payload with the next write counter (no length prefix)."""
        counter = self._write_counter
        if counter > _MAX_COUNTER:
            raise LocalProtocolError("noise transport: write counter exhausted, reconnect")
        ciphertext = self._writer.encrypt(_iv(counter), plaintext, b"")
        self._write_counter = counter + 1
        return ciphertext

    def decrypt(self, ciphertext: bytes) -> bytes:
        """Decrypt one frame's payload with the next read counter; RemoteProtocolError if bad."""
        if self._error is not None:
            raise self._error
        if self._read_counter > _MAX_COUNTER:
            self._error = RemoteProtocolError(
                "noise transport: read counter exhausted", error_status_hint=BAD_SESSION
            )
            raise self._error
        try:
            plaintext = self._reader.decrypt(_iv(self._read_counter), ciphertext, b"")
        except InvalidTag as exc:
            self._error = RemoteProtocolError(
                f"noise transport: frame {self._read_counter} failed authentication"
                f" ({len(ciphertext)} bytes)",
                error_status_hint=BAD_SESSION,
            )
            raise self._error from exc
        self._read_counter += 1
        return plaintext

    def send(self, payload: bytes) -> bytes:
        """The bytes to write to the socket for one plaintext frame."""
        ciphertext = self.encrypt(payload)
        length = len(ciphertext)
        if length > MAX_FRAME_LENGTH:
            return encode_frame(ciphertext)  # raises LocalProtocolError, saying why
        return length.to_bytes(3, "big") + ciphertext

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the socket."""
        if self._error is not None:
            raise self._error
        self._splitter.receive_data(data)

    def next_event(self) -> Frame | NeedData:
        """The next decrypted frame, or NEED_DATA."""
        if self._error is not None:
            raise self._error
        try:
            ciphertext = self._splitter.next_frame()
        except RemoteProtocolError as exc:
            self._error = exc
            raise
        if ciphertext is None:
            return NEED_DATA
        return Frame(self.decrypt(ciphertext))

    def events(self) -> list[Frame]:
        """Every frame complete so far, decrypted, in order.

        An error after good frames is raised by the next call, after they are returned.
        """
        out: list[Frame] = []
        try:
            while isinstance(event := self.next_event(), Frame):
                out.append(event)
        except RemoteProtocolError:
            if not out:
                raise
        return out

    def statistics(self) -> TransportStatistics:
        """Frames sent and received so far, and bytes buffered."""
        return TransportStatistics(
            frames_sent=self._write_counter,
            frames_received=self._read_counter,
            buffered=self._splitter.buffered,
        )


# --- Handshakes ----------------------------------------------------------------


class _Handshake:
    """What both sides share: state, transitions, frame splitting, the symmetric state."""

    role: Role

    def __init__(self, *, header: bytes, ephemeral: KeyPair | None, max_frame_size: int) -> None:
        self.state = INITIAL_STATE[self.role]
        self._header = header
        self._ephemeral = ephemeral if ephemeral is not None else generate_key_pair()
        self._symmetric = _SymmetricState(header)
        self._splitter = FrameSplitter(HANDSHAKE_MAX_FRAME_SIZE)
        self._max_frame_size = max_frame_size
        self._transport: NoiseTransport | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(state={self.state.name})"

    @property
    def transport(self) -> NoiseTransport:
        """The transport cipher, once the handshake reached TRANSPORT."""
        if self._transport is None:
            raise LocalProtocolError(f"noise {self.role.value}: no transport in {self.state.name}")
        return self._transport

    def send(self, event: SendEvent) -> bytes:
        """The bytes to write for ``event``; LocalProtocolError if not allowed now."""
        target = self._target(type(event))
        try:
            data = self._build(event)
        except RemoteProtocolError:
            self.state = HandshakeState.ERROR
            raise
        self.state = target
        return data

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the socket."""
        self._check_alive()
        if self.state is HandshakeState.TRANSPORT:
            raise LocalProtocolError("noise: handshake done, feed the transport instead")
        self._splitter.receive_data(data)

    def next_event(self) -> HandshakeEvent | NeedData:
        """The next handshake event, or NEED_DATA; RemoteProtocolError on bad input."""
        self._check_alive()
        if self.state is HandshakeState.TRANSPORT:
            raise LocalProtocolError("noise: handshake done, read the transport instead")
        if self.state not in AWAITING:
            return NEED_DATA
        try:
            event = self._read()
            if event is NEED_DATA:
                return event
            self.state = self._target(type(event))
        except RemoteProtocolError:
            self.state = HandshakeState.ERROR
            raise
        return event

    def _target(self, event_type: type) -> HandshakeState:
        self._check_alive()
        target = TRANSITIONS.get((self.role, self.state, event_type))
        if target is None:
            raise LocalProtocolError(
                f"noise {self.role.value}: {event_type.__name__} not allowed in {self.state.name}"
            )
        return target

    def _check_alive(self) -> None:
        if self.state is HandshakeState.ERROR:
            raise LocalProtocolError(f"noise {self.role.value}: handshake failed earlier")

    def _next_message(self, what: str) -> wa_pb2.HandshakeMessage | None:
        frame = self._splitter.next_frame()
        if frame is None:
            return None
        message = wa_pb2.HandshakeMessage()
        try:
            message.ParseFromString(frame)
        except ProtobufDecodeError as exc:
            raise RemoteProtocolError(f"{what}: not a HandshakeMessage ({exc})") from exc
        return message

    def _start_transport(self, *, initiator: bool) -> None:
        first, second = self._symmetric.split()
        write_key, read_key = (first, second) if initiator else (second, first)
        self._transport = NoiseTransport(
            write_key=write_key,
            read_key=read_key,
            buffered=self._splitter.take_buffer(),
            max_frame_size=self._max_frame_size,
        )

    def _build(self, event: SendEvent) -> bytes:
        raise NotImplementedError

    def _read(self) -> HandshakeEvent | NeedData:
        raise NotImplementedError


class NoiseInitiator(_Handshake):
    """The client side: ClientHello, verify ServerHello's chain, ClientFinish, transport.

    ``noise_key`` is the device's long-term noise key pair; ``ephemeral`` is
    generated unless given (tests inject it). ``root`` is the trust anchor for
    the server's certificate chain; ``now`` (unix seconds), when given, also
    checks the certificates' validity windows.
    """

    role = Role.INITIATOR

    def __init__(
        self,
        *,
        noise_key: KeyPair,
        ephemeral: KeyPair | None = None,
        routing_info: bytes | None = None,
        root: RootKey = WHATSAPP_ROOT,
        now: int | None = None,
        header: bytes = NOISE_WA_HEADER,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        super().__init__(header=header, ephemeral=ephemeral, max_frame_size=max_frame_size)
        self._noise_key = noise_key
        self._routing_info = routing_info
        self._root = root
        self._now = now
        self._server_ephemeral = b""
        self._symmetric.authenticate(self._ephemeral.public)

    def _build(self, event: SendEvent) -> bytes:
        if isinstance(event, Hello):
            hello = wa_pb2.HandshakeMessage(
                clientHello=wa_pb2.HandshakeMessage.ClientHello(ephemeral=self._ephemeral.public)
            )
            intro = encode_intro(self._routing_info, self._header)
            return intro + encode_frame(hello.SerializeToString())
        sym = self._symmetric
        static_ciphertext = sym.encrypt(self._noise_key.public)
        sym.mix_key(_dh(self._noise_key.private, self._server_ephemeral, "client finish"))
        payload_ciphertext = sym.encrypt(event.payload)
        finish = wa_pb2.HandshakeMessage(
            clientFinish=wa_pb2.HandshakeMessage.ClientFinish(
                static=static_ciphertext, payload=payload_ciphertext
            )
        )
        data = encode_frame(finish.SerializeToString())
        self._start_transport(initiator=True)
        return data

    def _read(self) -> HandshakeEvent | NeedData:
        message = self._next_message("server hello")
        if message is None:
            return NEED_DATA
        if not message.HasField("serverHello"):
            raise RemoteProtocolError("server hello: HandshakeMessage has no serverHello")
        hello = message.serverHello
        for name in ("ephemeral", "static", "payload"):
            if not hello.HasField(name):
                raise RemoteProtocolError(f"server hello: field {name!r} missing")
        if len(hello.ephemeral) != _KEY_SIZE:
            raise RemoteProtocolError(
                f"server hello: ephemeral is {len(hello.ephemeral)} bytes, expected 32"
            )
        sym = self._symmetric
        sym.authenticate(hello.ephemeral)
        sym.mix_key(_dh(self._ephemeral.private, hello.ephemeral, "server hello ephemeral"))
        static = sym.decrypt(hello.static, "server hello static")
        if len(static) != _KEY_SIZE:
            raise RemoteProtocolError(f"server hello: static is {len(static)} bytes, expected 32")
        sym.mix_key(_dh(self._ephemeral.private, static, "server hello static"))
        chain = sym.decrypt(hello.payload, "server hello payload")
        verified = verify_cert_chain(chain, server_static=static, root=self._root, now=self._now)
        self._server_ephemeral = bytes(hello.ephemeral)
        return ServerHello(static_key=static, certificate=verified)


class NoiseResponder(_Handshake):
    """The server side (for the sandbox): read intro + ClientHello, ServerHello, ClientFinish.

    ``static_key`` is the server's noise static key pair and ``cert_chain`` an
    encoded CertChain whose leaf key is ``static_key.public`` (see
    ``certs.make_cert_chain``).
    """

    role = Role.RESPONDER

    def __init__(
        self,
        *,
        static_key: KeyPair,
        cert_chain: bytes,
        ephemeral: KeyPair | None = None,
        header: bytes = NOISE_WA_HEADER,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        super().__init__(header=header, ephemeral=ephemeral, max_frame_size=max_frame_size)
        self._static_key = static_key
        self._cert_chain = cert_chain
        self._intro_buffer: bytearray | None = bytearray()
        self._routing_info: bytes | None = None
        self._client_ephemeral = b""

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the socket (the intro first, then frames)."""
        if self._intro_buffer is None:
            super().receive_data(data)
        else:
            self._check_alive()
            self._intro_buffer += data

    def _read_intro(self) -> bool:
        if self._intro_buffer is None:
            return True
        parsed = read_intro(self._intro_buffer, self._header)
        if parsed is None:
            return False
        intro, used = parsed
        self._routing_info = intro.routing_info
        rest = bytes(self._intro_buffer[used:])
        self._intro_buffer = None
        self._splitter.receive_data(rest)
        return True

    def _read(self) -> HandshakeEvent | NeedData:
        if self.state is HandshakeState.AWAIT_CLIENT_HELLO:
            return self._read_client_hello()
        return self._read_client_finish()

    def _read_client_hello(self) -> HandshakeEvent | NeedData:
        if not self._read_intro():
            return NEED_DATA
        message = self._next_message("client hello")
        if message is None:
            return NEED_DATA
        if not message.HasField("clientHello"):
            raise RemoteProtocolError("client hello: HandshakeMessage has no clientHello")
        hello = message.clientHello
        if hello.HasField("static") or hello.HasField("payload") or hello.useExtended:
            raise RemoteProtocolError("client hello: only the XX pattern is supported")
        if len(hello.ephemeral) != _KEY_SIZE:
            raise RemoteProtocolError(
                f"client hello: ephemeral is {len(hello.ephemeral)} bytes, expected 32"
            )
        self._client_ephemeral = bytes(hello.ephemeral)
        self._symmetric.authenticate(self._client_ephemeral)
        return ClientHello(ephemeral=self._client_ephemeral, routing_info=self._routing_info)

    def _read_client_finish(self) -> HandshakeEvent | NeedData:
        message = self._next_message("client finish")
        if message is None:
            return NEED_DATA
        if not message.HasField("clientFinish"):
            raise RemoteProtocolError("client finish: HandshakeMessage has no clientFinish")
        finish = message.clientFinish
        if not finish.HasField("static") or not finish.HasField("payload"):
            raise RemoteProtocolError("client finish: static or payload missing")
        sym = self._symmetric
        static = sym.decrypt(finish.static, "client finish static")
        if len(static) != _KEY_SIZE:
            raise RemoteProtocolError(f"client finish: static is {len(static)} bytes, expected 32")
        sym.mix_key(_dh(self._ephemeral.private, static, "client finish static"))
        payload = sym.decrypt(finish.payload, "client finish payload")
        self._start_transport(initiator=False)
        return ClientFinish(static_key=static, payload=payload)

    def _build(self, event: SendEvent) -> bytes:
        sym = self._symmetric
        sym.authenticate(self._ephemeral.public)
        sym.mix_key(_dh(self._ephemeral.private, self._client_ephemeral, "server hello"))
        static_ciphertext = sym.encrypt(self._static_key.public)
        sym.mix_key(_dh(self._static_key.private, self._client_ephemeral, "server hello"))
        payload_ciphertext = sym.encrypt(self._cert_chain)
        hello = wa_pb2.HandshakeMessage(
            serverHello=wa_pb2.HandshakeMessage.ServerHello(
                ephemeral=self._ephemeral.public,
                static=static_ciphertext,
                payload=payload_ciphertext,
            )
        )
        return encode_frame(hello.SerializeToString())


__all__ = [
    "AWAITING",
    "INITIAL_STATE",
    "NEED_DATA",
    "NOISE_MODE",
    "TRANSITIONS",
    "ClientFinish",
    "ClientHello",
    "Finish",
    "Frame",
    "HandshakeEvent",
    "HandshakeState",
    "Hello",
    "NeedData",
    "NoiseInitiator",
    "NoiseResponder",
    "NoiseTransport",
    "Role",
    "SendEvent",
    "ServerHello",
    "TransportStatistics",
    "generate_key_pair",
]
