"""The binary node format, rule by rule (PROTOCOL.md "Binary nodes"), with bytes worked by hand."""

from __future__ import annotations

import sys
import zlib

import pytest

from actors.connection.binary import (
    MAX_DEPTH,
    BinaryNode,
    DecodeError,
    EncodeError,
    decode_node,
    encode_node,
)
from actors.connection.binary.tokens import DOUBLE_BYTE_TOKENS, SINGLE_BYTE_TOKENS

N = BinaryNode

LIST_EMPTY, LIST_8, LIST_16 = 0, 248, 249
AD_JID, JID_PAIR, HEX_8, NIBBLE_8 = 247, 250, 251, 255
BINARY_8, BINARY_20, BINARY_32 = 252, 253, 254
FB_JID, INTEROP_JID = 246, 245

#: Every test runs with each decoder reader: the Python reference and the compiled one.
pytestmark = pytest.mark.usefixtures("each_reader")


def tok(token: str) -> bytes:
    """The bytes of a token, looked up in the v3 tables (data, not the encoder)."""
    if token in SINGLE_BYTE_TOKENS:
        return bytes([SINGLE_BYTE_TOKENS.index(token)])
    for n, table in enumerate(DOUBLE_BYTE_TOKENS):
        if token in table:
            return bytes([236 + n, table.index(token)])
    raise KeyError(token)


