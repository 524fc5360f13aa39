"""Online backup and restore of an auth location.

The backup format
=================

A backup is a **native store directory** holding one file, ``snapshot-0000000000000001``
(plus its ``LOCK`` file): the native format's full-state snapshot (see
``stores.native``), checksummed frame by frame, whose header's ``base_seq`` is the
*point* the backup was taken at: the durable sequence number of the last commit it
holds. Every tool opens it as it is: ``inspect`` reports it, ``migrate`` copies it into
any backend, ``run --auth`` could even run it (restore it instead: a backup stays a
backup). One file means the copy is published by one ``rename``: it is whole or absent.

Taking a backup (``backup_location``) never stops the source's owner and never takes
its lock:

* **native**: the live generation's snapshot and log are opened by descriptor (a
  compaction that deletes them meanwhile cannot pull them away), the log is read to
  its current end, then ``fdatasync``'d through our own descriptor, so every record
  read is durable in the source. The state is rebuilt with the backend's own
  recovery: intact records up to the first torn frame (a group being written) are the
  commits up to the point; acknowledged commits were fsynced before their ack, so every
  commit acknowledged before the backup began is among them. A compaction between the
  listing and the open is seen as a vanished file and the read starts again.
* **sqlite**: SQLite's online backup API copies the database file at one read
  transaction into a private scratch file; the account is read from that copy; the
  point is the account's ``seq`` there. The scratch directory is held under an
  ``flock`` while in use; one left by a killed backup (it holds a copy of the
  account's keys) is removed by the next backup beside the same target.
* **postgres** (a ``postgresql://`` URI, the account from ``#account=NAME`` or
  ``account``): one ``REPEATABLE READ READ ONLY`` transaction reads the account's seq,
  creds and keys (``stores.postgres_backup``); the lease is not taken.
* **multi-file** (Baileys JSON) is refused with ``BackupUnsupportedError``: Baileys
  rewrites files in place and keeps no durable order to copy up to.

Encryption at rest: a native source encrypted under a key is read with that key
(``encryption_key``; without it ``WrongKeyError``) and its backup is sealed under the
same key, with a store id of its own; a sealed backup restores with its key into a
store encrypted under it. A decrypted state is never written in plaintext.

A running session backs itself up with ``write_backup``: its persister, the one
durable writer, hands over the committed state and its sequence number while no
commit is in flight, so the copy holds exactly the commits up to that point, for every
backend.

Writing a backup or restoring one (``restore_location``) publishes the same one file
into the target: the target must be absent or empty (lock files and temp files of an
interrupted earlier attempt aside; ``BackupTargetNotEmpty`` otherwise) and not held by
a live owner (``StoreLockedError``), both checked before anything is created. Then the
target's lock is taken (so no runtime starts there meanwhile), the snapshot is written
to a temp file, fsynced, renamed into place and the directory fsynced. A SIGKILL at any
instruction leaves the target absent, empty (a new device), or complete. Before
reporting success the copy is verified: ``inspect`` must find it intact, with the
point as its durable seq and the same key counts, and its state must equal what was
copied byte for byte; otherwise the file is removed again (``BackupVerificationError``).

Since 0.2.0.
"""

from __future__ import annotations

import dataclasses
import fcntl
import importlib
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import cbor2
import trio

from stores import _multi_file_layout as mf_layout
from stores.creds import AuthCreds
from stores.encryption import (
    Encryption,
    KeySource,
    RecordCipher,
    StoreKey,
    new_encryption,
    resolve_key,
)
from stores.errors import (
    BackupError,
    BackupTargetNotEmpty,
    BackupUnsupportedError,
    BackupVerificationError,
    CorruptStateError,
    InvalidValueError,
    StoreError,
    StoreLockedError,
    WrongBackendError,
    WrongKeyError,
)
from stores.fsio import REAL_FS, FileSystem, StrPath, atomic_write, ensure_private_dir, is_temp_name
from stores.fsio import sync_dir as _sync_dir
from stores.inspection import detect_backend, inspect_location
from stores.lock import acquire_lock, lock_owner
from stores.native_format import (
    LOCK_NAME,
    FileHeader,
    encode_key_writes,
    encode_snapshot,
    snapshot_name,
)
from stores.native_load import Layout, Listing, classify, load_state
from stores.types import StoreSnapshot

