"""``decode_node``: the bytes of one frame to a BinaryNode.

Reads what Baileys v7's ``decodeBinaryNode`` reads and gives the same node, with
one difference: an AD_JID whose domain type is not one of the four known ones
keeps it as the agent (``user_5:2@s.whatsapp.net``) where Baileys drops it.
Like Baileys, bytes after the node (and after a compressed stream) are ignored,
and a raw string that is not valid UTF-8 has its bad bytes replaced by U+FFFD.

Any input either decodes or raises :class:`DecodeError`; nothing else escapes.
Sizes are checked before anything is allocated: a declared length beyond the
end of the input, nesting deeper than ``max_depth`` and a compressed payload that
inflates beyond ``max_size`` are all errors.

The reader is written for speed (it is most of the receive path): one loop with
the cursor in a local variable, every bound checked inline before the byte is
read, tokens looked up in a 256-entry table, packed digits unpacked by
``bytes.hex``. Offsets and reasons of errors are those of the plain reader it
replaced, byte for byte.

Since 0.1.0.
"""

from __future__ import annotations

import zlib

from actors.connection.binary.encoder import MAX_DEPTH
from actors.connection.binary.errors import DecodeError
from actors.connection.binary.jid import format_ad_jid
from actors.connection.binary.node import BinaryNode, Content, _from_decoder
from actors.connection.binary.tags import FLAG_COMPRESSED, Tag
from actors.connection.binary.tokens import DOUBLE_BYTE_TOKENS, SINGLE_BYTE_TOKENS

#: Default bound on an inflated payload: the largest frame the 3-byte length allows.
MAX_FRAME_SIZE = (1 << 24) - 1

#: Deepest nesting of strings inside strings (a JID's user written as a JID, ...).
MAX_STRING_DEPTH = 16

_LIST_EMPTY = int(Tag.LIST_EMPTY)
_LIST_8 = int(Tag.LIST_8)
_LIST_16 = int(Tag.LIST_16)
_BINARY_8 = int(Tag.BINARY_8)
_BINARY_20 = int(Tag.BINARY_20)
_BINARY_32 = int(Tag.BINARY_32)
_DICTIONARY_0 = int(Tag.DICTIONARY_0)
_DICTIONARY_3 = int(Tag.DICTIONARY_3)
_NIBBLE_8 = int(Tag.NIBBLE_8)
_HEX_8 = int(Tag.HEX_8)
_JID_PAIR = int(Tag.JID_PAIR)
_AD_JID = int(Tag.AD_JID)
_FB_JID = int(Tag.FB_JID)
_INTEROP_JID = int(Tag.INTEROP_JID)

#: A string tag read at depth 0 (attributes, tags): its string when it stands alone
#: (a single-byte token, or the empty list for ""), else None for the full reader.
_DEPTH0: tuple[str | None, ...] = tuple(
    SINGLE_BYTE_TOKENS[b] if 1 <= b < len(SINGLE_BYTE_TOKENS) else ("" if b == 0 else None)
    for b in range(256)
)
#: Lower-case hex digits of a nibble-packed string to the characters they stand for.
_NIBBLE_TRANSLATION = str.maketrans({"a": "-", "b": ".", "f": "\x00"})
#: Known AD_JID domain types and their servers (the rest go through format_ad_jid).
_AD_SERVERS = {0: "s.whatsapp.net", 1: "lid", 128: "hosted", 129: "hosted.lid"}


