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

Two readers, one behaviour. The Python reader here is the reference: it is always
present and it alone decides every error. When the optional compiled reader
(``_speedups.c``, built at install time if a C compiler is present) is importable,
``decode_node`` asks it first; it returns the very node the Python reader would, or
declines (malformed input, or a rare form it leaves to Python: FB_JID, INTEROP_JID,
an AD_JID of an unknown domain, very deep nesting), and then the Python reader runs
on the same bytes. :func:`current_reader` says which one is in use;
:func:`use_reader` switches for a block (tests run every codec test with each).

Since 0.1.0.
"""

from __future__ import annotations

import enum
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from actors.connection.binary.encoder import MAX_DEPTH
from actors.connection.binary.errors import DecodeError
from actors.connection.binary.jid import format_ad_jid
from actors.connection.binary.node import (
    BinaryNode,
    Content,
    _new_node,
    _set_attrs,
    _set_content,
    _set_tag,
)
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
_TOKEN_END = len(SINGLE_BYTE_TOKENS)
#: A string tag to its single-byte token, else None.
_TOKENS: tuple[str | None, ...] = tuple(
    SINGLE_BYTE_TOKENS[b] if 1 <= b < _TOKEN_END else None for b in range(256)
)
#: The hex digits (as ASCII bytes) of a nibble-packed string to the characters they
#: stand for: 10 is '-', 11 is '.', 15 (the pad) is NUL; 12..14 are invalid ('!').
_NIBBLE_BYTES = bytes.maketrans(b"abcdef", b"-.!!!\x00")
#: ``_COUNTS[k]`` is ``range(k)``, made once: cheaper than a fresh range per node.
_COUNTS = tuple(range(k) for k in range(128))
#: Known AD_JID domain types and their servers (the rest go through format_ad_jid).
_AD_SERVERS = {0: "s.whatsapp.net", 1: "lid", 128: "hosted", 129: "hosted.lid"}


class Reader(enum.Enum):
    """The two readers behind :func:`decode_node`."""

    #: The pure-Python reader below: the reference, always available.
    PYTHON = "python"
    #: The optional C reader (``_speedups``), falling back to PYTHON where it declines.
    COMPILED = "compiled"


_CompiledRead = Callable[[bytes, int, int], BinaryNode | None]


def _load_compiled() -> _CompiledRead | None:
    try:
        from actors.connection.binary import _speedups
    except ImportError:  # built only where a C compiler was present at install time
        return None
    servers = (_AD_SERVERS[0], _AD_SERVERS[1], _AD_SERVERS[128], _AD_SERVERS[129])
    try:
        _speedups.setup(BinaryNode, SINGLE_BYTE_TOKENS, DOUBLE_BYTE_TOKENS, servers)
    except TypeError as exc:
        # A build that does not fit this BinaryNode or these tables must never be used,
        # nor stop the codec from importing: say so and read in Python.
        warnings.warn(f"decode_node's compiled reader left unused: {exc}", RuntimeWarning, 2)
        return None
    return _speedups.read


_COMPILED = _load_compiled()
#: What decode_node asks first: the compiled reader, or None for the Python one only.
_first_reader: _CompiledRead | None = _COMPILED


def available_readers() -> list[Reader]:
    """The readers this installation has: PYTHON always, COMPILED when it was built."""
    return [Reader.PYTHON] if _COMPILED is None else [Reader.PYTHON, Reader.COMPILED]


def current_reader() -> Reader:
    """The reader :func:`decode_node` uses now (COMPILED by default when available)."""
    return Reader.PYTHON if _first_reader is None else Reader.COMPILED


@contextmanager
def use_reader(reader: Reader) -> Iterator[None]:
    """Make :func:`decode_node` use ``reader`` inside the block (process-wide; for tests
    and benchmarks). LookupError when ``reader`` is not available here."""
    global _first_reader
    if reader not in available_readers():
        raise LookupError(f"the {reader.value} reader is not built in this installation")
    saved = _first_reader
    _first_reader = _COMPILED if reader is Reader.COMPILED else None
    try:
        yield
    finally:
        _first_reader = saved


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


def _too_deep(pos: int, where: str) -> DecodeError:
    return DecodeError(pos, f"strings nested deeper than {MAX_STRING_DEPTH} levels{where}")


# --- The reader ----------------------------------------------------------------
#
# One-byte reads are not bounds-checked: ``data[pos]`` past the end raises
# IndexError, which ``_read_root`` turns into "unexpected end of data" at
# ``len(data)``, the only place a one-byte read can fail (the cursor never passes
# the end: every longer read checks its length first). Nothing else in the reader
# can raise IndexError.


def _read_root(data: bytes, pos: int, max_depth: int, where: str) -> BinaryNode:
    """Read the root node and all below it, starting at ``pos``.

    A loop over an explicit stack of open lists rather than recursion, so the
    depth of the input never touches Python's stack, whoever calls us. The compiled
    reader, when in use, goes first; where it declines, this one decides.
    """
    first = _first_reader
    if first is not None:
        node = first(data, pos, max_depth)
        if node is not None:
            return node
    try:
        return _read_nodes(data, pos, max_depth, where)
    except IndexError:
        raise _end(len(data), where) from None


def _read_nodes(data: bytes, pos: int, max_depth: int, where: str) -> BinaryNode:
    end = len(data)
    depth0 = _DEPTH0
    read_string = _string
    counts = _COUNTS
    new, set_tag, set_attrs, set_content = _new_node, _set_tag, _set_attrs, _set_content
    node_type = BinaryNode
    # The innermost open list is in locals (its tag, attrs, children and count);
    # those around it wait on ``outer``; ``level`` counts them all.
    outer: list[tuple[str, dict[str, str], list[BinaryNode], int]] = []
    children: list[BinaryNode] | None = None
    list_tag = ""
    list_attrs: dict[str, str] = {}
    count = level = 0
    deepest = max_depth - 2
    while True:
        # The head: list size, tag, attributes.
        start = pos
        b = data[pos]
        if b == _LIST_8:
            size = data[pos + 1]
            pos += 2
        elif b == _LIST_16:
            pos += 1
            if end - pos < 2:
                raise _short(2, end - pos, pos, where)
            size = (data[pos] << 8) | data[pos + 1]
            pos += 2
        elif b == _LIST_EMPTY:
            raise DecodeError(start, "invalid node: an empty list" + where)
        else:
            raise DecodeError(pos, f"invalid list tag {b}{where}")
        if size == 0:
            raise DecodeError(start, "invalid node: an empty list" + where)
        b = data[pos]
        pos += 1
        tag = depth0[b]
        if tag is None:
            tag, pos = read_string(data, pos, b, 0, where)
        if not tag:
            raise DecodeError(start, "invalid node: an empty tag" + where)
        attrs: dict[str, str] = {}
        pairs = (size - 1) >> 1
        for _ in counts[pairs] if pairs < 128 else range(pairs):
            b = data[pos]
            pos += 1
            key = depth0[b]
            if key is None:
                key, pos = read_string(data, pos, b, 0, where)
            b = data[pos]
            pos += 1
            value = depth0[b]
            if value is None:
                value, pos = read_string(data, pos, b, 0, where)
            attrs[key] = value
        # The content, if any.
        content: Content = None
        if not size & 1:
            b = data[pos]
            pos += 1
            if b == _BINARY_8:
                n = data[pos]
                pos += 1
                if n > end - pos:
                    raise _short(n, end - pos, pos, where)
                content = data[pos : pos + n]
                pos += n
            elif b == _LIST_8 or b == _LIST_16 or b == _LIST_EMPTY:
                if b == _LIST_8:
                    n = data[pos]
                    pos += 1
                elif b == _LIST_16:
                    if end - pos < 2:
                        raise _short(2, end - pos, pos, where)
                    n = (data[pos] << 8) | data[pos + 1]
                    pos += 2
                else:
                    n = 0
                if n:
                    if level > deepest:
                        raise DecodeError(
                            pos, f"nodes nested deeper than {max_depth} levels{where}"
                        )
                    if children is not None:
                        outer.append((list_tag, list_attrs, children, count))
                    list_tag, list_attrs, children, count = tag, attrs, [], n
                    level += 1
                    continue
                content = []
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
            else:
                content = depth0[b]
                if content is None:
                    content, pos = read_string(data, pos, b, 0, where)
        node = new(node_type)
        set_tag(node, tag)
        set_attrs(node, attrs)
        set_content(node, content)
        # Close every list this node completes.
        while children is not None:
            children.append(node)
            if len(children) < count:
                break
            node = new(node_type)
            set_tag(node, list_tag)
            set_attrs(node, list_attrs)
            set_content(node, children)
            level -= 1
            if outer:
                list_tag, list_attrs, children, count = outer.pop()
            else:
                children = None
        else:
            return node


def _string(data: bytes, pos: int, tag: int, depth: int, where: str) -> tuple[str, int]:
    """The string written with ``tag`` (already read; ``pos`` is just past it), and the new pos."""
    if 1 <= tag < _TOKEN_END:
        return SINGLE_BYTE_TOKENS[tag], pos
    if depth > MAX_STRING_DEPTH:
        raise _too_deep(pos, where)
    # Past the two checks above the tags are disjoint: most frequent first.
    if tag == _JID_PAIR:
        return _jid_pair(data, pos, depth + 1, where)
    if tag == _NIBBLE_8:
        return _nibbles(data, pos, where)
    if tag == _HEX_8:
        return _hex(data, pos, where)
    if tag == _BINARY_8:
        n = data[pos]
        pos += 1
    elif tag == _AD_JID:
        return _ad_jid(data, pos, depth + 1, where)
    elif _DICTIONARY_0 <= tag <= _DICTIONARY_3:
        return DOUBLE_BYTE_TOKENS[tag - _DICTIONARY_0][data[pos]], pos + 1
    elif tag == _LIST_EMPTY:
        return "", pos
    elif tag == _BINARY_20:
        end = len(data)
        if end - pos < 3:
            raise _short(3, end - pos, pos, where)
        n = ((data[pos] & 0x0F) << 16) | (data[pos + 1] << 8) | data[pos + 2]
        pos += 3
    elif tag == _BINARY_32:
        end = len(data)
        if end - pos < 4:
            raise _short(4, end - pos, pos, where)
        n = int.from_bytes(data[pos : pos + 4], "big")
        pos += 4
    elif tag == _FB_JID:
        return _fb_jid(data, pos, depth + 1, where)
    elif tag == _INTEROP_JID:
        return _interop_jid(data, pos, depth + 1, where)
    else:
        raise DecodeError(pos - 1, f"invalid string tag {tag}{where}")
    # Raw bytes: BINARY_8/20/32 then n bytes of UTF-8.
    left = len(data) - pos
    if n > left:
        raise _short(n, left, pos, where)
    return data[pos : pos + n].decode("utf-8", "replace"), pos + n


def _nibbles(data: bytes, pos: int, where: str) -> tuple[str, int]:
    """NIBBLE_8: digits, '-' and '.' packed two to a byte."""
    head = data[pos]
    pos += 1
    n = head & 0x7F
    left = len(data) - pos
    if n > left:
        raise _short(n, left, pos, where)
    pos += n
    digits = data[pos - n : pos].hex()
    if head & 0x80:
        # Odd length: the last nibble is padding, whatever its value (as Baileys),
        # though 12..14 are refused there too.
        text = digits[:-1]
        if text.isdigit() and digits[-1] == "f":
            return text, pos
    elif digits.isdigit():
        return digits, pos
    raw = data[pos - n : pos].hex().encode("ascii").translate(_NIBBLE_BYTES)
    bad = raw.find(b"!")
    if bad >= 0:
        raise DecodeError(pos - 1, f"invalid nibble {int(digits[bad], 16)}{where}")
    text = raw.decode("ascii")
    return (text[:-1] if head & 0x80 else text), pos


def _hex(data: bytes, pos: int, where: str) -> tuple[str, int]:
    """HEX_8: upper-case hex digits packed two to a byte."""
    head = data[pos]
    pos += 1
    n = head & 0x7F
    left = len(data) - pos
    if n > left:
        raise _short(n, left, pos, where)
    pos += n
    text = data[pos - n : pos].hex().upper()
    # Odd length: the last nibble is padding, whatever its value (as Baileys).
    return (text[:-1] if head & 0x80 else text), pos


def _jid_pair(data: bytes, pos: int, depth: int, where: str) -> tuple[str, int]:
    start = pos - 1
    b = data[pos]
    if b == _NIBBLE_8 and depth <= MAX_STRING_DEPTH:  # a phone number, mostly
        user, pos = _nibbles(data, pos + 1, where)
    else:
        user, pos = _string(data, pos + 1, b, depth, where)
    b = data[pos]
    server = _TOKENS[b]
    if server is None:
        server, pos = _string(data, pos + 1, b, depth, where)
        if not server:
            raise DecodeError(start, "JID pair with an empty server" + where)
    else:
        pos += 1
    return f"{user}@{server}", pos


def _ad_jid(data: bytes, pos: int, depth: int, where: str) -> tuple[str, int]:
    domain_type = data[pos]
    device = data[pos + 1]
    b = data[pos + 2]
    if b == _NIBBLE_8 and depth <= MAX_STRING_DEPTH:
        user, pos = _nibbles(data, pos + 3, where)
    else:
        user, pos = _string(data, pos + 3, b, depth, where)
    server = _AD_SERVERS.get(domain_type)
    if server is None:
        return format_ad_jid(domain_type, device, user), pos
    if device:
        return f"{user}:{device}@{server}", pos
    return f"{user}@{server}", pos


def _fb_jid(data: bytes, pos: int, depth: int, where: str) -> tuple[str, int]:
    user, pos = _string(data, pos + 1, data[pos], depth, where)
    end = len(data)
    if end - pos < 2:
        raise _short(2, end - pos, pos, where)
    device = (data[pos] << 8) | data[pos + 1]
    pos += 2
    server, pos = _string(data, pos + 1, data[pos], depth, where)
    return f"{user}:{device}@{server}", pos


def _interop_jid(data: bytes, pos: int, depth: int, where: str) -> tuple[str, int]:
    user, pos = _string(data, pos + 1, data[pos], depth, where)
    end = len(data)
    if end - pos < 2:
        raise _short(2, end - pos, pos, where)
    device = (data[pos] << 8) | data[pos + 1]
    pos += 2
    if end - pos < 2:
        raise _short(2, end - pos, pos, where)
    integrator = (data[pos] << 8) | data[pos + 1]
    pos += 2
    # Baileys reads a server string if one parses here, else rewinds and uses "interop"
    # (IndexError: the server's first byte, or one inside it, is past the end).
    try:
        server, pos = _string(data, pos + 1, data[pos], depth, where)
    except (DecodeError, IndexError):
        server = "interop"
    return f"{integrator}-{user}:{device}@{server}", pos
