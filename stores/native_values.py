"""Where the native store's key values live: an index of places on disk, not the values.

An open native store used to keep every committed value in memory; an account holds
hundreds of pre-keys it uploaded and rarely reads again, so with many accounts per
process the values dominated the heap. ``ValueIndex`` keeps, per key, only where its
entry lies in the live snapshot or log and a checksum of it, and reads the entry when
asked.

The place of an entry: a key's value is stored inside a record (or snapshot chunk) as
the CBOR of its id followed by the CBOR byte string of the value, ``text(id) ||
bytes(value)``, which is what ``entry_bytes`` builds. The index remembers the file
(snapshot or log), the offset and length of those bytes and their CRC-32. A read
takes exactly those bytes (``os.pread``), checks length, CRC-32 and the id they
carry, and returns the value's bytes; anything else is ``CorruptStateError(file,
offset)``, never a wrong value. Where the bytes are found is looked up with
``bytes.find`` in the frame the entry was written in: any occurrence of those exact
bytes reads back the same id and value, so the place is right even if the search
lands elsewhere in the frame. An entry that cannot be placed (longer than 16 MiB, or
not found) stays in memory, which is always correct.

Memory per key: the id is not kept; a 128-bit BLAKE2b digest of it is (two 64-bit
array slots), plus 8 bytes of place and 4 of CRC: 28 bytes, against about 200 for a
dict entry with the id and the value's bytes. Digests of different ids collide with
probability 2^-128 per pair (the frames' own checksums are 128-bit as well).
Changes go to a small overlay that is merged into the sorted arrays once it holds
more than a sixteenth of them, so both loading and committing cost O(log n)
amortised per key. A small cache keeps the last values read.

Reads are synchronous: an entry is tens to hundreds of bytes, just written or read
at open, so a ``pread`` from the page cache costs microseconds, less than a hop to a
worker thread. File descriptors are opened on first read and kept until the index is
replaced (compaction) or closed; before a compaction deletes the files, it opens them
all (``hold``), so an index still in use keeps reading the unlinked files.

Threads: the backend's writer thread reads every entry when it compacts
(``tables``), while the Trio thread may serve reads; neither changes the index then
(changes are applied in the Trio thread between groups). Opening a descriptor is
under a lock; ``tables`` bypasses the cache.

Since 0.2.0.
"""

from __future__ import annotations

import collections
import os
import threading
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from pathlib import Path

import cbor2

from stores.errors import CorruptStateError
from stores.native_format import CBOR_BYTES, CBOR_MAP, CBOR_TEXT, cbor_head

SNAPSHOT = 0
LOG = 1
_SLOT_SHIFT = 63
_OFFSET_SHIFT = 24
_MAX_LENGTH = (1 << _OFFSET_SHIFT) - 1
_MAX_OFFSET = (1 << (_SLOT_SHIFT - _OFFSET_SHIFT)) - 1
PLACEABLE_BYTES = _MAX_LENGTH
"""Longer entries are kept in memory (a place has 24 bits of length)."""
_MIN_OVERLAY = 16
CACHE_ENTRIES = 16
"""Values kept decoded-free (as bytes) after a read: a session reads a few keys again."""

_Change = tuple[int, int] | None
"""(place, crc) of a new entry, or ``None`` for a deleted one."""


def entry_bytes(id_: str, raw: bytes) -> bytes:
    """How an entry ``id → raw`` is encoded inside a record or a snapshot chunk."""
    return cbor2.dumps(id_) + cbor2.dumps(raw)


_PROBE_BYTES = 32


def _locate(data: bytes, entry: bytes, begin: int, end: int) -> int:
    """Where ``entry`` occurs in ``data[begin:end]`` (-1 if nowhere).

    Searched by its first bytes, then compared whole: ``bytes.find`` with a needle of a
    kilobyte or more preprocesses the whole needle on every call (CPython's two-way
    search), which cost more than the rest of a commit's index update. Entries follow
    each other in a frame, so the probe is found at once.
    """
    probe = entry[:_PROBE_BYTES]
    at = data.find(probe, begin, end)
    while at >= 0 and not data.startswith(entry, at, end):
        at = data.find(probe, at + 1, end)
    return at


Placement = tuple[str, str, int, int, int, int]
"""(type, id, digest of the id, offset in the body, length, CRC-32) of one entry;
length -1: a deletion; offset -1: not placeable (kept in memory)."""


