"""Any bytes a client sends reach the sandbox core as outputs, never as an exception."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.connection.framing import NOISE_WA_HEADER, encode_frame
from sandbox.core import Close, Send, ServerCore
from tests.sandbox.fake_client import FakeDevice, Wire

CORE = ServerCore()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=6))
def test_random_bytes_from_the_first_byte_only_ever_close_the_connection(
    chunks: list[bytes],
) -> None:
    """Random input before the handshake: no exception; the only output is an abrupt Close."""
    conn = CORE.connect()
    outputs = [o for chunk in chunks for o in CORE.receive(conn, chunk, 0.0)]
    assert all(isinstance(o, (Send, Close)) for o in outputs)
    assert all(o == Close(conn, abrupt=True) for o in outputs if isinstance(o, Close))
    CORE.disconnected(conn, 0.0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=80), min_size=1, max_size=4))
def test_random_frames_after_the_intro_never_raise(frames: list[bytes]) -> None:
    """Framed garbage after a valid intro: the core answers or drops, never raises."""
    conn = CORE.connect()
    data = NOISE_WA_HEADER + b"".join(encode_frame(f) for f in frames)
    for output in CORE.receive(conn, data, 0.0):
        assert isinstance(output, (Send, Close))
    CORE.disconnected(conn, 0.0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=80), min_size=1, max_size=4))
def test_random_frames_after_registration_end_the_connection(frames: list[bytes]) -> None:
    """Garbage frames on a registered connection end it abruptly; nothing escapes the core."""
    wire = Wire(ServerCore())
    device = FakeDevice()
    client = wire.client(device)
    client.handshake(device.registration_payload())
    outputs = wire.core.receive(client.conn_id, b"".join(encode_frame(f) for f in frames), 0.0)
    assert outputs[-1] == Close(client.conn_id, abrupt=True)
