"""The native backend's on-disk format: files, frames, records, and how to read them.

Pure functions over bytes (no IO); ``stores.native`` and ``stores.native_load`` do IO.
The format specification lives in the docstring of ``stores.native``.

Since 0.1.0.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2

from stores.encryption import Encryption, RecordCipher, StoreKey, check_key
from stores.errors import (
    CorruptStateError,
    InvalidValueError,
    UnsupportedFormatError,
    WrongBackendError,
)
from stores.types import KeyWrites, check_key_type

MAGIC = b"\x89BTN\r\n\x1a\n"
"""First 8 bytes of every native file (PNG-style: catches text-mode mangling)."""

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
BACKEND_NAME = "native"
FORMAT_NAME = "baileys-trio"

FRAME_MARKER = b"\xf0BTR"
FRAME_HEAD = struct.Struct(">4sI16s")
"""marker, payload length (u32 big-endian), BLAKE2b-128 of length||payload."""
FRAME_OVERHEAD = FRAME_HEAD.size
MAX_PAYLOAD = 1 << 28
"""256 MiB: a longer length field can only be damage."""

DIGEST_PERSON = b"btrio-native-v1"

LOG_RE = re.compile(r"^log-([0-9a-f]{16})$")
SNAPSHOT_RE = re.compile(r"^snapshot-([0-9a-f]{16})$")
DAMAGED_RE = re.compile(r"^(log|snapshot)-[0-9a-f]{16}\.damaged-[0-9]+$")
"""A damaged file kept aside by a salvaging open: never read, never deleted by us."""
LOCK_NAME = "LOCK"

SNAPSHOT_CHUNK_BYTES = 1 << 20
"""A snapshot stores keys in frames of about this size (bounded decode memory)."""

MAX_DEPTH = 64


def log_name(generation: int) -> str:
    return f"log-{generation:016x}"


def snapshot_name(generation: int) -> str:
    return f"snapshot-{generation:016x}"


def damaged_name(name: str, when: int) -> str:
    return f"{name}.damaged-{when}"


# --- frames --------------------------------------------------------------------------


_DIGEST_BASE = hashlib.blake2b(digest_size=16, person=DIGEST_PERSON)
"""Copied per frame: cheaper than setting the hash's parameters up again."""


def _digest(length: bytes, payload: bytes | memoryview) -> bytes:
    h = _DIGEST_BASE.copy()
    h.update(length)
    h.update(payload)
    return h.digest()


def frame(payload: bytes) -> bytes:
    """Wrap ``payload`` in a checksummed frame."""
    length = struct.pack(">I", len(payload))
    return b"".join((FRAME_MARKER, length, _digest(length, payload), payload))


def read_frame(data: bytes, offset: int) -> tuple[memoryview, int] | None:
    """The payload of a complete, intact frame at ``offset`` and its end; else ``None``."""
    end_head = offset + FRAME_OVERHEAD
    if end_head > len(data):
        return None
    marker, length, digest = FRAME_HEAD.unpack_from(data, offset)
    if marker != FRAME_MARKER or length > MAX_PAYLOAD or end_head + length > len(data):
        return None
    payload = memoryview(data)[end_head : end_head + length]
    if _digest(data[offset + 4 : offset + 8], payload) != digest:
        return None
    return payload, end_head + length


# --- headers -------------------------------------------------------------------------


@dataclass(frozen=True)
class FileHeader:
    """The first frame of every native file."""

    kind: str  # "log" or "snapshot"
    generation: int
    base_seq: int
    """For a log: the sequence number its first record follows; for a snapshot: its state's seq."""
    created: float
    encryption: Encryption | None = None
    """Set in every file of an encrypted store (all files of a generation agree)."""


def encode_header(header: FileHeader) -> bytes:
    fields: dict[str, Any] = {
        "format": FORMAT_NAME,
        "backend": BACKEND_NAME,
        "version": FORMAT_VERSION,
        "kind": header.kind,
        "generation": header.generation,
        "base_seq": header.base_seq,
        "created": header.created,
    }
    if header.encryption is not None:
        fields["encryption"] = header.encryption.to_plain()
    return MAGIC + frame(cbor2.dumps(fields))


