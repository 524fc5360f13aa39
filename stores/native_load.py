"""Reading a native store directory: what it holds, and its state rebuilt from disk.

Synchronous and free of side effects (the backend truncates torn tails and removes
obsolete files itself, under its lock), so ``inspect_native`` uses the same code.

Since 0.1.0.
"""

from __future__ import annotations

import enum
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from stores._multi_file_layout import LOCK_FILE as MULTI_FILE_LOCK_NAME
from stores.encryption import Encryption, StoreKey
from stores.errors import CorruptStateError, WrongBackendError
from stores.fsio import REAL_FS, FileSystem, is_temp_name
from stores.native_format import (
    BACKEND_NAME,
    DAMAGED_RE,
    FRAME_HEAD,
    FRAME_OVERHEAD,
    LOCK_NAME,
    LOG_RE,
    MAGIC,
    SNAPSHOT_RE,
    FileHeader,
    LogScan,
    TornTail,
    decode_snapshot,
    log_name,
    scan_log,
)
from stores.native_values import LOG, SNAPSHOT, ValueIndex, empty_index
from stores.types import KEY_FILE_PREFIXES

SQLITE_MAGIC = b"SQLite format 3\x00"
BAILEYS_PREFIXES = KEY_FILE_PREFIXES
# A directory holding Baileys key files is never taken for an empty native one.


class Layout(enum.Enum):
    ABSENT = "absent"
    EMPTY = "empty"
    NATIVE = "native"


@dataclass(frozen=True)
class Listing:
    """The files of a native directory, by role."""

    layout: Layout
    snapshots: dict[int, str] = field(default_factory=dict)
    logs: dict[int, str] = field(default_factory=dict)
    temps: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    """Damaged files set aside by an earlier salvage."""

    @property
    def generation(self) -> int:
        """The live generation: the newest snapshot's (0 without a snapshot)."""
        return max(self.snapshots, default=0)


def classify(path: Path, fs: FileSystem) -> Listing:
    """Say what ``path`` holds; refuse anything that is not ours or empty."""
    location = str(path)
    try:
        st = fs.stat(path)
    except FileNotFoundError:
        return Listing(Layout.ABSENT)
    if not stat.S_ISDIR(st.st_mode):
        raise WrongBackendError(location, BACKEND_NAME, _describe_file(path, fs))
    snapshots: dict[int, str] = {}
    logs: dict[int, str] = {}
    temps: list[str] = []
    kept: list[str] = []
    foreign: list[str] = []
    for name in sorted(fs.listdir(path)):
        if name in (LOCK_NAME, MULTI_FILE_LOCK_NAME):
            # Any backend's lock file: one left by a refused open of another backend
            # (or an old migrate) must not make a native directory unrecognisable.
            continue
        if is_temp_name(name):
            temps.append(name)
        elif m := SNAPSHOT_RE.match(name):
            snapshots[int(m[1], 16)] = name
        elif m := LOG_RE.match(name):
            logs[int(m[1], 16)] = name
        elif DAMAGED_RE.match(name):
            kept.append(name)
        else:
            foreign.append(name)
    if foreign:
        raise WrongBackendError(location, BACKEND_NAME, _describe_foreign(path, foreign, fs))
    if not snapshots and not logs:
        if kept:
            # Only damaged leftovers: not an empty directory, and not a store we can open.
            raise CorruptStateError(location, f"holds only damaged files {kept[:3]}")
        return Listing(Layout.EMPTY, temps=temps)
    return Listing(Layout.NATIVE, snapshots, logs, temps, kept)


def _describe_file(path: Path, fs: FileSystem) -> str:
    try:
        head = fs.read_bytes(path)[:16]
    except OSError:
        head = b""
    if head.startswith(SQLITE_MAGIC):
        return "SQLite database"
    return "a regular file (a native store is a directory)"


def _describe_foreign(path: Path, names: list[str], fs: FileSystem) -> str:
    if "creds.json" in names or any(
        n.endswith(".json") and n.startswith(BAILEYS_PREFIXES) for n in names
    ):
        return "Baileys multi-file JSON (creds.json)"
    for name in names:
        try:
            with open(path / name, "rb") as f:
                if f.read(16) == SQLITE_MAGIC:
                    return f"SQLite database ({name})"
        except OSError:
            continue
    return f"unrecognised files {names[:5]}"


# --- rebuilding the state ------------------------------------------------------------


@dataclass(frozen=True)
class CredsVersion:
    """One creds version found on disk."""

    seq: int
    """The commit that wrote it (for snapshot copies: the snapshot's seq)."""
    raw: bytes
    location: str
    offset: int | None


@dataclass
class LoadedState:
    """The committed state of a native directory, as recovery rebuilt it."""

    generation: int
    durable_seq: int
    keys: ValueIndex
    """Where each committed value lies in the live files (the values stay on disk)."""
    creds: bytes | None
    previous_creds: bytes | None
    creds_history: list[CredsVersion]
    """Every creds version still on disk, oldest first."""
    log: LogScan | None
    """The live log's scan, or ``None`` when the live generation has no log yet."""
    log_bytes: int
    snapshot_bytes: int
    obsolete: list[str]
    """Files of older generations, fully covered by the live snapshot."""
    encryption: Encryption | None = None
    """What the live generation's headers say (``None``: a plain store)."""


