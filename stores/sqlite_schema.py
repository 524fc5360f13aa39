"""The SQLite backend's schema, its forward migrations and the checks made at open.

Everything here is blocking and runs on the backend's database thread. The schema
version lives in ``PRAGMA user_version``; the ``store_meta`` table marks the file as
ours, so a database of another application is refused instead of written into.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stores.errors import (
    CorruptStateError,
    DurabilityError,
    StoreError,
    UnsupportedFormatError,
    WrongBackendError,
)

SQLITE_HEADER = b"SQLite format 3\x00"
BACKEND_MARK = "baileys-trio-sqlite"


@dataclass(frozen=True)
class Migration:
    """The statements that take the schema from ``version - 1`` to ``version``."""

    version: int
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        (
            "CREATE TABLE store_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
            f"INSERT INTO store_meta (name, value) VALUES ('backend', '{BACKEND_MARK}')",
            # One row per account: its durable sequence number (one step per batch).
            "CREATE TABLE accounts (account TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID",
            # slot 0 holds the newest creds, slot 1 the copy before it (for recovery).
            "CREATE TABLE creds (account TEXT NOT NULL, slot INTEGER NOT NULL"
            " CHECK (slot IN (0, 1)), seq INTEGER NOT NULL, crc INTEGER NOT NULL,"
            " blob BLOB NOT NULL, PRIMARY KEY (account, slot)) WITHOUT ROWID",
            # A rowid table: values are ~1 KiB, too big for a WITHOUT ROWID b-tree.
            "CREATE TABLE keys (account TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL,"
            " crc INTEGER NOT NULL, value BLOB NOT NULL, PRIMARY KEY (account, type, id))",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def check_header(path: Path) -> bool:
    """Return True when ``path`` holds a database, False when it is absent or empty.

    Raises ``WrongBackendError`` for a directory or a file that is not SQLite.
    """
    if path.is_dir():
        raise WrongBackendError(str(path), "sqlite", _describe_directory(path))
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the database file: {exc}") from exc
    if not head:
        return False
    if head != SQLITE_HEADER:
        raise WrongBackendError(str(path), "sqlite", "a file that is not a SQLite database")
    return True


def _describe_directory(path: Path) -> str:
    if (path / "creds.json").exists():
        return "a directory of Baileys multi-file JSON"
    return "a directory (a SQLite database is a file)"


def prepare(
    conn: sqlite3.Connection,
    location: str,
    migrations: Sequence[Migration] = MIGRATIONS,
) -> int:
    """Check the database is ours and sound, apply pending migrations; return the version.

    Raises ``WrongBackendError``, ``UnsupportedFormatError`` or ``CorruptStateError``;
    a migration runs in one transaction, so a failure leaves the old schema intact.
    """
    latest = migrations[-1].version if migrations else 0
    try:
        _check_integrity(conn, location)
        # Checked before WAL is switched on: that pragma would rewrite a foreign file.
        _check_ownership(conn, location, latest)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise DurabilityError(location, f"enabling the WAL journal (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = version = _check_ownership(conn, location, latest)
            for migration in migrations:
                if migration.version > version:
                    for statement in migration.statements:
                        conn.execute(statement)
                    version = migration.version
            if version != found:
                conn.execute(f"PRAGMA user_version = {int(version)}")
            # Nothing written when no migration ran: opening to read changes no byte.
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
            raise
        if _is_io(exc):
            raise DurabilityError(location, "opening the database", exc) from exc
        raise CorruptStateError(location, f"database unreadable: {exc}") from exc
    return version


def _is_busy(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "")
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))


def _is_io(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "")
    return name.startswith(("SQLITE_IOERR", "SQLITE_FULL", "SQLITE_CANTOPEN", "SQLITE_READONLY"))


def _check_integrity(conn: sqlite3.Connection, location: str) -> None:
    rows = conn.execute("PRAGMA quick_check").fetchall()
    problems = [str(r[0]) for r in rows if r[0] != "ok"]
    if problems:
        raise CorruptStateError(location, "integrity check failed: " + "; ".join(problems[:5]))


def _check_ownership(conn: sqlite3.Connection, location: str, latest: int) -> int:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    if version == 0 and not tables:
        return 0  # an empty database: a new file, nothing to protect
    if "store_meta" not in tables:
        shown = ", ".join(sorted(tables)[:5]) or "none"
        raise WrongBackendError(
            location, "sqlite", f"a SQLite database of another application (tables: {shown})"
        )
    row = conn.execute("SELECT value FROM store_meta WHERE name = 'backend'").fetchone()
    if row is None or row[0] != BACKEND_MARK:
        found = "no backend mark" if row is None else f"backend mark {row[0]!r}"
        raise WrongBackendError(location, "sqlite", f"a SQLite database with {found}")
    if version > latest:
        raise UnsupportedFormatError(location, version, f"schema versions up to {latest}")
    if version < 1:
        raise CorruptStateError(location, f"store_meta present but schema version is {version}")
    return version
