"""Move an auth state between backends without ever risking the source.

Recipe, for every direction: take the source's ownership lock (a running owner is
refused with ``StoreLockedError``, and nobody writes while we read) and take one
snapshot. A SQLite account is read in place (opening it writes nothing); a directory
is copied into a private scratch directory and opened there, so nothing a backend
does when it opens (journal replay, mode fixes, backups) touches the source.

Write the snapshot into a *staging* location beside the target (a sibling directory,
or a temp database file), close it, reopen it, read everything back and compare with
the snapshot, and only then publish: ``rename`` (a directory onto an absent or empty
target) or ``link`` (a database file onto an absent target), then fsync of the
parent directory. Into an existing database file the account is written, read back
and compared inside one SQLite transaction that commits only when they match. Any
failure leaves the target as it was (absent or empty) and removes the staging copy.

PostgreSQL (since 0.2.0): a location is a ``postgresql://`` URI; the account is
``src_account``/``dst_account`` or the URI's ``#account=NAME`` fragment (the form a
backend's ``location`` prints). The source account is opened, which takes its lease
(a running owner is refused with ``StoreLockedError``) and writes nothing else; the
target account, which must be empty, is written, read back and compared inside one
SQL transaction that commits only when they match.

Since 0.1.0.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import trio

from stores.auth import enter_backend
from stores.encryption import StoreKey, refuse_multi_file_key
from stores.errors import MigrationError, StoreError, WrongBackendError
from stores.fsio import REAL_FS, ensure_private_dir, sync_dir
from stores.lock import acquire_lock
from stores.sqlite import SqliteBackend, open_sqlite_backend
from stores.sqlite_schema import check_header
from stores.types import Batch, Persistence, StoreSnapshot, Value

__all__ = [
    "BACKENDS",
    "BackendKind",
    "Layout",
    "MigrationSummary",
    "compare_snapshots",
    "migrate",
    "migrate_compat_json_to_native",
    "migrate_native_to_compat_json",
    "migrate_to_sqlite",
]


class Layout(enum.Enum):
    """What an auth location is on disk."""

    DIRECTORY = "directory"
    DATABASE = "database file"
    SERVER = "database server"


Opener = Callable[..., Any]
"""Start opening a backend at ``(path, account)``, or ``(path, account, key)`` for an
encrypted side: returns an awaitable of the backend or an async context manager (as
``stores.auth.enter_backend`` takes). Directory backends ignore the account;
PostgreSQL gets its DSN (a str) instead of a path; multi-file is never encrypted."""


@dataclass(frozen=True)
class BackendKind:
    """A backend migration can read and write."""

    name: str
    layout: Layout
    open: Opener
    lock_name: Callable[[], str] | None = None
    """For directory backends: the lock file a running owner holds inside the directory.

    Migration takes it on the source and reads a private copy, so opening (which may
    replay journals, tighten modes or refresh backups) never touches the source."""
    key: StoreKey | None = None
    """The encryption key this side is opened with (``None``: plain)."""

    def opener(self, path: Any, account: str) -> Any:
        if self.key is None:
            return self.open(path, account)
        return self.open(path, account, self.key)


def _open_native(path: Path, account: str, key: StoreKey | None = None) -> Any:
    # Imported on use, as stores.auth does: a backend module is only paid for when used.
    return importlib.import_module("stores.native").open_native_backend(path, encryption_key=key)


def _open_multi_file(path: Path, account: str, key: StoreKey | None = None) -> Any:
    refuse_multi_file_key(key)
    return importlib.import_module("stores.multi_file").open_multi_file_backend(path)


def _open_sqlite(path: Path, account: str, key: StoreKey | None = None) -> Any:
    return open_sqlite_backend(path, account=account, encryption_key=key)


def _open_postgres(dsn: Path | str, account: str, key: StoreKey | None = None) -> Any:
    return importlib.import_module("stores.postgres").open_postgres_backend(
        str(dsn), account=account, encryption_key=key
    )


def _native_lock_name() -> str:
    name: str = importlib.import_module("stores.native_format").LOCK_NAME
    return name


def _multi_file_lock_name() -> str:
    name: str = importlib.import_module("stores._multi_file_layout").LOCK_FILE
    return name


BACKENDS: dict[str, BackendKind] = {
    "native": BackendKind("native", Layout.DIRECTORY, _open_native, _native_lock_name),
    "multi-file": BackendKind(
        "multi-file", Layout.DIRECTORY, _open_multi_file, _multi_file_lock_name
    ),
    "sqlite": BackendKind("sqlite", Layout.DATABASE, _open_sqlite),
    "postgres": BackendKind("postgres", Layout.SERVER, _open_postgres),
}
"""Backends by name. ``compat-json`` and ``baileys`` are accepted for ``multi-file``."""

_ALIASES = {
    "compat-json": "multi-file",
    "baileys": "multi-file",
    "multi_file": "multi-file",
    "postgresql": "postgres",
}


@dataclass(frozen=True)
class MigrationSummary:
    """What a migration copied, and from where to where."""

    src_backend: str
    src: str
    dst_backend: str
    dst: str
    account_id: str | None
    """``creds.me["id"]`` of the migrated device (None before pairing)."""
    key_counts: Mapping[str, int]
    """Number of ids per key type (types with none are left out)."""
    src_account: str | None = None
    """The account read from, when the source is SQLite or PostgreSQL."""
    dst_account: str | None = None
    """The account written, when the target is SQLite or PostgreSQL."""

    @property
    def total_keys(self) -> int:
        return sum(self.key_counts.values())


# --- entry points ----------------------------------------------------------------------


async def migrate_compat_json_to_native(
    src: str | os.PathLike[str], dst: str | os.PathLike[str]
) -> MigrationSummary:
    """Baileys multi-file JSON directory ``src`` → new native directory ``dst``."""
    return await migrate("multi-file", src, "native", dst)


async def migrate_native_to_compat_json(
    src: str | os.PathLike[str], dst: str | os.PathLike[str]
) -> MigrationSummary:
    """Native directory ``src`` → new Baileys multi-file JSON directory ``dst``."""
    return await migrate("native", src, "multi-file", dst)


async def migrate_to_sqlite(
    src: str | os.PathLike[str],
    src_backend: str,
    db_path: str | os.PathLike[str],
    account: str = "default",
    *,
    src_account: str = "default",
) -> MigrationSummary:
    """Any backend at ``src`` → ``account`` of the SQLite database ``db_path``.

    The database may exist (other accounts are left alone) but ``account`` must be empty.
    """
    return await migrate(
        src_backend, src, "sqlite", db_path, src_account=src_account, dst_account=account
    )


async def migrate(
    src_backend_name: str,
    src: str | os.PathLike[str],
    dst_backend_name: str,
    dst: str | os.PathLike[str],
    *,
    src_account: str = "default",
    dst_account: str = "default",
    src_key: StoreKey | None = None,
    dst_key: StoreKey | None = None,
) -> MigrationSummary:
    """Copy the auth state at ``src`` into the empty or absent ``dst``, verified.

    Raises ``StoreLockedError`` when a running owner holds the source, and
    ``MigrationError`` for an empty source, a non-empty target, or a read-back that
    differs from the source (the target is then left absent/empty). Errors of the
    source itself (``CorruptStateError``, ``WrongBackendError``...) pass through.
    ``src_key`` opens an encrypted source (``WrongKeyError`` if it does not fit);
    ``dst_key`` encrypts the copy (since 0.2.0; never for a multi-file target).
    """
    src_kind = dataclasses.replace(_kind(src_backend_name), key=src_key)
    dst_kind = dataclasses.replace(_kind(dst_backend_name), key=dst_key)
    for kind in (src_kind, dst_kind):
        if kind.name == "multi-file":
            refuse_multi_file_key(kind.key)
    if Layout.SERVER in (src_kind.layout, dst_kind.layout):
        return await _migrate_server(
            src_kind, src, dst_kind, dst, src_account=src_account, dst_account=dst_account
        )
    src_path, dst_path = await trio.to_thread.run_sync(_absolute, src, dst)
    same_place = src_path == dst_path and (
        src_kind.layout is Layout.DIRECTORY or src_account == dst_account
    )
    if same_place:
        raise MigrationError(f"{src_path}: source and target are the same location")
    await trio.to_thread.run_sync(_check_source_present, src_kind, src_path)
    # The source's lock is held until the target is published: nobody writes it while
    # we read, and the snapshot is one consistent state.
    async with _source_snapshot(src_kind, src_path, src_account, dst_path) as snapshot:
        if snapshot.creds is None:
            raise MigrationError(f"{src_path}: the source holds no creds, nothing to migrate")
        if dst_kind.layout is Layout.DIRECTORY:
            await _to_directory(dst_kind, dst_path, snapshot)
        else:
            await _to_database(dst_kind, dst_path, dst_account, snapshot)
    return _summary(
        src_kind, str(src_path), src_account, dst_kind, str(dst_path), dst_account, snapshot
    )


def _summary(
    src_kind: BackendKind,
    src: str,
    src_account: str,
    dst_kind: BackendKind,
    dst: str,
    dst_account: str,
    snapshot: StoreSnapshot,
) -> MigrationSummary:
    me = (snapshot.creds.me if snapshot.creds is not None else None) or {}
    account_id = me.get("id")
    return MigrationSummary(
        src_backend=src_kind.name,
        src=src,
        dst_backend=dst_kind.name,
        dst=dst,
        account_id=account_id if isinstance(account_id, str) else None,
        key_counts=MappingProxyType({t: len(ids) for t, ids in sorted(snapshot.keys.items())}),
        src_account=src_account if src_kind.layout is not Layout.DIRECTORY else None,
        dst_account=dst_account if dst_kind.layout is not Layout.DIRECTORY else None,
    )


@asynccontextmanager
async def _source_snapshot(
    kind: BackendKind, src: Path | str, account: str, dst: Path
) -> AsyncIterator[StoreSnapshot]:
    """The source's snapshot, its owner lock held for the duration of the block.

    ``dst`` is where scratch copies go beside (the target, or the source itself).
    """
    if kind.layout is not Layout.DIRECTORY or kind.lock_name is None:
        # SQLite: opening without a pending schema migration writes no byte.
        # PostgreSQL: opening takes the account's lease (its owner's lock), no more.
        async with _opened(kind, src, account) as source:
            yield _normalized(await source.snapshot())
        return
    assert isinstance(src, Path)
    lock_name = kind.lock_name()
    lock = await trio.to_thread.run_sync(acquire_lock, src, lock_name)
    try:
        scratch = dst.with_name(f".{dst.name}.migrating-src-{secrets.token_hex(6)}")
        try:
            copy = await trio.to_thread.run_sync(_private_copy, src, scratch, lock_name)
            try:
                async with _opened(kind, copy, account) as source:
                    snapshot = _normalized(await source.snapshot())
            except StoreError as exc:
                # Errors name the user's source, never the private scratch copy.
                _rename_location(exc, copy, src)
                raise
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_remove_tree, scratch)
        yield snapshot
    finally:
        lock.release()


def _rename_location(exc: StoreError, copy: Path, src: Path) -> None:
    """Make ``exc`` name ``src`` wherever it names the scratch ``copy``."""
    exc.args = tuple(
        arg.replace(str(copy), str(src)) if isinstance(arg, str) else arg for arg in exc.args
    )
    location = getattr(exc, "location", None)
    if isinstance(location, str):
        # Set only on the StoreError subclasses that name a location (checked above).
        exc.location = location.replace(str(copy), str(src))  # type: ignore[attr-defined]


def _private_copy(src: Path, scratch: Path, lock_name: str) -> Path:
    """Copy the source's files into ``scratch/data`` (``scratch`` is 0700)."""
    ensure_private_dir(scratch)
    copy = scratch / "data"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns(lock_name), symlinks=True)
    return copy


