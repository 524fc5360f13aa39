"""``encode_node``: a BinaryNode to the bytes of one uncompressed frame.

Writes what Baileys v7's ``encodeBinaryNode`` writes, byte for byte, for every
node whose strings the wire carries back unchanged. Where Baileys would alter a
string on the way (see :func:`actors.connection.binary.jid.wire_form`, and the
JavaScript-only accident that strings named like ``Object.prototype`` members,
e.g. ``constructor``, are written as byte 0), we write the plain string instead,
so ``decode_node(encode_node(n))`` always gives ``n`` back, up to the rule on
string content in :mod:`actors.connection.binary.node`.

Written for speed (it is most of the send path): tokens map straight to their
bytes, packed strings are checked with ``str.strip`` and packed by
``bytes.fromhex``, and the path an :class:`EncodeError` names is only built when
there is an error.

Since 0.1.0.
"""

from __future__ import annotations

from collections.abc import Callable

from actors.connection.binary.errors import EncodeError
from actors.connection.binary.jid import AdJid, JidPair, wire_form
from actors.connection.binary.node import BinaryNode
from actors.connection.binary.tags import PACKED_MAX, Tag
from actors.connection.binary.tokens import TOKEN_INDEX

#: Deepest nesting of nodes the encoder writes (and the decoder reads by default).
MAX_DEPTH = 64

_NIBBLE_CHARS = "0123456789-."
_HEX_CHARS = "0123456789ABCDEF"
#: A nibble string as hex digits for ``bytes.fromhex``: '-' is nibble 10, '.' is 11.
_NIBBLE_TO_HEX = str.maketrans({"-": "a", ".": "b"})
_NIBBLE_8 = int(Tag.NIBBLE_8)
_HEX_8 = int(Tag.HEX_8)
_BINARY_8 = int(Tag.BINARY_8)
_BINARY_20 = int(Tag.BINARY_20)
_BINARY_32 = int(Tag.BINARY_32)
_LIST_8 = int(Tag.LIST_8)
_LIST_16 = int(Tag.LIST_16)

#: Every token string to the bytes that stand for it (1 byte, or a dictionary tag and 1).
_TOKEN_BYTES: dict[str, bytes] = {
    text: bytes((index,)) if dictionary is None else bytes((Tag.DICTIONARY_0 + dictionary, index))
    for text, (dictionary, index) in TOKEN_INDEX.items()
}
#: The start of a list of 0..255 items.
_SHORT_LIST_START = tuple(
    bytes((Tag.LIST_EMPTY,)) if n == 0 else bytes((Tag.LIST_8, n)) for n in range(256)
)


class _Failure(Exception):
    """An EncodeError on its way up: the reason, and the path from the failing node up.

    ``segments`` holds the failing node's name first and each ancestor's after it,
    so the path is only assembled when something fails.
    """

    def __init__(self, segment: str, reason: str) -> None:
        super().__init__(reason)
        self.segments = [segment]
        self.reason = reason


def encode_node(node: BinaryNode) -> bytes:
    """The frame for ``node``: flags byte 0 (uncompressed), then the node.

    Raises :class:`EncodeError` for a node that cannot be written: an empty tag, a
    non-string attribute key or value, a string that is not valid Unicode, more
    than 65535 children or attributes, content over 4 GiB, or nesting deeper than
    ``MAX_DEPTH``.
    """
    out = bytearray(b"\x00")
    try:
        _write_node(out, node, 1)
    except _Failure as failure:
        root = node.tag if isinstance(node.tag, str) else "?"
        failure.segments[-1] = root
        raise EncodeError("/".join(reversed(failure.segments)), failure.reason) from None
    return bytes(out)


def _write_node(out: bytearray, node: BinaryNode, depth: int) -> None:
    """Write ``node``; a ``_Failure`` names it as "" (its parent knows its name)."""
    if depth > MAX_DEPTH:
        raise _Failure("", f"nested deeper than {MAX_DEPTH} levels")
    if not isinstance(node, BinaryNode):
        raise _Failure("", f"a child must be a BinaryNode, not {type(node).__name__}")
    tag = node.tag
    if not isinstance(tag, str) or not tag:
        raise _Failure("", "the tag must be a non-empty string")
    attrs = node.attrs
    content = node.content
    size = 2 * len(attrs) + 1 + (content is not None)
    if size < 256:
        out += _SHORT_LIST_START[size]
    else:
        _write_long_list_start(out, size)
    tokens = _TOKEN_BYTES
    token = tokens.get(tag)
    if token is not None:
        out += token
    else:
        _write_string(out, tag)
    for key, value in attrs.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise _Failure("", f"attribute {key!r} must map a string to a string")
        token = tokens.get(key)
        if token is not None:
            out += token
        else:
            _write_string(out, key)
        token = tokens.get(value)
        if token is not None:
            out += token
        else:
            _write_string(out, value)
    if content is None:
        return
    if isinstance(content, str):
        token = tokens.get(content)
        if token is not None:
            out += token
        else:
            _write_string(out, content)
    elif isinstance(content, bytes):
        length = len(content)
        if length < 256:
            out.append(_BINARY_8)
            out.append(length)
        else:
            _write_byte_length(out, length)
        out += content
    elif isinstance(content, list):
        count = len(content)
        if count < 256:
            out += _SHORT_LIST_START[count]
        else:
            _write_long_list_start(out, count)
        depth += 1
        for child in content:
            try:
                _write_node(out, child, depth)
            except _Failure as failure:
                # The child's name, as "?" when it is not a node at all.
                failure.segments[-1] = f"{child.tag if isinstance(child, BinaryNode) else '?'}"
                failure.segments.append("")
                raise
    else:
        raise _Failure(
            "", f"content must be None, str, bytes or a list, not {type(content).__name__}"
        )