def raw(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    assert len(data) < 256
    return bytes([BINARY_8, len(data)]) + data


def frame(*parts: bytes | int) -> bytes:
    out = bytearray(b"\x00")
    for part in parts:
        out += bytes([part]) if isinstance(part, int) else part
    return bytes(out)


def attr_bytes(value: str) -> bytes:
    """How ``value`` is written: ``<x zz=value/>`` minus the head up to the key."""
    data = encode_node(N("x", {"zz": value}))
    head = frame(LIST_8, 3, raw("x"), raw("zz"))
    assert data.startswith(head)
    return data[len(head) :]


# -- frame and list layout ---------------------------------------------------------------


def test_frame_starts_with_flags_zero_then_the_node_list() -> None:
    """An encoded frame is flags 0 (uncompressed), LIST_8 with the list size, then the tag."""
    assert encode_node(N("iq")) == frame(LIST_8, 1, tok("iq"))


def test_list_size_counts_tag_attrs_and_content() -> None:
    """List size = 2 * attributes + 1 + (1 if there is content)."""
    assert encode_node(N("iq", {"id": "x"}))[2] == 3
    assert encode_node(N("iq", {"id": "x", "type": "y"}, b""))[2] == 6
    assert encode_node(N("iq", {}, []))[2] == 2


def test_empty_children_are_list_empty() -> None:
    """Content [] is LIST_EMPTY and decodes back to []."""
    data = encode_node(N("iq", {}, []))
    assert data == frame(LIST_8, 2, tok("iq"), LIST_EMPTY)
    assert decode_node(data).content == []


def test_many_children_use_list_16() -> None:
    """256 children or more are announced with LIST_16 and a big-endian 16-bit count."""
    node = N("list", {}, [N("item")] * 256)
    data = encode_node(node)
    assert data[:7] == frame(LIST_8, 2, tok("list"), LIST_16, 0x01, 0x00)
    assert decode_node(data) == node


def test_attribute_order_is_kept() -> None:
    """Attributes are written and read in their mapping order."""
    node = N("iq", {"type": "get", "id": "a", "to": "b"})
    assert list(decode_node(encode_node(node)).attrs) == ["type", "id", "to"]


# -- strings ------------------------------------------------------------------------------


def test_single_and_double_byte_tokens() -> None:
    """A token is its single byte, or DICTIONARY_n then its index."""
    assert attr_bytes("s.whatsapp.net") == bytes([3])
    assert attr_bytes("read-self") == bytes([236, 0])
    assert attr_bytes(DOUBLE_BYTE_TOKENS[3][255]) == bytes([239, 255])


def test_nibble_packing_even_and_odd() -> None:
    """Digits, '-' and '.' pack two per byte, high nibble first; odd length sets 0x80, pads 0xF."""
    assert attr_bytes("123.45-6") == bytes([NIBBLE_8, 4, 0x12, 0x3B, 0x45, 0xA6])
    assert attr_bytes("12345") == bytes([NIBBLE_8, 0x83, 0x12, 0x34, 0x5F])


def test_hex_packing_upper_case_only() -> None:
    """Only 0-9 and A-F pack as hex; lower-case hex is a raw string."""
    assert attr_bytes("DEADBEEF1") == bytes([HEX_8, 0x85, 0xDE, 0xAD, 0xBE, 0xEF, 0x1F])
    assert attr_bytes("deadbeef") == raw("deadbeef")


def test_nibble_wins_over_hex() -> None:
    """A string of digits only is nibble-packed, not hex-packed."""
    assert attr_bytes("98765")[0] == NIBBLE_8


def test_packing_stops_at_127_characters() -> None:
    """127 characters still pack; 128 are a raw string."""
    assert attr_bytes("9" * 127)[:2] == bytes([NIBBLE_8, 0x80 | 64])
    assert attr_bytes("A" * 127)[:2] == bytes([HEX_8, 0x80 | 64])
    assert attr_bytes("9" * 128)[:2] == bytes([BINARY_8, 128])


def test_empty_and_raw_strings_are_binary() -> None:
    """The empty string and any other string are BINARY_8 + UTF-8 bytes."""
    assert attr_bytes("") == bytes([BINARY_8, 0])
    assert attr_bytes("héllo") == raw("héllo")


def test_binary_length_boundaries() -> None:
    """BINARY_8 below 256, BINARY_20 below 2**20 (4 low bits + 16), else BINARY_32."""
    for size, head in [
        (255, bytes([BINARY_8, 0xFF])),
        (256, bytes([BINARY_20, 0x00, 0x01, 0x00])),
        ((1 << 20) - 1, bytes([BINARY_20, 0x0F, 0xFF, 0xFF])),
        (1 << 20, bytes([BINARY_32, 0x00, 0x10, 0x00, 0x00])),
    ]:
        node = N("media", {}, b"\xab" * size)
        data = encode_node(node)
        assert data[4 : 4 + len(head)] == head, size  # after 00 f8 02 <media>
        assert decode_node(data) == node


def test_long_strings_use_binary_20() -> None:
    """A 300-byte attribute value is a BINARY_20 string."""
    assert attr_bytes("x" * 300)[:4] == bytes([BINARY_20, 0x00, 0x01, 0x2C])


# -- JIDs ---------------------------------------------------------------------------------


def test_jid_pair() -> None:
    """user@server is JID_PAIR, user then server, each written as a string."""
    assert attr_bytes("123@g.us") == bytes([JID_PAIR, NIBBLE_8, 0x82, 0x12, 0x3F]) + tok("g.us")


def test_jid_pair_with_empty_user() -> None:
    """@s.whatsapp.net is JID_PAIR with LIST_EMPTY as the user."""
    assert attr_bytes("@s.whatsapp.net") == bytes([JID_PAIR, LIST_EMPTY]) + tok("s.whatsapp.net")


@pytest.mark.parametrize(
    ("jid", "domain"),
    [
        ("1234:3@s.whatsapp.net", 0),
        ("1234:3@lid", 1),
        ("1234:3@hosted", 128),
        ("1234:3@hosted.lid", 129),
    ],
)
def test_ad_jid_domain_types(jid: str, domain: int) -> None:
    """A JID with a device is AD_JID: domain type, device, user (server from domain type)."""
    assert attr_bytes(jid) == bytes([AD_JID, domain, 3, NIBBLE_8, 2, 0x12, 0x34])
    assert decode_node(encode_node(N("x", {"v": jid}))).attrs["v"] == jid


def test_ad_jid_agent_is_the_domain_byte() -> None:
    """user_agent:device@s.whatsapp.net writes the agent as the domain type byte."""
    assert attr_bytes("1234_7:3@s.whatsapp.net") == bytes([AD_JID, 7, 3, NIBBLE_8, 2, 0x12, 0x34])


@pytest.mark.parametrize(
    "text",
    [
        "12:0@s.whatsapp.net",
        "12:256@s.whatsapp.net",
        "12:03@s.whatsapp.net",
        "12:3@g.us",
        "12_7@s.whatsapp.net",
        "12_1:3@s.whatsapp.net",
        "12_7:3@lid",
        "1:2:3@s.whatsapp.net",
        "12:@s.whatsapp.net",
        "12@",
        "a@b@c",
    ],
)
def test_strings_the_jid_forms_would_alter_are_raw(text: str) -> None:
    """A string the JID forms cannot carry unchanged is written raw and read back exactly."""
    assert attr_bytes(text) == raw(text)
    assert decode_node(encode_node(N("x", {"v": text}))).attrs["v"] == text


def test_decoding_peer_only_jid_forms() -> None:
    """FB_JID reads user:device@server; INTEROP_JID reads integrator-user:device@server."""
    fb = frame(LIST_8, 3, raw("x"), raw("v"), FB_JID, raw("55"), b"\x01\x00", raw("msgr"))
    assert decode_node(fb).attrs["v"] == "55:256@msgr"
    interop = frame(LIST_8, 3, raw("x"), raw("v"), INTEROP_JID, raw("55"), b"\x00\x02\x00\x09")
    interop += raw("interop")
    assert decode_node(interop).attrs["v"] == "9-55:2@interop"
    bare = frame(LIST_8, 2, raw("x"), INTEROP_JID, raw("55"), b"\x00\x02\x00\x09")
    assert decode_node(bare).content == "9-55:2@interop"


def test_ad_jid_device_zero_reads_without_device() -> None:
    """An AD_JID with device 0 reads as user@server, as Baileys' jidEncode writes it."""
    data = frame(LIST_8, 3, raw("x"), raw("v"), AD_JID, 1, 0, raw("77"))
    assert decode_node(data).attrs["v"] == "77@lid"


# -- content ------------------------------------------------------------------------------


def test_string_content_is_written_as_a_string() -> None:
    """String content is written like any string: token, packed, JID, else raw."""
    assert encode_node(N("t", {}, "result"))[-1:] == tok("result")
    assert decode_node(encode_node(N("t", {}, "123"))).content == "123"
    assert decode_node(encode_node(N("t", {}, "some text"))).content == b"some text"


def test_bytes_content_stays_bytes() -> None:
    """Bytes content, even if it looks like a token or digits, comes back as the same bytes."""
    for content in (b"result", b"123", b"", bytes(range(256))):
        assert decode_node(encode_node(N("t", {}, content))).content == content


# -- decoding frames ------------------------------------------------------------------------


def test_compressed_frame_is_inflated() -> None:
    """Flags bit 0x02 means the rest is zlib (RFC 1950): it decodes to the same node."""
    node = N("iq", {"id": "1", "type": "result"}, [N("list", {}, [N("item")] * 10)])
    body = encode_node(node)[1:]
    assert decode_node(b"\x02" + zlib.compress(body)) == node


def test_other_flag_bits_are_ignored() -> None:
    """Flags other than 0x02 do not change how the frame is read (as in Baileys)."""
    data = encode_node(N("iq"))
    assert decode_node(b"\xfd" + data[1:]) == N("iq")


def test_bytes_after_the_node_are_ignored() -> None:
    """Like Baileys, the decoder stops after the root node."""
    assert decode_node(encode_node(N("iq")) + b"\x01\x02") == N("iq")


def test_invalid_utf8_is_replaced() -> None:
    """A raw string with bad UTF-8 reads with U+FFFD in place of the bad bytes."""
    data = frame(LIST_8, 3, raw("x"), raw("v"), raw(b"a\xffb"))
    assert decode_node(data).attrs["v"] == "a\ufffdb"


def test_odd_packed_string_drops_its_pad_nibble() -> None:
    """An odd packed length drops the last nibble whatever it holds; 0xF inside reads as NUL."""
    odd_hex = frame(LIST_8, 3, raw("x"), raw("v"), HEX_8, 0x82, 0xAB, 0xC0)
    assert decode_node(odd_hex).attrs["v"] == "ABC"
    nul_inside = frame(LIST_8, 3, raw("x"), raw("v"), NIBBLE_8, 0x01, 0x1F)
    assert decode_node(nul_inside).attrs["v"] == "1\x00"


BAD_FRAMES = {
    "empty": (b"", 0, "no flags byte"),
    "flags only": (b"\x00", 1, "unexpected end"),
    "root not a list": (frame(BINARY_8, 0), 1, "invalid list tag"),
    "empty root list": (frame(LIST_EMPTY), 1, "empty list"),
    "empty tag": (frame(LIST_8, 1, raw("")), 1, "empty tag"),
    "truncated attrs": (frame(LIST_8, 3, raw("x"), raw("v")), 9, "unexpected end"),
    "length beyond end": (frame(LIST_8, 2, raw("x"), BINARY_20, b"\x0f\xff\xff"), 10, "exceeds"),
    "bad nibble": (frame(LIST_8, 2, raw("x"), NIBBLE_8, 1, 0xC0), 8, "invalid nibble 12"),
    "bad string tag": (frame(LIST_8, 1, 240), 3, "invalid string tag 240"),
    "empty jid server": (frame(LIST_8, 2, raw("x"), JID_PAIR, raw("1"), raw("")), 6, "empty"),
    "list as attr key": (frame(LIST_8, 3, raw("x"), LIST_8, 1), 6, "invalid string tag 248"),
}


@pytest.mark.parametrize("name", list(BAD_FRAMES))
def test_bad_frames_raise_decode_error_with_offset(name: str) -> None:
    """Each malformed frame raises DecodeError saying where and what."""
    data, offset, reason = BAD_FRAMES[name]
    with pytest.raises(DecodeError) as caught:
        decode_node(data)
    assert caught.value.offset == offset
    assert reason in caught.value.reason
    assert str(offset) in str(caught.value)


def test_decode_error_is_a_remote_protocol_error() -> None:
    """DecodeError is the peer's fault and hints the session close code 500."""
    from actors.connection.errors import RemoteProtocolError

    with pytest.raises(RemoteProtocolError) as caught:
        decode_node(b"\x00\x01")
    assert caught.value.error_status_hint == 500


def test_bad_zlib_stream() -> None:
    """A compressed frame that is not zlib raises DecodeError."""
    with pytest.raises(DecodeError, match="bad zlib"):
        decode_node(b"\x02not zlib at all")


def test_truncated_zlib_stream() -> None:
    """A compressed frame cut short raises DecodeError."""
    body = zlib.compress(encode_node(N("iq", {}, b"x" * 1000))[1:])
    with pytest.raises(DecodeError, match="zlib stream"):
        decode_node(b"\x02" + body[:-3])


def test_inflated_size_is_bounded() -> None:
    """A payload inflating beyond max_size is refused without inflating it all."""
    node = N("iq", {}, b"\x00" * 100_000)
    compressed = b"\x02" + zlib.compress(encode_node(node)[1:])
    assert len(compressed) < 1000
    with pytest.raises(DecodeError, match="beyond 50000"):
        decode_node(compressed, max_size=50_000)
    exact = len(encode_node(node)) - 1
    assert decode_node(compressed, max_size=exact) == node
    with pytest.raises(DecodeError, match="beyond"):
        decode_node(compressed, max_size=exact - 1)
    with pytest.raises(DecodeError, match="beyond 0 bytes"):
        decode_node(compressed, max_size=0)


def test_plain_frame_size_is_bounded_too() -> None:
    """An uncompressed node larger than max_size is refused as well."""
    data = encode_node(N("iq", {}, b"\x00" * 1000))
    assert decode_node(data, max_size=len(data) - 1) == N("iq", {}, b"\x00" * 1000)
    with pytest.raises(DecodeError, match="exceeds the 1000 allowed"):
        decode_node(data, max_size=1000)
    with pytest.raises(ValueError, match="max_size"):
        decode_node(data, max_size=-1)


def test_nesting_depth_is_bounded() -> None:
    """Nodes nested deeper than max_depth raise DecodeError instead of exhausting the stack."""
    deep = b"".join(frame(LIST_8, 2, raw("x"), LIST_8, 1)[1:] for _ in range(10_000))
    with pytest.raises(DecodeError, match="nested deeper"):
        decode_node(b"\x00" + deep)
    node = N("x")
    for _ in range(9):
        node = N("x", {}, [node])
    with pytest.raises(DecodeError, match="deeper than 5"):
        decode_node(encode_node(node), max_depth=5)
    assert decode_node(encode_node(node), max_depth=10) == node
    with pytest.raises(ValueError, match="max_depth"):
        decode_node(encode_node(node), max_depth=0)


def test_deep_input_never_touches_the_python_stack() -> None:
    """Even with a huge max_depth and a nearly full call stack, depth gives DecodeError only."""
    deep = b"\x00" + frame(LIST_8, 2, raw("x"), LIST_8, 1)[1:] * 50_000

    def at_stack_depth(levels: int) -> None:
        if levels:
            at_stack_depth(levels - 1)
            return
        with pytest.raises(DecodeError, match="unexpected end"):
            decode_node(deep, max_depth=1_000_000)

    at_stack_depth(sys.getrecursionlimit() - 120)


def test_string_nesting_is_bounded() -> None:
    """JID pairs nested inside JID pairs raise DecodeError past a fixed depth."""
    data = frame(LIST_8, 1, bytes([JID_PAIR]) * 10_000)
    with pytest.raises(DecodeError, match="strings nested deeper"):
        decode_node(data)


# -- encode errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "reason"),
    [
        (N(""), "tag must be a non-empty string"),
        (N("iq", {"id": 5}), "attribute 'id'"),  # type: ignore[dict-item]  # bad on purpose
        (N("iq", {"id": "\ud800"}), "not valid Unicode"),
        (N("iq", {}, ["child"]), "must be a BinaryNode"),  # type: ignore[list-item]  # bad on purpose
        (N("iq", {}, 5), "content must be"),  # type: ignore[arg-type]  # bad on purpose
        (N("iq", {}, [N("x")] * 65536), "does not fit LIST_16"),
    ],
)
def test_unencodable_nodes_raise_encode_error(node: BinaryNode, reason: str) -> None:
    """A node that cannot be written raises EncodeError naming the node and the reason."""
    with pytest.raises(EncodeError, match=reason):
        encode_node(node)


def test_encode_depth_is_bounded() -> None:
    """Nodes nested deeper than MAX_DEPTH are refused, naming the path."""
    node = N("leaf")
    for _ in range(MAX_DEPTH):
        node = N("x", {}, [node])
    with pytest.raises(EncodeError, match="x/x/x"):
        encode_node(node)