@asynccontextmanager
async def _opened(kind: BackendKind, path: Path | str, account: str) -> AsyncIterator[Persistence]:
    async with AsyncExitStack() as stack:
        yield await enter_backend(stack, kind.opener(path, account))


def _absolute(*paths: str | os.PathLike[str]) -> tuple[Path, Path]:
    src, dst = (Path(os.path.abspath(p)) for p in paths)
    return src, dst


def _kind(name: str) -> BackendKind:
    kind = BACKENDS.get(_ALIASES.get(name, name))
    if kind is None:
        known = ", ".join(sorted({*BACKENDS, *_ALIASES}))
        raise MigrationError(f"unknown backend {name!r} (known: {known})")
    return kind


# --- checks ------------------------------------------------------------------------------


def _check_source_present(kind: BackendKind, path: Path) -> None:
    # Opening an absent location would create a fresh one: refuse before opening.
    # Another backend's data is refused here too, before the source's lock is taken:
    # a refused migration leaves the source byte for byte as it was (no lock file).
    if path.exists():
        found = importlib.import_module("stores.inspection").detect_backend(path)
        if found is not None and found != kind.name:
            raise WrongBackendError(str(path), kind.name, found)
    if kind.layout is Layout.DIRECTORY:
        if not path.is_dir() or not _data_entries(path):
            raise MigrationError(f"{path}: the source is absent or empty, nothing to migrate")
    elif not check_header(path):
        raise MigrationError(f"{path}: the source database is absent or empty")


