"""Rows of the SQLite (and PostgreSQL) backend: values as CBOR blobs, each with a CRC32.

The checksum covers the row's identity (account, type, id) as well as the blob, so a
bit flip, a torn page or a blob pasted into the wrong row are all caught on read.
In an encrypted account the blob is the CBOR sealed by ``stores.encryption`` with the
row identity as associated data; the CRC covers the sealed blob, so a damaged row is
still told by its checksum, and a row with a good checksum whose tag fails was
tampered with or moved (the key itself was checked against the account at open).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import cbor2

from stores.encryption import RecordCipher
from stores.errors import CorruptStateError, InvalidValueError
from stores.types import Value

_MAX_DEPTH = 64


def check_plain(value: Value, what: str, depth: int = 0) -> None:
    """Raise ``InvalidValueError`` unless ``value`` is plain data that round-trips in CBOR."""
    if depth > _MAX_DEPTH:
        raise InvalidValueError(what, f"nested deeper than {_MAX_DEPTH} levels")
    if value is None or isinstance(value, bool | int | str | bytes):
        return
    if isinstance(value, float):
        if math.isnan(value):
            # NaN != NaN: a migration could never verify a value holding one.
            raise InvalidValueError(what, "NaN is not a storable value")
        return
    if isinstance(value, list):
        for item in value:
            check_plain(item, what, depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidValueError(what, f"dict key {k!r} is not a str")
            check_plain(v, what, depth + 1)
        return
    raise InvalidValueError(what, f"{type(value).__name__} is not plain data")


def row_crc(identity: str, blob: bytes) -> int:
    """CRC32 of a row's identity followed by its blob."""
    return zlib.crc32(blob, zlib.crc32(identity.encode()))


encode: Callable[[Value], bytes] = cbor2.dumps
"""CBOR bytes of a plain value (already checked by ``check_plain``); cbor2's own function,
called once per value on the commit path, so no wrapper around it."""


def key_identity_prefix(account: str, type: str) -> str:
    """What every key row's identity of one account and type begins with (the id follows)."""
    return f"key\0{account}\0{type}\0"


class IdentityPrefix:
    """A key identity prefix, encoded and checksummed once for every row that starts with it.

    The CRC of the identity then costs only the id's bytes: a CRC is computed
    incrementally, so ``crc32(id, crc32(prefix))`` is the CRC of the whole identity.
    """

    __slots__ = ("crc", "raw")

    def __init__(self, account: str, type: str) -> None:
        self.raw = key_identity_prefix(account, type).encode()
        self.crc = zlib.crc32(self.raw)


def seal_key_rows(
    account: str,
    writes: Mapping[tuple[str, str], bytes | None],
    prefixes: dict[str, IdentityPrefix],
    cipher: RecordCipher | None,
) -> tuple[list[str | int | bytes], list[tuple[str, str, str]]]:
    """The rows to upsert, sealed and checksummed as ``seal_row`` does, and the keys to delete.

    The upserts come flat, five parameters per row (``account, type, id, crc, blob``),
    ready to bind to a multi-row ``VALUES``. ``writes`` maps ``(type, id)`` to a value's
    CBOR (None deletes); ``prefixes`` caches each type's ``IdentityPrefix`` of this
    ``account`` across calls. One loop without a call per row: it runs for every key of
    every commit.
    """
    crc32 = zlib.crc32
    upserts: list[str | int | bytes] = []
    deletes: list[tuple[str, str, str]] = []
    for (t, i), v in writes.items():
        if v is None:
            deletes.append((account, t, i))
            continue
        prefix = prefixes.get(t)
        if prefix is None:
            prefix = prefixes[t] = IdentityPrefix(account, t)
        tail = i.encode()
        if cipher is not None:
            v = cipher.seal(v, prefix.raw + tail)
        upserts += (account, t, i, crc32(v, crc32(tail, prefix.crc)), v)
    return upserts, deletes


def seal_row(plain: bytes, identity: str, cipher: RecordCipher | None) -> tuple[int, bytes]:
    """``(crc, blob)`` of a row's CBOR, sealed to the row's identity when encrypted."""
    blob = plain if cipher is None else cipher.seal(plain, identity.encode())
    return row_crc(identity, blob), blob


def open_row(
    blob: bytes, crc: int, identity: str, where: str, cipher: RecordCipher | None
) -> bytes:
    """The row's CBOR once its CRC (and, encrypted, its tag) holds."""
    if not isinstance(blob, bytes):
        raise CorruptStateError(where, f"value is {type(blob).__name__}, not a blob")
    if row_crc(identity, blob) != crc:
        raise CorruptStateError(where, "checksum mismatch (bit flip or torn write)")
    return blob if cipher is None else cipher.open(blob, identity.encode(), where)


def reseal(
    blob: bytes,
    crc: int,
    identity: str,
    where: str,
    old: RecordCipher | None,
    new: RecordCipher | None,
) -> tuple[int, bytes]:
    """A stored row's ``(crc, blob)`` re-sealed from ``old`` to ``new`` (rekey)."""
    return seal_row(open_row(blob, crc, identity, where, old), identity, new)


def decode(
    blob: bytes, crc: int, identity: str, where: str, cipher: RecordCipher | None = None
) -> Any:
    """Check the row's CRC and decode its CBOR; ``CorruptStateError`` naming ``where``."""
    blob = open_row(blob, crc, identity, where, cipher)
    try:
        return cbor2.loads(blob)
    except Exception as exc:  # cbor2 raises several types for malformed input
        raise CorruptStateError(where, f"undecodable CBOR: {exc}") from exc