def decode_header(data: bytes, location: str, kind: str) -> tuple[FileHeader, int]:
    """Parse the magic and header frame; return the header and where records start."""
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise CorruptStateError(location, "not a native store file (bad magic)", 0)
    found = read_frame(data, len(MAGIC))
    if found is None:
        # Headers are written atomically before a file is published: damage, not a tear.
        raise CorruptStateError(location, "file header fails its checksum", len(MAGIC))
    payload, end = found
    raw = _loads(payload, location, len(MAGIC))
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        raise CorruptStateError(location, "file header is not a baileys-trio header", len(MAGIC))
    if raw.get("backend") != BACKEND_NAME:
        raise WrongBackendError(location, BACKEND_NAME, f"{raw.get('backend')!r} backend")
    if raw.get("version") not in SUPPORTED_VERSIONS:
        raise UnsupportedFormatError(location, raw.get("version"), SUPPORTED_VERSIONS)
    generation: Any = raw.get("generation")
    base_seq: Any = raw.get("base_seq")
    created: Any = raw.get("created")
    if (
        raw.get("kind") != kind
        or not _is_uint(generation)
        or not _is_uint(base_seq)
        or not isinstance(created, int | float)
    ):
        raise CorruptStateError(location, f"malformed {kind} header", len(MAGIC))
    encryption = None
    if "encryption" in raw:
        encryption = Encryption.from_plain(raw["encryption"], location)
    return FileHeader(kind, generation, base_seq, float(created), encryption), end


def open_header(
    data: bytes, location: str, kind: str, key: StoreKey | None
) -> tuple[FileHeader, int, RecordCipher | None]:
    """``decode_header``, then the key checked against the header (``WrongKeyError``)."""
    header, end = decode_header(data, location, kind)
    return header, end, check_key(location, header.encryption, key)


# --- values --------------------------------------------------------------------------


_HEAD1 = [bytes((byte,)) for byte in range(256)]
_HEAD8 = struct.Struct(">BB").pack
_HEAD16 = struct.Struct(">BH").pack
_HEAD32 = struct.Struct(">BI").pack
_HEAD64 = struct.Struct(">BQ").pack

CBOR_UINT = 0x00
CBOR_BYTES = 0x40
CBOR_TEXT = 0x60
CBOR_MAP = 0xA0


def cbor_head(major: int, n: int) -> bytes:
    """The CBOR head of major type ``major`` (``CBOR_BYTES``...) carrying ``n`` (< 2**64).

    The shortest form, as cbor2 writes it: heads built here and items cbor2 encodes
    are the same bytes, on the hot path without an encoder object per call.
    """
    if n < 24:
        return _HEAD1[major | n]
    if n < 0x100:
        return _HEAD8(major | 24, n)
    if n < 0x1_0000:
        return _HEAD16(major | 25, n)
    if n < 0x1_0000_0000:
        return _HEAD32(major | 26, n)
    return _HEAD64(major | 27, n)


def encode_value(value: Any, what: str) -> bytes:
    """CBOR of one plain key value; anything not plain data is an ``InvalidValueError``."""
    _check_plain(value, what, 0)
    return cbor2.dumps(value)


def decode_value(raw: bytes) -> Any:
    return cbor2.loads(raw)


