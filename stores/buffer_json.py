"""Baileys' ``BufferJSON``: JSON text with Node Buffers in it, both directions.

``dumps`` writes exactly what ``JSON.stringify(value, BufferJSON.replacer)`` writes
under Baileys v7 (compact, JavaScript's escaping, number formatting and key order),
bytes as ``{"type":"Buffer","data":"<base64>"}``.

``loads`` reads every form a Baileys directory may hold (PROTOCOL.md):

* v7: ``{"type": "Buffer", "data": "<base64>"}``;
* v7: an object whose keys all parse as integers (JavaScript ``parseInt``) and
  whose values are all numbers: the bytes are the values in JavaScript property
  order (array-index keys ascending first), each taken modulo 256;
* v6: ``{"type": "Buffer", "data": [n, ...]}`` and ``{"buffer": true, "value": ...}``
  (value a base64 string or a number array; a missing payload is empty bytes).

Base64 payloads must be standard or URL-safe base64, padding optional; anything
else is a ``CorruptStateError`` (Node would silently drop the bad characters; a
store must not guess). Malformed JSON raises ``CorruptStateError`` naming the
location and the byte offset of the error.

Since 0.1.0.
"""

from __future__ import annotations

import base64
import binascii
import decimal
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from stores.errors import CorruptStateError

Value = Any

_INDEX_KEY = re.compile(r"0|[1-9][0-9]*")
_PARSE_INT = re.compile(
    "[\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]*[+-]?[0-9]"
)
_SURROGATE = re.compile("[\ud800-\udfff]")
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}|[A-Za-z0-9_-]*={0,2}")
_MAX_INDEX = 2**32 - 2
_MAX_INDEX_DIGITS = len(str(_MAX_INDEX))

MAX_NESTING = 200
"""Deepest JSON accepted. Baileys' files nest a handful of levels (a libsignal session
is the deepest, under ten); anything far deeper is damage, refused with a typed error
before Python's own recursion limit could turn it into an untyped one."""


# --- writing -------------------------------------------------------------------------


def dumps(value: Value) -> str:
    """``JSON.stringify(value, BufferJSON.replacer)`` as Baileys v7 writes it.

    Raises ``TypeError`` for values that are not plain data (or nested deeper than 512).
    """
    parts: list[str] = []
    _write(value, parts, 0)
    return "".join(parts)


def dump_bytes(value: Value) -> bytes:
    """``dumps(value)`` encoded as UTF-8, ready for a file."""
    return dumps(value).encode("utf-8")


def buffer_tag(data: bytes) -> dict[str, str]:
    """The v7 tagged form of ``data``: ``{"type": "Buffer", "data": "<base64>"}``."""
    return {"type": "Buffer", "data": base64.b64encode(data).decode("ascii")}


def _write(value: Value, out: list[str], depth: int) -> None:
    if depth > 512:
        raise TypeError("value nested more than 512 levels")
    if isinstance(value, str):
        out.append(_js_string(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        # JSON.stringify(NaN) and of infinities is null.
        out.append(_js_number(value) if math.isfinite(value) else "null")
    elif isinstance(value, bytes | bytearray | memoryview):
        _write_object(buffer_tag(bytes(value)), out, depth)
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out, depth + 1)
        out.append("]")
    elif isinstance(value, Mapping):
        if value.get("type") == "Buffer":
            # The replacer turns any {type: 'Buffer'} object into the base64 form
            # (once: the replacer's result is not passed to the replacer again).
            value = buffer_tag(_node_buffer_from(value.get("data") or dict(value)))
        _write_object(value, out, depth)
    else:
        raise TypeError(f"not plain data: {type(value).__name__}")


def _write_object(value: Mapping[Any, Value], out: list[str], depth: int) -> None:
    out.append("{")
    for i, (key, item) in enumerate(_js_order(value)):
        if not isinstance(key, str):
            raise TypeError(f"object key {key!r} is not a string")
        if i:
            out.append(",")
        out.append(_js_string(key))
        out.append(":")
        _write(item, out, depth + 1)
    out.append("}")


def _js_string(text: str) -> str:
    quoted = json.dumps(text, ensure_ascii=False)
    # Python keeps lone surrogates raw; JavaScript's JSON.stringify escapes them.
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted)


def _js_order(obj: Mapping[Any, Value]) -> list[tuple[Any, Value]]:
    """JavaScript property order: array-index keys ascending, then insertion order."""
    index = [(k, v) for k, v in obj.items() if isinstance(k, str) and _is_index(k)]
    if not index:
        return list(obj.items())
    rest = [(k, v) for k, v in obj.items() if not (isinstance(k, str) and _is_index(k))]
    index.sort(key=lambda kv: int(kv[0]))
    return index + rest


def _is_index(key: str) -> bool:
    # Length first: int() refuses strings past Python's digit limit (a ValueError).
    return (
        len(key) <= _MAX_INDEX_DIGITS
        and _INDEX_KEY.fullmatch(key) is not None
        and int(key) <= _MAX_INDEX
    )


def _node_buffer_from(data: Value) -> bytes:
    """``Buffer.from(data)`` for the shapes a ``{type: 'Buffer'}`` object may carry."""
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    if isinstance(data, str):
        return data.encode("utf-8", "surrogatepass")
    if isinstance(data, list | tuple):
        return bytes(_byte(v) for v in data)
    return b""