def _data_entries(directory: Path) -> list[str]:
    """Entries of a directory that are data (lock files alone do not count)."""
    return [n for n in os.listdir(directory) if not n.endswith(".lock") and n != "LOCK"]


def _check_target_dir_empty(path: Path) -> None:
    if path.is_dir():
        if os.listdir(path):
            raise MigrationError(f"{path}: the target directory is not empty")
    elif path.exists() or path.is_symlink():
        raise MigrationError(f"{path}: the target exists and is not a directory")


def _normalized(snapshot: StoreSnapshot) -> StoreSnapshot:
    return StoreSnapshot(
        creds=snapshot.creds, keys={t: dict(ids) for t, ids in snapshot.keys.items() if ids}
    )


def compare_snapshots(expected: StoreSnapshot, got: StoreSnapshot, where: str) -> None:
    """Raise ``MigrationError`` naming the first differences between two snapshots."""
    problems: list[str] = []
    want_creds = None if expected.creds is None else expected.creds.to_plain()
    got_creds = None if got.creds is None else got.creds.to_plain()
    if want_creds != got_creds:
        fields = sorted(
            k
            for k in {*(want_creds or {}), *(got_creds or {})}
            if (want_creds or {}).get(k) != (got_creds or {}).get(k)
        )
        problems.append(f"creds differ in {fields or 'presence'}")
    want_keys, got_keys = _normalized(expected).keys, _normalized(got).keys
    for type in sorted({*want_keys, *got_keys}):
        problems.extend(_compare_type(type, want_keys.get(type, {}), got_keys.get(type, {})))
    if problems:
        shown = "; ".join(problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise MigrationError(f"{where}: read-back differs from the source: {shown}{more}")


def _compare_type(type: str, want: dict[str, Value], got: dict[str, Value]) -> list[str]:
    problems = [f"{type}/{i} missing" for i in sorted(want.keys() - got.keys())]
    problems += [f"{type}/{i} unexpected" for i in sorted(got.keys() - want.keys())]
    problems += [
        f"{type}/{i} differs" for i in sorted(want.keys() & got.keys()) if want[i] != got[i]
    ]
    return problems


# --- directory targets (native, multi-file) ----------------------------------------------


async def _to_directory(kind: BackendKind, dst: Path, snapshot: StoreSnapshot) -> None:
    await trio.to_thread.run_sync(_check_target_dir_empty, dst)
    await trio.to_thread.run_sync(_ensure_parent, dst)
    staging = dst.with_name(f".{dst.name}.migrating-{secrets.token_hex(6)}")
    try:
        await _write_and_verify(kind, staging, "default", snapshot)
        await trio.to_thread.run_sync(_publish_directory, staging, dst)
    except BaseException:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_remove_tree, staging)
        raise


