"""The Noise XX handshake and transport, client and server wired together in memory."""

from __future__ import annotations

import enum
import itertools
import random
from collections.abc import Callable

import pytest

from actors.connection.certs import RootKey, make_cert_chain
from actors.connection.errors import (
    BAD_SESSION,
    LocalProtocolError,
    RemoteProtocolError,
)
from actors.connection.framing import NOISE_WA_HEADER, encode_frame
from actors.connection.noise import (
    NEED_DATA,
    NOISE_MODE,
    TRANSITIONS,
    ClientFinish,
    ClientHello,
    Finish,
    Frame,
    HandshakeState,
    Hello,
    NoiseInitiator,
    NoiseResponder,
    Role,
    ServerHello,
    generate_key_pair,
)
from actors.connection.proto import wa_pb2
from tests.protocol.noise_fixtures import (
    ServerIdentity,
    handshake,
    make_pair,
    make_server_identity,
)

IDENTITY = make_server_identity()
PAYLOAD = b"client payload bytes"


def test_protocol_name_is_exactly_32_bytes() -> None:
    """The protocol name is used unhashed because it is 32 bytes long."""
    assert NOISE_MODE == b"Noise_XX_25519_AESGCM_SHA256\0\0\0\0"
    assert len(NOISE_MODE) == 32


def test_handshake_exchanges_keys_and_payload() -> None:
    """Both sides finish: each learns the other's static key, the server gets the payload."""
    client, server, noise_key = make_pair(IDENTITY)
    hello, server_hello, finish = handshake(client, server, PAYLOAD)
    assert hello.routing_info is None and len(hello.ephemeral) == 32
    assert server_hello.static_key == IDENTITY.static_key.public
    assert server_hello.certificate.leaf.key == IDENTITY.static_key.public
    assert finish.static_key == noise_key.public
    assert finish.payload == PAYLOAD
    assert client.state is server.state is HandshakeState.TRANSPORT


def test_transport_frames_flow_both_ways_with_their_own_counters() -> None:
    """After the handshake frames decrypt in order each way; counters are per direction."""
    client, server, _ = make_pair(IDENTITY)
    handshake(client, server, PAYLOAD)
    c, s = client.transport, server.transport
    s.receive_data(c.send(b"one") + c.send(b"two") + c.send(b""))
    assert s.events() == [Frame(b"one"), Frame(b"two"), Frame(b"")]
    c.receive_data(s.send(b"back"))
    assert c.next_event() == Frame(b"back")
    assert c.next_event() is NEED_DATA
    assert c.statistics().frames_sent == 3 and c.statistics().frames_received == 1
    assert s.statistics().frames_sent == 1 and s.statistics().frames_received == 3


def test_each_message_may_arrive_one_byte_at_a_time() -> None:
    """Feeding every handshake and transport byte singly gives the same events."""
    client, server, noise_key = make_pair(IDENTITY, routing_info=b"\x01\x02\x03")

    def trickle(data: bytes, into: NoiseInitiator | NoiseResponder) -> object:
        for index, byte in enumerate(data):
            into.receive_data(bytes([byte]))
            event = into.next_event()
            if index < len(data) - 1:
                assert event is NEED_DATA
        return event

    hello = trickle(client.send(Hello()), server)
    assert isinstance(hello, ClientHello) and hello.routing_info == b"\x01\x02\x03"
    assert isinstance(trickle(server.send(Hello()), client), ServerHello)
    finish = trickle(client.send(Finish(PAYLOAD)), server)
    assert isinstance(finish, ClientFinish) and finish.static_key == noise_key.public
    wire = client.transport.send(b"frame")
    for byte in wire[:-1]:
        server.transport.receive_data(bytes([byte]))
        assert server.transport.next_event() is NEED_DATA
    server.transport.receive_data(wire[-1:])
    assert server.transport.next_event() == Frame(b"frame")


def test_transport_bytes_sent_with_client_finish_reach_the_transport() -> None:
    """Bytes read together with ClientFinish are handed on to the server's transport."""
    client, server, _ = make_pair(IDENTITY)
    server.receive_data(client.send(Hello()))
    server.next_event()
    client.receive_data(server.send(Hello()))
    client.next_event()
    finish = client.send(Finish(PAYLOAD))
    server.receive_data(finish + client.transport.send(b"early"))
    assert isinstance(server.next_event(), ClientFinish)
    assert server.transport.events() == [Frame(b"early")]


