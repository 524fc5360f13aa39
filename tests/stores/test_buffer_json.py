"""Baileys BufferJSON: what we write is what JSON.stringify writes; we read every variant."""

from __future__ import annotations

import base64

import pytest

from stores import buffer_json
from stores.errors import CorruptStateError


def test_bytes_are_written_in_the_v7_tagged_base64_form() -> None:
    """bytes become {"type":"Buffer","data":"<base64>"}, compact, like BufferJSON.replacer."""
    assert buffer_json.dumps({"k": b"\x00\xff"}) == '{"k":{"type":"Buffer","data":"AP8="}}'
    assert buffer_json.dumps(b"") == '{"type":"Buffer","data":""}'
    assert buffer_json.dumps([bytearray(b"a"), memoryview(b"b")]) == (
        '[{"type":"Buffer","data":"YQ=="},{"type":"Buffer","data":"Yg=="}]'
    )


def test_output_is_compact_with_javascript_escapes() -> None:
    """Strings are escaped as JSON.stringify does: non-ASCII raw, controls as \\uXXXX."""
    assert buffer_json.dumps({"a": 'é😀\n\t\x01"\\'}) == '{"a":"é😀\\n\\t\\u0001\\"\\\\"}'
    assert buffer_json.dumps(["\ud800"]) == '["\\ud800"]'
    assert buffer_json.dumps({"x": [1, True, None, False]}) == '{"x":[1,true,null,false]}'


def test_numbers_are_formatted_like_javascript() -> None:
    """Floats print as Number#toString: 1.0 → 1, 1e21 → 1e+21, 1e-7 → 1e-7, NaN → null."""
    cases = {
        1.0: "1",
        -2.5: "-2.5",
        0.1: "0.1",
        1e20: "100000000000000000000",
        1e21: "1e+21",
        1.5e-6: "0.0000015",
        1e-7: "1e-7",
        1.2345678901234567e19: "12345678901234567000",
        5e-324: "5e-324",
        -0.0: "0",
        float("nan"): "null",
        float("inf"): "null",
    }
    for value, text in cases.items():
        assert buffer_json.dumps(value) == text, value


def test_object_keys_follow_javascript_property_order() -> None:
    """Array-index keys come first in ascending order, then the rest in insertion order."""
    value = {"b": 1, "10": 2, "a": 3, "2": 4, "01": 5, "4294967295": 6}
    assert buffer_json.dumps(value) == '{"2":4,"10":2,"b":1,"a":3,"01":5,"4294967295":6}'


def test_objects_tagged_buffer_are_rewritten_once() -> None:
    """A {type: 'Buffer'} object goes through the replacer (array data becomes base64)."""
    assert buffer_json.dumps({"type": "Buffer", "data": [1, 2, 300]}) == (
        '{"type":"Buffer","data":"AQIs"}'
    )


def test_non_plain_values_are_refused() -> None:
    """Values that are not plain data raise TypeError instead of writing something odd."""
    with pytest.raises(TypeError):
        buffer_json.dumps({"a": object()})
    with pytest.raises(TypeError):
        buffer_json.dumps({1: "x"})


def test_v7_base64_buffers_are_read() -> None:
    """{"type":"Buffer","data":"<base64>"} reads back as bytes, nested anywhere."""
    text = '{"a":[{"type":"Buffer","data":"AP8="}],"b":{"type":"Buffer","data":""}}'
    assert buffer_json.loads(text, "f") == {"a": [b"\x00\xff"], "b": b""}


def test_numeric_key_objects_are_read_as_bytes_in_javascript_order() -> None:
    """An object whose keys all parse as integers and values are numbers is bytes (v7 reviver)."""
    assert buffer_json.loads('{"1":2,"0":1,"2":3}', "f") == b"\x01\x02\x03"
    # Values wrap modulo 256 like a Uint8Array; keys need only start like an integer.
    assert buffer_json.loads('{"0":256,"1":-1,"2":1.9}', "f") == b"\x00\xff\x01"
    assert buffer_json.loads('{"7abc":5}', "f") == b"\x05"
    # Not every value a number, or a non-integer key: stays an object.
    assert buffer_json.loads('{"0":1,"1":"x"}', "f") == {"0": 1, "1": "x"}
    assert buffer_json.loads('{"0":1,"a":2}', "f") == {"0": 1, "a": 2}
    assert buffer_json.loads("{}", "f") == {}


def test_v6_forms_are_read() -> None:
    """v6 array data and {"buffer":true,"value":...} (base64 or numbers) read as bytes."""
    assert buffer_json.loads('{"type":"Buffer","data":[1,2,255]}', "f") == b"\x01\x02\xff"
    assert buffer_json.loads('{"buffer":true,"value":"AQI="}', "f") == b"\x01\x02"
    assert buffer_json.loads('{"buffer":true,"value":[3,4]}', "f") == b"\x03\x04"
    assert buffer_json.loads('{"buffer":true}', "f") == b""
    assert buffer_json.loads('{"type":"Buffer","data":[]}', "f") == b""


def test_url_safe_and_unpadded_base64_are_accepted() -> None:
    """Base64 payloads may be URL-safe or unpadded (Node's decoder accepts both)."""
    data = bytes(range(250, 256))
    url = base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert buffer_json.loads(f'{{"type":"Buffer","data":"{url}"}}', "f") == data


def test_invalid_base64_is_a_corrupt_state_error() -> None:
    """A Buffer whose data is not base64 is a typed error naming the file and JSON path."""
    with pytest.raises(CorruptStateError) as info:
        buffer_json.loads('{"k":[{"type":"Buffer","data":"A*=="}]}', "dir/x.json")
    assert info.value.location == "dir/x.json"
    assert "$.k[0]" in info.value.reason
    with pytest.raises(CorruptStateError):
        buffer_json.loads('{"type":"Buffer","data":"AAAAA"}', "f")
    with pytest.raises(CorruptStateError):
        buffer_json.loads('{"buffer":true,"value":{"a":1}}', "f")


def test_malformed_json_names_the_byte_offset() -> None:
    """Malformed JSON raises CorruptStateError with the byte offset of the error."""
    with pytest.raises(CorruptStateError) as info:
        buffer_json.loads('{"é": 1,', "creds.json")
    assert info.value.location == "creds.json"
    # "é" is two bytes in UTF-8: the error is at byte 10, character 9.
    assert info.value.offset == len('{"é": 1,'.encode())
    with pytest.raises(CorruptStateError) as info:
        buffer_json.loads(b'{"a": \xff}', "f")
    assert info.value.offset == 6


def test_non_json_constants_and_bom_are_refused() -> None:
    """NaN, Infinity and a byte-order mark are not JSON (JSON.parse refuses them too)."""
    for text in ("NaN", "[Infinity]", "\ufeff{}", ""):
        with pytest.raises(CorruptStateError):
            buffer_json.loads(text, "f")


def test_deep_nesting_is_a_typed_error() -> None:
    """Absurdly nested input is a CorruptStateError, not a RecursionError."""
    with pytest.raises(CorruptStateError):
        buffer_json.loads("[" * 100_000 + "]" * 100_000, "f")
