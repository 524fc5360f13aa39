"""WhatsApp wire framing: the intro header and 3-byte length-prefixed frames.

Facts (PROTOCOL.md "Framing and Noise", Baileys ``lib/Utils/noise-handler.js``):

- every frame is a 3-byte big-endian length followed by that many bytes;
- before its first frame the client sends an *intro*: the 4-byte header
  ``57 41 06 03`` (``'W' 'A'``, 6, dictionary version 3), or, when it has
  routing info from an earlier ``edge_routing``, ``'E' 'D' 00 01``, the 3-byte
  big-endian length of the routing info, the routing info, then the header.

Sans-IO: bytes in, frames out; nothing here touches a socket. Since 0.1.0.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.connection.errors import BAD_SESSION, LocalProtocolError, RemoteProtocolError

#: The v7 intro header: ``'W' 'A'``, protocol 6, dictionary version 3.
NOISE_WA_HEADER = b"WA\x06\x03"
#: Prefix of an intro that carries routing info (``'E' 'D' 00 01``).
ROUTING_PREFIX = b"ED\x00\x01"
#: The largest length a 3-byte prefix can declare.
MAX_FRAME_LENGTH = 0xFFFFFF
#: Default bound on one frame: generous for real traffic, and it caps the
#: memory one declared length can make us reserve (a decision of ours; Baileys
#: has no bound).
DEFAULT_MAX_FRAME_SIZE = 8 * 1024 * 1024
#: Handshake messages and routing info are small; Noise caps a message at 65535.
HANDSHAKE_MAX_FRAME_SIZE = 65535

_LENGTH_SIZE = 3


def encode_length(length: int) -> bytes:
    """The 3-byte big-endian prefix for a frame of ``length`` bytes."""
    if not 0 <= length <= MAX_FRAME_LENGTH:
        raise LocalProtocolError(
            f"frame of {length} bytes cannot be framed: the limit is {MAX_FRAME_LENGTH}"
        )
    return length.to_bytes(_LENGTH_SIZE, "big")


def encode_frame(payload: bytes) -> bytes:
    """``payload`` with its 3-byte length prefix (LocalProtocolError when too long)."""
    return encode_length(len(payload)) + payload


def encode_intro(routing_info: bytes | None = None, header: bytes = NOISE_WA_HEADER) -> bytes:
    """The intro the client sends before its first frame, with routing info when it has some."""
    if not routing_info:
        return bytes(header)
    return ROUTING_PREFIX + encode_length(len(routing_info)) + routing_info + header


@dataclass(frozen=True)
class Intro:
    """A parsed intro: the header and the routing info it carried, if any."""

    header: bytes
    routing_info: bytes | None


def read_intro(
    data: bytes | bytearray,
    header: bytes = NOISE_WA_HEADER,
    max_routing_info: int = HANDSHAKE_MAX_FRAME_SIZE,
) -> tuple[Intro, int] | None:
    """Parse the intro at the start of ``data``: ``(intro, bytes used)``, or None for more data.

    Raises RemoteProtocolError when the bytes cannot be an intro with ``header``.
    """
    if not data:
        return None
    prefix = bytes(data[: len(ROUTING_PREFIX)])
    if ROUTING_PREFIX.startswith(prefix):
        if len(prefix) < len(ROUTING_PREFIX):
            return None
        return _read_routed_intro(data, header, max_routing_info)
    start = bytes(data[: len(header)])
    if not header.startswith(start):
        raise RemoteProtocolError(
            f"intro: expected header {header.hex()} or routing prefix {ROUTING_PREFIX.hex()},"
            f" got {start.hex()} at offset 0"
        )
    if len(start) < len(header):
        return None
    return Intro(header=bytes(header), routing_info=None), len(header)


def _read_routed_intro(
    data: bytes | bytearray, header: bytes, max_routing_info: int
) -> tuple[Intro, int] | None:
    start = len(ROUTING_PREFIX)
    if len(data) < start + _LENGTH_SIZE:
        return None
    length = int.from_bytes(data[start : start + _LENGTH_SIZE], "big")
    if length > max_routing_info:
        raise RemoteProtocolError(
            f"intro: routing info of {length} bytes at offset {start} exceeds"
            f" the bound of {max_routing_info}"
        )
    info_end = start + _LENGTH_SIZE + length
    end = info_end + len(header)
    if len(data) < end:
        return None
    if bytes(data[info_end:end]) != header:
        raise RemoteProtocolError(
            f"intro: expected header {header.hex()} after routing info,"
            f" got {bytes(data[info_end:end]).hex()} at offset {info_end}"
        )
    routing_info = bytes(data[start + _LENGTH_SIZE : info_end])
    return Intro(header=bytes(header), routing_info=routing_info), end


class FrameSplitter:
    """Cut a byte stream into frames: feed any chunks, take whole frames out.

    A declared length above ``max_frame_size`` raises RemoteProtocolError as
    soon as its 3-byte prefix is complete, before any of its body is awaited.
    After an error every later call raises the same error: the stream is lost.
    """

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if not 0 <= max_frame_size <= MAX_FRAME_LENGTH:
            raise LocalProtocolError(
                f"max_frame_size must be within 0..{MAX_FRAME_LENGTH}, got {max_frame_size}"
            )
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._offset = 0  # stream offset of _buffer[0], for error messages
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the peer."""
        if self._error is not None:
            raise self._error
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next complete frame's payload, or None until more data arrives."""
        # On every received frame: checks inlined, the length read byte by byte.
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        if len(buffer) < _LENGTH_SIZE:
            return None
        length = (buffer[0] << 16) | (buffer[1] << 8) | buffer[2]
        if length > self.max_frame_size:
            self._error = RemoteProtocolError(
                f"frame at stream offset {self._offset} declares {length} bytes,"
                f" over the bound of {self.max_frame_size}",
                error_status_hint=BAD_SESSION,
            )
            self._buffer.clear()
            raise self._error
        end = _LENGTH_SIZE + length
        if len(buffer) < end:
            return None
        frame = bytes(buffer[_LENGTH_SIZE:end])
        del buffer[:end]
        self._offset += end
        return frame

    def frames(self) -> list[bytes]:
        """Every complete frame buffered so far, in order.

        When a bad length follows good frames, the good frames are returned and
        the error is raised by the next call, so no frame is lost to it.
        """
        out: list[bytes] = []
        try:
            while (frame := self.next_frame()) is not None:
                out.append(frame)
        except RemoteProtocolError:
            if not out:
                raise
        return out

    def take_buffer(self) -> bytes:
        """Remove and return the unparsed bytes (to hand them to the next layer)."""
        self._raise_if_failed()
        rest = bytes(self._buffer)
        self._offset += len(rest)
        self._buffer.clear()
        return rest

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