_TEXT_HEADS = [cbor_head(CBOR_TEXT, n) for n in range(24)]
"""The one-byte heads of short ids (most ids), looked up without a call."""


def placed_body(
    keys: Mapping[str, Mapping[str, bytes | None]], creds: bytes | None
) -> tuple[bytes, list[Placement]]:
    """A record body ``cbor(keys) || cbor(creds)`` and the place of each entry in it.

    The same bytes as ``native_format.encode_record_body`` (cbor2 writes maps in order
    and every head in its shortest form, as ``cbor_head`` does), laid down entry by
    entry, so each entry's place, length and CRC-32 are known as it is written: nothing
    is searched for or checked afterwards, and the committing task pays for it once.
    """
    parts = [cbor_head(CBOR_MAP, len(keys))]
    size = len(parts[0])
    out: list[Placement] = []
    for type_, entries in keys.items():
        name = type_.encode()
        head = cbor_head(CBOR_TEXT, len(name)) + name + cbor_head(CBOR_MAP, len(entries))
        parts.append(head)
        size += len(head)
        for id_, raw in entries.items():
            key = id_.encode()  # strict, as cbor2: an id with a lone surrogate is refused
            digest = int.from_bytes(blake2b(key, digest_size=16).digest(), "big")
            n = len(key)
            text = (_TEXT_HEADS[n] if n < 24 else cbor_head(CBOR_TEXT, n)) + key
            if raw is None:
                parts.append(text + b"\xf6")
                out.append((type_, id_, digest, size, -1, 0))
                size += len(text) + 1
                continue
            entry = text + cbor_head(CBOR_BYTES, len(raw)) + raw
            parts.append(entry)
            if len(entry) > PLACEABLE_BYTES:
                out.append((type_, id_, digest, -1, 0, 0))
            else:
                out.append((type_, id_, digest, size, len(entry), zlib.crc32(entry)))
            size += len(entry)
    parts.append(b"\xf6" if creds is None else cbor_head(CBOR_BYTES, len(creds)) + creds)
    return b"".join(parts), out


def _digest(id_: str) -> int:
    data = id_.encode("utf-8", "surrogatepass")
    return int.from_bytes(blake2b(data, digest_size=16).digest(), "big")


class ValueFiles:
    """The files an index points into, by slot, read with ``pread``.

    A slot given in ``contents`` is served from those bytes instead: what a loader
    read through a filesystem other than the real one (a backup's captured files,
    a test's faulty filesystem) is what the index must read back.
    """

    def __init__(self, paths: Mapping[int, Path]) -> None:
        self._paths = dict(paths)
        self.contents: dict[int, bytes] = {}
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()
        self._closed = False

    def path(self, slot: int) -> Path:
        return self._paths[slot]

    def _fd(self, slot: int) -> int:
        fd = self._fds.get(slot)
        if fd is not None:
            return fd
        with self._lock:
            if self._closed:
                raise CorruptStateError(str(self._paths[slot]), "read after the index closed")
            fd = self._fds.get(slot)
            if fd is None:
                fd = os.open(self._paths[slot], os.O_RDONLY | os.O_CLOEXEC)
                self._fds[slot] = fd
            return fd

    def read(self, slot: int, offset: int, length: int) -> bytes:
        if slot in self.contents:
            return self.contents[slot][offset : offset + length]
        try:
            return os.pread(self._fd(slot), length, offset)
        except OSError as exc:
            raise CorruptStateError(
                str(self._paths[slot]), f"cannot read a key entry: {exc}", offset
            ) from exc

    def hold(self) -> None:
        """Open every file now, so they stay readable once unlinked."""
        for slot in self._paths:
            try:
                self._fd(slot)
            except FileNotFoundError:
                continue  # nothing of that slot was ever placed (a log not yet written)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)