def decode_node(
    data: bytes, *, max_size: int = MAX_FRAME_SIZE, max_depth: int = MAX_DEPTH
) -> BinaryNode:
    """Decode one frame: a flags byte, then the node, zlib-compressed if flag 0x02 is set.

    ``max_size`` bounds the size of the node after the flags byte (for a compressed
    frame, its inflated size, checked while inflating); ``max_depth`` bounds the
    nesting of nodes. Raises :class:`DecodeError` for anything but a well-formed
    frame within those bounds (ValueError for ``max_size`` < 0 or ``max_depth`` < 1:
    those are our own mistakes, not the peer's).
    """
    if max_size < 0:
        raise ValueError(f"max_size must be >= 0, not {max_size}")
    if max_depth < 1:
        raise ValueError(f"max_depth must be >= 1, not {max_depth}")
    if not isinstance(data, bytes):
        data = bytes(data)
    if not data:
        raise DecodeError(0, "empty frame: no flags byte")
    if data[0] & FLAG_COMPRESSED:
        body = _inflate(data, max_size)
        return _read_root(body, 0, max_depth, " (in the inflated payload)")
    if len(data) - 1 > max_size:
        raise DecodeError(1, f"node of {len(data) - 1} bytes exceeds the {max_size} allowed")
    return _read_root(data, 1, max_depth, "")


