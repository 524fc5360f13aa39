"""Errors of the binary node codec.

Split by side as in :mod:`actors.connection.errors`: bytes from the peer that are
not a node raise :class:`DecodeError` (remote); a node our own code cannot put on
the wire raises :class:`EncodeError` (local). A decoded node that lacks a child or
attribute the protocol requires raises :class:`MissingNodeError` (remote), naming
the path to what is missing.

Since 0.1.0.
"""

from __future__ import annotations

from actors.connection.errors import (
    BAD_SESSION,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)


class DecodeError(RemoteProtocolError):
    """The bytes are not a well-formed binary node frame.

    ``offset`` is the position in the frame where decoding stopped (for a
    compressed frame, the position in its inflated payload, as ``reason`` says);
    ``reason`` says what was wrong there.
    """

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(
            f"malformed binary node at offset {offset}: {reason}",
            error_status_hint=BAD_SESSION,
        )
        self.offset = offset
        self.reason = reason


class EncodeError(LocalProtocolError, ValueError):
    """The node cannot be written (empty tag, a non-string attribute, too many children)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot encode node {path}: {reason}")
        self.path = path
        self.reason = reason


class MissingNodeError(RemoteProtocolError):
    """A node the peer sent lacks a child, attribute or content the protocol requires.

    ``path`` names it, e.g. ``iq/pair-device/ref`` or ``success[@lid]``.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}", error_status_hint=BAD_SESSION)
        self.path = path
        self.reason = reason


class JidError(ProtocolError, ValueError):
    """The text is not a JID (``user[_agent][:device]@server``)."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f"not a JID {text!r}: {reason}")
        self.text = text
        self.reason = reason
