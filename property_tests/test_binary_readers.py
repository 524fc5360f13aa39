"""The compiled reader of decode_node against the Python reference, on any input.

Whatever the bytes, both readers give the same outcome: equal nodes (same types,
same attribute order) or the same DecodeError (offset and reason).
"""

from __future__ import annotations

import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.connection.binary import BinaryNode, DecodeError, decode_node, encode_node
from actors.connection.binary.decoder import Reader, available_readers, use_reader
from property_tests.test_binary_codec import edits, mutate, nodes

pytestmark = pytest.mark.skipif(
    Reader.COMPILED not in available_readers(),
    reason="the compiled reader is not built here (no C compiler at install)",
)


def shape(node: BinaryNode) -> tuple[Any, ...]:
    """Everything a node holds, types and attribute order included."""
    content = node.content
    inner: Any = [shape(c) for c in content] if isinstance(content, list) else content
    return (node.tag, tuple(node.attrs.items()), type(content).__name__, inner)


def outcome(reader: Reader, data: bytes, limits: dict[str, int]) -> tuple[Any, ...]:
    with use_reader(reader):
        try:
            return ("node", shape(decode_node(data, **limits)))
        except DecodeError as exc:
            return ("error", exc.offset, exc.reason)


def readers_agree(data: bytes, **limits: int) -> None:
    python = outcome(Reader.PYTHON, data, limits)
    assert outcome(Reader.COMPILED, data, limits) == python


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes())
def test_readers_agree_on_encoded_nodes(node: BinaryNode) -> None:
    """A well-formed frame decodes to the same node with either reader."""
    readers_agree(encode_node(node))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes(st.binary(max_size=16)), edits, st.integers(1, 9))
def test_readers_agree_on_mutated_frames(
    node: BinaryNode, changes: list[tuple[int, int, int]], max_depth: int
) -> None:
    """Frames with bytes replaced, inserted or deleted: same node or same error, any depth bound."""
    readers_agree(mutate(encode_node(node), changes), max_depth=max_depth)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from([0, 1, 2, 3, 5, 236, 239, 245, 246, 247, 248, 249, 250, 251, 252, 255])
        | st.integers(0, 255),
        max_size=60,
    )
)
def test_readers_agree_on_tag_heavy_bytes(body: list[int]) -> None:
    """Bytes made mostly of tag bytes (lists, JIDs, packed strings, lengths) agree too."""
    readers_agree(bytes([0, 248, 4]) + bytes(body))
    readers_agree(bytes([0]) + bytes(body))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_readers_agree_on_random_and_compressed_bytes(data: bytes) -> None:
    """Random frames, plain and behind the compression flag, agree."""
    readers_agree(data)
    readers_agree(b"\x02" + zlib.compress(data))