def _check_plain(value: Any, what: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidValueError(what, f"nested deeper than {MAX_DEPTH}")
    if value is None or isinstance(value, bool | int | str | bytes):
        return
    if isinstance(value, float):
        if math.isnan(value):
            # NaN != NaN: a stored NaN could never compare equal to what was written.
            raise InvalidValueError(what, "NaN is not storable")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{what}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidValueError(what, f"object key {key!r} is not a string")
            _check_plain(item, f"{what}.{key}", depth + 1)
        return
    raise InvalidValueError(what, f"{type(value).__name__} is not plain data")


EncodedKeys = dict[str, dict[str, bytes | None]]
"""``{type: {id: CBOR of the value, or None to delete}}``."""


def encode_key_writes(keys: KeyWrites) -> EncodedKeys:
    """Validate and encode a batch's key writes (in the caller, so bad input fails alone)."""
    out: EncodedKeys = {}
    for type_, entries in keys.items():
        check_key_type(type_)
        if not isinstance(entries, Mapping):
            raise InvalidValueError(f"keys[{type_}]", "expected a mapping of id to value")
        encoded: dict[str, bytes | None] = {}
        for id_, value in entries.items():
            if not isinstance(id_, str) or not id_:
                raise InvalidValueError(f"keys[{type_}]", f"id {id_!r} is not a non-empty string")
            if value is None:
                encoded[id_] = None
            elif type(value) is bytes:
                # Plain by definition: skip the walk (what cbor2.dumps writes, faster).
                encoded[id_] = cbor_head(CBOR_BYTES, len(value)) + value
            else:
                encoded[id_] = encode_value(value, f"{type_}/{id_}")
        if encoded:
            out[type_] = encoded
    return out


# --- commit records ------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One commit as stored: its seq, the first seq of its write group, keys, creds."""

    seq: int
    group: int
    keys: EncodedKeys
    creds: bytes | None
    """CBOR of ``AuthCreds.to_plain()``, or ``None`` if the commit carries no creds."""


def encode_record_body(keys: EncodedKeys, creds: bytes | None) -> bytes:
    """The seq-independent tail of a record payload, built once in the committing task."""
    return cbor2.dumps(keys) + cbor2.dumps(creds)


def encode_record(seq: int, group: int, body: bytes, cipher: RecordCipher | None = None) -> bytes:
    """A framed record: CBOR array ``[seq, group, keys, creds]`` (body holds the last two).

    Encrypted: ``[seq, group, sealed body]``, the seq and group bound to the seal.
    """
    head = _uint(seq) + _uint(group)
    if cipher is not None:
        return frame(b"\x83" + head + cbor2.dumps(cipher.seal(body, _record_identity(seq, group))))
    # Hand-built array header so the body, encoded earlier, is not re-encoded.
    return frame(b"\x84" + head + body)


def _uint(n: int) -> bytes:
    return cbor_head(CBOR_UINT, n) if n < 1 << 64 else cbor2.dumps(n)


def _record_identity(seq: int, group: int) -> bytes:
    return b"log/%d/%d" % (seq, group)


def decode_record(
    payload: memoryview, location: str, offset: int, cipher: RecordCipher | None = None
) -> Record:
    """Parse an intact frame's payload; a bad shape is damage (the checksum held)."""
    raw = _loads(payload, location, offset)
    size = 3 if cipher is not None else 4
    if not (isinstance(raw, list) and len(raw) == size):
        shape = "[seq, group, sealed]" if cipher is not None else "[seq, group, keys, creds]"
        raise CorruptStateError(location, f"record is not {shape}", offset)
    seq, group = raw[0], raw[1]
    if not (_is_uint(seq) and _is_uint(group) and group <= seq):
        raise CorruptStateError(location, "record has a bad sequence number", offset)
    if cipher is None:
        keys, creds = raw[2], raw[3]
    else:
        if not isinstance(raw[2], bytes):
            raise CorruptStateError(location, "encrypted record body is not bytes", offset)
        body = cipher.open(raw[2], _record_identity(seq, group), location, offset)
        pair = _loads(b"\x82" + body, location, offset)
        keys, creds = pair[0], pair[1]
    if creds is not None and not isinstance(creds, bytes):
        raise CorruptStateError(location, "record creds are not bytes", offset)
    return Record(seq, group, check_encoded_keys(keys, location, offset, allow_none=True), creds)


def check_encoded_keys(raw: Any, location: str, offset: int, *, allow_none: bool) -> EncodedKeys:
    if not isinstance(raw, dict):
        raise CorruptStateError(location, "keys are not a map", offset)
    for type_, entries in raw.items():
        if not isinstance(type_, str) or not isinstance(entries, dict):
            raise CorruptStateError(location, "keys are not {type: {id: value}}", offset)
        for id_, value in entries.items():
            ok = isinstance(value, bytes) or (allow_none and value is None)
            if not isinstance(id_, str) or not ok:
                raise CorruptStateError(location, f"bad key entry in {type_!r}", offset)
    return raw


# --- log scanning --------------------------------------------------------------------


@dataclass(frozen=True)
class TornTail:
    """The end of a log that recovery cuts off (or, salvaging, the damaged part)."""

    offset: int
    dropped_bytes: int
    dropped_records: int
    """Intact records after the cut (same write group, or anything when salvaging)."""
    damage: str | None = None
    """Set when this is not a torn tail but damage before intact data (salvage only)."""


@dataclass(frozen=True)
class LogScan:
    header: FileHeader
    records: list[tuple[int, Record]]
    """(offset, record) in log order."""
    end: int
    """Offset just past the last intact record: where the next append goes."""
    torn: TornTail | None


def scan_log(
    data: bytes, location: str, *, salvage: bool = False, key: StoreKey | None = None
) -> LogScan:
    """Read every record of a log, separating a torn tail from real damage.

    Records are appended in write groups (one write + one fsync per group); each
    record names the first seq of its group. At the first frame that is not intact
    (short, bad marker, bad length or checksum) recovery looks for intact frames
    after it. None, or only ones of the *same* write group (a group never fully
    fsynced, so never acknowledged; pages may reach the disk out of order) → a torn
    tail, cut off exactly there. An intact record of a *later* group → the damage is
    in the middle of acknowledged data: ``CorruptStateError`` naming the offset, and
    nothing is cut (with ``salvage``: reported as ``TornTail.damage`` instead).

    ``key`` must open the header's encryption (``WrongKeyError`` before any record is
    read); a sealed record of an intact frame that fails its tag is damage, as above.
    """
    header, offset, cipher = open_header(data, location, "log", key)
    records: list[tuple[int, Record]] = []
    expected = header.base_seq + 1
    while offset < len(data):
        found = read_frame(data, offset)
        if found is None:
            if zero_tail(data, offset):
                return LogScan(header, records, offset, None)  # the preallocated rest
            torn = _torn_tail(data, offset, expected, location, cipher)
            if torn.damage is not None and not salvage:
                raise CorruptStateError(location, torn.damage, offset)
            return LogScan(header, records, offset, torn)
        payload, end = found
        try:
            record = decode_record(payload, location, offset, cipher)
            if record.seq != expected:
                raise CorruptStateError(
                    location, f"record seq {record.seq} where {expected} was expected", offset
                )
        except CorruptStateError as exc:
            if not salvage:
                raise
            torn = TornTail(offset, len(data) - offset, -1, exc.reason)
            return LogScan(header, records, offset, torn)
        records.append((offset, record))
        expected += 1
        offset = end
    return LogScan(header, records, offset, None)


def zero_tail(data: bytes, offset: int) -> bool:
    """True if every byte from ``offset`` to the end is zero: the log's unused tail.

    The writer extends a log with written zeros before records go there, so the
    durable end of the records is where the zeros begin. A record torn into zeros
    (its pages never reached the disk) was never acknowledged and ends the log there
    just the same.
    """
    return data.count(0, offset) == len(data) - offset


def _torn_tail(
    data: bytes, bad: int, expected: int, location: str, cipher: RecordCipher | None
) -> TornTail:
    intact = 0
    damage: str | None = None
    search = bad + 1
    while (candidate := data.find(FRAME_MARKER, search)) != -1:
        search = candidate + 1
        found = read_frame(data, candidate)
        if found is None:
            continue
        try:
            record: Record | None = decode_record(found[0], location, candidate, cipher)
        except CorruptStateError:
            record = None
        if damage is None and (record is None or record.group > expected):
            damage = (
                "damaged record followed by intact data (not a torn tail); "
                f"next intact frame at offset {candidate}"
            )
        intact += 1
        search = found[1]
    return TornTail(bad, len(data) - bad, intact, damage)


# --- snapshots -----------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotState:
    """What a snapshot holds: the state at ``header.base_seq``."""

    header: FileHeader
    creds: bytes | None
    previous_creds: bytes | None
    """The creds before ``creds``: a second chance if the newest ever fails validation."""
    keys: dict[str, dict[str, bytes]]


def encode_snapshot(
    header: FileHeader,
    creds: bytes | None,
    previous_creds: bytes | None,
    keys: Mapping[str, Mapping[str, bytes]],
    cipher: RecordCipher | None = None,
) -> bytes:
    """Serialise a full state: header, creds frame, key chunk frames, end frame.

    With ``cipher`` (which must match ``header.encryption``) every frame after the
    header is sealed, bound to the generation and its index.
    """
    parts = [encode_header(header)]

    def sealed_frame(payload: bytes) -> bytes:
        if cipher is not None:
            payload = cipher.seal(payload, _snapshot_identity(header.generation, len(parts) - 1))
        return frame(payload)

    parts.append(sealed_frame(cbor2.dumps(["creds", creds, previous_creds])))
    frames, entries = 1, 0
    for type_, table in keys.items():
        chunk: dict[str, bytes] = {}
        size = 0
        for id_, raw in table.items():
            chunk[id_] = raw
            size += len(raw) + len(id_)
            if size >= SNAPSHOT_CHUNK_BYTES:
                parts.append(sealed_frame(cbor2.dumps(["keys", type_, chunk])))
                frames, entries, chunk, size = frames + 1, entries + len(chunk), {}, 0
        if chunk:
            parts.append(sealed_frame(cbor2.dumps(["keys", type_, chunk])))
            frames, entries = frames + 1, entries + len(chunk)
    parts.append(sealed_frame(cbor2.dumps(["end", frames, entries])))
    return b"".join(parts)


def _snapshot_identity(generation: int, index: int) -> bytes:
    return b"snapshot/%d/%d" % (generation, index)


def decode_snapshot(data: bytes, location: str, key: StoreKey | None = None) -> SnapshotState:
    """Read a whole snapshot; any damage is ``CorruptStateError`` (snapshots are atomic)."""
    header, offset, cipher = open_header(data, location, "snapshot", key)
    creds: bytes | None = None
    previous: bytes | None = None
    keys: dict[str, dict[str, bytes]] = {}
    frames = entries = 0
    while True:
        found = read_frame(data, offset)
        if found is None:
            raise CorruptStateError(location, "snapshot frame fails its checksum", offset)
        payload: bytes | memoryview = found[0]
        if cipher is not None:
            identity = _snapshot_identity(header.generation, frames)
            payload = cipher.open(payload, identity, location, offset)
        raw = _loads(payload, location, offset)
        tag = raw[0] if isinstance(raw, list) and raw else None
        if tag == "creds" and len(raw) == 3 and frames == 0:
            creds, previous = raw[1], raw[2]
            if not all(c is None or isinstance(c, bytes) for c in (creds, previous)):
                raise CorruptStateError(location, "snapshot creds are not bytes", offset)
        elif tag == "keys" and len(raw) == 3 and isinstance(raw[1], str) and frames > 0:
            chunk = check_encoded_keys({raw[1]: raw[2]}, location, offset, allow_none=False)
            table = chunk[raw[1]]
            keys.setdefault(raw[1], {}).update(table)  # type: ignore[arg-type]  # no None here
            entries += len(table)
        elif tag == "end" and len(raw) == 3:
            if raw[1:] != [frames, entries]:
                raise CorruptStateError(location, "snapshot end frame counts disagree", offset)
            if found[1] != len(data):
                raise CorruptStateError(location, "data after the snapshot end frame", found[1])
            return SnapshotState(header, creds, previous, keys)
        else:
            raise CorruptStateError(location, "unexpected snapshot frame", offset)
        frames += 1
        offset = found[1]


# --- helpers -------------------------------------------------------------------------


def _loads(payload: bytes | memoryview, location: str, offset: int) -> Any:
    try:
        return cbor2.loads(payload)
    except (cbor2.CBORDecodeError, ValueError, TypeError) as exc:
        raise CorruptStateError(location, f"undecodable CBOR: {exc}", offset) from exc


def _is_uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