__all__ = [
    "BACKUP_GENERATION",
    "ONLINE_BACKENDS",
    "BackupImage",
    "BackupSummary",
    "backup_location",
    "restore_location",
    "write_backup",
]

BACKUP_GENERATION = 1
"""The generation of a backup's one snapshot file (generation 0 has no snapshot)."""

ONLINE_BACKENDS = ("native", "sqlite", "postgres")
"""Backends ``backup_location`` copies while another process owns them."""

READ_ATTEMPTS = 20
"""Native reads restarted when a compaction moved the files away (each one is rare)."""

_LOCK_NAMES = (LOCK_NAME, mf_layout.LOCK_FILE)


@dataclass(frozen=True)
class BackupImage:
    """A consistent state to write as a backup: what the commits up to ``seq`` left."""

    seq: int
    creds: bytes = field(repr=False)
    """CBOR of ``AuthCreds.to_plain()`` (a backup always holds creds)."""
    previous_creds: bytes | None = field(repr=False)
    keys: Mapping[str, Mapping[str, bytes]] = field(repr=False)
    """``{type: {id: CBOR of the value}}``."""
    encryption: Encryption | None = None
    """Set when the source is encrypted at rest: the backup is sealed under the same key
    (with a store id of its own)."""

    def key_counts(self) -> dict[str, int]:
        return {t: len(ids) for t, ids in sorted(self.keys.items()) if ids}

    def account_id(self) -> str | None:
        me = cbor2.loads(self.creds).get("me") or {}
        found = me.get("id") if isinstance(me, dict) else None
        return found if isinstance(found, str) else None


@dataclass(frozen=True)
class BackupSummary:
    """What a backup or a restore copied, from where to where, and up to which point."""

    source: str
    source_backend: str
    target: str
    seq: int
    """The point: the durable sequence number of the last commit the copy holds."""
    account_id: str | None
    """``creds.me["id"]`` (``None`` before pairing)."""
    key_counts: Mapping[str, int]

    @property
    def total_keys(self) -> int:
        return sum(self.key_counts.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "source_backend": self.source_backend,
            "target": self.target,
            "seq": self.seq,
            "account_id": self.account_id,
            "key_counts": dict(self.key_counts),
            "total_keys": self.total_keys,
        }


# --- entry points --------------------------------------------------------------------


async def backup_location(
    location: StrPath,
    out: StrPath,
    *,
    backend: str = "auto",
    account: str = "default",
    encryption_key: KeySource | None = None,
) -> BackupSummary:
    """Copy the auth state at ``location`` into the new backup directory ``out``.

    Works while another process owns ``location`` (see the module docstring for how,
    per backend); never writes to it. ``out`` must be absent or empty. Raises
    ``BackupUnsupportedError`` for a backend that cannot be copied online,
    ``BackupError`` for an empty source, ``BackupTargetNotEmpty``, ``StoreLockedError``
    (``out`` in use), ``BackupVerificationError``; errors of the source itself
    (``CorruptStateError``, ``WrongBackendError``) pass through. A native store
    encrypted at rest needs its ``encryption_key`` (else ``WrongKeyError``); its backup
    is sealed under the same key.
    """
    key = await resolve_key(encryption_key)
    if isinstance(location, str) and location.startswith(("postgres://", "postgresql://")):
        if backend not in ("auto", "postgres"):
            raise WrongBackendError("the location URI", backend, "a postgresql:// URI")
        if key is not None:
            # The reader does not unseal rows: a key here would be silently unused.
            raise BackupUnsupportedError(
                location,
                "a key for a PostgreSQL account: back an encrypted account up from its "
                "running session (Session.backup), which seals the copy under its key",
            )
        image, shown = await _postgres_image(location, account)
        return await trio.to_thread.run_sync(
            _publish_summary, image, _absolute(out), shown, "postgres"
        )
    src, dst = _absolute(location), _absolute(out)
    _check_apart(src, dst)
    found = await trio.to_thread.run_sync(_source_backend, src, backend)
    if found == "native":
        image = await trio.to_thread.run_sync(read_native_image, src, key)
    elif found == "sqlite":
        image = await read_sqlite_image(src, account, dst, key)
    else:
        raise BackupUnsupportedError(str(src), _UNSUPPORTED.get(found, f"{found} backend"))
    return await trio.to_thread.run_sync(_publish_summary, image, dst, str(src), found, key)