class _Table:
    """The places of one key type: sorted digests and an overlay of recent changes."""

    __slots__ = ("count", "crcs", "his", "inline", "los", "overlay", "places")

    def __init__(self) -> None:
        self.his = array("Q")
        self.los = array("Q")
        self.places = array("Q")
        self.crcs = array("I")
        self.overlay: dict[int, _Change] = {}
        self.inline: dict[str, bytes] = {}
        self.count = 0

    def _base(self, digest: int) -> int:
        hi, lo = digest >> 64, digest & 0xFFFF_FFFF_FFFF_FFFF
        i = bisect_left(self.his, hi)
        while i < len(self.his) and self.his[i] == hi:
            if self.los[i] == lo:
                return i
            i += 1
        return -1

    def find(self, digest: int) -> tuple[int, int] | None:
        if digest in self.overlay:
            return self.overlay[digest]
        i = self._base(digest)
        return None if i < 0 else (self.places[i], self.crcs[i])

    def change(self, id_: str, digest: int, change: _Change, raw: bytes | None) -> None:
        if change is not None and raw is None and digest not in self.overlay:
            i = self._base(digest)
            if i >= 0 and id_ not in self.inline:
                # A placed key placed anew (the common commit: a session or sender key
                # rewritten) moves in the sorted arrays themselves: no overlay entry,
                # so no merge, whose rebuild of every row is the costly part.
                self.places[i], self.crcs[i] = change
                return
        existed = id_ in self.inline or self.find(digest) is not None
        self.inline.pop(id_, None)
        if raw is not None:
            self.inline[id_] = raw
            change = None
        if change is None and self._base(digest) < 0:
            self.overlay.pop(digest, None)  # nothing below to hide
        else:
            self.overlay[digest] = change
        present = raw is not None or change is not None
        self.count += int(present) - int(existed)
        if len(self.overlay) > max(_MIN_OVERLAY, len(self.his) >> 4):
            self.merge()

    def merge(self) -> None:
        if not self.overlay:
            return
        overlay, self.overlay = self.overlay, {}
        rows = [
            (self.his[i], self.los[i], self.places[i], self.crcs[i])
            for i in range(len(self.his))
            if ((self.his[i] << 64) | self.los[i]) not in overlay
        ]
        for digest, change in overlay.items():
            if change is not None:
                rows.append((digest >> 64, digest & 0xFFFF_FFFF_FFFF_FFFF, *change))
        rows.sort()
        self.his = array("Q", [r[0] for r in rows])
        self.los = array("Q", [r[1] for r in rows])
        self.places = array("Q", [r[2] for r in rows])
        self.crcs = array("I", [r[3] for r in rows])

    def all_places(self) -> Iterator[tuple[int, int]]:
        # Without merging: the writer thread iterates while the Trio thread may look up.
        overlay = dict(self.overlay)
        for i in range(len(self.his)):
            if ((self.his[i] << 64) | self.los[i]) not in overlay:
                yield self.places[i], self.crcs[i]
        for change in overlay.values():
            if change is not None:
                yield change


@dataclass(frozen=True)
class IndexStatistics:
    """What an index holds (for benchmarks and tests)."""

    keys: int
    on_disk: int
    """Entries read from the files on demand."""
    in_memory: int
    """Entries kept as bytes (too long to place, or not found in their frame)."""
    cached: int