def _publish_directory(staging: Path, dst: Path) -> None:
    try:
        # rename(2) replaces an empty directory and fails on a non-empty one, so a
        # target that gained data since the check is never overwritten.
        os.rename(staging, dst)
    except OSError as exc:
        raise MigrationError(f"{dst}: cannot publish the migrated copy: {exc}") from exc
    sync_dir(REAL_FS, dst.parent)


def _remove_tree(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def _ensure_parent(path: Path) -> None:
    if not path.parent.exists():
        ensure_private_dir(path.parent)


async def _write_and_verify(
    kind: BackendKind, path: Path, account: str, snapshot: StoreSnapshot
) -> None:
    async with _opened(kind, path, account) as target:
        await target.commit(Batch(keys=snapshot.keys, creds=snapshot.creds))
    # Read back through a fresh open: what the next run will see, not a cache.
    async with _opened(kind, path, account) as reopened:
        got = await reopened.snapshot()
    compare_snapshots(snapshot, got, str(path))


# --- database targets (sqlite) ---------------------------------------------------------


async def _to_database(kind: BackendKind, dst: Path, account: str, snapshot: StoreSnapshot) -> None:
    exists = await trio.to_thread.run_sync(check_header, dst)
    if exists:
        await _into_existing_database(kind, dst, account, snapshot)
        return
    await trio.to_thread.run_sync(_ensure_parent, dst)
    staging = dst.with_name(f".{dst.name}.migrating-{secrets.token_hex(6)}")
    try:
        await _write_and_verify(kind, staging, account, snapshot)
        await trio.to_thread.run_sync(_publish_database, staging, dst)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_remove_staging_files, staging)


async def _into_existing_database(
    kind: BackendKind, dst: Path, account: str, snapshot: StoreSnapshot
) -> None:
    async with _opened(kind, dst, account) as target:
        if not isinstance(target, SqliteBackend):
            raise MigrationError(f"{dst}: {kind.name} cannot import into an existing file")
        where = f"{dst} account {account!r}"
        if not await target.is_empty():
            raise MigrationError(f"{where}: the target account is not empty")
        await target.import_snapshot(snapshot, lambda got: compare_snapshots(snapshot, got, where))