async def restore_location(
    backup: StrPath, location: StrPath, *, encryption_key: KeySource | None = None
) -> BackupSummary:
    """Restore the backup directory ``backup`` into ``location`` (absent or empty).

    ``location`` becomes a native store holding exactly the backup's state. Raises
    ``BackupTargetNotEmpty`` and ``StoreLockedError`` (a live owner) before anything is
    created, ``WrongBackendError`` when ``backup`` is not a native directory,
    ``BackupError`` when it is empty, ``BackupVerificationError``. An encrypted backup
    needs its ``encryption_key`` and restores encrypted under it.
    """
    key = await resolve_key(encryption_key)
    src, dst = _absolute(backup), _absolute(location)
    _check_apart(src, dst)
    found = await trio.to_thread.run_sync(detect_backend, src)
    if found is None:
        raise BackupError(str(src), "empty: it holds no backup")
    if found != "native":
        raise WrongBackendError(str(src), "native", found)
    image = await trio.to_thread.run_sync(read_native_image, src, key)
    return await trio.to_thread.run_sync(_publish_summary, image, dst, str(src), "native", key)


async def write_backup(
    snapshot: StoreSnapshot,
    seq: int,
    out: StrPath,
    *,
    source: str,
    source_backend: str,
    key_id: str | None = None,
    encryption_key: KeySource | None = None,
) -> BackupSummary:
    """Write ``snapshot``, the state after commit ``seq``, as a backup in ``out``.

    For a running session: its persister provides the snapshot and the point
    (``Session.backup``). Same target rules and verification as ``backup_location``.
    ``key_id`` names the key a source encrypted at rest is under: its backup is sealed
    under ``encryption_key``, which must be that key (``WrongKeyError`` otherwise:
    never written as plaintext).
    """
    key = await resolve_key(encryption_key)
    if (None if key is None else key.key_id) != key_id:
        raise WrongKeyError(source, key_id, None if key is None else key.key_id)
    dst = _absolute(out)
    image = image_of(snapshot, seq, source)
    if key is not None:
        image = dataclasses.replace(image, encryption=new_encryption(key))
    return await trio.to_thread.run_sync(_publish_summary, image, dst, source, source_backend, key)


_UNSUPPORTED = {
    "multi-file": (
        "a Baileys multi-file directory keeps no durable order to copy up to while its "
        "owner writes; back up the running session (Session.backup), or migrate it to "
        "native and back that up"
    ),
}


async def _postgres_image(location: str, account: str) -> tuple[BackupImage, str]:
    """One account at one ``REPEATABLE READ`` snapshot (``stores.postgres_backup``)."""
    module = importlib.import_module("stores.postgres_backup")  # psycopg only when used
    snapshot, seq, shown = await trio.to_thread.run_sync(
        module.read_postgres_account, location, account
    )
    return image_of(snapshot, seq, shown), shown


def _absolute(path: StrPath) -> Path:
    return Path(os.path.abspath(path))


def _check_apart(src: Path, dst: Path) -> None:
    if src == dst or dst.is_relative_to(src) or src.is_relative_to(dst):
        # A backup inside its source would become a foreign entry of the store.
        raise BackupError(str(dst), f"must lie outside {src} (and not contain it)")


