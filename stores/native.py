"""The native backend: a crash-safe, log-structured CBOR store in one directory.

Format specification (version 1)
================================

A store is a directory (0700); every file in it is 0600::

    LOCK                      flock'd by the owner; JSON {pid, host, started}
    snapshot-<gen:016x>       full state at some seq (absent in generation 0)
    log-<gen:016x>            records committed after that snapshot
    .<name>.tmp-<hex>         temp files of an atomic write: never data, deleted on open
    <file>.damaged-<unix>     a damaged log kept aside by ``recover=True``; never read

Every file starts with the 8-byte magic ``89 'BTN' 0D 0A 1A 0A`` and a header
frame. A *frame* is::

    F0 'BTR' | length: u32 big-endian | BLAKE2b-128(length || payload) | payload (CBOR)

(BLAKE2b-128 via ``hashlib`` with personalisation ``btrio-native-v1``: stronger than
CRC32C and in the standard library; the ``crc32c`` package is not a dependency.)

The header payload is the map ``{"format": "baileys-trio", "backend": "native",
"version": 1, "kind": "log" | "snapshot", "generation": g, "base_seq": n,
"created": unix time}``. A log's ``base_seq`` is the seq its first record follows;
a snapshot's is the seq of the state it holds.

A log holds one record per commit, the frame payload being the CBOR array
``[seq, group, keys, creds]``: ``seq`` counts commits from 1 without gaps,
``group`` is the first seq of the write group the record was written in (one
``write`` + one ``fdatasync`` per group), ``keys`` is ``{type: {id: bytes | null}}``
where the bytes are the CBOR of the key value and ``null`` deletes, ``creds`` is the
CBOR of ``AuthCreds.to_plain()`` or ``null``. One commit is one record, so creds and
keys committed together are atomic. A commit costs O(size of the change).

A snapshot holds frames ``["creds", creds | null, previous_creds | null]``, then
``["keys", type, {id: bytes}]`` chunks of about 1 MiB, then ``["end", frames,
entries]``; it is written whole (temp + fsync + rename + directory fsync) and so is
never torn: any damage in it is ``CorruptStateError``.

Recovery (on open): take the highest snapshot generation G (0 if none), load
``snapshot-G``, replay ``log-G`` (its header must say generation G and start where the
snapshot ends; record seqs must be consecutive). At the first frame that is not
intact: if no intact frame follows, or only frames of the same write group (a
group never fully fsynced was never acknowledged), it is a torn tail and is cut
off exactly; otherwise the damage is in acknowledged data → ``CorruptStateError``
naming file and offset, and nothing is changed. Files of generations below G are
leftovers of a finished compaction and are deleted. A log of a generation above G
(its snapshot missing) is ``CorruptStateError``. The latest creds are validated
with ``AuthCreds.from_plain`` at open. Only an absent directory or one with no
store files (besides ``LOCK`` and temp files) is a new store; Baileys JSON or a
SQLite file is ``WrongBackendError``, an unknown version ``UnsupportedFormatError``.

Preallocation: a log file is longer than its records. The writer grows
it ahead of them by zero-filled chunks (its own size while small, at least 64 KiB,
then ``log_chunk_bytes``, 4 MiB by default): the zeros are written, not
``fallocate``'d (an unwritten extent costs a journal commit at its first write
again), and the file is fsynced before any record is written there, so its size is
durable first. A group is then ``pwrite`` at the records' end and ``fdatasync``'d:
it overwrites written blocks, so no size or allocation is committed with it. On
open, a frame that is not intact followed by nothing but zeros to the end of the
file is the clean end of the log (a record torn into zeros was never
acknowledged); anything else there is handled as above (torn tail or damage), and
cutting a torn tail truncates the file to the records' end (the next commit grows it
again). The format version stays 1: the records are unchanged, a log without a zero
tail opens as before, and a reader that predates this cuts the zeros as a torn tail.

Compaction, when the log is at least ``compact_min_bytes`` and at least as large as
the last snapshot (so rewriting costs O(1) amortised per committed byte), runs in
the writer before the next group: write ``snapshot-(G+1)`` atomically, create
``log-(G+1)`` atomically (header only), switch appends to it, then delete the
generation-G files. A crash at any step leaves a directory that opens with all data.

Last good creds: the log keeps every creds version since the snapshot (except
creds-only commits superseded by a newer creds record of their own write group,
which are acknowledged by that record and never written), and the
snapshot keeps the latest creds *and the one before it*. ``open_native_backend(path,
recover=True)`` (explicit, never automatic) (a) opens a log damaged in the middle
with the state of every intact record *before* the damage, keeping the damaged log
aside as ``log-….damaged-<unix>`` (a hard link, made before anything changes), and
(b) if the latest creds fail validation, falls back to the newest earlier version
that validates and commits it as the latest. What it did is in ``backend.recovery``.

Failures: any write or fsync error raises ``DurabilityError`` and the backend turns
read-only (``StoreReadOnlyError`` afterwards); a failed fsync is never retried. An
acknowledged commit was fsynced before ``commit`` returned; a commit that raised may
or may not be present after a reopen, but never partly.

Encryption (since 0.2.0, with ``encryption_key``; ``stores.encryption``): every
header then carries ``"encryption": {"cipher": "chacha20-poly1305", "key_id":
"k1-…", "store_id": hex}`` (all files of a generation agree); a log record is
``[seq, group, sealed]`` where ``sealed`` is ``nonce || ciphertext || tag`` of the CBOR
``keys`` and ``creds`` (the body above), with the store id, seq and group as
associated data; every snapshot frame's payload after the header is sealed the same
way, bound to the generation and frame index. The frame checksum covers the sealed
bytes, so torn tails are found as before. The key id is checked against the header
before any record is read: a wrong or missing key (or a key for a plain store) is
``WrongKeyError`` and nothing is cut or salvaged; a failed tag on an intact frame is
``CorruptStateError``. ``rekey(key)`` is a compaction writing the next generation
under the new key: before its snapshot's rename the store opens with the old key
only, after it with the new key only.

Memory: key values stay on disk. ``stores.native_values.ValueIndex`` keeps per key a
128-bit digest of its id, the place of its entry in the live snapshot or log and the
entry's CRC-32 (28 bytes), and a read takes the entry from the file, checks it and
decodes a fresh object (``CorruptStateError(file, offset)`` if it changed). Compaction
reads every value from the old generation and places them in the new snapshot. The
latest two creds versions are kept as CBOR bytes. An encrypted store's entries are
not in its files in the clear, so its values stay in the index's memory.

Since 0.1.0.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import cbor2
import trio

from stores.creds import AuthCreds
from stores.encryption import (
    KeySource,
    RecordCipher,
    StoreKey,
    check_key,
    new_encryption,
    resolve_key,
)
from stores.errors import (
    CorruptStateError,
    DurabilityError,
    InvalidValueError,
    StoreClosedError,
    StoreError,
    StoreLockedError,
    WrongKeyError,
)
from stores.fsio import (
    REAL_FS,
    FileSystem,
    StrPath,
    atomic_write,
    ensure_private_dir,
    sync_dir,
    sync_file,
    write_all_at,
)
from stores.group_commit import GroupCommitter
from stores.lock import LockHandle, acquire_lock, lock_owner
from stores.native_format import (
    LOCK_NAME,
    EncodedKeys,
    FileHeader,
    TornTail,
    damaged_name,
    decode_value,
    encode_header,
    encode_key_writes,
    encode_record,
    encode_record_body,
    encode_snapshot,
    log_name,
    snapshot_name,
)
from stores.native_load import (
    CredsVersion,
    Layout,
    Listing,
    LoadedState,
    classify,
    load_state,
    placeable,
)
from stores.native_values import (
    LOG,
    SNAPSHOT,
    Placement,
    ValueIndex,
    empty_index,
    placed_body,
)
from stores.transactions import sequenced_on_call
from stores.types import Batch, StoreSnapshot, Value
from stores.writer_thread import DEFAULT_INLINE_BELOW

DEFAULT_COMPACT_MIN_BYTES = 16 << 20
MIN_COMPACT_BYTES = 4096
DEFAULT_LOG_CHUNK_BYTES = 4 << 20
"""The log grows by zero-filled chunks of this size (one fsync each)."""
MIN_LOG_CHUNK_BYTES = 64 << 10
_ZEROS = bytes(1 << 20)


@dataclass(frozen=True)
class NativeStatistics:
    """Counters of one open backend (for benchmarks and ``inspect``)."""

    durable_seq: int
    generation: int
    records: int
    """Records in the live log."""
    log_bytes: int
    snapshot_bytes: int
    keys: int
    fsyncs: int
    """fsync/fdatasync calls made by commits and compactions since open."""
    groups: int
    commits: int
    compactions: int
    read_only: bool
    coalesced: int = 0
    """Creds-only commits acknowledged by a newer creds record of the same group."""
    values_in_memory: int = 0
    """Key values held in memory; every other value is read from disk when asked for."""
    values_cached: int = 0
    """Values in the small cache of recent reads."""
    groups_written_here: int = 0
    """Of ``groups``, those written on Trio's thread itself (``inline_write_below``)."""