def load_state(
    path: Path,
    listing: Listing,
    fs: FileSystem,
    *,
    salvage: bool = False,
    key: StoreKey | None = None,
) -> LoadedState:
    """Rebuild the state from the live snapshot and the live log.

    Never guesses: a damaged snapshot, a log with no snapshot under it, or a log whose
    header disagrees with its snapshot is ``CorruptStateError``. ``key`` must be the
    one the live files name (``WrongKeyError`` before any record is read).
    """
    gen = listing.generation
    newer = [g for g in listing.logs if g > gen]
    if newer:
        name = listing.logs[max(newer)]
        raise CorruptStateError(
            str(path / name), f"log of generation {max(newer)} has no snapshot (expected one)"
        )
    obsolete = [listing.snapshots[g] for g in listing.snapshots if g < gen]
    obsolete += [listing.logs[g] for g in listing.logs if g < gen]
    snapshot = path / listing.snapshots[gen] if gen else None
    index = empty_index(snapshot, path / log_name(gen))
    state = LoadedState(gen, 0, index, None, None, [], None, 0, 0, obsolete)
    try:
        if snapshot is not None:
            _load_snapshot(snapshot, state, fs, key)
        if gen in listing.logs:
            _replay_log(path / listing.logs[gen], state, fs, salvage, key)
        elif gen == 0:
            raise CorruptStateError(str(path / log_name(0)), "missing (the directory has no log)")
    except BaseException:
        index.close()
        raise
    index.finish()
    return state


def _load_snapshot(file: Path, state: LoadedState, fs: FileSystem, key: StoreKey | None) -> None:
    data = fs.read_bytes(file)
    snap = decode_snapshot(data, str(file), key)
    _check_generation(snap.header, state.generation, str(file))
    state.encryption = snap.header.encryption
    state.durable_seq = snap.header.base_seq
    _keep_unless_real(fs, state.keys, SNAPSHOT, data)
    state.keys.add_frame(SNAPSHOT, placeable(data, state.encryption), 0, len(data), snap.keys)
    state.creds, state.previous_creds = snap.creds, snap.previous_creds
    seq = snap.header.base_seq
    state.creds_history = [
        CredsVersion(seq, c, str(file), None)
        for c in (snap.previous_creds, snap.creds)
        if c is not None
    ]
    state.snapshot_bytes = len(data)


def _replay_log(
    file: Path, state: LoadedState, fs: FileSystem, salvage: bool, key: StoreKey | None
) -> None:
    data = fs.read_bytes(file)
    scan = scan_log(data, str(file), salvage=salvage, key=key)
    _check_generation(scan.header, state.generation, str(file))
    if state.generation and scan.header.encryption != state.encryption:
        # Same key id (both opened with one key), so only the store id can differ.
        raise CorruptStateError(str(file), "log and snapshot headers name different stores")
    state.encryption = scan.header.encryption
    if scan.header.base_seq != state.durable_seq:
        raise CorruptStateError(
            str(file),
            f"log starts after seq {scan.header.base_seq}, snapshot ends at {state.durable_seq}",
        )
    _keep_unless_real(fs, state.keys, LOG, data)
    searchable = placeable(data, state.encryption)
    for offset, record in scan.records:
        end = offset + FRAME_OVERHEAD + FRAME_HEAD.unpack_from(data, offset)[1]
        state.keys.add_frame(LOG, searchable, offset, end, record.keys)
        if record.creds is not None:
            state.previous_creds, state.creds = state.creds, record.creds
            state.creds_history.append(CredsVersion(record.seq, record.creds, str(file), offset))
        state.durable_seq = record.seq
    state.log = scan
    state.log_bytes = scan.end


def placeable(data: bytes, sealed: object) -> bytes:
    """Where the value index may look for key entries: nowhere in a sealed file.

    Entries of an encrypted store are not in its files in the clear, so its values
    stay in the index's memory; looking for them would only cost a scan per key.
    """
    return b"" if sealed is not None else data


def _keep_unless_real(fs: FileSystem, index: ValueIndex, slot: int, data: bytes) -> None:
    # Values are read back from what was loaded, not from the real file, if they differ.
    if fs is not REAL_FS:
        index.files.contents[slot] = data


def _check_generation(header: FileHeader, generation: int, location: str) -> None:
    if header.generation != generation:
        raise CorruptStateError(
            location, f"header says generation {header.generation}, file name says {generation}"
        )


def torn_tail(state: LoadedState) -> TornTail | None:
    return None if state.log is None else state.log.torn


def looks_native(path: Path) -> bool:
    """Cheap probe: does ``path`` look like a native store directory? (for dispatchers)"""
    try:
        names = os.listdir(path)
    except OSError:
        return False
    for name in names:
        if LOG_RE.match(name) or SNAPSHOT_RE.match(name):
            try:
                with open(path / name, "rb") as f:
                    return f.read(len(MAGIC)) == MAGIC
            except OSError:
                return False
    return False
