"""Framing: the intro header (with ED routing prefix) and 3-byte length-prefixed frames."""

from __future__ import annotations

import pytest

from actors.connection.errors import BAD_SESSION, LocalProtocolError, RemoteProtocolError
from actors.connection.framing import (
    DEFAULT_MAX_FRAME_SIZE,
    MAX_FRAME_LENGTH,
    NOISE_WA_HEADER,
    FrameSplitter,
    Intro,
    encode_frame,
    encode_intro,
    read_intro,
)


def test_header_is_wa_6_3() -> None:
    """The v7 intro header is 57 41 06 03."""
    assert NOISE_WA_HEADER == bytes([0x57, 0x41, 0x06, 0x03])
    assert encode_intro() == NOISE_WA_HEADER
    assert encode_intro(b"") == NOISE_WA_HEADER


def test_intro_with_routing_info_is_ed_prefixed() -> None:
    """With routing info the intro is 'E' 'D' 00 01, 3-byte BE length, the info, the header."""
    info = bytes(i % 256 for i in range(300))
    assert encode_intro(info) == b"ED\x00\x01" + b"\x00\x01\x2c" + info + NOISE_WA_HEADER


def test_frame_has_a_three_byte_big_endian_length() -> None:
    """A frame is its length in 3 big-endian bytes, then the payload."""
    assert encode_frame(b"") == b"\x00\x00\x00"
    assert encode_frame(b"x" * 0x010203) == b"\x01\x02\x03" + b"x" * 0x010203


def test_payload_too_long_to_frame_is_a_local_error() -> None:
    """More than 2**24 - 1 bytes cannot be framed: our mistake, not the peer's."""
    with pytest.raises(LocalProtocolError, match="cannot be framed"):
        encode_frame(bytes(MAX_FRAME_LENGTH + 1))


@pytest.mark.parametrize("routing", [None, b"\x08\x01\x08\x02"])
def test_read_intro_waits_for_every_byte_then_parses(routing: bytes | None) -> None:
    """Every strict prefix of an intro asks for more data; the whole intro parses."""
    intro = encode_intro(routing)
    for cut in range(len(intro)):
        assert read_intro(intro[:cut]) is None
    assert read_intro(intro + b"\x00\x00\x05rest") == (
        Intro(header=NOISE_WA_HEADER, routing_info=routing),
        len(intro),
    )


def test_wrong_header_is_a_remote_error_naming_the_bytes() -> None:
    """An intro that is neither the header nor the routing prefix is rejected at once."""
    assert read_intro(b"WA") is None  # still a prefix of the header: wait
    with pytest.raises(RemoteProtocolError, match="got 57410602"):
        read_intro(b"WA\x06\x02")
    with pytest.raises(RemoteProtocolError, match="got 47"):
        read_intro(b"GET / HTTP/1.1")


def test_wrong_header_after_routing_info_is_rejected() -> None:
    """The header after the routing info must be the expected one, with its offset named."""
    with pytest.raises(RemoteProtocolError, match="at offset 9"):
        read_intro(b"ED\x00\x01\x00\x00\x02ab" + b"WA\x06\x02")


def test_oversized_routing_info_is_rejected_before_it_arrives() -> None:
    """A routing length over the bound fails as soon as the length is read."""
    with pytest.raises(RemoteProtocolError, match="routing info of 65536 bytes"):
        read_intro(b"ED\x00\x01\x01\x00\x00")


def test_splitter_yields_frames_fed_one_byte_at_a_time() -> None:
    """Frames split across many reads come out whole and in order."""
    payloads = [b"", b"a", b"hello" * 100, bytes(range(256))]
    wire = b"".join(encode_frame(p) for p in payloads)
    splitter = FrameSplitter()
    out: list[bytes] = []
    for byte in wire:
        splitter.receive_data(bytes([byte]))
        out += splitter.frames()
    assert out == payloads
    assert splitter.buffered == 0


def test_splitter_returns_none_until_a_frame_is_complete() -> None:
    """A partial frame stays buffered and next_frame says so with None."""
    splitter = FrameSplitter()
    splitter.receive_data(b"\x00\x00\x05abc")
    assert splitter.next_frame() is None
    assert splitter.buffered == 6
    splitter.receive_data(b"de\x00")
    assert splitter.next_frame() == b"abcde"
    assert splitter.next_frame() is None
    assert splitter.take_buffer() == b"\x00"
    assert splitter.buffered == 0


def test_declared_length_over_bound_fails_before_the_body_is_buffered() -> None:
    """A length prefix above max_frame_size is a remote error once its 3 bytes are in."""
    splitter = FrameSplitter(max_frame_size=1000)
    splitter.receive_data(encode_frame(b"ok") + b"\x00\x03")
    assert splitter.next_frame() == b"ok"
    assert splitter.next_frame() is None
    splitter.receive_data(b"\xe9")  # 1001
    with pytest.raises(RemoteProtocolError, match="offset 5 declares 1001 bytes") as info:
        splitter.next_frame()
    assert info.value.error_status_hint == BAD_SESSION
    assert splitter.buffered == 0


def test_splitter_error_is_sticky() -> None:
    """After a framing error every later call raises it again: the stream is lost."""
    splitter = FrameSplitter(max_frame_size=1)
    splitter.receive_data(b"\x00\x00\x02")
    with pytest.raises(RemoteProtocolError):
        splitter.next_frame()
    with pytest.raises(RemoteProtocolError):
        splitter.receive_data(b"\x00\x00\x00")
    with pytest.raises(RemoteProtocolError):
        splitter.next_frame()


def test_default_bound_and_invalid_bound() -> None:
    """The default bound is 8 MiB; a bound beyond 3 bytes of length is a local error."""
    assert FrameSplitter().max_frame_size == DEFAULT_MAX_FRAME_SIZE == 8 * 1024 * 1024
    with pytest.raises(LocalProtocolError):
        FrameSplitter(max_frame_size=MAX_FRAME_LENGTH + 1)


def test_good_frames_before_a_bad_length_are_returned_first() -> None:
    """frames() hands out the good frames; the bad length is raised by the next call."""
    splitter = FrameSplitter(max_frame_size=10)
    splitter.receive_data(encode_frame(b"good") + b"\x00\x00\x0b")
    assert splitter.frames() == [b"good"]
    with pytest.raises(RemoteProtocolError, match="declares 11 bytes"):
        splitter.frames()