def test_injected_ephemeral_makes_the_client_hello_deterministic() -> None:
    """With the same ephemeral two initiators write identical intro + ClientHello bytes."""
    ephemeral, noise_key = generate_key_pair(), generate_key_pair()
    first = NoiseInitiator(noise_key=noise_key, ephemeral=ephemeral).send(Hello())
    second = NoiseInitiator(noise_key=noise_key, ephemeral=ephemeral).send(Hello())
    assert first == second
    hello = wa_pb2.HandshakeMessage(
        clientHello=wa_pb2.HandshakeMessage.ClientHello(ephemeral=ephemeral.public)
    )
    assert first == NOISE_WA_HEADER + encode_frame(hello.SerializeToString())


class Outcome(enum.Enum):
    REJECTED = "a side raised RemoteProtocolError"
    STALLED = "a side waits for bytes that never come"
    COMPLETED = "both sides reached transport"


def _run_with_flip(identity: ServerIdentity, message: int, index: int, bit: int) -> Outcome:
    """A handshake where message ``message`` (0, 1, 2) has one bit flipped at ``index``."""
    client, server, _ = make_pair(identity)
    steps: list[tuple[Callable[[], bytes], NoiseInitiator | NoiseResponder]] = [
        (lambda: client.send(Hello()), server),
        (lambda: server.send(Hello()), client),
        (lambda: client.send(Finish(PAYLOAD)), server),
    ]
    try:
        for number, (produce, receiver) in enumerate(steps):
            data = produce()
            if number == message:
                mutated = bytearray(data)
                mutated[index % len(data)] ^= 1 << bit
                data = bytes(mutated)
            receiver.receive_data(data)
            if receiver.next_event() is NEED_DATA:
                return Outcome.STALLED
    except RemoteProtocolError:
        return Outcome.REJECTED
    return Outcome.COMPLETED


@pytest.mark.parametrize("message", [0, 1, 2])
def test_flipping_any_bit_of_a_handshake_message_is_rejected(message: int) -> None:
    """A flipped bit fails the handshake typed; only a flipped length or intro may stall it."""
    framing_bytes = {0: 4 + 3, 1: 3, 2: 3}[message]  # intro + length prefix, or the prefix
    client, server, _ = make_pair(IDENTITY)
    wire = [client.send(Hello())]
    server.receive_data(wire[0])
    server.next_event()
    wire.append(server.send(Hello()))
    client.receive_data(wire[1])
    client.next_event()
    wire.append(client.send(Finish(PAYLOAD)))
    for index in range(len(wire[message])):
        for bit in range(8):
            outcome = _run_with_flip(IDENTITY, message, index, bit)
            if index < framing_bytes:
                assert outcome is not Outcome.COMPLETED, (index, bit)
            else:
                assert outcome is Outcome.REJECTED, (index, bit)


def test_wrong_root_key_rejects_the_server_hello() -> None:
    """A client trusting another root refuses the server's chain and stays failed."""
    noise_key = generate_key_pair()
    client = NoiseInitiator(noise_key=noise_key, root=RootKey(generate_key_pair().public))
    server = NoiseResponder(static_key=IDENTITY.static_key, cert_chain=IDENTITY.cert_chain)
    server.receive_data(client.send(Hello()))
    server.next_event()
    client.receive_data(server.send(Hello()))
    with pytest.raises(RemoteProtocolError, match="root key"):
        client.next_event()
    assert client.state is HandshakeState.ERROR
    with pytest.raises(LocalProtocolError, match="failed earlier"):
        client.send(Finish(PAYLOAD))


def test_default_root_rejects_a_sandbox_server() -> None:
    """An initiator left on the real WhatsApp root does not trust a sandbox chain."""
    client = NoiseInitiator(noise_key=generate_key_pair())
    server = NoiseResponder(static_key=IDENTITY.static_key, cert_chain=IDENTITY.cert_chain)
    server.receive_data(client.send(Hello()))
    server.next_event()
    client.receive_data(server.send(Hello()))
    with pytest.raises(RemoteProtocolError):
        client.next_event()


def test_server_presenting_a_chain_for_another_key_is_rejected() -> None:
    """A server whose chain certifies a different static key fails the client's check."""
    impostor = generate_key_pair()
    server = NoiseResponder(static_key=impostor, cert_chain=IDENTITY.cert_chain)
    client = NoiseInitiator(noise_key=generate_key_pair(), root=IDENTITY.root)
    server.receive_data(client.send(Hello()))
    server.next_event()
    client.receive_data(server.send(Hello()))
    with pytest.raises(RemoteProtocolError, match="not the server's static key"):
        client.next_event()