def _inflate(data: bytes, max_size: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        # One byte more than allowed tells "too big" apart from "exactly max_size".
        body = inflater.decompress(data[1:], max_size + 1)
    except zlib.error as exc:
        raise DecodeError(1, f"bad zlib stream: {exc}") from None
    if len(body) > max_size:
        raise DecodeError(1, f"compressed payload inflates beyond {max_size} bytes")
    if not inflater.eof:
        raise DecodeError(len(data), "frame ends before its zlib stream does")
    return body


# --- Errors (offsets as the reader reports them: where the cursor stood) -------


def _end(pos: int, where: str) -> DecodeError:
    return DecodeError(pos, "unexpected end of data" + where)


def _short(n: int, left: int, pos: int, where: str) -> DecodeError:
    return DecodeError(pos, f"declared length {n} exceeds the {left} bytes left{where}")


def _invalid_list(tag: int, pos: int, where: str) -> DecodeError:
    return DecodeError(pos, f"invalid list tag {tag}{where}")


# --- The reader ----------------------------------------------------------------


def _read_root(data: bytes, pos: int, max_depth: int, where: str) -> BinaryNode:
    """Read the root node and all below it, starting at ``pos``.

    A loop over an explicit stack of open lists rather than recursion, so the
    depth of the input never touches Python's stack, whoever calls us. Each
    open list is ``[tag, attrs, children, count]``.
    """
    end = len(data)
    depth0 = _DEPTH0
    read_string = _string
    make = _from_decoder
    open_lists: list[tuple[str, dict[str, str], list[BinaryNode], int]] = []
    while True:
        # The head: list size, tag, attributes.
        start = pos
        if pos >= end:
            raise _end(pos, where)
        b = data[pos]
        pos += 1
        if b == _LIST_8:
            if pos >= end:
                raise _end(pos, where)
            size = data[pos]
            pos += 1
        elif b == _LIST_16:
            if end - pos < 2:
                raise _short(2, end - pos, pos, where)
            size = (data[pos] << 8) | data[pos + 1]
            pos += 2
        elif b == _LIST_EMPTY:
            size = 0
        else:
            raise _invalid_list(b, pos - 1, where)
        if size == 0:
            raise DecodeError(start, "invalid node: an empty list" + where)
        if pos >= end:
            raise _end(pos, where)
        b = data[pos]
        pos += 1
        tag = depth0[b]
        if tag is None:
            tag, pos = read_string(data, pos, b, 0, where)
        if not tag:
            raise DecodeError(start, "invalid node: an empty tag" + where)
        attrs: dict[str, str] = {}
        for _ in range((size - 1) >> 1):
            if pos >= end:
                raise _end(pos, where)
            b = data[pos]
            pos += 1
            key = depth0[b]
            if key is None:
                key, pos = read_string(data, pos, b, 0, where)
            if pos >= end:
                raise _end(pos, where)
            b = data[pos]
            pos += 1
            value = depth0[b]
            if value is None:
                value, pos = read_string(data, pos, b, 0, where)
            attrs[key] = value
        # The content, if any.
        content: Content = None
        if not size & 1:
            if pos >= end:
                raise _end(pos, where)
            b = data[pos]
            pos += 1
            if b == _BINARY_8:
                if pos >= end:
                    raise _end(pos, where)
                n = data[pos]
                pos += 1
                if n > end - pos:
                    raise _short(n, end - pos, pos, where)
                content = data[pos : pos + n]
                pos += n
            elif b == _BINARY_20:
                if end - pos < 3:
                    raise _short(3, end - pos, pos, where)
                n = ((data[pos] & 0x0F) << 16) | (data[pos + 1] << 8) | data[pos + 2]
                pos += 3
                if n > end - pos:
                    raise _short(n, end - pos, pos, where)
                content = data[pos : pos + n]
                pos += n
            elif b == _BINARY_32:
                if end - pos < 4:
                    raise _short(4, end - pos, pos, where)
                n = int.from_bytes(data[pos : pos + 4], "big")
                pos += 4
                if n > end - pos:
                    raise _short(n, end - pos, pos, where)
                content = data[pos : pos + n]
                pos += n
            elif b == _LIST_8 or b == _LIST_16 or b == _LIST_EMPTY:
                if b == _LIST_8:
                    if pos >= end:
                        raise _end(pos, where)
                    count = data[pos]
                    pos += 1
                elif b == _LIST_16:
                    if end - pos < 2:
                        raise _short(2, end - pos, pos, where)
                    count = (data[pos] << 8) | data[pos + 1]
                    pos += 2
                else:
                    count = 0
                if count:
                    if len(open_lists) + 2 > max_depth:
                        raise DecodeError(
                            pos, f"nodes nested deeper than {max_depth} levels{where}"
                        )
                    open_lists.append((tag, attrs, [], count))
                    continue
                content = []
            else:
                content, pos = read_string(data, pos, b, 0, where)
        node = make(tag, attrs, content)
        # Close every list this node completes.
        while open_lists:
            parent = open_lists[-1]
            children = parent[2]
            children.append(node)
            if len(children) < parent[3]:
                break
            open_lists.pop()
            node = make(parent[0], parent[1], children)
        else:
            return node


def _string(data: bytes, pos: int, tag: int, depth: int, where: str) -> tuple[str, int]:
    """The string written with ``tag`` (already read; ``pos`` is just past it), and the new pos."""
    if 1 <= tag < len(SINGLE_BYTE_TOKENS):
        return SINGLE_BYTE_TOKENS[tag], pos
    if depth > MAX_STRING_DEPTH:
        raise DecodeError(pos, f"strings nested deeper than {MAX_STRING_DEPTH} levels{where}")
    end = len(data)
    if _DICTIONARY_0 <= tag <= _DICTIONARY_3:
        if pos >= end:
            raise _end(pos, where)
        return DOUBLE_BYTE_TOKENS[tag - _DICTIONARY_0][data[pos]], pos + 1
    if tag == _LIST_EMPTY:
        return "", pos
    if tag == _BINARY_8:
        if pos >= end:
            raise _end(pos, where)
        n = data[pos]
        pos += 1
    elif tag == _BINARY_20:
        if end - pos < 3:
            raise _short(3, end - pos, pos, where)
        n = ((data[pos] & 0x0F) << 16) | (data[pos + 1] << 8) | data[pos + 2]
        pos += 3
    elif tag == _BINARY_32:
        if end - pos < 4:
            raise _short(4, end - pos, pos, where)
        n = int.from_bytes(data[pos : pos + 4], "big")
        pos += 4
    elif tag == _NIBBLE_8 or tag == _HEX_8:
        return _packed(data, pos, tag, where)
    elif tag == _JID_PAIR:
        return _jid_pair(data, pos, depth + 1, where)
    elif tag == _AD_JID:
        return _ad_jid(data, pos, depth + 1, where)
    elif tag == _FB_JID:
        return _fb_jid(data, pos, depth + 1, where)
    elif tag == _INTEROP_JID:
        return _interop_jid(data, pos, depth + 1, where)
    else:
        raise DecodeError(pos - 1, f"invalid string tag {tag}{where}")
    # Raw bytes: BINARY_8/20/32 followed by n bytes of UTF-8.
    if n > end - pos:
        raise _short(n, end - pos, pos, where)
    return data[pos : pos + n].decode("utf-8", "replace"), pos + n


def _packed(data: bytes, pos: int, tag: int, where: str) -> tuple[str, int]:
    end = len(data)
    if pos >= end:
        raise _end(pos, where)
    head = data[pos]
    pos += 1
    n = head & 0x7F
    if n > end - pos:
        raise _short(n, end - pos, pos, where)
    pos += n
    digits = data[pos - n : pos].hex()
    if tag == _NIBBLE_8:
        if "c" in digits or "d" in digits or "e" in digits:
            nibble = next(int(d, 16) for d in digits if d in "cde")
            raise DecodeError(pos - 1, f"invalid nibble {nibble}{where}")
        text = digits.translate(_NIBBLE_TRANSLATION)
    else:
        text = digits.upper()
    if head & 0x80:
        # Odd length: the last nibble is padding, whatever its value (as Baileys).
        text = text[:-1]
    return text, pos


def _jid_pair(data: bytes, pos: int, depth: int, where: str) -> tuple[str, int]:
    start = pos - 1
    end = len(data)
    if pos >= end:
        raise _end(pos, where)
    user, pos = _string(data, pos + 1, data[pos], depth, where)
    if pos >= end:
        raise _end(pos, where)
    server, pos = _string(data, pos + 1, data[pos], depth, where)
    if not server:
        raise DecodeError(start, "JID pair with an empty server" + where)
    return f"{user}@{server}", pos


def _ad_jid(data: bytes, pos: int, depth: int, where: str) -> tuple[str, int]:
    end = len(data)
    if end - pos < 3:
        raise _end(end, where)
    domain_type = data[pos]
    device = data[pos + 1]
    user, pos = _string(data, pos + 3, data[pos + 2], depth, where)
    server = _AD_SERVERS.get(domain_type)
    if server is None:
        return format_ad_jid(domain_type, device, user), pos
    if device:
        return f"{user}:{device}@{server}", pos
    return f"{user}@{server}", pos


def _fb_jid(data: bytes, pos: int, depth: int, where: str) -> tuple[str, int]:
    end = len(data)
    if pos >= end:
        raise _end(pos, where)
    user, pos = _string(data, pos + 1, data[pos], depth, where)
    if end - pos < 2:
        raise _short(2, end - pos, pos, where)
    device = (data[pos] << 8) | data[pos + 1]
    pos += 2
    if pos >= end:
        raise _end(pos, where)
    server, pos = _string(data, pos + 1, data[pos], depth, where)
    return f"{user}:{device}@{server}", pos


def _interop_jid(data: bytes, pos: int, depth: int, where: str) -> tuple[str, int]:
    end = len(data)
    if pos >= end:
        raise _end(pos, where)
    user, pos = _string(data, pos + 1, data[pos], depth, where)
    if end - pos < 2:
        raise _short(2, end - pos, pos, where)
    device = (data[pos] << 8) | data[pos + 1]
    pos += 2
    if end - pos < 2:
        raise _short(2, end - pos, pos, where)
    integrator = (data[pos] << 8) | data[pos + 1]
    pos += 2
    # Baileys reads a server string if one parses here, else rewinds and uses "interop".
    server = "interop"
    if pos < end:
        try:
            server, pos = _string(data, pos + 1, data[pos], depth, where)
        except DecodeError:
            server = "interop"
    return f"{integrator}-{user}:{device}@{server}", pos