@dataclass(frozen=True)
class NativeRecovery:
    """What opening had to repair (all ``None``/empty on a clean open)."""

    torn_tail: TornTail | None = None
    damaged_log_kept: str | None = None
    creds_fallback: CredsVersion | None = None
    """Set when the latest creds failed validation and this older version was used."""
    creds_error: str | None = None
    removed_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class LogSettings:
    """When the log is compacted, by how much it grows, which writes may run on Trio's thread."""

    compact_min_bytes: int = DEFAULT_COMPACT_MIN_BYTES
    log_chunk_bytes: int = DEFAULT_LOG_CHUNK_BYTES
    inline_write_below: float = DEFAULT_INLINE_BELOW


@dataclass(frozen=True)
class _Rekey:
    """A key change the next compaction carries out (``cipher=None``: to plain)."""

    cipher: RecordCipher | None


@dataclass
class _Item:
    body: bytes
    keys: EncodedKeys
    creds: bytes | None
    compact: bool = False
    entries: list[Placement] | None = None
    """Where its key entries lie in ``body`` (``placed_body``); ``None`` if encoded sealed."""


_FRAME_BOUND = 256
"""Bytes a record's frame adds to its body at most, sealed or not (head, seq, nonce, tag)."""


def _item_size(item: _Item) -> int:
    return len(item.body) + 64  # the frame and record head