def test_low_order_client_ephemeral_is_a_remote_error() -> None:
    """An all-zero client ephemeral (no shared secret) fails typed when the server answers."""
    hello = wa_pb2.HandshakeMessage(
        clientHello=wa_pb2.HandshakeMessage.ClientHello(ephemeral=bytes(32))
    )
    server = NoiseResponder(static_key=IDENTITY.static_key, cert_chain=IDENTITY.cert_chain)
    server.receive_data(NOISE_WA_HEADER + encode_frame(hello.SerializeToString()))
    assert isinstance(server.next_event(), ClientHello)
    with pytest.raises(RemoteProtocolError, match="unusable public key"):
        server.send(Hello())
    assert server.state is HandshakeState.ERROR


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (wa_pb2.HandshakeMessage(), "no clientHello"),
        (
            wa_pb2.HandshakeMessage(
                clientHello=wa_pb2.HandshakeMessage.ClientHello(ephemeral=b"short")
            ),
            "ephemeral is 5 bytes",
        ),
        (
            wa_pb2.HandshakeMessage(
                clientHello=wa_pb2.HandshakeMessage.ClientHello(
                    ephemeral=bytes(32), static=b"resume"
                )
            ),
            "only the XX pattern",
        ),
    ],
)
def test_malformed_client_hello_is_rejected(message: wa_pb2.HandshakeMessage, reason: str) -> None:
    """A ClientHello without a 32-byte ephemeral, or for another pattern, is refused."""
    server = NoiseResponder(static_key=IDENTITY.static_key, cert_chain=IDENTITY.cert_chain)
    server.receive_data(NOISE_WA_HEADER + encode_frame(message.SerializeToString()))
    with pytest.raises(RemoteProtocolError, match=reason):
        server.next_event()


def test_garbage_handshake_frame_is_a_remote_error() -> None:
    """A frame that is not a HandshakeMessage protobuf is refused, typed."""
    server = NoiseResponder(static_key=IDENTITY.static_key, cert_chain=IDENTITY.cert_chain)
    server.receive_data(NOISE_WA_HEADER + encode_frame(b"\xff\xff\xff\xff"))
    with pytest.raises(RemoteProtocolError, match="not a HandshakeMessage"):
        server.next_event()


def test_oversized_handshake_frame_is_rejected_early() -> None:
    """A handshake frame declaring more than 65535 bytes fails before it is buffered."""
    client = NoiseInitiator(noise_key=generate_key_pair(), root=IDENTITY.root)
    client.send(Hello())
    client.receive_data(b"\x01\x00\x00")
    with pytest.raises(RemoteProtocolError, match="over the bound of 65535"):
        client.next_event()


def test_sending_out_of_order_is_a_local_error() -> None:
    """A send the table does not allow raises LocalProtocolError and changes nothing."""
    client, server, _ = make_pair(IDENTITY)
    with pytest.raises(LocalProtocolError, match="Finish not allowed in IDLE"):
        client.send(Finish(PAYLOAD))
    with pytest.raises(LocalProtocolError, match="Hello not allowed in AWAIT_CLIENT_HELLO"):
        server.send(Hello())
    with pytest.raises(LocalProtocolError, match="Finish not allowed"):
        server.send(Finish(PAYLOAD))
    client.send(Hello())
    with pytest.raises(LocalProtocolError, match="Hello not allowed in AWAIT_SERVER_HELLO"):
        client.send(Hello())
    assert client.state is HandshakeState.AWAIT_SERVER_HELLO
    with pytest.raises(LocalProtocolError, match="no transport"):
        _ = client.transport


def test_handshake_is_closed_for_input_once_in_transport() -> None:
    """After the handshake, bytes go to the transport; the handshake refuses them."""
    client, server, _ = make_pair(IDENTITY)
    handshake(client, server, PAYLOAD)
    with pytest.raises(LocalProtocolError, match="feed the transport"):
        client.receive_data(b"x")
    with pytest.raises(LocalProtocolError, match="read the transport"):
        server.next_event()


def test_states_follow_the_transition_table() -> None:
    """Every state a handshake passes through is the one TRANSITIONS names."""
    client, server, _ = make_pair(IDENTITY)
    seen: list[tuple[Role, HandshakeState]] = [
        (Role.INITIATOR, client.state),
        (Role.RESPONDER, server.state),
    ]
    server.receive_data(client.send(Hello()))
    seen.append((Role.INITIATOR, client.state))
    server.next_event()
    seen.append((Role.RESPONDER, server.state))
    client.receive_data(server.send(Hello()))
    seen.append((Role.RESPONDER, server.state))
    client.next_event()
    seen.append((Role.INITIATOR, client.state))
    server.receive_data(client.send(Finish(PAYLOAD)))
    seen.append((Role.INITIATOR, client.state))
    server.next_event()
    seen.append((Role.RESPONDER, server.state))
    path = {role: [state for r, state in seen if r is role] for role in Role}
    for role, states in path.items():
        for before, after in itertools.pairwise(states):
            assert after in {
                target for (r, s, _), target in TRANSITIONS.items() if r is role and s is before
            }
        assert states[-1] is HandshakeState.TRANSPORT
    assert len(TRANSITIONS) == 6


