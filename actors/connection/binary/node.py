"""``BinaryNode``: the unit of the WhatsApp binary XML protocol, and ways to read it.

A node is ``tag``, ``attrs`` (string to string) and ``content``: None, bytes, a
string, or a list of child nodes.

String content: Baileys writes a string content the way it writes any string
(token, packed digits, JID, else raw UTF-8), and the wire keeps no other mark of it.
So a decoded content is ``str`` when it was written as a token, packed digits or
a JID, and ``bytes`` when it was written raw, whether the sender held a string or
bytes: ``BinaryNode("t", {}, "hello")`` comes back as ``content=b"hello"``, while
``BinaryNode("t", {}, "123")`` comes back as ``"123"``. Code that reads a content
as text should use :meth:`BinaryNode.text`, which accepts both.

Since 0.1.0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from actors.connection.binary.errors import MissingNodeError

#: What a node may hold.
Content = None | str | bytes | list["BinaryNode"]


@dataclass(frozen=True, slots=True, eq=True, repr=False)
class BinaryNode:
    """One node. Treat it as immutable: ``attrs`` and a child list are private copies.

    ``repr`` shows the size of bytes content, never the bytes (they are often keys).
    """

    tag: str
    attrs: Mapping[str, str] = field(default_factory=dict)
    content: Content = None

    def __post_init__(self) -> None:
        # Copies, so a caller mutating its dict or list later cannot change a node
        # that was already encoded, logged or handed to another actor.
        object.__setattr__(self, "attrs", dict(self.attrs))
        content = self.content
        if isinstance(content, (bytearray, memoryview)):
            object.__setattr__(self, "content", bytes(content))
        elif isinstance(content, Sequence) and not isinstance(content, (str, bytes)):
            object.__setattr__(self, "content", list(content))

    def __repr__(self) -> str:
        content = self.content
        if isinstance(content, bytes):
            shown = f"<{len(content)} bytes>"
        else:
            shown = repr(content)
        return f"BinaryNode(tag={self.tag!r}, attrs={dict(self.attrs)!r}, content={shown})"

    def attr(self, name: str, default: str | None = None) -> str | None:
        """The attribute ``name``, or ``default`` when absent."""
        return self.attrs.get(name, default)

    def require_attr(self, name: str) -> str:
        """The attribute ``name``; :class:`MissingNodeError` naming ``tag[@name]`` if absent."""
        value = self.attrs.get(name)
        if value is None:
            raise MissingNodeError(f"{self.tag}[@{name}]", "required attribute is missing")
        return value

    def children(self, tag: str | None = None) -> list[BinaryNode]:
        """The child nodes (those with ``tag`` when given), in order; [] if none."""
        content = self.content
        if not isinstance(content, list):
            return []
        if tag is None:
            return list(content)
        return [child for child in content if child.tag == tag]

    def child(self, tag: str) -> BinaryNode | None:
        """The first child with ``tag``, or None."""
        content = self.content
        if isinstance(content, list):
            for node in content:
                if node.tag == tag:
                    return node
        return None

    def require_child(self, *path: str) -> BinaryNode:
        """Follow ``path`` (first child with each tag in turn) and return the node found.

        Raises :class:`MissingNodeError` naming the path up to the missing tag, e.g.
        ``iq/pair-device/ref``.
        """
        node = self
        walked = self.tag
        for tag in path:
            walked = f"{walked}/{tag}"
            found = node.child(tag)
            if found is None:
                raise MissingNodeError(walked, "required child is missing")
            node = found
        return node

    def require_bytes(self) -> bytes:
        """The content as bytes (a string content as UTF-8); MissingNodeError if none."""
        content = self.content
        if isinstance(content, bytes):
            return content
        if isinstance(content, str):
            return content.encode("utf-8")
        raise MissingNodeError(self.tag, "has no bytes content")

    def text(self) -> str | None:
        """The content as text (bytes decoded as UTF-8, replacing bad bytes), else None.

        Baileys' ``getBinaryNodeChildString`` for this node.
        """
        content = self.content
        if isinstance(content, bytes):
            return content.decode("utf-8", errors="replace")
        if isinstance(content, str):
            return content
        return None


# The decoder's constructor, for the decoder only: ``_new_node(BinaryNode)`` then
# the three setters. The decoder builds each node's attrs dict and child list
# itself and hands them over, so the copies ``__post_init__`` makes would only
# copy what nobody else holds; and its content is already None, str, bytes or a
# list of nodes. The slot descriptors write past the frozen ``__setattr__``. The
# public constructor keeps copying.
_new_node = object.__new__
_set_tag = BinaryNode.__dict__["tag"].__set__
_set_attrs = BinaryNode.__dict__["attrs"].__set__
_set_content = BinaryNode.__dict__["content"].__set__
