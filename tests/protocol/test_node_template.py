"""``NodeTemplate``: a stanza written again and again, its one varying string encoded alone.

Whatever the value, the template's bytes are ``encode_node``'s for the whole node, so
the wire cannot tell a templated keepalive from one encoded node by node.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.connection.binary import BinaryNode, EncodeError, NodeTemplate, encode_node
from actors.connection.client import IdGenerator, keepalive_node

KEEPALIVE = NodeTemplate(keepalive_node)


@given(st.text(max_size=300))
def test_any_id_gives_the_bytes_of_the_whole_keepalive_node(iq_id: str) -> None:
    """Tokens, packed digits, hex, JIDs, raw text of any length: the same bytes."""
    assert KEEPALIVE.encode(iq_id) == encode_node(keepalive_node(iq_id))


def test_the_ids_a_connection_makes_give_the_bytes_of_the_whole_node() -> None:
    """Baileys-shaped ids (``<n>.<n>-<count>``) as a connection hands them out."""
    ids = IdGenerator()
    for _ in range(300):
        iq_id = ids.next()
        assert KEEPALIVE.encode(iq_id) == encode_node(keepalive_node(iq_id))


def test_a_value_no_frame_can_carry_is_an_encode_error() -> None:
    """A lone surrogate is not Unicode: EncodeError, as encode_node raises for the node."""
    with pytest.raises(EncodeError):
        encode_node(keepalive_node("\ud800"))
    with pytest.raises(EncodeError):
        KEEPALIVE.encode("\ud800")


def test_a_node_without_the_value_or_with_it_twice_is_refused() -> None:
    """The value must sit in exactly one place, or the pieces around it would be wrong."""
    with pytest.raises(ValueError, match="exactly one place"):
        NodeTemplate(lambda _value: BinaryNode("iq", {"type": "get"}))
    with pytest.raises(ValueError, match="exactly one place"):
        NodeTemplate(lambda value: BinaryNode("iq", {"id": value, "to": value}))
