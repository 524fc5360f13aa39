"""Reading stored records field by field: each helper names the field path it refuses.

Since 0.2.0.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from actors.signal.errors import InvalidRecord


def as_mapping(value: object, where: str) -> Mapping[str, Any]:
    """``value`` as an object, or :class:`InvalidRecord` naming ``where``."""
    if not isinstance(value, Mapping):
        raise InvalidRecord(where, f"expected an object, got {type(value).__name__}")
    return value


def as_int(value: object, where: str) -> int:
    """``value`` as an integer; integral floats pass (numbers that went through JavaScript)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRecord(where, f"expected an integer, got {type(value).__name__}")
    return value


def b64encode(value: bytes) -> str:
    """Standard base64 with padding, as Node's ``toString('base64')``."""
    return base64.b64encode(value).decode("ascii")


def b64decode(value: object, where: str, sizes: tuple[int, ...] = ()) -> bytes:
    """Decode a standard base64 string, or :class:`InvalidRecord` naming ``where``.

    With ``sizes``, the decoded length must be one of them (a key of the wrong
    length is damage, refused here rather than failing later inside the crypto).
    """
    if not isinstance(value, str):
        raise InvalidRecord(where, f"expected a base64 string, got {type(value).__name__}")
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRecord(where, "not valid base64") from exc
    check_size(decoded, where, sizes)
    return decoded


def check_size(value: bytes, where: str, sizes: tuple[int, ...]) -> None:
    """:class:`InvalidRecord` naming ``where`` unless ``len(value)`` is one of ``sizes``."""
    if sizes and len(value) not in sizes:
        allowed = " or ".join(str(size) for size in sizes)
        raise InvalidRecord(where, f"expected {allowed} bytes, got {len(value)}")