def _creds_only(item: _Item) -> bool:
    # Rewritten whole by any later creds record of its group: no need to write it. The
    # log then keeps fewer creds versions for recover=True, never an older one last.
    return item.creds is not None and not item.keys and not item.compact


def _carries_creds(item: _Item) -> bool:
    return item.creds is not None


class NativeBackend:
    """An open native store; make one with ``open_native_backend``.

    Implements ``stores.types.Persistence``. Use as ``async with`` (or call
    ``aclose``) so the lock is released and the log closed.
    """

    backend_name: ClassVar[str] = "native"

    def __init__(
        self,
        directory: Path,
        fs: FileSystem,
        lock: LockHandle,
        state: LoadedState,
        fd: int,
        recovery: NativeRecovery,
        settings: LogSettings,
        cipher: RecordCipher | None = None,
    ) -> None:
        self._dir = directory
        self._cipher = cipher
        self._rekey: _Rekey | None = None
        self._fs = fs
        self._lock = lock
        self._fd: int | None = fd
        self._gen = state.generation
        self._log_location = str(directory / log_name(self._gen))
        self._keys = state.keys
        self._placed: dict[int, tuple[int, bytes, int]] = {}
        """seq → (log offset, frame, where its keys start) of records not yet applied."""
        self._compacted: ValueIndex | None = None
        """The index of a new generation, installed by the next ``_apply``."""
        self._creds = state.creds
        self._previous_creds = state.previous_creds
        self._durable_seq = state.durable_seq
        self._written_seq = state.durable_seq
        self._log_bytes = state.log_bytes
        """Where the next record goes: the end of the records, not of the file."""
        self._log_allocated = _file_size(fs, self._log_location)
        """The log file's durable size: zeros from ``_log_bytes`` on."""
        self._log_chunk_bytes = settings.log_chunk_bytes
        self._records = len(state.log.records) if state.log else 0
        self._snapshot_bytes = state.snapshot_bytes
        self._compact_min_bytes = settings.compact_min_bytes
        self._fsyncs = 0
        self._compactions = 0
        self._closed = False
        self.recovery = recovery
        self._committer: GroupCommitter[_Item] = GroupCommitter(
            self._write_group,
            location=str(directory),
            apply=self._apply,
            item_size=_item_size,
            replaceable=_creds_only,
            supersedes=_carries_creds,
            short_write=self._short_write,
            inline_below=settings.inline_write_below,
        )

    # --- Persistence ---------------------------------------------------------------

    @property
    def location(self) -> str:
        return str(self._dir)

    async def read_creds(self) -> AuthCreds | None:
        """The latest committed creds (a fresh object), or ``None`` for a new device."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        if self._creds is None:
            return None
        return AuthCreds.from_plain(cbor2.loads(self._creds), self.location)

    async def read_keys(self, type: str, ids: Sequence[str]) -> dict[str, Value]:
        """The committed values of the present ``ids`` (fresh objects)."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        out: dict[str, Value] = {}
        for id_ in ids:
            raw = self._keys.get(type, id_)
            if raw is not None:
                out[id_] = decode_value(raw)
        return out

    @sequenced_on_call  # queued before the first checkpoint: durable in call order
    async def commit(self, batch: Batch) -> int:
        """Append ``batch`` as one record; return its seq once it is durable."""
        self._check_open()
        self._committer.check_writable()
        keys = encode_key_writes(batch.keys)
        snapshot = batch.backend_creds()
        creds = None if snapshot is None else _encode_creds(snapshot, self.location)
        if not keys and creds is None:
            await trio.lowlevel.checkpoint()
            return self._durable_seq
        if self._cipher is not None:
            # Sealed, its entries are nowhere in the file: their values stay in the index.
            return await self._committer.commit(_Item(encode_record_body(keys, creds), keys, creds))
        body, entries = placed_body(keys, creds)
        return await self._committer.commit(_Item(body, keys, creds, entries=entries))

    async def snapshot(self) -> StoreSnapshot:
        """Everything committed, decoded (for migration, inspect and tests)."""
        self._check_open()
        tables = self._keys.tables()  # in this thread: a compaction may replace the index
        creds = await self.read_creds()
        keys = await trio.to_thread.run_sync(_decode_tables, tables)
        return StoreSnapshot(creds=creds, keys=keys)

    async def aclose(self) -> None:
        """Wait for in-flight commits, close the log and release the lock (idempotent)."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        await self._committer.aclose()
        fd, self._fd = self._fd, None
        if fd is not None:
            self._fs.close(fd)
        self._keys.close()
        self._lock.release()

    async def __aenter__(self) -> NativeBackend:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- extras ----------------------------------------------------------------------

    async def compact(self) -> int:
        """Compact now (snapshot + fresh log); return the seq the snapshot holds."""
        self._check_open()
        return await self._committer.commit(_Item(b"", {}, None, compact=True))

    async def rekey(self, key: StoreKey | None) -> int:
        """Rewrite the store under ``key`` (``None``: plain) in one compaction; crash-safe.

        Until the new generation's snapshot is renamed into place the store opens with
        the old key only, from then on with the new key only; the old generation's
        files are then deleted. Returns the seq the new snapshot holds.
        """
        self._check_open()
        self._rekey = _Rekey(None if key is None else RecordCipher(key, new_encryption(key)))
        return await self.compact()

    @property
    def key_id(self) -> str | None:
        """The id of the key the store is encrypted with (``None``: plain)."""
        return None if self._cipher is None else self._cipher.key.key_id

    def statistics(self) -> NativeStatistics:
        group = self._committer.statistics()
        return NativeStatistics(
            durable_seq=self._durable_seq,
            generation=self._gen,
            records=self._records,
            log_bytes=self._log_bytes,
            snapshot_bytes=self._snapshot_bytes,
            keys=len(self._keys),
            fsyncs=self._fsyncs,
            groups=group.groups,
            commits=group.commits,
            compactions=self._compactions,
            read_only=group.read_only,
            coalesced=group.coalesced,
            values_in_memory=self._keys.statistics().in_memory,
            values_cached=self._keys.statistics().cached,
            groups_written_here=group.written_here,
        )

    def __repr__(self) -> str:
        return f"NativeBackend({self.location!r}, seq={self._durable_seq}, gen={self._gen})"

    # --- the writer (runs on the committer's writer thread, one group at a time) ------

    def _write_group(self, items: Sequence[_Item]) -> list[int]:
        fd = self._fd
        if fd is None:
            raise DurabilityError(self.location, "append", StoreClosedError("closed"))
        if any(item.compact for item in items) or self._compaction_due():
            fd = self._compact()
        first = self._written_seq + 1
        frames: list[bytes] = []
        seqs: list[int] = []
        offset = self._log_bytes
        for item in items:
            if item.compact:
                seqs.append(self._written_seq + len(frames))
                continue
            seq = first + len(frames)
            frames.append(encode_record(seq, first, item.body, self._cipher))
            seqs.append(seq)
            if item.keys:
                # A sealed frame holds no entry to place: its values stay in the index.
                # The body is the frame's tail: its keys map starts len(body) from the end.
                placed = (offset, frames[-1], len(frames[-1]) - len(item.body))
                self._placed[seq] = placed if self._cipher is None else (offset, b"", 0)
            offset += len(frames[-1])
        if frames:
            data = b"".join(frames)
            location = self._log_location
            end = self._log_bytes + len(data)
            if end > self._log_allocated:
                self._grow(fd, end, location)
            write_all_at(self._fs, fd, data, self._log_bytes, location)
            # Inside the preallocated, already written part of the file: no size or
            # block allocation to commit, so fdatasync flushes the data alone.
            sync_file(self._fs, fd, location, data_only=True)
            self._fsyncs += 1
            self._written_seq += len(frames)
            self._log_bytes += len(data)
            self._records += len(frames)
        return seqs

    def _short_write(self, items: Sequence[_Item]) -> bool:
        """Whether writing ``items`` is one append into the log's allocated part.

        Not when the log must grow first (megabytes of zeros and a full fsync) or be
        compacted: those writes stay on the writer thread, away from Trio's loop.
        """
        if self._compaction_due():
            return False
        end = self._log_bytes
        for item in items:
            if item.compact:
                return False
            end += len(item.body) + _FRAME_BOUND
        return end <= self._log_allocated

    def _grow(self, fd: int, needed: int, location: str) -> None:
        """Extend the log with zeros past ``needed`` and make its new size durable.

        Written zeros, not ``fallocate``: an unwritten extent is converted on the first
        write into it, which costs a journal commit per fdatasync again. The full fsync
        here commits the size before any record relies on it.
        """
        # A small log grows by its own size (an idle account's log stays small), a
        # large one by a chunk: one fsync per chunk, amortised over its records.
        step = max(MIN_LOG_CHUNK_BYTES, min(self._log_allocated, self._log_chunk_bytes))
        size = needed + step
        offset = self._log_allocated
        while offset < size:
            piece = _ZEROS[: min(len(_ZEROS), size - offset)]
            write_all_at(self._fs, fd, piece, offset, location)
            offset += len(piece)
        sync_file(self._fs, fd, location)
        self._fsyncs += 1
        self._log_allocated = size

    def _compaction_due(self) -> bool:
        return self._log_bytes >= max(self._compact_min_bytes, self._snapshot_bytes)

    def _compact(self) -> int:
        """Snapshot the state, start the next generation, drop the old one. Returns the new fd."""
        old_gen, new_gen, seq, now = self._gen, self._gen + 1, self._written_seq, time.time()
        cipher = self._cipher if self._rekey is None else self._rekey.cipher
        encryption = None if cipher is None else cipher.encryption
        tables = self._keys.tables()
        snapshot = encode_snapshot(
            FileHeader("snapshot", new_gen, seq, now, encryption),
            self._creds,
            self._previous_creds,
            tables,
            cipher,
        )
        new_snapshot = self._dir / snapshot_name(new_gen)
        atomic_write(new_snapshot, snapshot, fs=self._fs)
        # From the rename on, the store opens with the new key only (rekey's switch point).
        self._cipher, self._rekey = cipher, None
        header = encode_header(FileHeader("log", new_gen, seq, now, encryption))
        new_log = self._dir / log_name(new_gen)
        atomic_write(new_log, header, fs=self._fs)
        index = empty_index(new_snapshot, new_log)
        index.add_frame(SNAPSHOT, placeable(snapshot, cipher), 0, len(snapshot), tables)
        index.finish()
        self._compacted = index
        self._keys.files.hold()  # the old index serves reads until _apply installs the new
        self._fsyncs += 4  # two files, two directory syncs
        fd = _open_log(self._fs, new_log)
        old_fd, self._fd = self._fd, fd
        if old_fd is not None:
            self._fs.close(old_fd)
        self._gen, self._log_bytes, self._records = new_gen, len(header), 0
        self._log_allocated = len(header)
        self._log_location = str(new_log)
        self._snapshot_bytes = len(snapshot)
        self._compactions += 1
        old = [log_name(old_gen)] + ([snapshot_name(old_gen)] if old_gen else [])
        _remove_quietly(self._fs, self._dir, old)
        return fd

    def _install_compacted(self) -> None:
        if self._compacted is not None:
            old, self._keys, self._compacted = self._keys, self._compacted, None
            old.close()

    def _apply(self, items: Sequence[_Item], seqs: Sequence[int]) -> None:
        """Trio thread, after the group is durable: make it visible."""
        self._install_compacted()
        for item, seq in zip(items, seqs, strict=True):
            placed = self._placed.pop(seq, None) if not item.compact else None
            if placed is not None:
                offset, frame, body = placed
                if frame and item.entries is not None:
                    self._keys.add_placed(LOG, frame, body, offset, item.entries, item.keys)
                else:
                    # Sealed (no frame: kept in memory), or encoded sealed and written
                    # plain after a rekey to plain (searched for in its frame).
                    self._keys.add_frame(LOG, frame, body, len(frame), item.keys, base=offset)
            if item.creds is not None:
                self._previous_creds, self._creds = self._creds, item.creds
        self._durable_seq = max(self._durable_seq, *seqs)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{self.location}: the native backend is closed")


# --- opening -------------------------------------------------------------------------


async def open_native_backend(
    path: StrPath,
    *,
    fs: FileSystem | None = None,
    compact_min_bytes: int = DEFAULT_COMPACT_MIN_BYTES,
    recover: bool = False,
    encryption_key: KeySource | None = None,
    log_chunk_bytes: int = DEFAULT_LOG_CHUNK_BYTES,
    inline_write_below: float = DEFAULT_INLINE_BELOW,
) -> NativeBackend:
    """Open (or create, if absent or empty) the native store at ``path``.

    Takes the ownership lock first (``StoreLockedError`` if another owner lives),
    recovers from a crash (cutting a torn tail), and refuses anything it cannot read
    for certain (``CorruptStateError``, ``WrongBackendError``,
    ``UnsupportedFormatError``). ``recover=True`` salvages a damaged store as the
    module docstring describes. With ``encryption_key`` (see ``stores.encryption``) a
    new store is encrypted and an existing one must be encrypted under that key
    (``WrongKeyError`` otherwise, also for a plain store, before anything changes).
    The log grows by zero-filled chunks of ``log_chunk_bytes``. A commit that appends
    into the log's allocated part is written on Trio's thread itself (no handoff to the
    writer thread and back) when no other task is runnable and recent writes took less
    than ``inline_write_below`` seconds (``stores.writer_thread``; 0: never).
    """
    if compact_min_bytes < MIN_COMPACT_BYTES:
        # Smaller would rewrite the whole store on almost every commit.
        raise ValueError(f"compact_min_bytes must be at least {MIN_COMPACT_BYTES}")
    if log_chunk_bytes < MIN_LOG_CHUNK_BYTES:
        raise ValueError(f"log_chunk_bytes must be at least {MIN_LOG_CHUNK_BYTES}")
    key = await resolve_key(encryption_key)
    if inline_write_below < 0:
        raise ValueError("inline_write_below must not be negative")
    settings = LogSettings(compact_min_bytes, log_chunk_bytes, inline_write_below)
    opener = partial(_open_sync, Path(path), fs or REAL_FS, settings, recover, key)
    backend, pending_creds = await trio.to_thread.run_sync(opener)
    if pending_creds is not None:
        # A creds fallback is made the latest durably, so the next open is clean.
        try:
            await backend.commit(Batch(creds=pending_creds))
        except BaseException:
            await backend.aclose()
            raise
    return backend


def _open_sync(
    path: Path, fs: FileSystem, settings: LogSettings, recover: bool, key: StoreKey | None
) -> tuple[NativeBackend, AuthCreds | None]:
    listing = classify(path, fs)  # refuse foreign data before creating anything in it
    early = _validate_unlocked(path, fs, listing, recover, key)
    ensure_private_dir(path, fs=fs)
    lock = acquire_lock(path, LOCK_NAME)
    try:
        return _open_locked(path, fs, lock, settings, recover, key, early)
    except BaseException:
        lock.release()
        raise


@dataclass(frozen=True)
class _EarlyLoad:
    """The state read before the lock was taken, and the files it was read from."""

    fingerprint: tuple[tuple[str, int, int], ...]
    state: LoadedState


def _fingerprint(path: Path, fs: FileSystem, listing: Listing) -> tuple[tuple[str, int, int], ...]:
    names = sorted([*listing.logs.values(), *listing.snapshots.values()])
    stats = [(name, fs.stat(path / name)) for name in names]
    return tuple((name, st.st_size, st.st_mtime_ns) for name, st in stats)


def _validate_unlocked(
    path: Path, fs: FileSystem, listing: Listing, recover: bool, key: StoreKey | None
) -> _EarlyLoad | None:
    """Read and check the store before anything is touched (no mode fix, no lock file).

    A refused open leaves the directory as it found it. A store a live owner is
    writing may read as damaged here: its owner is then named (``StoreLockedError``)
    rather than the data blamed. The state read is reused under the lock when no file
    changed in between, so an open still reads the store once.
    """
    if listing.layout is not Layout.NATIVE:
        return None
    try:
        fingerprint = _fingerprint(path, fs, listing)
        state = load_state(path, listing, fs, salvage=recover, key=key)
        _check_creds(state, recover)
    except WrongKeyError:
        raise  # the key, not the data nor a live writer, is at fault
    except (StoreError, OSError):
        owner = lock_owner(path, LOCK_NAME)
        if owner is not None:
            raise StoreLockedError(str(path), owner.describe()) from None
        raise
    return _EarlyLoad(fingerprint, state)


def _open_locked(
    path: Path,
    fs: FileSystem,
    lock: LockHandle,
    settings: LogSettings,
    recover: bool,
    key: StoreKey | None,
    early: _EarlyLoad | None = None,
) -> tuple[NativeBackend, AuthCreds | None]:
    listing = classify(path, fs)  # again, under the lock
    _remove_quietly(fs, path, listing.temps)
    if listing.layout is not Layout.NATIVE:
        return _create(path, fs, lock, settings, key), None
    _tighten_modes(fs, path, [*listing.logs.values(), *listing.snapshots.values()])
    if early is not None and early.fingerprint == _fingerprint(path, fs, listing):
        state = early.state
    else:
        state = load_state(path, listing, fs, salvage=recover, key=key)
    cipher = check_key(str(path), state.encryption, key)  # load_state checked it already
    creds_fallback, creds_error, pending = _check_creds(state, recover)
    recovery = NativeRecovery(
        torn_tail=state.log.torn if state.log else None,
        creds_fallback=creds_fallback,
        creds_error=creds_error,
        removed_files=tuple(listing.temps) + tuple(state.obsolete),
    )
    damaged = state.log is not None and state.log.torn is not None and state.log.torn.damage
    if damaged:
        return _salvage(path, fs, lock, state, recovery, settings, cipher), pending
    log = path / log_name(state.generation)
    if state.log is None:
        header = FileHeader(
            "log", state.generation, state.durable_seq, time.time(), state.encryption
        )
        atomic_write(log, encode_header(header), fs=fs)
        state.log_bytes = len(encode_header(header))
    fd = _open_log(fs, log)
    try:
        if state.log is not None and state.log.torn is not None:
            _truncate(fs, fd, state.log.end, str(log))
        _remove_quietly(fs, path, state.obsolete)
    except BaseException:
        fs.close(fd)
        raise
    backend = NativeBackend(path, fs, lock, state, fd, recovery, settings, cipher)
    return backend, pending


def _create(
    path: Path, fs: FileSystem, lock: LockHandle, settings: LogSettings, key: StoreKey | None
) -> NativeBackend:
    cipher = None if key is None else RecordCipher(key, new_encryption(key))
    encryption = None if cipher is None else cipher.encryption
    header = encode_header(FileHeader("log", 0, 0, time.time(), encryption))
    log = path / log_name(0)
    atomic_write(log, header, fs=fs)
    index = empty_index(None, log)
    state = LoadedState(0, 0, index, None, None, [], None, len(header), 0, [], encryption)
    fd = _open_log(fs, log)
    return NativeBackend(path, fs, lock, state, fd, NativeRecovery(), settings, cipher)


def _check_creds(
    state: LoadedState, recover: bool
) -> tuple[CredsVersion | None, str | None, AuthCreds | None]:
    """Validate the latest creds; with ``recover``, fall back to the newest valid one."""
    if state.creds is None:
        return None, None, None
    latest = state.creds_history[-1]
    try:
        AuthCreds.from_plain(_loads_creds(latest), latest.location)
        return None, None, None
    except (CorruptStateError, InvalidValueError) as exc:
        reason = exc.reason
        if not recover:
            raise CorruptStateError(
                latest.location, f"latest creds (seq {latest.seq}): {reason}", latest.offset
            ) from exc
        error = reason
    for version in reversed(state.creds_history[:-1]):
        try:
            creds = AuthCreds.from_plain(_loads_creds(version), version.location)
        except (CorruptStateError, InvalidValueError):
            continue
        return version, error, creds
    raise CorruptStateError(latest.location, f"no creds version validates ({error})")


def _loads_creds(version: CredsVersion) -> Any:
    try:
        return cbor2.loads(version.raw)
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise CorruptStateError(
            version.location, f"undecodable creds: {exc}", version.offset
        ) from exc


def _salvage(
    path: Path,
    fs: FileSystem,
    lock: LockHandle,
    state: LoadedState,
    recovery: NativeRecovery,
    settings: LogSettings,
    cipher: RecordCipher | None,
) -> NativeBackend:
    """Keep the damaged log aside, then compact the intact prefix into a new generation."""
    log = path / log_name(state.generation)
    kept = path / damaged_name(log.name, int(time.time()))
    try:
        fs.link(log, kept)
    except OSError as exc:
        raise DurabilityError(str(kept), "keep damaged log (hard link)", exc) from exc
    sync_dir(fs, path)
    fd = _open_log(fs, log)  # replaced at once by the compaction below
    recovery = NativeRecovery(
        torn_tail=recovery.torn_tail,
        damaged_log_kept=kept.name,
        creds_fallback=recovery.creds_fallback,
        creds_error=recovery.creds_error,
        removed_files=recovery.removed_files,
    )
    backend = NativeBackend(path, fs, lock, state, fd, recovery, settings, cipher)
    try:
        # Same module, and no writer runs yet during open.
        backend._compact()
        backend._install_compacted()
    except BaseException:
        fs.close(backend._fd or fd)
        raise
    _remove_quietly(fs, path, state.obsolete)
    return backend


# --- small IO helpers ----------------------------------------------------------------


def _open_log(fs: FileSystem, file: Path) -> int:
    # Not O_APPEND: records go at the log's end, inside its preallocated tail.
    try:
        return fs.open(file, os.O_WRONLY)
    except OSError as exc:
        raise DurabilityError(str(file), "open for writing", exc) from exc


def _file_size(fs: FileSystem, location: str) -> int:
    try:
        return fs.stat(location).st_size
    except OSError as exc:
        raise DurabilityError(location, "stat", exc) from exc


def _truncate(fs: FileSystem, fd: int, length: int, location: str) -> None:
    try:
        fs.truncate(fd, length)
    except OSError as exc:
        raise DurabilityError(location, "truncate torn tail", exc) from exc
    sync_file(fs, fd, location)


def _remove_quietly(fs: FileSystem, directory: Path, names: Sequence[str]) -> None:
    # Leftovers (temp files, fully compacted generations) are never read again, so a
    # failure to delete them costs only disk space; the next open retries.
    removed = False
    for name in names:
        try:
            fs.unlink(directory / name)
            removed = True
        except FileNotFoundError:
            continue
        except OSError:
            return
    if removed:
        try:
            fs.fsync_dir(directory)
        except OSError:
            pass


def _tighten_modes(fs: FileSystem, directory: Path, names: Sequence[str]) -> None:
    """Secrets stay 0600 even if someone loosened a file's mode by hand."""
    for name in names:
        file = directory / name
        try:
            if stat.S_IMODE(fs.stat(file).st_mode) & 0o077:
                fs.chmod(file, 0o600)
        except OSError as exc:
            raise DurabilityError(str(file), "chmod 0600", exc) from exc


def _encode_creds(creds: AuthCreds, location: str) -> bytes:
    plain = creds.to_plain()
    try:
        # What we write must be what a later open accepts: a store must never hold
        # creds it would refuse to load.
        AuthCreds.from_plain(plain, location)
    except (CorruptStateError, InvalidValueError) as exc:
        raise InvalidValueError("creds", exc.reason) from exc
    return cbor2.dumps(plain)


def _decode_tables(tables: dict[str, dict[str, bytes]]) -> dict[str, dict[str, Value]]:
    return {
        t: {i: decode_value(raw) for i, raw in entries.items()} for t, entries in tables.items()
    }
