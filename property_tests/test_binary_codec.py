"""Property tests of the binary node codec.

The model of what comes back is written from the format's rules (PROTOCOL.md
"Binary nodes"), not from the encoder: a string content comes back as ``str`` when
the wire has a non-raw form for it (a token, packed digits or hex of at most 127
characters, or a JID form that carries it unchanged) and as ``bytes`` otherwise.
"""

from __future__ import annotations

import re
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.connection.binary import BinaryNode, DecodeError, decode_node, encode_node
from actors.connection.binary.tokens import DOUBLE_BYTE_TOKENS, SINGLE_BYTE_TOKENS

#: Every property runs with each decoder reader: the Python reference and the compiled one.
pytestmark = pytest.mark.usefixtures("each_reader")

# -- the model ---------------------------------------------------------------------------

TOKENS = frozenset(SINGLE_BYTE_TOKENS[1:]) | frozenset(
    t for table in DOUBLE_BYTE_TOKENS for t in table
)
NIBBLE = re.compile(r"[0-9.\-]{1,127}")
HEX = re.compile(r"[0-9A-F]{1,127}")
# JID forms that read back as the same text (Baileys' jidEncode drops device 0 and the
# agent of an AD_JID is its domain byte, so only these are carried unchanged):
USER = r"[^@:_]*"
BYTE_1_255 = r"(?:[1-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-5])"
AGENT = r"(?:[2-9]|[1-9][0-9]|1[0-1][0-9]|12[0-7]|13[0-9]|1[4-9][0-9]|2[0-4][0-9]|25[0-5])"
JID_FORMS = [
    re.compile(rf"{USER}@[^@]+"),
    re.compile(rf"{USER}:{BYTE_1_255}@(?:s\.whatsapp\.net|lid|hosted|hosted\.lid)"),
    re.compile(rf"{USER}_{AGENT}:{BYTE_1_255}@s\.whatsapp\.net"),
]


def has_string_form(text: str) -> bool:
    """Whether the wire writes ``text`` in a form other than raw bytes."""
    return bool(
        text in TOKENS
        or NIBBLE.fullmatch(text)
        or HEX.fullmatch(text)
        or any(form.fullmatch(text) for form in JID_FORMS)
    )


def expected(node: BinaryNode) -> BinaryNode:
    """What decoding the encoding of ``node`` gives back."""
    content = node.content
    if isinstance(content, str) and not has_string_form(content):
        content = content.encode("utf-8")
    elif isinstance(content, list):
        content = [expected(child) for child in content]
    return BinaryNode(node.tag, node.attrs, content)


def test_model_agent_pattern_is_2_to_255_without_128_129() -> None:
    """The model's agent pattern accepts exactly the canonical numbers 2..255 except 128, 129."""
    agent = re.compile(AGENT)
    accepted = {n for n in range(400) if agent.fullmatch(str(n))}
    assert accepted == set(range(2, 256)) - {128, 129}
    assert not agent.fullmatch("07")


# -- strategies --------------------------------------------------------------------------

numbers = st.integers(0, 300).map(str) | st.sampled_from(["00", "01", "007", "", "x"])
servers = st.sampled_from(
    ["s.whatsapp.net", "lid", "hosted", "hosted.lid", "g.us", "c.us", "broadcast", "newsletter", ""]
)
users = st.text("0123456789", max_size=15) | st.text("abc-._", max_size=5)


@st.composite
def jid_like(draw: st.DrawFn) -> str:
    user = draw(users)
    if draw(st.booleans()):
        user += "_" + draw(numbers)
    if draw(st.booleans()):
        user += ":" + draw(numbers)
    return user + "@" + draw(servers)


strings = st.one_of(
    st.sampled_from(sorted(TOKENS)),
    st.text("0123456789-.", min_size=1, max_size=130),
    st.text("0123456789ABCDEF", min_size=1, max_size=130),
    st.text("0123456789abcdef", min_size=1, max_size=10),
    jid_like(),
    st.text("12ab@:_.", max_size=12),
    st.text(max_size=30),
    st.sampled_from(["", "constructor", "toString", "__proto__", "x" * 300]),
)
tags = strings.filter(bool)
attrs = st.dictionaries(strings, strings, max_size=4)
blobs = st.binary(max_size=64) | st.integers(250, 70_000).map(lambda n: b"\xa5" * n)


