"""``encode_node``: a BinaryNode to the bytes of one uncompressed frame.

Writes what Baileys v7's ``encodeBinaryNode`` writes, byte for byte, for every
node whose strings the wire carries back unchanged. Where Baileys would alter a
string on the way (see :func:`actors.connection.binary.jid.wire_form`, and the
JavaScript-only accident that strings named like ``Object.prototype`` members,
e.g. ``constructor``, are written as byte 0), we write the plain string instead,
so ``decode_node(encode_node(n))`` always gives ``n`` back, up to the rule on
string content in :mod:`actors.connection.binary.node`.

Since 0.1.0.
"""

from __future__ import annotations

from actors.connection.binary.errors import EncodeError
from actors.connection.binary.jid import AdJid, JidPair, wire_form
from actors.connection.binary.node import BinaryNode
from actors.connection.binary.tags import PACKED_MAX, Tag
from actors.connection.binary.tokens import TOKEN_INDEX

#: Deepest nesting of nodes the encoder writes (and the decoder reads by default).
MAX_DEPTH = 64

_NIBBLE = {**{str(d): d for d in range(10)}, "-": 10, ".": 11}
_HEX = {**{str(d): d for d in range(10)}, **{c: 10 + i for i, c in enumerate("ABCDEF")}}


def encode_node(node: BinaryNode) -> bytes:
    """The frame for ``node``: flags byte 0 (uncompressed), then the node.

    Raises :class:`EncodeError` for a node that cannot be written: an empty tag, a
    non-string attribute key or value, a string that is not valid Unicode, more
    than 65535 children or attributes, content over 4 GiB, or nesting deeper than
    ``MAX_DEPTH``.
    """
    out = bytearray(b"\x00")
    _write_node(out, node, node.tag if isinstance(node.tag, str) else "?", 1)
    return bytes(out)


def _write_node(out: bytearray, node: BinaryNode, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise EncodeError(path, f"nested deeper than {MAX_DEPTH} levels")
    if not isinstance(node, BinaryNode):
        raise EncodeError(path, f"a child must be a BinaryNode, not {type(node).__name__}")
    if not isinstance(node.tag, str) or not node.tag:
        raise EncodeError(path, "the tag must be a non-empty string")
    content = node.content
    _write_list_start(out, 2 * len(node.attrs) + 1 + (content is not None), path)
    _write_string(out, node.tag, path)
    for key, value in node.attrs.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise EncodeError(path, f"attribute {key!r} must map a string to a string")
        _write_string(out, key, path)
        _write_string(out, value, path)
    if content is None:
        return
    if isinstance(content, str):
        _write_string(out, content, path)
    elif isinstance(content, bytes):
        _write_byte_length(out, len(content), path)
        out += content
    elif isinstance(content, list):
        _write_list_start(out, len(content), path)
        for child in content:
            tag = child.tag if isinstance(child, BinaryNode) else "?"
            _write_node(out, child, f"{path}/{tag}", depth + 1)
    else:
        raise EncodeError(
            path, f"content must be None, str, bytes or a list, not {type(content).__name__}"
        )


def _write_list_start(out: bytearray, size: int, path: str) -> None:
    if size == 0:
        out.append(Tag.LIST_EMPTY)
    elif size < 256:
        out += bytes((Tag.LIST_8, size))
    elif size < 65536:
        out += bytes((Tag.LIST_16, size >> 8, size & 0xFF))
    else:
        raise EncodeError(path, f"a list of {size} items does not fit LIST_16")


def _write_byte_length(out: bytearray, length: int, path: str) -> None:
    if length < 256:
        out += bytes((Tag.BINARY_8, length))
    elif length < 1 << 20:
        out += bytes((Tag.BINARY_20, length >> 16, (length >> 8) & 0xFF, length & 0xFF))
    elif length < 1 << 32:
        out.append(Tag.BINARY_32)
        out += length.to_bytes(4, "big")
    else:
        raise EncodeError(path, f"{length} bytes do not fit BINARY_32")


def _write_string(out: bytearray, text: str, path: str) -> None:
    """Token, else packed nibbles, else packed hex, else JID, else raw UTF-8."""
    if text:
        token = TOKEN_INDEX.get(text)
        if token is not None:
            dictionary, index = token
            if dictionary is not None:
                out.append(Tag.DICTIONARY_0 + dictionary)
            out.append(index)
            return
        if len(text) <= PACKED_MAX:
            if all(c in _NIBBLE for c in text):
                _write_packed(out, Tag.NIBBLE_8, [_NIBBLE[c] for c in text])
                return
            if all(c in _HEX for c in text):
                _write_packed(out, Tag.HEX_8, [_HEX[c] for c in text])
                return
        jid = wire_form(text)
        if isinstance(jid, AdJid):
            out += bytes((Tag.AD_JID, jid.domain_type, jid.device))
            _write_string(out, jid.user, path)
            return
        if isinstance(jid, JidPair):
            out.append(Tag.JID_PAIR)
            if jid.user:
                _write_string(out, jid.user, path)
            else:
                out.append(Tag.LIST_EMPTY)
            _write_string(out, jid.server, path)
            return
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EncodeError(path, f"string {text!r} is not valid Unicode: {exc.reason}") from None
    _write_byte_length(out, len(raw), path)
    out += raw


def _write_packed(out: bytearray, tag: Tag, nibbles: list[int]) -> None:
    odd = len(nibbles) % 2
    out += bytes((tag, ((len(nibbles) + 1) // 2) | (0x80 if odd else 0)))
    if odd:
        nibbles = [*nibbles, 0x0F]
    out += bytes((nibbles[i] << 4) | nibbles[i + 1] for i in range(0, len(nibbles), 2))
