"""``inspect`` on a PostgreSQL location: every row of every account (or of one), read only.

The report checks what an open would and more: the schema mark and version, every
creds row (both slots: CRC over identity and blob, CBOR, creds validation, key pairs)
and every key row (CRC, CBOR), and names each account's lease holder. It runs in one
``REPEATABLE READ READ ONLY`` transaction: it never creates a table, never takes a
lease and never writes, so it is safe on a database that running processes own.

Since 0.2.0.
"""

from __future__ import annotations

from typing import Any

import psycopg

from stores import sqlite_codec as codec
from stores.creds import AuthCreds
from stores.encryption import RecordCipher, StoreKey, check_key
from stores.errors import (
    CorruptStateError,
    DurabilityError,
    StoreError,
    UnsupportedFormatError,
    WrongBackendError,
)
from stores.inspection import AccountReport, InspectReport
from stores.keys import check_creds_keys
from stores.postgres import (
    creds_identity,
    describe_dsn,
    key_identity,
    parse_location,
    read_encryption,
)
from stores.postgres_lease import lease_info
from stores.postgres_schema import BACKEND_MARK, SCHEMA_VERSION

__all__ = ["inspect_postgres"]

_CONNECT_TIMEOUT = 10


def inspect_postgres(
    location: str, account: str | None = None, key: StoreKey | None = None
) -> InspectReport:
    """Report on ``postgresql://...[#account=NAME]``; ``account`` (or the fragment) picks one.

    Blocking. Raises ``WrongBackendError`` for tables of another backend or an absent
    account, ``UnsupportedFormatError`` for a newer schema, ``DurabilityError`` when
    the server cannot be reached.
    """
    dsn, named = parse_location(location, "")
    only = account or named or None
    shown = describe_dsn(dsn)
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=_CONNECT_TIMEOUT)
    except psycopg.OperationalError as exc:
        raise DurabilityError(shown, "connecting", exc) from exc
    with conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return _inspect(conn, shown, only, key)


def _inspect(conn: Any, shown: str, only: str | None, key: StoreKey | None) -> InspectReport:
    found = conn.execute("SELECT to_regclass('baileys_store_meta')").fetchone()
    if found is None or found[0] is None:
        if only is not None:
            raise WrongBackendError(shown, f"account {only!r}", "a database without a store")
        warning = f"{shown}: no baileys_* tables (a new store)"
        return InspectReport(shown, "postgres", None, (), (), (warning,))
    meta = dict(conn.execute("SELECT name, value FROM baileys_store_meta").fetchall())
    if meta.get("backend") != BACKEND_MARK:
        raise WrongBackendError(shown, "postgres", f"backend mark {meta.get('backend')!r}")
    raw = str(meta.get("schema_version", ""))
    version = int(raw) if raw.isdigit() else None
    if version is None:
        raise CorruptStateError(shown, f"schema_version is {raw!r}, not a number")
    if version > SCHEMA_VERSION:
        raise UnsupportedFormatError(shown, version, f"schema versions up to {SCHEMA_VERSION}")
    names = sorted(
        {
            str(row[0])
            for table in ("baileys_accounts", "baileys_creds", "baileys_keys")
            for row in conn.execute(f"SELECT DISTINCT account FROM {table}").fetchall()
        }
    )
    if only is not None:
        if only not in names:
            held = ", ".join(repr(n) for n in names) or "no accounts"
            raise WrongBackendError(shown, f"account {only!r}", held)
        names = [only]
    problems: list[str] = []
    records = 0
    accounts = []
    for name in names:
        report, checked = _account(conn, shown, name, problems, key)
        accounts.append(report)
        records += checked
    return InspectReport(
        location=shown,
        backend="postgres",
        format_version=version,
        accounts=tuple(accounts),
        problems=tuple(problems),
        records_checked=records,
    )


def _account(
    conn: Any, shown: str, account: str, problems: list[str], key: StoreKey | None
) -> tuple[AccountReport, int]:
    def where(table: str, row: str) -> str:
        return f"{shown}#account={account} table {table} row ({row})"

    place = f"{shown}#account={account}"
    cipher = check_key(place, read_encryption(conn, account, place), key)
    records = 0
    creds: AuthCreds | None = None
    newest_present = False
    rows = conn.execute(
        "SELECT slot, crc, blob FROM baileys_creds WHERE account = %s ORDER BY slot", (account,)
    ).fetchall()
    for slot, crc, blob in rows:
        records += 1
        place = where("baileys_creds", f"slot {slot}")
        parsed = _creds(bytes(blob), int(crc), account, place, cipher)
        if isinstance(parsed, StoreError):
            problems.append(str(parsed))
        if slot == 0:
            newest_present = True
            creds = parsed if isinstance(parsed, AuthCreds) else None
    counts: dict[str, int] = {}
    with conn.cursor(name="inspect_keys") as cursor:  # server-side: rows are streamed
        cursor.execute(
            "SELECT type, id, crc, value FROM baileys_keys WHERE account = %s", (account,)
        )
        for type_, key_id, crc, blob in cursor:
            records += 1
            counts[type_] = counts.get(type_, 0) + 1
            identity = key_identity(account, type_, key_id)
            row = where("baileys_keys", f"type {type_!r}, id {key_id!r}")
            try:
                codec.decode(bytes(blob), int(crc), identity, row, cipher)
            except StoreError as exc:
                problems.append(str(exc))
    seq = conn.execute("SELECT seq FROM baileys_accounts WHERE account = %s", (account,)).fetchone()
    lease = conn.execute(
        "SELECT owner, host, pid, epoch, extract(epoch FROM expires_at - now())"
        " FROM baileys_leases WHERE account = %s",
        (account,),
    ).fetchone()
    owner = None
    if lease is not None and float(lease[4]) > 0:
        owner = lease_info(account, lease).describe()
    me_id = None if creds is None else (creds.me or {}).get("id")
    report = AccountReport(
        name=account,
        account_id=me_id if isinstance(me_id, str) else None,
        creds_present=newest_present,
        creds_valid=(creds is not None) if newest_present else None,
        key_counts=dict(sorted(counts.items())),
        durable_seq=None if seq is None else int(seq[0]),
        lock_owner=owner,
        key_id=None if cipher is None else cipher.key.key_id,
    )
    return report, records


def _creds(
    blob: bytes, crc: int, account: str, where: str, cipher: RecordCipher | None
) -> AuthCreds | StoreError:
    try:
        plain = codec.decode(blob, crc, creds_identity(account), where, cipher)
        if not isinstance(plain, dict):
            raise CorruptStateError(where, f"creds are a {type(plain).__name__}, not a map")
        creds = AuthCreds.from_plain(plain, where)
        check_creds_keys(creds, where)
    except StoreError as exc:
        return exc
    return creds
