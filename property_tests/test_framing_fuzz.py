"""Fuzzing the frame splitter and the Noise inputs: frames, NEED_DATA or RemoteProtocolError only.

The model is the framing rule itself, read from the whole stream at once: a
3-byte big-endian length, then that many bytes; a declared length above the
bound is an error at the point its prefix is complete.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.connection.errors import RemoteProtocolError
from actors.connection.framing import FrameSplitter, encode_frame
from actors.connection.noise import (
    NEED_DATA,
    ClientFinish,
    ClientHello,
    Finish,
    Hello,
    NoiseInitiator,
    NoiseResponder,
    generate_key_pair,
)
from tests.protocol.noise_fixtures import handshake, make_pair, make_server_identity

MAX = 300


@dataclass(frozen=True)
class Expected:
    """What the rule says a stream holds: its frames, and whether it ends in an error."""

    frames: list[bytes]
    error: bool
    leftover: int


def model(stream: bytes, bound: int) -> Expected:
    frames: list[bytes] = []
    position = 0
    while len(stream) - position >= 3:
        length = int.from_bytes(stream[position : position + 3], "big")
        if length > bound:
            return Expected(frames, error=True, leftover=0)
        if len(stream) - position - 3 < length:
            break
        frames.append(stream[position + 3 : position + 3 + length])
        position += 3 + length
    return Expected(frames, error=False, leftover=len(stream) - position)


def chunks(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    return [stream[a:b] for a, b in itertools.pairwise(points)]


# Streams that mostly follow the rule (so frames do come out), sometimes broken.
framed_streams = st.builds(
    lambda payloads, tail: b"".join(encode_frame(p) for p in payloads) + tail,
    st.lists(st.binary(max_size=MAX + 40), max_size=6),
    st.binary(max_size=8),
)
streams = st.one_of(framed_streams, st.binary(max_size=2000))


@settings(max_examples=400, deadline=None)
@given(stream=streams, cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_splitter_matches_the_model_for_any_chunking(stream: bytes, cuts: list[int]) -> None:
    """Any chunking of any stream gives the model's frames, then its error if it has one."""
    expected = model(stream, MAX)
    splitter = FrameSplitter(max_frame_size=MAX)
    got: list[bytes] = []
    error = False
    try:
        for chunk in chunks(stream, cuts):
            splitter.receive_data(chunk)
            got += splitter.frames()
        # An error right after good frames surfaces on the call after them.
        got += splitter.frames()
    except RemoteProtocolError:
        error = True
    assert got == expected.frames
    assert error == expected.error
    if not error:
        assert splitter.buffered == expected.leftover


IDENTITY = make_server_identity()


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(min_value=0), max_size=6))
def test_random_bytes_into_a_responder_are_typed(data: bytes, cuts: list[int]) -> None:
    """Random bytes into a fresh responder give NEED_DATA, a ClientHello, or a remote error."""
    server = NoiseResponder(static_key=IDENTITY.static_key, cert_chain=IDENTITY.cert_chain)
    try:
        for chunk in chunks(data, cuts):
            server.receive_data(chunk)
            event = server.next_event()
            assert event is NEED_DATA or isinstance(event, ClientHello)
            if isinstance(event, ClientHello):
                break
    except RemoteProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=600))
def test_random_server_hello_bytes_are_typed(data: bytes) -> None:
    """Random bytes as the server's answer never pass and never raise anything untyped."""
    client = NoiseInitiator(noise_key=generate_key_pair(), root=IDENTITY.root)
    client.send(Hello())
    try:
        client.receive_data(data)
        assert client.next_event() is NEED_DATA
    except RemoteProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=600))
def test_random_transport_bytes_are_typed(data: bytes) -> None:
    """Random bytes into an established transport: frames never decrypt, errors are typed."""
    client, server, _ = make_pair(IDENTITY)
    handshake(client, server, b"payload")
    try:
        server.transport.receive_data(data)
        event = server.transport.next_event()
    except RemoteProtocolError:
        return
    # A forged frame cannot authenticate, so at best the transport waits for more.
    assert event is NEED_DATA


@settings(max_examples=100, deadline=None)
@given(
    frames=st.lists(st.binary(max_size=200), max_size=5),
    cuts=st.lists(st.integers(min_value=0), max_size=30),
)
def test_any_chunking_of_a_real_session_gives_the_same_events(
    frames: list[bytes], cuts: list[int]
) -> None:
    """The client's whole byte stream, cut anywhere, yields the handshake then every frame."""
    client, server, noise_key = make_pair(IDENTITY, routing_info=b"\x08\x02")
    # The hellos go across whole; everything the client writes after them
    # (ClientFinish, then transport frames) reaches the server in random chunks.
    hello = client.send(Hello())
    server.receive_data(hello)
    assert isinstance(server.next_event(), ClientHello)
    client.receive_data(server.send(Hello()))
    client.next_event()
    rest = client.send(Finish(b"payload")) + b"".join(client.transport.send(f) for f in frames)

    got: list[bytes] = []
    finish: ClientFinish | None = None
    for chunk in chunks(rest, cuts):
        if finish is None:
            server.receive_data(chunk)
            event = server.next_event()
            if event is NEED_DATA:
                continue
            assert isinstance(event, ClientFinish)
            finish = event
        else:
            server.transport.receive_data(chunk)
        got += [frame.payload for frame in server.transport.events()]
    assert finish is not None and finish.static_key == noise_key.public
    assert got == frames
