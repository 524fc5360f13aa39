"""The Baileys multi-file directory backend: Baileys' layout, our durability.

``await open_multi_file_backend(path)`` returns a ``MultiFileBackend`` (a
``stores.Persistence``, ``backend_name = "multi-file"``) that owns the directory
until ``aclose()`` (or the end of ``async with backend:``).

What it keeps from Baileys v7 ``useMultiFileAuthState``, byte for byte: file names
(``creds.json``, ``<type>-<id>.json`` with ``/`` → ``__`` then ``:`` → ``-``), Buffer
JSON, protobuf-JSON app-state-sync keys, camelCase creds, opaque session objects.
Real Baileys loads a directory written here, and this backend loads directories
real Baileys v6 and v7 wrote.

What it adds, invisible to Baileys (dotfiles it never reads):

* ``.baileys-trio.lock``: the cross-process ownership lock (``StoreLockedError``).
* Atomic, durable writes: temp + fsync + rename + directory fsync; files 0600,
  the directory 0700 (existing files and the directory are tightened on open).
* Crash-safe multi-file commits through ``.baileys-trio-journal``
  (see ``stores._multi_file_journal``): after any crash, the last commit is either
  wholly applied or not at all, and every acknowledged commit is there.
* ``.creds.json.last-good``: the newest creds this backend validated or wrote.
  A torn or corrupt ``creds.json`` raises ``CorruptStateError`` (file, offset,
  field), never "no creds"; ``restore_last_good_creds(path)`` puts the last good
  copy back explicitly (an automatic fallback could silently run on stale creds).
  A missing ``creds.json`` beside a last-good copy is an error too.
* Creds are checked for self-consistency on read and write (every public key is
  its private key's, the signed pre-key signature verifies): Baileys JSON has no
  checksum, so this is what catches a flipped bit in key material.
* A failed write or fsync raises ``DurabilityError`` and the backend turns read-only.

Opening: an absent or empty path is a new device (``read_creds()`` is ``None``).
A path that is a file, or a directory without Baileys data holding a file that
starts with the SQLite or the native backend's magic, raises ``WrongBackendError``
(only the first 64 unknown files are probed). Unknown files are left alone.

Reads (``read_keys``) go to the files each time; a corrupt key file raises
``CorruptStateError`` where Baileys would silently return nothing. Sequence
numbers returned by ``commit`` grow across reopens: each open durably bumps an
epoch in ``.baileys-trio-epoch`` and commits count ``epoch << 32 | n`` from there.

Since 0.1.0.
"""

from __future__ import annotations

import re
import stat
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar

import trio

from stores import _multi_file_journal as journal
from stores import _multi_file_layout as layout
from stores import buffer_json
from stores.creds import (
    BAILEYS_FIELD_NAMES,
    AuthCreds,
    creds_from_baileys_json,
    creds_to_baileys_json,
)
from stores.errors import (
    CorruptStateError,
    DurabilityError,
    InvalidValueError,
    StoreClosedError,
    WrongBackendError,
)
from stores.fsio import REAL_FS, FileSystem, StrPath, atomic_write, ensure_private_dir, is_temp_name
from stores.group_commit import GroupCommitStatistics, GroupCommitter
from stores.keys import check_creds_keys
from stores.lock import LockHandle, acquire_lock
from stores.native_format import MAGIC as NATIVE_MAGIC
from stores.types import KEY_TYPES, Batch, StoreSnapshot, Value, check_key_type

BACKEND_NAME = "multi-file"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_PROBE_FILES = 64


@dataclass(frozen=True)
class _Prepared:
    """A batch encoded to file contents before it joins a group (bad values fail here)."""

    ops: dict[str, bytes | None]
    creds: AuthCreds | None
    creds_bytes: bytes | None


