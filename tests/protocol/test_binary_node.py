"""BinaryNode: an immutable node with helpers to find children and attributes."""

from __future__ import annotations

import pytest

import actors.connection.binary as binary
from actors.connection.binary import BinaryNode, MissingNodeError

N = BinaryNode

PAIR_SUCCESS = N(
    "iq",
    {"id": "1", "type": "set"},
    [
        N(
            "pair-success",
            {},
            [
                N("device-identity", {"key-index": "2"}, b"\x01\x02"),
                N("device", {"jid": "1:2@s.whatsapp.net"}),
                N("platform", {"name": "smbi"}),
                N("device", {"jid": "1:3@s.whatsapp.net"}),
            ],
        )
    ],
)


def test_public_names_exist() -> None:
    """Every name in the package's __all__ is importable from it."""
    for name in binary.__all__:
        assert hasattr(binary, name), name
    assert {"BinaryNode", "Jid", "encode_node", "decode_node", "DecodeError"} <= set(binary.__all__)


def test_defaults_are_no_attrs_and_no_content() -> None:
    """A node made from a tag alone has no attributes and no content."""
    node = N("ping")
    assert node.attrs == {}
    assert node.content is None


def test_node_is_frozen_and_copies_its_inputs() -> None:
    """Fields cannot be reassigned and later changes to the caller's dict or list do not leak in."""
    attrs = {"id": "1"}
    children = [N("a")]
    node = N("iq", attrs, children)
    attrs["id"] = "2"
    children.append(N("b"))
    assert node.attrs == {"id": "1"}
    assert node.content == [N("a")]
    with pytest.raises(AttributeError):
        node.tag = "other"  # type: ignore[misc]  # assigning to a frozen field on purpose


def test_bytearray_content_becomes_bytes() -> None:
    """Bytes-like content is stored as bytes, so nodes compare equal by value."""
    assert N("x", {}, bytearray(b"ab")) == N("x", {}, b"ab")  # type: ignore[arg-type]  # bytes-like on purpose


def test_child_and_children() -> None:
    """child() gives the first child with a tag; children() all of them, or all children."""
    success = PAIR_SUCCESS.child("pair-success")
    assert success is not None
    first = success.child("device")
    assert first is not None and first.attrs["jid"] == "1:2@s.whatsapp.net"
    assert [d.attrs["jid"] for d in success.children("device")] == [
        "1:2@s.whatsapp.net",
        "1:3@s.whatsapp.net",
    ]
    assert len(success.children()) == 4
    assert success.child("missing") is None
    assert success.children("missing") == []
    assert N("x", {}, b"bytes").children() == []
    assert N("x", {}, b"bytes").child("y") is None


def test_attr_with_default() -> None:
    """attr() gives the attribute, or the default when absent."""
    assert PAIR_SUCCESS.attr("type") == "set"
    assert PAIR_SUCCESS.attr("to") is None
    assert PAIR_SUCCESS.attr("to", "@s.whatsapp.net") == "@s.whatsapp.net"


def test_require_child_follows_a_path() -> None:
    """require_child walks tags in turn and returns the node at the end."""
    identity = PAIR_SUCCESS.require_child("pair-success", "device-identity")
    assert identity.require_bytes() == b"\x01\x02"
    assert PAIR_SUCCESS.require_child() is PAIR_SUCCESS


def test_require_child_names_the_missing_path() -> None:
    """A missing child raises MissingNodeError naming the path up to it."""
    with pytest.raises(MissingNodeError) as caught:
        PAIR_SUCCESS.require_child("pair-success", "biz", "name")
    assert caught.value.path == "iq/pair-success/biz"
    assert "iq/pair-success/biz" in str(caught.value)
    assert caught.value.error_status_hint == 500


def test_require_attr_names_the_missing_attribute() -> None:
    """A missing attribute raises MissingNodeError naming tag[@name]."""
    assert PAIR_SUCCESS.require_attr("id") == "1"
    with pytest.raises(MissingNodeError, match=r"iq\[@to\]"):
        PAIR_SUCCESS.require_attr("to")


def test_require_bytes_and_text() -> None:
    """Bytes content reads as bytes or text; string content as text or UTF-8 bytes."""
    assert N("x", {}, "héllo").require_bytes() == "héllo".encode()
    assert N("x", {}, b"h\xc3\xa9llo").text() == "héllo"
    assert N("x", {}, b"\xff").text() == "\ufffd"
    assert N("x", {}, "123").text() == "123"
    assert N("x").text() is None
    with pytest.raises(MissingNodeError, match="has no bytes content"):
        N("x", {}, [N("y")]).require_bytes()


def test_repr_hides_bytes() -> None:
    """repr shows the size of bytes content, never the bytes (often key material)."""
    secret = bytes(range(32))
    text = repr(N("identity", {}, secret))
    assert "<32 bytes>" in text
    assert secret.hex() not in text and repr(secret) not in text
    assert "identity" in repr(N("list", {}, [N("identity", {}, secret)]))
    assert repr(secret) not in repr(N("list", {}, [N("identity", {}, secret)]))