def test_tampered_transport_frame_is_a_remote_error_and_sticky() -> None:
    """A frame failing authentication raises RemoteProtocolError (bad session) every time after."""
    client, server, _ = make_pair(IDENTITY)
    handshake(client, server, PAYLOAD)
    wire = bytearray(client.transport.send(b"secret"))
    wire[5] ^= 0x01
    server.transport.receive_data(bytes(wire))
    with pytest.raises(RemoteProtocolError, match="frame 0 failed authentication") as info:
        server.transport.next_event()
    assert info.value.error_status_hint == BAD_SESSION
    with pytest.raises(RemoteProtocolError):
        server.transport.receive_data(client.transport.send(b"next"))


def test_replayed_or_reordered_transport_frames_fail() -> None:
    """The per-direction counter makes a replayed or swapped frame fail authentication."""
    client, server, _ = make_pair(IDENTITY)
    handshake(client, server, PAYLOAD)
    first = client.transport.encrypt(b"first")
    second = client.transport.encrypt(b"second")
    assert server.transport.decrypt(first) == b"first"
    with pytest.raises(RemoteProtocolError):
        server.transport.decrypt(first)
    client2, server2, _ = make_pair(IDENTITY)
    handshake(client2, server2, PAYLOAD)
    client2.transport.encrypt(b"first")
    late = client2.transport.encrypt(b"second")
    with pytest.raises(RemoteProtocolError):
        server2.transport.decrypt(late)
    assert second != late  # independent sessions, independent keys


def test_oversized_transport_frame_is_rejected() -> None:
    """A transport frame over the configured bound is a remote error, typed."""
    client = NoiseInitiator(noise_key=generate_key_pair(), root=IDENTITY.root)
    server = NoiseResponder(
        static_key=IDENTITY.static_key, cert_chain=IDENTITY.cert_chain, max_frame_size=64
    )
    handshake(client, server, PAYLOAD)
    server.transport.receive_data(client.transport.send(bytes(100)))
    with pytest.raises(RemoteProtocolError, match="over the bound of 64"):
        server.transport.next_event()


def test_random_bytes_into_a_responder_give_only_typed_outcomes() -> None:
    """Arbitrary bytes after a valid intro end in NEED_DATA or a RemoteProtocolError."""
    rng = random.Random(4)
    for _ in range(300):
        server = NoiseResponder(static_key=IDENTITY.static_key, cert_chain=IDENTITY.cert_chain)
        server.receive_data(NOISE_WA_HEADER + rng.randbytes(rng.randrange(0, 80)))
        try:
            event = server.next_event()
        except RemoteProtocolError:
            continue
        assert event is NEED_DATA or isinstance(event, ClientHello)


def test_reprs_hide_key_and_payload_bytes() -> None:
    """No private key or payload appears in the repr of the state machines and events."""
    client, server, noise_key = make_pair(IDENTITY)
    _, _, finish = handshake(client, server, PAYLOAD)
    text = " ".join(
        repr(x) for x in (client, server, client.transport, finish, Finish(PAYLOAD), Frame(PAYLOAD))
    )
    assert noise_key.private.hex() not in text and repr(noise_key.private) not in text
    assert "payload bytes" not in text


def test_chain_with_sandbox_serials_drives_a_real_handshake() -> None:
    """A sandbox chain with custom serials works when the client's root says so."""
    root, intermediate, static = generate_key_pair(), generate_key_pair(), generate_key_pair()
    chain = make_cert_chain(
        root_private_key=root.private,
        intermediate_private_key=intermediate.private,
        server_static_public=static.public,
        root_serial=3,
        intermediate_serial=40,
        leaf_serial=41,
    )
    client = NoiseInitiator(noise_key=generate_key_pair(), root=RootKey(root.public, 3))
    server = NoiseResponder(static_key=static, cert_chain=chain)
    _, server_hello, _ = handshake(client, server, PAYLOAD)
    assert server_hello.certificate.intermediate.serial == 40
    assert server_hello.certificate.leaf.issuer_serial == 40


def test_good_transport_frames_before_a_bad_one_are_returned_first() -> None:
    """events() returns the frames that decrypted; the failure comes on the next call."""
    client, server, _ = make_pair(IDENTITY)
    handshake(client, server, PAYLOAD)
    good = client.transport.send(b"good")
    bad = bytearray(client.transport.send(b"bad"))
    bad[-1] ^= 0x80
    server.transport.receive_data(good + bytes(bad))
    assert server.transport.events() == [Frame(b"good")]
    with pytest.raises(RemoteProtocolError, match="frame 1 failed authentication"):
        server.transport.events()