class NodeTemplate:
    """The frame of a node whose every byte is fixed but one string's: written in pieces.

    ``NodeTemplate(build)`` encodes ``build(marker)`` once and keeps the bytes before
    and after the marker; ``encode(value)`` then gives exactly
    ``encode_node(build(value))`` by writing ``value`` alone between them (for a
    stanza sent again and again, such as the keepalive ping, whose only varying
    part is its id). ``build`` must put its argument in one place only.

    Since 0.2.0.
    """

    __slots__ = ("_head", "_tail")

    #: Written as raw UTF-8 (not a token, packed or a JID): its bytes are unique.
    _MARKER = "\x01node-template-marker\x01"

    def __init__(self, build: Callable[[str], BinaryNode]) -> None:
        whole = encode_node(build(self._MARKER))
        piece = bytearray()
        _write_string(piece, self._MARKER)
        head, found, tail = whole.partition(bytes(piece))
        if not found or piece in tail:
            raise ValueError("the template's node must hold its value in exactly one place")
        self._head = head
        self._tail = tail

    def encode(self, value: str) -> bytes:
        """``encode_node(build(value))``; ``EncodeError`` for a value no frame can carry."""
        out = bytearray(self._head)
        try:
            _write_string(out, value)
        except _Failure as failure:
            raise EncodeError("template", failure.reason) from None
        out += self._tail
        return bytes(out)


def _write_long_list_start(out: bytearray, size: int) -> None:
    if size < 65536:
        out += bytes((_LIST_16, size >> 8, size & 0xFF))
    else:
        raise _Failure("", f"a list of {size} items does not fit LIST_16")


def _write_byte_length(out: bytearray, length: int) -> None:
    if length < 256:
        out += bytes((_BINARY_8, length))
    elif length < 1 << 20:
        out += bytes((_BINARY_20, length >> 16, (length >> 8) & 0xFF, length & 0xFF))
    elif length < 1 << 32:
        out.append(_BINARY_32)
        out += length.to_bytes(4, "big")
    else:
        raise _Failure("", f"{length} bytes do not fit BINARY_32")


def _write_string(out: bytearray, text: str) -> None:
    """Token, else packed nibbles, else packed hex, else JID, else raw UTF-8."""
    if text:
        token = _TOKEN_BYTES.get(text)
        if token is not None:
            out += token
            return
        if len(text) <= PACKED_MAX:
            # strip() leaves nothing exactly when every character is in the set.
            if not text.strip(_NIBBLE_CHARS):
                _write_packed(out, _NIBBLE_8, text.translate(_NIBBLE_TO_HEX))
                return
            if not text.strip(_HEX_CHARS):
                _write_packed(out, _HEX_8, text)
                return
        if "@" in text:  # wire_form gives None to any text without one
            jid = wire_form(text)
            if isinstance(jid, AdJid):
                out += bytes((Tag.AD_JID, jid.domain_type, jid.device))
                _write_string(out, jid.user)
                return
            if isinstance(jid, JidPair):
                out.append(Tag.JID_PAIR)
                if jid.user:
                    _write_string(out, jid.user)
                else:
                    out.append(Tag.LIST_EMPTY)
                _write_string(out, jid.server)
                return
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Failure("", f"string {text!r} is not valid Unicode: {exc.reason}") from None
    length = len(raw)
    if length < 256:
        out.append(_BINARY_8)
        out.append(length)
    else:
        _write_byte_length(out, length)
    out += raw


def _write_packed(out: bytearray, tag: int, digits: str) -> None:
    """``digits`` (hex digits, one per nibble) packed two to a byte, 0xF padding an odd one."""
    count = len(digits)
    if count % 2:
        out.append(tag)
        out.append(((count + 1) // 2) | 0x80)
        out += bytes.fromhex(digits + "f")
    else:
        out.append(tag)
        out.append(count // 2)
        out += bytes.fromhex(digits)