class ValueIndex:
    """The committed keys of a native store: ``{type: {id: place}}``, values on disk."""

    def __init__(self, files: ValueFiles, cache_entries: int = CACHE_ENTRIES) -> None:
        self.files = files
        self._tables: dict[str, _Table] = {}
        self._cache: collections.OrderedDict[tuple[str, str], bytes] = collections.OrderedDict()
        self._cache_entries = cache_entries

    # --- building and changing (Trio thread, or the opening thread) ---------------

    def add_frame(
        self,
        slot: int,
        data: bytes,
        start: int,
        end: int,
        keys: Mapping[str, Mapping[str, bytes | None]],
        base: int = 0,
    ) -> None:
        """Record the entries of one frame ``data[start:end]`` at file offset ``base + start``."""
        cursor = start
        for type_, entries in keys.items():
            table = self._tables.get(type_)
            if table is None:
                table = self._tables[type_] = _Table()
            for id_, raw in entries.items():
                self._cache.pop((type_, id_), None)
                if raw is None:
                    table.change(id_, _digest(id_), None, None)
                    continue
                entry = entry_bytes(id_, raw)
                at = _locate(data, entry, cursor, end)
                if at < 0:
                    at = _locate(data, entry, start, end)
                offset = base + at
                if at < 0 or len(entry) > PLACEABLE_BYTES or offset > _MAX_OFFSET:
                    table.change(id_, _digest(id_), None, raw)
                    continue
                cursor = at + len(entry)
                place = (slot << _SLOT_SHIFT) | (offset << _OFFSET_SHIFT) | len(entry)
                table.change(id_, _digest(id_), (place, zlib.crc32(entry)), None)

    def add_placed(
        self,
        slot: int,
        frame: bytes,
        body_start: int,
        base: int,
        entries: Sequence[Placement],
        keys: Mapping[str, Mapping[str, bytes | None]],
    ) -> None:
        """Record a record's entries placed by ``placed_body`` (its body at ``body_start``
        of ``frame``, the frame at file offset ``base``); an entry that could not be
        placed there is searched for in the frame as ``add_frame`` does."""
        cache = self._cache
        for type_, id_, digest, at, length, crc in entries:
            table = self._tables.get(type_)
            if table is None:
                table = self._tables[type_] = _Table()
            if cache:
                cache.pop((type_, id_), None)
            if length < 0:
                table.change(id_, digest, None, None)
                continue
            offset = base + body_start + at
            if at < 0 or offset > _MAX_OFFSET:
                self.add_frame(slot, frame, 0, len(frame), {type_: {id_: keys[type_][id_]}}, base)
                continue
            place = (slot << _SLOT_SHIFT) | (offset << _OFFSET_SHIFT) | length
            table.change(id_, digest, (place, crc), None)

    def finish(self) -> None:
        """Merge every overlay (after a load: the sorted arrays are the compact form)."""
        for table in self._tables.values():
            table.merge()

    def close(self) -> None:
        self._cache.clear()
        self.files.close()

    # --- reading ------------------------------------------------------------------

    def get(self, type_: str, id_: str) -> bytes | None:
        """The committed CBOR of ``type_/id_``, checked, or ``None`` if absent."""
        table = self._tables.get(type_)
        if table is None:
            return None
        if id_ in table.inline:
            return table.inline[id_]
        cached = self._cache.get((type_, id_))
        if cached is not None:
            self._cache.move_to_end((type_, id_))
            return cached
        found = table.find(_digest(id_))
        if found is None:
            return None
        raw = self._read(*found, expected=id_)[1]
        if self._cache_entries:
            self._cache[(type_, id_)] = raw
            if len(self._cache) > self._cache_entries:
                self._cache.popitem(last=False)
        return raw

    def _read(self, place: int, crc: int, expected: str | None = None) -> tuple[str, bytes]:
        slot = place >> _SLOT_SHIFT
        offset = (place >> _OFFSET_SHIFT) & _MAX_OFFSET
        length = place & _MAX_LENGTH
        data = self.files.read(slot, offset, length)
        location = str(self.files.path(slot))
        if len(data) != length or zlib.crc32(data) != crc:
            raise CorruptStateError(location, "key entry fails its checksum", offset)
        try:
            id_, raw = cbor2.loads(b"\x82" + data)
        except (cbor2.CBORDecodeError, ValueError, TypeError) as exc:
            raise CorruptStateError(location, f"undecodable key entry: {exc}", offset) from exc
        if not isinstance(id_, str) or not isinstance(raw, bytes):
            raise CorruptStateError(location, "key entry is not text(id) bytes(value)", offset)
        if expected is not None and id_ != expected:
            raise CorruptStateError(location, f"key entry holds {id_!r}, not {expected!r}", offset)
        return id_, raw

    def types(self) -> list[str]:
        return [t for t, table in self._tables.items() if table.count]

    def count(self, type_: str) -> int:
        table = self._tables.get(type_)
        return 0 if table is None else table.count

    def __len__(self) -> int:
        return sum(table.count for table in self._tables.values())

    def entries(self, type_: str) -> Iterator[tuple[str, bytes]]:
        """Every ``(id, CBOR)`` of a type, read from disk (no cache: safe in the writer)."""
        table = self._tables.get(type_)
        if table is None:
            return
        yield from table.inline.items()
        for place, crc in table.all_places():
            yield self._read(place, crc)

    def tables(self) -> dict[str, dict[str, bytes]]:
        """Everything, read from disk: ``{type: {id: CBOR}}`` (compaction, snapshots)."""
        return {t: dict(self.entries(t)) for t in self.types()}

    def statistics(self) -> IndexStatistics:
        inline = sum(len(table.inline) for table in self._tables.values())
        return IndexStatistics(len(self), len(self) - inline, inline, len(self._cache))


def empty_index(snapshot: Path | None, log: Path) -> ValueIndex:
    paths = {LOG: log} if snapshot is None else {SNAPSHOT: snapshot, LOG: log}
    return ValueIndex(ValueFiles(paths))


__all__ = [
    "CACHE_ENTRIES",
    "LOG",
    "SNAPSHOT",
    "IndexStatistics",
    "Placement",
    "ValueFiles",
    "ValueIndex",
    "empty_index",
    "entry_bytes",
    "placed_body",
]