def _publish_database(staging: Path, dst: Path) -> None:
    for suffix in ("-wal", "-journal"):
        leftover = staging.with_name(staging.name + suffix)
        if leftover.exists() and leftover.stat().st_size > 0:
            # Data still outside the main file would be lost by publishing it alone.
            raise MigrationError(f"{staging}: {leftover.name} was not checkpointed")
    try:
        # link(2) never replaces: a database created at dst meanwhile is kept.
        os.link(staging, dst)
    except FileExistsError as exc:
        raise MigrationError(f"{dst}: the target appeared during migration") from exc
    except OSError as exc:
        raise MigrationError(f"{dst}: cannot publish the migrated database: {exc}") from exc
    sync_dir(REAL_FS, dst.parent)


def _remove_staging_files(staging: Path) -> None:
    for name in (staging.name, staging.name + "-wal", staging.name + "-shm"):
        try:
            os.unlink(staging.with_name(name))
        except FileNotFoundError:
            pass
    for lock in staging.parent.glob(f"{staging.name}.*.lock"):
        try:
            os.unlink(lock)
        except OSError:
            pass  # a leftover lock file is harmless
    try:
        sync_dir(REAL_FS, staging.parent)
    except StoreError:
        pass  # the staging name was never published; nothing depends on its removal


# --- PostgreSQL sources and targets ------------------------------------------------------


async def _migrate_server(
    src_kind: BackendKind,
    src: str | os.PathLike[str],
    dst_kind: BackendKind,
    dst: str | os.PathLike[str],
    *,
    src_account: str,
    dst_account: str,
) -> MigrationSummary:
    """``migrate`` when either side is a PostgreSQL URI (the other may be anything)."""
    postgres = importlib.import_module("stores.postgres")
    src_place, src_name, src_account = await _place(postgres, src_kind, src, src_account)
    dst_place, dst_name, dst_account = await _place(postgres, dst_kind, dst, dst_account)
    if src_name == dst_name and src_account == dst_account:
        raise MigrationError(f"{src_name}: source and target are the same location")
    if isinstance(src_place, str):
        if not await postgres.account_holds_data(src_place, src_account):
            raise MigrationError(
                f"{src_name} account {src_account!r}: the source is absent or empty"
            )
    else:
        await trio.to_thread.run_sync(_check_source_present, src_kind, src_place)
    # Scratch copies of a directory source go beside a path target, else beside itself.
    beside = dst_place if isinstance(dst_place, Path) else Path(src_name)
    async with _source_snapshot(src_kind, src_place, src_account, beside) as snapshot:
        if snapshot.creds is None:
            raise MigrationError(f"{src_name}: the source holds no creds, nothing to migrate")
        if isinstance(dst_place, str):
            await _to_server(dst_kind, dst_place, dst_name, dst_account, snapshot)
        elif dst_kind.layout is Layout.DIRECTORY:
            await _to_directory(dst_kind, dst_place, snapshot)
        else:
            await _to_database(dst_kind, dst_place, dst_account, snapshot)
    return _summary(src_kind, src_name, src_account, dst_kind, dst_name, dst_account, snapshot)


async def _place(
    postgres: Any, kind: BackendKind, where: str | os.PathLike[str], account: str
) -> tuple[Path | str, str, str]:
    """``(what to open, what to print, account)``; a URI's ``#account=`` wins the default."""
    if kind.layout is not Layout.SERVER:
        path = Path(await trio.to_thread.run_sync(os.path.abspath, where))
        return path, str(path), account
    text = os.fspath(where)
    if not postgres.is_postgres_location(text):
        raise MigrationError(f"{text!r}: a postgres location is a postgresql:// URI")
    dsn, named = postgres.parse_location(text, account)
    if named != account and account != "default":
        raise MigrationError(f"{text}: names account {named!r} but {account!r} was asked for")
    # Printed and compared without the password.
    return dsn, str(postgres.describe_dsn(dsn)), named


async def _to_server(
    kind: BackendKind, dsn: str, name: str, account: str, snapshot: StoreSnapshot
) -> None:
    """Write the snapshot into an empty account and compare, in one SQL transaction."""
    where = f"{name} account {account!r}"
    async with _opened(kind, dsn, account) as target:
        # A PostgresBackend (the Persistence protocol has neither method).
        if not await target.is_empty():  # type: ignore[attr-defined]
            raise MigrationError(f"{where}: the target account is not empty")
        await target.import_snapshot(  # type: ignore[attr-defined]
            snapshot, lambda got: compare_snapshots(snapshot, got, where)
        )