def nodes(content_bytes: st.SearchStrategy[bytes] = blobs) -> st.SearchStrategy[BinaryNode]:
    leaf = st.builds(BinaryNode, tags, attrs, st.none() | content_bytes | strings)
    return st.recursive(
        leaf,
        lambda children: st.builds(BinaryNode, tags, attrs, st.lists(children, max_size=4)),
        max_leaves=12,
    )


# -- round trips -------------------------------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes())
def test_decode_of_encode_gives_the_node_back(node: BinaryNode) -> None:
    """decode(encode(n)) equals n, string content coming back as the model says."""
    data = encode_node(node)
    assert data[0] == 0
    assert decode_node(data) == expected(node)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes())
def test_encoding_a_decoded_node_gives_the_same_bytes(node: BinaryNode) -> None:
    """Re-encoding what was decoded reproduces the frame byte for byte."""
    data = encode_node(node)
    assert encode_node(decode_node(data)) == data


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes(), st.sampled_from([0x02, 0x06, 0xFF]))
def test_compressed_frames_decode_like_plain_ones(node: BinaryNode, flags: int) -> None:
    """A frame with the compression flag and a zlib body decodes to the plain frame's node."""
    data = encode_node(node)
    assert decode_node(bytes([flags]) + zlib.compress(data[1:])) == decode_node(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes(), st.data())
def test_every_truncated_prefix_raises_decode_error(node: BinaryNode, data: st.DataObject) -> None:
    """Any strict prefix of a valid frame raises DecodeError (the node is incomplete)."""
    frame = encode_node(node)
    cuts = (
        range(len(frame))
        if len(frame) <= 400
        else data.draw(st.lists(st.integers(0, len(frame) - 1), min_size=1, max_size=40))
    )
    for cut in cuts:
        try:
            decode_node(frame[:cut])
        except DecodeError:
            continue
        raise AssertionError(f"prefix of {cut} of {len(frame)} bytes decoded")


# -- fuzz: nothing but DecodeError escapes -----------------------------------------------


def decodes_or_raises_decode_error(data: bytes, **limits: int) -> None:
    try:
        node = decode_node(data, **limits)
    except DecodeError as exc:
        assert 0 <= exc.offset
        return
    assert isinstance(node, BinaryNode) and node.tag


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    """Any bytes either decode to a node or raise DecodeError, nothing else."""
    decodes_or_raises_decode_error(data)


BYTES_OF_INTEREST = st.sampled_from(
    [0, 1, 3, 127, 128, 236, 239, 240, 245, 246, 247, 248, 249, 250, 251, 252, 253, 254, 255]
)


@settings(max_examples=2000, deadline=None)
@given(st.lists(BYTES_OF_INTEREST | st.integers(0, 255), max_size=48))
def test_tag_heavy_bytes_decode_or_raise_decode_error(body: list[int]) -> None:
    """Frames made mostly of tag bytes (lists, JIDs, lengths) decode or raise DecodeError."""
    decodes_or_raises_decode_error(bytes([0, 248, 4]) + bytes(body))
    decodes_or_raises_decode_error(bytes([0]) + bytes(body))


#: Edits of a frame: (position, byte, kind) with kind 0 replace, 1 insert, 2 delete.
edits = st.lists(
    st.tuples(st.integers(0, 10**6), st.integers(0, 255), st.integers(0, 2)),
    min_size=1,
    max_size=4,
)


def mutate(data: bytes, changes: list[tuple[int, int, int]]) -> bytes:
    """``data`` with each edit applied in turn (positions wrap around the current length)."""
    frame = bytearray(data)
    for position, value, kind in changes:
        at = position % (len(frame) + 1)
        if kind == 0 and at < len(frame):
            frame[at] = value
        elif kind == 1:
            frame.insert(at, value)
        elif at < len(frame):
            del frame[at]
    return bytes(frame)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes(st.binary(max_size=16)), edits)
def test_mutated_frames_decode_or_raise_decode_error(
    node: BinaryNode, changes: list[tuple[int, int, int]]
) -> None:
    """Valid frames with bytes replaced, inserted or deleted decode or raise DecodeError."""
    decodes_or_raises_decode_error(mutate(encode_node(node), changes), max_depth=8)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 4096))
def test_random_compressed_payloads_decode_or_raise_decode_error(body: bytes, limit: int) -> None:
    """Compressed frames holding any payload, under any size bound, decode or raise DecodeError."""
    decodes_or_raises_decode_error(b"\x02" + zlib.compress(body), max_size=limit)
    decodes_or_raises_decode_error(b"\x02" + body, max_size=limit)