def _byte(v: Value) -> int:
    # Uint8Array element conversion: ToNumber, truncate, modulo 2^8 (NaN -> 0).
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v & 0xFF
    if isinstance(v, float) and math.isfinite(v):
        return int(v) & 0xFF
    return 0


def _js_number(x: float) -> str:
    """Number#toString for a finite double: shortest round-trip digits, JS layout."""
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    # repr gives the shortest digits that round-trip, as JavaScript uses.
    exact = decimal.Decimal(repr(abs(x)))
    _, digit_tuple, exponent = exact.as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple)).lstrip("0")
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)
    digits = stripped
    k = len(digits)
    n = k + exponent  # value = 0.digits * 10^n
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    e = n - 1
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{head}e{'+' if e >= 0 else '-'}{abs(e)}"


# --- reading -------------------------------------------------------------------------


def loads(text: str | bytes, location: str) -> Value:
    """Parse Baileys Buffer JSON; bytes come back as ``bytes`` whatever form they had.

    Raises ``CorruptStateError(location, reason, offset)`` for invalid UTF-8, invalid
    JSON (offset = byte offset of the error) or an invalid Buffer payload.
    """
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptStateError(location, f"invalid UTF-8 ({exc.reason})", exc.start) from exc
    if decoded.startswith("\ufeff"):
        # JSON.parse rejects a byte-order mark; so do we, at offset 0.
        raise CorruptStateError(location, "invalid JSON: byte-order mark", 0)
    try:
        parsed = json.loads(decoded, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        offset = len(decoded[: exc.pos].encode("utf-8"))
        raise CorruptStateError(location, f"invalid JSON: {exc.msg}", offset) from exc
    except ValueError as exc:
        raise CorruptStateError(location, f"invalid JSON: {exc}") from exc
    except RecursionError as exc:
        raise CorruptStateError(location, "invalid JSON: nested too deeply") from exc
    return revive(parsed, location)


def _reject_constant(name: str) -> Value:
    raise ValueError(f"{name} is not JSON")


def revive(value: Value, location: str) -> Value:
    """Apply Baileys' reviver (v7 and v6 forms) bottom-up to parsed JSON.

    JSON nested deeper than ``MAX_NESTING`` is refused with ``CorruptStateError``.
    """
    try:
        return _revive(value, location, None, 0)
    except RecursionError as exc:
        # Only reachable when the caller's own stack is already deep.
        raise CorruptStateError(location, "JSON nested too deeply to read") from exc


_Path = tuple[Any, str | int] | None
"""A lazily rendered JSON path: (parent path, key); rendered only for an error."""


def _render(path: _Path) -> str:
    keys: list[str | int] = []
    while path is not None:
        path, key = path
        keys.append(key)
    return "$" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in reversed(keys))


def _revive(value: Value, location: str, path: _Path, depth: int) -> Value:
    if not isinstance(value, list | dict):
        return value
    if depth >= MAX_NESTING:
        raise CorruptStateError(
            location, f"{_render(path)}: JSON nested deeper than {MAX_NESTING} levels"
        )
    if isinstance(value, list):
        return [_revive(v, location, (path, i), depth + 1) for i, v in enumerate(value)]
    obj = {k: _revive(v, location, (path, k), depth + 1) for k, v in value.items()}
    found = _as_buffer(obj, location, path)
    return obj if found is None else found


def _as_buffer(obj: dict[str, Value], location: str, path: _Path) -> bytes | None:
    if obj.get("type") == "Buffer" and isinstance(obj.get("data"), str):
        return _b64(obj["data"], location, path)
    if obj and all(_PARSE_INT.match(k) for k in obj):
        values = [v for _, v in _js_order(obj)]
        if all(_is_number(v) for v in values):
            return bytes(_byte(v) for v in values)
    if obj.get("buffer") is True or obj.get("type") == "Buffer":
        payload = obj.get("data") or obj.get("value")
        if isinstance(payload, str):
            return _b64(payload, location, path)
        if payload is None or payload == []:
            return b""
        if isinstance(payload, bytes):
            return payload  # a numeric-key object inside, already revived
        if isinstance(payload, list) and all(_is_number(v) for v in payload):
            return bytes(_byte(v) for v in payload)
        raise CorruptStateError(
            location, f"{_render(path)}: Buffer payload is not base64 or numbers"
        )
    return None


def _is_number(v: Value) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _b64(text: str, location: str, path: _Path) -> bytes:
    if _B64.fullmatch(text) is None:
        raise CorruptStateError(location, f"{_render(path)}: Buffer data is not base64")
    body = text.rstrip("=")
    if len(body) % 4 == 1:
        raise CorruptStateError(
            location, f"{_render(path)}: Buffer data has a truncated base64 tail"
        )
    url_safe = "-" in body or "_" in body
    padded = body + "=" * (-len(body) % 4)
    try:
        return base64.b64decode(padded, altchars=b"-_" if url_safe else None, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CorruptStateError(
            location, f"{_render(path)}: Buffer data is not base64 ({exc})"
        ) from exc