def _source_backend(src: Path, backend: str) -> str:
    found = detect_backend(src)
    if found is None:
        raise BackupError(str(src), "empty: nothing to back up")
    if backend != "auto" and found != backend:
        raise WrongBackendError(str(src), backend, found)
    return found


# --- reading a native store while its owner writes -------------------------------------


class _Captured(FileSystem):
    """The bytes read from a live store, served to ``load_state`` as its files."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        self._files = files

    def read_bytes(self, path: StrPath) -> bytes:
        return self._files[Path(path).name]


def read_native_image(directory: Path, key: StoreKey | None = None) -> BackupImage:
    """The state of the native store at ``directory`` up to a durable point.

    Never takes the lock and never writes; a live owner may go on committing.
    """
    last: Exception | None = None
    for _ in range(READ_ATTEMPTS):
        try:
            return _read_native_once(directory, key)
        except (FileNotFoundError, CorruptStateError) as exc:
            # Gone files: a compaction replaced the generation. Damage: only believed
            # when no owner is writing (a write in progress may read as damage).
            if isinstance(exc, CorruptStateError) and lock_owner(directory, LOCK_NAME) is None:
                raise
            last = exc
    if isinstance(last, CorruptStateError):
        raise last
    raise BackupError(str(directory), f"the store kept changing under the read ({last})")


def _read_native_once(directory: Path, key: StoreKey | None) -> BackupImage:
    listing = classify(directory, REAL_FS)
    if listing.layout is not Layout.NATIVE:
        raise BackupError(str(directory), "empty: nothing to back up")
    gen = listing.generation
    names = {}
    if gen:
        names["snapshot"] = listing.snapshots[gen]
    if gen in listing.logs:
        names["log"] = listing.logs[gen]
    files = _read_files(directory, names)
    # Only the live generation is read; a newer log (no snapshot under it) is left in
    # the listing so that recovery refuses it as an open would.
    newer = {g: name for g, name in listing.logs.items() if g > gen}
    live = Listing(
        Layout.NATIVE,
        snapshots={gen: names["snapshot"]} if "snapshot" in names else {},
        logs={**newer, **({gen: names["log"]} if "log" in names else {})},
    )
    state = load_state(directory, live, _Captured(files), key=key)
    try:
        if state.creds is None:
            raise BackupError(str(directory), "holds no creds, nothing to back up")
        _check_creds(state.creds, str(directory))
        keys = state.keys.tables()  # served from the captured bytes, not the live files
    finally:
        state.keys.close()
    return BackupImage(state.durable_seq, state.creds, state.previous_creds, keys, state.encryption)


def _read_files(directory: Path, names: Mapping[str, str]) -> dict[str, bytes]:
    """Open every file first (then a deletion cannot take one away), then read them."""
    with ExitStack() as stack:
        fds = {}
        for role, name in names.items():
            fd = os.open(directory / name, os.O_RDONLY | os.O_CLOEXEC)
            stack.callback(os.close, fd)
            fds[role] = fd
        out = {names[role]: _read_all(fd) for role, fd in fds.items()}
        if "log" in fds:
            # What was read is made durable by us, so the point is durable in the source
            # too, whether or not its owner's fsync of the same group has returned yet.
            os.fdatasync(fds["log"])
    return out


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks: list[bytes] = []
    offset = 0
    while True:
        chunk = os.pread(fd, max(size - offset, 1 << 16), offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def _check_creds(raw: bytes, location: str) -> None:
    try:
        AuthCreds.from_plain(cbor2.loads(raw), location)
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise CorruptStateError(location, f"latest creds do not decode: {exc}") from exc


# --- reading a SQLite account while its owner writes -----------------------------------


async def read_sqlite_image(
    db_path: Path, account: str, beside: Path, key: StoreKey | None = None
) -> BackupImage:
    """One account of ``db_path`` at one read transaction (SQLite's online backup API).

    The copy goes to a private scratch directory beside ``beside`` and is removed. An
    account encrypted at rest is read with ``key`` (``WrongKeyError`` without it or
    with another, and for a plain account given one); its image is sealed under it.
    """
    where = f"{db_path} account {account!r}"
    scratch = await trio.to_thread.run_sync(_Scratch.make, beside)
    try:
        copy = scratch.path / db_path.name
        await trio.to_thread.run_sync(_sqlite_online_copy, db_path, copy)
        from stores.sqlite import open_sqlite_backend

        async with await open_sqlite_backend(
            copy, account=account, encryption_key=key
        ) as backend:
            snapshot, seq = await backend.snapshot(), backend.statistics().seq
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(scratch.remove)
    image = image_of(snapshot, seq, where)
    if key is not None:
        image = dataclasses.replace(image, encryption=new_encryption(key))
    return image


SCRATCH_IN_USE = ".in-use"
"""The file a scratch directory's user holds an ``flock`` on while it lives."""

UNLOCKED_SCRATCH_AGE = 60.0
"""Seconds after which a scratch directory without its lock file counts as abandoned
(a kill between making the directory and locking it); a younger one may be one that
another backup is making right now."""


@dataclass
class _Scratch:
    """A private directory beside a backup's target for the database copy, locked.

    A backup killed while it held one (SIGKILL, power loss) leaves it behind with a
    copy of the account's keys in it: the next backup beside the same target
    removes every such directory whose lock nobody holds any more.
    """

    path: Path
    fd: int

    @classmethod
    def make(cls, beside: Path) -> _Scratch:
        ensure_private_dir(beside.parent)
        sweep_abandoned_scratch(beside)
        path = Path(tempfile.mkdtemp(prefix=_scratch_prefix(beside), dir=beside.parent))
        # Locked before it has its name: a sweep never sees it unlocked.
        pending = path / (SCRATCH_IN_USE + ".new")
        fd = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            _try_flock(fd)  # where flock is not supported, no sweep will judge it
            os.rename(pending, path / SCRATCH_IN_USE)
        except BaseException:
            os.close(fd)
            shutil.rmtree(path, ignore_errors=True)
            raise
        return cls(path, fd)

    def remove(self) -> None:
        try:
            shutil.rmtree(self.path, ignore_errors=True)
        finally:
            os.close(self.fd)


def _scratch_prefix(beside: Path) -> str:
    return f".{beside.name}.backup-"


def sweep_abandoned_scratch(beside: Path) -> list[Path]:
    """Remove the scratch directories of killed backups beside ``beside``; return them."""
    prefix = _scratch_prefix(beside)
    try:
        names = os.listdir(beside.parent)
    except FileNotFoundError:
        return []
    removed = []
    for name in sorted(names):
        path = beside.parent / name
        if name.startswith(prefix) and path.is_dir() and not path.is_symlink():
            if _abandoned(path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def _abandoned(scratch: Path) -> bool:
    try:
        fd = os.open(scratch / SCRATCH_IN_USE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        try:
            age = time.time() - scratch.stat().st_mtime
        except FileNotFoundError:
            return False  # removed meanwhile by its own backup
        return age > UNLOCKED_SCRATCH_AGE
    try:
        return _try_flock(fd)  # False: a live backup holds it (or locks do not work here)
    finally:
        os.close(fd)  # releases the lock taken just to look


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _sqlite_online_copy(db_path: Path, copy: Path) -> None:
    try:
        src = sqlite3.connect(f"{db_path.as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"{db_path}: cannot open the database to back it up: {exc}") from exc
    try:
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        dst = sqlite3.connect(str(copy))
        try:
            src.backup(dst)
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise StoreError(f"{db_path}: the online backup failed: {exc}") from exc
    finally:
        src.close()


def image_of(snapshot: StoreSnapshot, seq: int, location: str) -> BackupImage:
    """The backup image of a decoded snapshot (values checked and CBOR-encoded)."""
    if snapshot.creds is None:
        raise BackupError(location, "holds no creds, nothing to back up")
    plain = snapshot.creds.to_plain()
    try:
        AuthCreds.from_plain(plain, location)
    except InvalidValueError as exc:
        raise CorruptStateError(location, f"creds do not validate: {exc.reason}") from exc
    encoded = encode_key_writes(snapshot.keys)
    keys = {t: {i: v for i, v in ids.items() if v is not None} for t, ids in encoded.items()}
    return BackupImage(seq, cbor2.dumps(plain), None, keys)


# --- publishing into the target --------------------------------------------------------


def _publish_summary(
    image: BackupImage, target: Path, source: str, backend: str, key: StoreKey | None = None
) -> BackupSummary:
    publish(image, target, key)
    return BackupSummary(
        source=source,
        source_backend=backend,
        target=str(target),
        seq=image.seq,
        account_id=image.account_id(),
        key_counts=MappingProxyType(image.key_counts()),
    )


def publish(image: BackupImage, target: Path, key: StoreKey | None = None) -> None:
    """Write ``image`` as the one snapshot of the absent or empty ``target``, verified.

    An encrypted image is sealed under ``key`` (the one its ``encryption`` names)."""
    # A sealed copy gets a store id of its own: its records bind to it, not the source's.
    encryption = None if image.encryption is None else new_encryption(_need(key))
    cipher = None if encryption is None else RecordCipher(_need(key), encryption)
    _check_target(target)  # refused before anything is created
    ensure_private_dir(target)
    lock = acquire_lock(target, LOCK_NAME)
    try:
        _check_empty(target)  # again under the lock: a runtime may have come and gone
        header = FileHeader("snapshot", BACKUP_GENERATION, image.seq, time.time(), encryption)
        data = encode_snapshot(header, image.creds, image.previous_creds, image.keys, cipher)
        file = target / snapshot_name(BACKUP_GENERATION)
        atomic_write(file, data)
        try:
            verify(image, target, key)
        except BaseException:
            _unpublish(file)
            raise
    finally:
        lock.release()


def _check_target(target: Path) -> None:
    if not target.exists() and not target.is_symlink():
        return
    if not target.is_dir():
        raise BackupTargetNotEmpty(str(target), "exists and is not a directory")
    for name in _LOCK_NAMES:
        owner = lock_owner(target, name)
        if owner is not None:
            raise StoreLockedError(str(target), owner.describe())
    _check_empty(target)


def _check_empty(target: Path) -> None:
    held = sorted(n for n in os.listdir(target) if n not in _LOCK_NAMES and not is_temp_name(n))
    if held:
        raise BackupTargetNotEmpty(str(target), f"not empty (holds {', '.join(held[:5])})")


def verify(image: BackupImage, target: Path, key: StoreKey | None = None) -> None:
    """``inspect`` the copy, then compare its state with ``image``."""
    report = inspect_location(target, "native", key=key)
    where = str(target)
    if not report.ok:
        raise BackupVerificationError(where, "inspect: " + "; ".join(report.problems))
    account = report.accounts[0]
    if account.durable_seq != image.seq:
        raise BackupVerificationError(
            where, f"holds seq {account.durable_seq}, the point is {image.seq}"
        )
    if dict(account.key_counts) != image.key_counts():
        raise BackupVerificationError(where, "key counts differ from the copied state")
    state = load_state(target, classify(target, REAL_FS), REAL_FS, key=key)
    try:
        copied = state.keys.tables()
    finally:
        state.keys.close()
    same_keys = copied == {t: dict(ids) for t, ids in image.keys.items() if ids}
    if not same_keys or state.creds != image.creds:
        raise BackupVerificationError(where, "read-back differs from the copied state")


def _need(key: StoreKey | None) -> StoreKey:
    if key is None:
        raise ValueError("an encrypted image is written with its key")
    return key


def _unpublish(file: Path) -> None:
    try:
        os.unlink(file)
        _sync_dir(REAL_FS, file.parent)
    except (OSError, StoreError):
        pass  # the error being raised says more than a failed cleanup
