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

Since 0.1.0.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from actors.connection.binary.encoder import MAX_DEPTH
from actors.connection.binary.errors import DecodeError
from actors.connection.binary.jid import format_ad_jid
from actors.connection.binary.node import BinaryNode, Content
from actors.connection.binary.tags import FLAG_COMPRESSED, Tag
from actors.connection.binary.tokens import DOUBLE_BYTE_TOKENS, SINGLE_BYTE_TOKENS

#: Default bound on an inflated payload: the largest frame the 3-byte length allows.
MAX_FRAME_SIZE = (1 << 24) - 1

#: Deepest nesting of strings inside strings (a JID's user written as a JID, ...).
MAX_STRING_DEPTH = 16

_NIBBLE_CHARS = "0123456789-.\x00\x00\x00\x00"  # 12..14 invalid, 15 is the pad
_HEX_CHARS = "0123456789ABCDEF"
_LIST_TAGS = (Tag.LIST_EMPTY, Tag.LIST_8, Tag.LIST_16)


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
        return _Reader(body, 0, max_depth, " (in the inflated payload)").root()
    if len(data) - 1 > max_size:
        raise DecodeError(1, f"node of {len(data) - 1} bytes exceeds the {max_size} allowed")
    return _Reader(data, 1, max_depth, "").root()


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


@dataclass(slots=True)
class _OpenList:
    """A node whose children are being read."""

    tag: str
    attrs: dict[str, str]
    children: list[BinaryNode]
    count: int


class _Reader:
    """A cursor over one node's bytes; every read checks the bytes are there."""

    __slots__ = ("data", "max_depth", "pos", "where")

    def __init__(self, data: bytes, pos: int, max_depth: int, where: str) -> None:
        self.data = data
        self.pos = pos
        self.max_depth = max_depth
        self.where = where

    def fail(self, reason: str, at: int | None = None) -> DecodeError:
        return DecodeError(self.pos if at is None else at, reason + self.where)

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("unexpected end of data")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise self.fail(
                f"declared length {n} exceeds the {len(self.data) - self.pos} bytes left"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def root(self) -> BinaryNode:
        """Read the root node and all below it.

        A loop over an explicit stack of open lists rather than recursion, so the
        depth of the input never touches Python's stack, whoever calls us.
        """
        open_lists: list[_OpenList] = []
        while True:
            tag, attrs, has_content = self.head()
            content: Content = None
            if has_content:
                content_tag = self.byte()
                if content_tag in _LIST_TAGS:
                    count = self.list_size(content_tag)
                    if count:
                        if len(open_lists) + 2 > self.max_depth:
                            raise self.fail(f"nodes nested deeper than {self.max_depth} levels")
                        open_lists.append(_OpenList(tag, attrs, [], count))
                        continue
                    content = []
                else:
                    content = self.scalar(content_tag)
            node = BinaryNode(tag, attrs, content)
            while open_lists:
                parent = open_lists[-1]
                parent.children.append(node)
                if len(parent.children) < parent.count:
                    break
                open_lists.pop()
                node = BinaryNode(parent.tag, parent.attrs, parent.children)
            else:
                return node

    def head(self) -> tuple[str, dict[str, str], bool]:
        """A node's list size, tag and attributes; whether content follows."""
        start = self.pos
        size = self.list_size(self.byte())
        if size == 0:
            raise self.fail("invalid node: an empty list", start)
        tag = self.string(self.byte(), 0)
        if not tag:
            raise self.fail("invalid node: an empty tag", start)
        attrs: dict[str, str] = {}
        for _ in range((size - 1) >> 1):
            key = self.string(self.byte(), 0)
            attrs[key] = self.string(self.byte(), 0)
        return tag, attrs, size % 2 == 0

    def scalar(self, tag: int) -> bytes | str:
        """Content that is not a list: bytes when written as binary, else a string."""
        if tag == Tag.BINARY_8:
            return self.take(self.byte())
        if tag == Tag.BINARY_20:
            return self.take(self.uint20())
        if tag == Tag.BINARY_32:
            return self.take(self.uint(4))
        return self.string(tag, 0)

    def list_size(self, tag: int) -> int:
        if tag == Tag.LIST_EMPTY:
            return 0
        if tag == Tag.LIST_8:
            return self.byte()
        if tag == Tag.LIST_16:
            return self.uint(2)
        raise self.fail(f"invalid list tag {tag}", self.pos - 1)

    def uint20(self) -> int:
        high, mid, low = self.take(3)
        return ((high & 0x0F) << 16) | (mid << 8) | low

    def string(self, tag: int, depth: int) -> str:
        if 1 <= tag < len(SINGLE_BYTE_TOKENS):
            return SINGLE_BYTE_TOKENS[tag]
        if depth > MAX_STRING_DEPTH:
            raise self.fail(f"strings nested deeper than {MAX_STRING_DEPTH} levels")
        if Tag.DICTIONARY_0 <= tag <= Tag.DICTIONARY_3:
            return DOUBLE_BYTE_TOKENS[tag - Tag.DICTIONARY_0][self.byte()]
        if tag == Tag.LIST_EMPTY:
            return ""
        if tag == Tag.BINARY_8:
            return self.text(self.byte())
        if tag == Tag.BINARY_20:
            return self.text(self.uint20())
        if tag == Tag.BINARY_32:
            return self.text(self.uint(4))
        if tag in (Tag.NIBBLE_8, Tag.HEX_8):
            return self.packed(tag)
        if tag == Tag.JID_PAIR:
            return self.jid_pair(depth + 1)
        if tag == Tag.AD_JID:
            domain_type, device = self.byte(), self.byte()
            return format_ad_jid(domain_type, device, self.string(self.byte(), depth + 1))
        if tag == Tag.FB_JID:
            user = self.string(self.byte(), depth + 1)
            device = self.uint(2)
            return f"{user}:{device}@{self.string(self.byte(), depth + 1)}"
        if tag == Tag.INTEROP_JID:
            return self.interop_jid(depth + 1)
        raise self.fail(f"invalid string tag {tag}", self.pos - 1)

    def text(self, n: int) -> str:
        return self.take(n).decode("utf-8", errors="replace")

    def packed(self, tag: int) -> str:
        head = self.byte()
        chars = _NIBBLE_CHARS if tag == Tag.NIBBLE_8 else _HEX_CHARS
        out: list[str] = []
        for byte in self.take(head & 0x7F):
            for nibble in (byte >> 4, byte & 0x0F):
                if tag == Tag.NIBBLE_8 and 12 <= nibble <= 14:
                    raise self.fail(f"invalid nibble {nibble}", self.pos - 1)
                out.append(chars[nibble])
        if head & 0x80:
            # Odd length: the last nibble is padding, whatever its value (as Baileys).
            out = out[:-1]
        return "".join(out)

    def jid_pair(self, depth: int) -> str:
        start = self.pos - 1
        user = self.string(self.byte(), depth)
        server = self.string(self.byte(), depth)
        if not server:
            raise self.fail("JID pair with an empty server", start)
        return f"{user}@{server}"

    def interop_jid(self, depth: int) -> str:
        user = self.string(self.byte(), depth)
        device = self.uint(2)
        integrator = self.uint(2)
        # Baileys reads a server string if one parses here, else rewinds and uses "interop".
        before = self.pos
        try:
            server = self.string(self.byte(), depth)
        except DecodeError:
            self.pos = before
            server = "interop"
        return f"{integrator}-{user}:{device}@{server}"
