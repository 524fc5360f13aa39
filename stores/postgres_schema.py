"""The PostgreSQL backend's schema, its forward migrations and the checks made at open.

Everything here is blocking and runs on the backend's writer thread. Every table
is named ``baileys_*`` so the store can share a database with an application's own
tables. ``baileys_store_meta`` marks the tables as ours (``backend``) and holds the
schema version (``schema_version``); migrations run in one transaction under a
transaction-scoped advisory lock, so two processes opening a new database at once
apply them once, and a failure leaves the old schema intact.

Tables (every row carries its ``account``):

* ``baileys_accounts (account, seq)``: the durable sequence number, one step per batch;
* ``baileys_creds (account, slot, seq, crc, blob)``: slot 0 the newest creds, slot 1
  the copy before it;
* ``baileys_keys (account, type, id, crc, value)``: one row per Signal key;
* ``baileys_leases (account, owner, host, pid, epoch, ttl, expires_at, acquired_at)``:
  who owns the account, and the epoch every commit is fenced on; ``released`` (since
  version 2) marks a lease its owner handed back;
* ``baileys_fleet (account, state, detail, added_at, changed_at)`` (since version 2):
  the accounts a fleet runs (``stores.postgres_fleet``), ``state`` ``active`` or why
  the account was retired;
* ``baileys_fleet_members (owner, host, pid, capacity, ttl, expires_at, joined_at)``
  (since version 2): the live fleet processes, each renewed like a lease.

``crc`` is the CRC32 of the row's identity and blob (``stores.sqlite_codec``), as in
the SQLite backend: PostgreSQL's page checksums are optional, ours are not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stores.errors import CorruptStateError, UnsupportedFormatError, WrongBackendError

__all__ = ["BACKEND_MARK", "MIGRATIONS", "SCHEMA_VERSION", "TABLES", "Migration", "prepare"]

BACKEND_MARK = "baileys-trio-postgres"

TABLES = (
    "baileys_store_meta",
    "baileys_accounts",
    "baileys_creds",
    "baileys_keys",
    "baileys_leases",
    "baileys_fleet",
    "baileys_fleet_members",
)

# pg_advisory_xact_lock key for schema changes: "baileys!" as a big-endian int64.
_SCHEMA_LOCK = int.from_bytes(b"baileys!", "big", signed=True)


@dataclass(frozen=True)
class Migration:
    """The statements that take the schema from ``version - 1`` to ``version``."""

    version: int
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        (
            "CREATE TABLE baileys_store_meta (name text PRIMARY KEY, value text NOT NULL)",
            f"INSERT INTO baileys_store_meta (name, value) VALUES ('backend', '{BACKEND_MARK}')",
            "INSERT INTO baileys_store_meta (name, value) VALUES ('schema_version', '0')",
            "CREATE TABLE baileys_accounts (account text PRIMARY KEY, seq bigint NOT NULL)",
            "CREATE TABLE baileys_creds (account text NOT NULL, slot smallint NOT NULL"
            " CHECK (slot IN (0, 1)), seq bigint NOT NULL, crc bigint NOT NULL,"
            " blob bytea NOT NULL, PRIMARY KEY (account, slot))",
            "CREATE TABLE baileys_keys (account text NOT NULL, type text NOT NULL,"
            " id text NOT NULL, crc bigint NOT NULL, value bytea NOT NULL,"
            " PRIMARY KEY (account, type, id))",
            "CREATE TABLE baileys_leases (account text PRIMARY KEY, owner text NOT NULL,"
            " host text NOT NULL, pid integer NOT NULL, epoch bigint NOT NULL,"
            " ttl interval NOT NULL, expires_at timestamptz NOT NULL,"
            " acquired_at timestamptz NOT NULL)",
            # Renewal finds every lease of one owner with one statement.
            "CREATE INDEX baileys_leases_owner ON baileys_leases (owner)",
        ),
    ),
    Migration(
        2,
        (
            # A clean close marks its lease released, so a claim tells a takeover from
            # a hand-over.
            "ALTER TABLE baileys_leases ADD COLUMN released boolean NOT NULL DEFAULT false",
            "CREATE TABLE baileys_fleet (account text PRIMARY KEY, state text NOT NULL,"
            " detail text, added_at timestamptz NOT NULL, changed_at timestamptz NOT NULL)",
            "CREATE TABLE baileys_fleet_members (owner text PRIMARY KEY, host text NOT NULL,"
            " pid integer NOT NULL, capacity integer NOT NULL, ttl interval NOT NULL,"
            " expires_at timestamptz NOT NULL, joined_at timestamptz NOT NULL)",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def prepare(conn: Any, location: str, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Check the tables are ours, apply pending migrations; return the schema version.

    ``conn`` is an autocommit ``psycopg.Connection``. Raises ``WrongBackendError`` for
    a meta table of another backend, ``UnsupportedFormatError`` for a newer schema and
    ``CorruptStateError`` for a half-present schema.
    """
    latest = migrations[-1].version if migrations else 0
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        version = _current_version(conn, location, latest)
        found = version
        for migration in migrations:
            if migration.version > version:
                for statement in migration.statements:
                    conn.execute(statement)
                version = migration.version
        if version != found:
            conn.execute(
                "UPDATE baileys_store_meta SET value = %s WHERE name = 'schema_version'",
                (str(version),),
            )
    return version


def _current_version(conn: Any, location: str, latest: int) -> int:
    present = [
        table
        for table in TABLES
        if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is not None
    ]
    if not present:
        return 0  # a database without our tables: a new store
    if "baileys_store_meta" not in present:
        raise CorruptStateError(
            location, f"tables {present} present without baileys_store_meta (not a store)"
        )
    rows = dict(conn.execute("SELECT name, value FROM baileys_store_meta").fetchall())
    mark = rows.get("backend")
    if mark != BACKEND_MARK:
        found = "no backend mark" if mark is None else f"backend mark {mark!r}"
        raise WrongBackendError(location, "postgres", f"a baileys_store_meta table with {found}")
    raw = rows.get("schema_version", "")
    if not raw.isdigit():
        raise CorruptStateError(location, f"schema_version is {raw!r}, not a number")
    version = int(raw)
    if version > latest:
        raise UnsupportedFormatError(location, version, f"schema versions up to {latest}")
    if version < 1:
        raise CorruptStateError(location, f"store_meta present but schema version is {version}")
    return version
