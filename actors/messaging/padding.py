"""WhatsApp's plaintext padding: 1 to 16 bytes, each equal to the count.

Baileys' ``writeRandomPadMax16`` / ``unpadRandomMax16``. The count is random, so
the padded length hides the exact message length.

Since 0.2.0.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from actors.messaging.errors import PaddingError

MAX_PAD = 16


def _random_pad() -> int:
    return secrets.randbelow(MAX_PAD) + 1


def pad_random_max16(data: bytes, pad_length: Callable[[], int] = _random_pad) -> bytes:
    """``data`` followed by n bytes of value n, n in 1..16."""
    n = pad_length()
    if not 1 <= n <= MAX_PAD:
        raise ValueError(f"pad length must be 1..{MAX_PAD}, got {n}")
    return data + bytes([n]) * n


def unpad_random_max16(data: bytes) -> bytes:
    """Strip the padding; a count of 0 or longer than the data is a :class:`PaddingError`."""
    if not data:
        raise PaddingError("empty plaintext: no padding")
    n = data[-1]
    if n == 0 or n > len(data):
        raise PaddingError(f"padding count {n} is invalid for {len(data)} bytes")
    return data[:-n]
