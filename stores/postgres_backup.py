"""Reading one PostgreSQL account for a backup while running processes own it.

Everything is read in one ``REPEATABLE READ READ ONLY`` transaction: the account's
sequence number, its creds and every key row come from one snapshot of the database,
so they are exactly the commits up to that ``seq`` (every commit updates the seq in
the same transaction as its rows). It never takes the account's lease and never
writes, so the owner goes on committing. Rows are checked as ``inspect`` checks them
(CRC over identity and blob, CBOR, creds validation).

Imported on use (``stores.backup``): only a PostgreSQL source pays for psycopg.

Since 0.2.0.
"""

from __future__ import annotations

from typing import Any

import psycopg

from stores import sqlite_codec as codec
from stores.creds import AuthCreds
from stores.errors import (
    BackupError,
    BackupUnsupportedError,
    CorruptStateError,
    DurabilityError,
    UnsupportedFormatError,
    WrongBackendError,
)
from stores.postgres import creds_identity, describe_dsn, key_identity, parse_location
from stores.postgres_schema import BACKEND_MARK, SCHEMA_VERSION
from stores.types import StoreSnapshot, Value

__all__ = ["read_postgres_account"]

_CONNECT_TIMEOUT = 10
ENCRYPTED_REASON = "the account is encrypted at rest; a backup would hold its keys in plaintext"


def read_postgres_account(location: str, account: str) -> tuple[StoreSnapshot, int, str]:
    """``(snapshot, seq, shown location)`` of one account; blocking.

    The URI's ``#account=NAME`` wins over ``account``. Raises ``BackupError`` for an
    account that holds nothing, ``WrongBackendError``/``UnsupportedFormatError`` for a
    database that is not (or not yet) ours, ``DurabilityError`` when unreachable.
    """
    dsn, fragment = parse_location(location, "")
    named = fragment or account
    shown = f"{describe_dsn(dsn)}#account={named}"
    if fragment and account not in ("default", fragment):
        raise BackupError(shown, f"the URI names account {fragment!r}, not {account!r}")
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=_CONNECT_TIMEOUT)
    except psycopg.OperationalError as exc:
        raise DurabilityError(shown, "connecting", exc) from exc
    with conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        _check_schema(conn, shown)
        _refuse_encrypted(conn, named, shown)
        row = conn.execute("SELECT seq FROM baileys_accounts WHERE account = %s", (named,))
        seq = row.fetchone()
        creds = _creds(conn, named, shown)
        if seq is None or creds is None:
            raise BackupError(shown, "holds no creds, nothing to back up")
        keys = _keys(conn, named, shown)
    return StoreSnapshot(creds=creds, keys=keys), int(seq[0]), shown


def _check_schema(conn: Any, shown: str) -> None:
    found = conn.execute("SELECT to_regclass('baileys_store_meta')").fetchone()
    if found is None or found[0] is None:
        raise BackupError(shown, "a database without a store, nothing to back up")
    meta = dict(conn.execute("SELECT name, value FROM baileys_store_meta").fetchall())
    if meta.get("backend") != BACKEND_MARK:
        raise WrongBackendError(shown, "postgres", f"backend mark {meta.get('backend')!r}")
    raw = str(meta.get("schema_version", ""))
    if not raw.isdigit():
        raise CorruptStateError(shown, f"schema_version is {raw!r}, not a number")
    if int(raw) > SCHEMA_VERSION:
        raise UnsupportedFormatError(shown, int(raw), f"schema versions up to {SCHEMA_VERSION}")


def _refuse_encrypted(conn: Any, account: str, shown: str) -> None:
    # An encrypted account's rows are sealed: read raw they are no state to copy, and a
    # backup must never hold its keys in plaintext.
    row = conn.execute(
        "SELECT value FROM baileys_store_meta WHERE name = %s", (f"encryption:{account}",)
    ).fetchone()
    if row is not None:
        raise BackupUnsupportedError(shown, ENCRYPTED_REASON)


def _creds(conn: Any, account: str, shown: str) -> AuthCreds | None:
    row = conn.execute(
        "SELECT crc, blob FROM baileys_creds WHERE account = %s AND slot = 0", (account,)
    ).fetchone()
    if row is None:
        return None
    where = f"{shown} table baileys_creds row (slot 0)"
    plain = codec.decode(bytes(row[1]), int(row[0]), creds_identity(account), where)
    if not isinstance(plain, dict):
        raise CorruptStateError(where, f"creds are a {type(plain).__name__}, not a map")
    return AuthCreds.from_plain(plain, where)


def _keys(conn: Any, account: str, shown: str) -> dict[str, dict[str, Value]]:
    keys: dict[str, dict[str, Value]] = {}
    with conn.cursor(name="backup_keys") as cursor:  # server-side: rows are streamed
        cursor.execute(
            "SELECT type, id, crc, value FROM baileys_keys WHERE account = %s", (account,)
        )
        for type_, key_id, crc, blob in cursor:
            where = f"{shown} table baileys_keys row (type {type_!r}, id {key_id!r})"
            value = codec.decode(bytes(blob), int(crc), key_identity(account, type_, key_id), where)
            keys.setdefault(type_, {})[key_id] = value
    return keys