class MultiFileBackend:
    """A Baileys multi-file auth directory, owned exclusively while open."""

    backend_name: ClassVar[str] = BACKEND_NAME

    def __init__(
        self,
        directory: Path,
        lock: LockHandle,
        creds: AuthCreds | None,
        fs: FileSystem,
        epoch: int = 0,
    ) -> None:
        self._dir = directory
        self._lock = lock
        self._creds = creds
        self._fs = fs
        self._io = threading.Lock()  # groups and reads never interleave
        self._overlay: dict[str, bytes | None] = {}
        self._seq = epoch << 32
        self._closed = False
        self._active = 0
        self._idle = trio.Event()
        self._committer: GroupCommitter[_Prepared] = GroupCommitter(
            self._write_group, location=str(directory)
        )

    # --- Persistence -----------------------------------------------------------------

    @property
    def location(self) -> str:
        return str(self._dir)

    async def read_creds(self) -> AuthCreds | None:
        """The newest committed creds (a copy), or ``None`` for a new device."""
        self._check_open()
        await trio.lowlevel.checkpoint()
        return None if self._creds is None else self._creds.copy()

    async def read_keys(self, type: str, ids: Sequence[str]) -> dict[str, Value]:
        """Values of the present ``ids`` of ``type``; ``CorruptStateError`` for a bad file."""
        self._check_open()
        names = {id: layout.key_file_name(type, id) for id in ids}
        return await trio.to_thread.run_sync(self._read_keys_sync, type, names)

    async def commit(self, batch: Batch) -> int:
        """Make ``batch`` durable (crash-atomic across its files); return its sequence number."""
        self._check_open()
        prepared = _prepare(batch)
        self._active += 1
        try:
            return await self._committer.commit(prepared)
        finally:
            self._active -= 1
            if self._closed and not self._active:
                self._idle.set()

    async def snapshot(self) -> StoreSnapshot:
        """Everything in the directory: creds and every Baileys key file, ids guessed back."""
        self._check_open()
        keys = await trio.to_thread.run_sync(self._snapshot_sync)
        creds = None if self._creds is None else self._creds.copy()
        return StoreSnapshot(creds=creds, keys=keys)

    async def aclose(self) -> None:
        """Wait for in-flight commits, then release the directory (idempotent)."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        if self._active:
            with trio.CancelScope(shield=True):
                await self._idle.wait()
        self._lock.release()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> MultiFileBackend:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def statistics(self) -> GroupCommitStatistics:
        """Group-commit counters (commits, groups, largest group, read-only)."""
        return self._committer.statistics()

    @property
    def read_only(self) -> bool:
        return self._committer.read_only

    # --- blocking parts (worker threads) -------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{self._dir}: the multi-file backend is closed")

    def _read_keys_sync(self, type: str, names: Mapping[str, str]) -> dict[str, Value]:
        out: dict[str, Value] = {}
        with self._io:
            for id, name in names.items():
                data = self._read_file(name)
                if data is not None:
                    out[id] = layout.decode_key(type, data, str(self._dir / name))
        return out

    def _read_file(self, name: str) -> bytes | None:
        if name in self._overlay:
            return self._overlay[name]
        try:
            return self._fs.read_bytes(self._dir / name)
        except FileNotFoundError:
            return None
        except IsADirectoryError as exc:
            raise CorruptStateError(
                str(self._dir / name), "is a directory, not a key file"
            ) from exc

    def _snapshot_sync(self) -> dict[str, dict[str, Value]]:
        keys: dict[str, dict[str, Value]] = {t: {} for t in KEY_TYPES}
        with self._io:
            names = set(self._fs.listdir(self._dir)) | set(self._overlay)
            for name in sorted(names):
                parsed = layout.parse_key_file_name(name)
                if parsed is None:
                    continue
                data = self._read_file(name)
                if data is not None:
                    type, id = parsed
                    keys[type][id] = layout.decode_key(type, data, str(self._dir / name))
        return {t: v for t, v in keys.items() if v}

    def _write_group(self, items: Sequence[_Prepared]) -> list[int]:
        ops: dict[str, bytes | None] = {}
        creds: AuthCreds | None = None
        creds_bytes: bytes | None = None
        for item in items:
            ops.update(item.ops)
            if item.creds is not None:
                creds, creds_bytes = item.creds, item.creds_bytes
        with self._io:
            self._apply(ops, creds, creds_bytes)
        first = self._seq + 1
        self._seq += len(items)
        return list(range(first, self._seq + 1))

    def _apply(
        self, ops: dict[str, bytes | None], creds: AuthCreds | None, creds_bytes: bytes | None
    ) -> None:
        if not ops:
            return
        if len(ops) == 1:
            journal.apply_ops(self._fs, self._dir, ops)
        else:
            journal.write_journal(self._fs, self._dir, layout.JOURNAL_FILE, ops)
            # From here the change is durable: replay on open finishes it. If applying
            # fails, reads must already see it (the overlay) to match what a reopen sees.
            try:
                journal.apply_ops(self._fs, self._dir, ops)
                journal.remove_file_durably(self._fs, self._dir, layout.JOURNAL_FILE)
            except BaseException:
                self._overlay.update(ops)
                if creds is not None:
                    self._creds = creds
                raise
        if creds is not None:
            self._creds = creds
            assert creds_bytes is not None
            atomic_write(self._dir / layout.LAST_GOOD_CREDS_FILE, creds_bytes, fs=self._fs)


def _prepare(batch: Batch) -> _Prepared:
    ops: dict[str, bytes | None] = {}
    for type, writes in batch.keys.items():
        check_key_type(type)
        for id, value in writes.items():
            name = layout.key_file_name(type, id)
            ops[name] = None if value is None else layout.encode_key(type, id, value)
    creds = None
    creds_bytes = None
    snapshot = batch.backend_creds()
    if snapshot is not None:
        if not isinstance(snapshot, AuthCreds):
            raise InvalidValueError("creds", f"expected AuthCreds, got {type(snapshot).__name__}")
        creds = snapshot.copy()
        creds_bytes = buffer_json.dump_bytes(creds_to_baileys_json(creds))
        # Validate as the reader will: never write creds we could not read back.
        try:
            creds_from_baileys_json(buffer_json.loads(creds_bytes, "creds"), "creds")
            check_creds_keys(creds, "creds")
        except CorruptStateError as exc:
            raise InvalidValueError("creds", exc.reason) from exc
        ops[layout.CREDS_FILE] = creds_bytes
    return _Prepared(ops=ops, creds=creds, creds_bytes=creds_bytes)


# --- opening -------------------------------------------------------------------------


async def open_multi_file_backend(path: StrPath, *, fs: FileSystem = REAL_FS) -> MultiFileBackend:
    """Open (creating if absent) a Baileys multi-file directory and own it.

    Raises ``StoreLockedError`` (another owner), ``WrongBackendError`` (not a Baileys
    directory), ``CorruptStateError`` (torn/corrupt creds or journal: file and offset)
    or ``DurabilityError`` (a journal replay or permission fix could not be written).
    """
    directory = Path(path)
    lock, creds, epoch = await trio.to_thread.run_sync(_open_sync, directory, fs)
    return MultiFileBackend(directory, lock, creds, fs, epoch)


def _open_sync(directory: Path, fs: FileSystem) -> tuple[LockHandle, AuthCreds | None, int]:
    _refuse_foreign(directory, fs)
    _refuse_unreadable_creds(directory, fs)
    ensure_private_dir(directory, fs=fs)
    lock = acquire_lock(directory, name=layout.LOCK_FILE)
    try:
        _refuse_foreign(directory, fs)
        _sweep_temps(directory, fs)
        _replay_journal(directory, fs)
        _tighten_files(directory, fs)
        creds = _load_creds(directory, fs)
        if creds is not None:
            _refresh_last_good(directory, fs)
        epoch = _next_epoch(directory, fs)
    except BaseException:
        lock.release()
        raise
    return lock, creds, epoch


def _refuse_unreadable_creds(directory: Path, fs: FileSystem) -> None:
    """Raise ``CorruptStateError`` for creds that do not read, before anything is touched.

    A refused open must leave the directory as it found it: no mode fixed, no lock file
    created. Skipped while an intent journal is pending, whose replay (under the lock)
    may be what repairs the creds.
    """
    try:
        names = fs.listdir(directory)
    except FileNotFoundError:
        return
    if layout.JOURNAL_FILE not in names:
        _load_creds(directory, fs)


def _next_epoch(directory: Path, fs: FileSystem) -> int:
    path = directory / layout.EPOCH_FILE
    try:
        text = fs.read_bytes(path).decode("ascii", "replace")
    except FileNotFoundError:
        text = "0"
    if not text.isdigit() or len(text) > 12:
        raise CorruptStateError(str(path), f"expected a decimal open counter, got {text[:20]!r}", 0)
    epoch = int(text) + 1
    atomic_write(path, str(epoch).encode("ascii"), fs=fs)
    return epoch


def _refuse_foreign(directory: Path, fs: FileSystem) -> None:
    try:
        st = fs.stat(directory)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        found = (
            "sqlite"
            if _head(directory, fs).startswith(_SQLITE_MAGIC)
            else "a file, not a directory"
        )
        raise WrongBackendError(str(directory), BACKEND_NAME, found)
    names = fs.listdir(directory)
    if layout.CREDS_FILE in names or layout.LAST_GOOD_CREDS_FILE in names:
        return
    if any(layout.parse_key_file_name(n) for n in names):
        return
    probed = 0
    for name in sorted(names):
        if name.endswith(".json") or name.startswith(".baileys-trio") or is_temp_name(name):
            continue
        if probed >= _PROBE_FILES:
            break
        probed += 1
        head = _head(directory / name, fs)
        if head.startswith(_SQLITE_MAGIC):
            raise WrongBackendError(str(directory), BACKEND_NAME, f"sqlite ({name})")
        if head.startswith(NATIVE_MAGIC):
            raise WrongBackendError(str(directory), BACKEND_NAME, f"native ({name})")


def _head(path: Path, fs: FileSystem) -> bytes:
    try:
        if not stat.S_ISREG(fs.stat(path).st_mode):
            return b""
        with open(path, "rb") as f:
            return f.read(64)
    except OSError:
        return b""


def _sweep_temps(directory: Path, fs: FileSystem) -> None:
    for name in fs.listdir(directory):
        if is_temp_name(name):
            try:
                fs.unlink(directory / name)
            except OSError:
                pass  # harmless leftover; never read as data


def _replay_journal(directory: Path, fs: FileSystem) -> None:
    path = directory / layout.JOURNAL_FILE
    try:
        raw = fs.read_bytes(path)
    except FileNotFoundError:
        return
    ops = journal.decode_journal(raw, str(path))
    journal.apply_ops(fs, directory, ops)
    journal.remove_file_durably(fs, directory, layout.JOURNAL_FILE)


def _tighten_files(directory: Path, fs: FileSystem) -> None:
    for name in fs.listdir(directory):
        if name != layout.CREDS_FILE and layout.parse_key_file_name(name) is None:
            continue
        path = directory / name
        try:
            mode = fs.stat(path).st_mode
            if stat.S_ISREG(mode) and stat.S_IMODE(mode) & 0o077:
                fs.chmod(path, 0o600)
        except OSError as exc:
            raise DurabilityError(str(path), "chmod 0600", exc) from exc


def _load_creds(directory: Path, fs: FileSystem) -> AuthCreds | None:
    path = directory / layout.CREDS_FILE
    backup = directory / layout.LAST_GOOD_CREDS_FILE
    try:
        raw = fs.read_bytes(path)
    except FileNotFoundError:
        if _exists(backup, fs):
            raise CorruptStateError(
                str(path), f"missing, but {backup.name} holds the last good creds{_RESTORE_HINT}"
            ) from None
        return None
    try:
        return _parse_creds(raw, str(path))
    except CorruptStateError as exc:
        hint = (
            f"; {backup.name} holds the last good creds{_RESTORE_HINT}"
            if _exists(backup, fs)
            else ""
        )
        raise CorruptStateError(exc.location, exc.reason + hint, exc.offset) from exc


_RESTORE_HINT = " (stores.multi_file.restore_last_good_creds restores it)"


def _parse_creds(raw: bytes, location: str) -> AuthCreds:
    if not raw:
        raise CorruptStateError(location, "empty file (a torn write?)", 0)
    try:
        creds = creds_from_baileys_json(buffer_json.loads(raw, location), location)
        check_creds_keys(creds, location)
    except CorruptStateError as exc:
        if exc.offset is not None:
            raise
        raise CorruptStateError(exc.location, exc.reason, _field_offset(raw, exc.reason)) from exc
    return creds


_NESTED_NAMES = {"key_pair": "keyPair", "key_id": "keyId", "timestamp_s": "timestampS"}


def _field_offset(raw: bytes, reason: str) -> int | None:
    """Byte offset in ``raw`` of the field an error names (``creds.a.b: ...`` or ``$.a.b: ...``).

    Found by searching each key of the path in turn after the previous one: exact
    for creds.json as Baileys and we write it, and never worse than "unknown".
    """
    parts = reason.partition(":")[0].split(".")
    if len(parts) < 2 or parts[0] not in ("creds", "$"):
        return None
    names = [BAILEYS_FIELD_NAMES.get(_bare(parts[1]), _bare(parts[1]))]
    names += [_NESTED_NAMES.get(_bare(p), _bare(p)) for p in parts[2:]]
    found: int | None = None
    start = 0
    for name in names:
        at = raw.find(b'"' + name.encode("utf-8", "replace") + b'"', start)
        if at < 0:
            break
        found = start = at
    if found is None:
        # A missing field: point at the first unrecognised one, else at the object.
        for name in re.findall(r"'([^']*)'", reason.partition("unrecognised fields:")[2]):
            at = raw.find(b'"' + name.encode("utf-8", "replace") + b'"')
            if at >= 0:
                return at
        return 0
    return found


def _bare(part: str) -> str:
    return part.partition("[")[0]


def _refresh_last_good(directory: Path, fs: FileSystem) -> None:
    raw = fs.read_bytes(directory / layout.CREDS_FILE)
    backup = directory / layout.LAST_GOOD_CREDS_FILE
    try:
        if fs.read_bytes(backup) == raw:
            return
    except FileNotFoundError:
        pass
    atomic_write(backup, raw, fs=fs)


def _exists(path: Path, fs: FileSystem) -> bool:
    try:
        fs.stat(path)
    except FileNotFoundError:
        return False
    return True


async def restore_last_good_creds(path: StrPath, *, fs: FileSystem = REAL_FS) -> AuthCreds:
    """Put ``.creds.json.last-good`` back as ``creds.json`` (atomically) and return it.

    For a directory whose ``creds.json`` is torn or corrupt. Takes the ownership
    lock; raises ``CorruptStateError`` if the last-good copy is missing or bad too.
    """
    return await trio.to_thread.run_sync(_restore_sync, Path(path), fs)


def _restore_sync(directory: Path, fs: FileSystem) -> AuthCreds:
    with acquire_lock(directory, name=layout.LOCK_FILE):
        backup = directory / layout.LAST_GOOD_CREDS_FILE
        try:
            raw = fs.read_bytes(backup)
        except FileNotFoundError:
            raise CorruptStateError(str(backup), "no last good creds to restore") from None
        creds = _parse_creds(raw, str(backup))
        atomic_write(directory / layout.CREDS_FILE, raw, fs=fs)
        return creds
