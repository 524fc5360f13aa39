"""The SQLite backend: many accounts in one database file, like whatsmeow.

Format: ``PRAGMA user_version`` is the schema version (forward migrations in
``stores.sqlite_schema``); every row carries its ``account``; key values and creds are
CBOR blobs of plain data with a CRC32 over row identity and blob; the creds row
before the newest is kept (slot 1) so a damaged newest copy can be recovered.

Guarantees: WAL with ``synchronous=FULL``, so a commit returns only after SQLite has
fsynced it; one ``commit`` is one SQLite transaction (keys and creds together), and
commits that arrive while another is being written are grouped into the next single
transaction, written by the group committer's long-lived writer thread. One
connection per backend, used by one thread at a time (under a threading lock): the
writer thread for commits, ``trio.to_thread`` workers for reads. A per-account lock
file beside the database (``<db>.<account>.lock``) keeps a second runtime off the same account.

Checkpoints: the connection's automatic WAL checkpoint is off; the backend checkpoints
(``PASSIVE``) after the commit that brings its estimate of the pages written since the
last checkpoint to ``CHECKPOINT_PAGES`` (SQLite's own default), as part of that
commit's write on the writer thread. Every other commit is then one short
transaction, which the group committer may run on Trio's thread itself when nothing
else is runnable (``stores.writer_thread``); a checkpoint, megabytes copied and
fsynced, never runs there.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import trio

from stores import sqlite_codec as codec
from stores.creds import AuthCreds
from stores.encryption import (
    AccountKeying,
    Encryption,
    KeySource,
    RecordCipher,
    StoreKey,
    account_keying,
    account_meta_name,
    encryption_from_text,
    encryption_to_text,
    new_encryption,
    resolve_key,
)
from stores.errors import (
    CorruptStateError,
    DurabilityError,
    InvalidValueError,
    MigrationError,
    StoreClosedError,
    StoreError,
    StoreLockedError,
)
from stores.fsio import REAL_FS, ensure_private_dir, sync_dir
from stores.group_commit import GroupCommitter
from stores.lock import LockHandle, acquire_lock
from stores.sqlite_schema import MIGRATIONS, Migration, check_header, prepare
from stores.transactions import sequenced_on_call
from stores.types import Batch, StoreSnapshot, Value, check_key_type
from stores.writer_thread import DEFAULT_INLINE_BELOW

CHECKPOINT_PAGES = 1000
"""Estimated WAL pages written since the last checkpoint that make the next commit
checkpoint (SQLite's ``wal_autocheckpoint`` default)."""

_PAGE_BYTES = 4096
_PAGES_PER_BATCH = 2
_SPILL_BYTES = 2 * _PAGE_BYTES

__all__ = ["SqliteBackend", "SqliteStatistics", "open_sqlite_backend"]

T = TypeVar("T")

_BUSY_TIMEOUT_MS = 10_000
_MAX_ACCOUNT_LEN = 200
_CURRENT, _PREVIOUS = 0, 1


@dataclass(frozen=True)
class SqliteStatistics:
    """What the backend did since it was opened (``statistics()``)."""

    batches: int
    """Batches acknowledged by ``commit``."""
    transactions: int
    """SQLite transactions committed: one fsync each (group commit makes it < batches)."""
    creds_writes: int
    """Creds rows written (a group with many creds snapshots writes only the newest)."""
    seq: int
    """The account's durable sequence number."""
    transactions_written_here: int = 0
    """Of ``transactions``, those written on Trio's thread itself (``inline_write_below``)."""


@dataclass(slots=True)
class _Pending:
    """A batch encoded in the committing task: CBOR per key (None deletes) and creds.

    Rows are sealed (when encrypted) and checksummed by the writer, under the
    connection lock, so a rekey between encoding and writing cannot mix keys.
    """

    keys: dict[tuple[str, str], bytes | None]
    creds: bytes | None
    size: int
    """Bytes it adds to its group's SQLite transaction (about; ``_size``)."""
    pages: int
    """WAL pages its rows take in its group's transaction (an estimate; ``_pages``)."""


class SqliteBackend:
    """One account of a SQLite store; implements ``stores.Persistence``.

    Open it with ``open_sqlite_backend``; use ``async with`` or ``aclose()``.
    """

    backend_name: ClassVar[str] = "sqlite"

    def __init__(
        self,
        db_path: Path,
        account: str,
        conn: sqlite3.Connection,
        lock: LockHandle,
        seq: int,
        keying: AccountKeying | None = None,
        inline_write_below: float = DEFAULT_INLINE_BELOW,
    ) -> None:
        self._db_path = db_path
        keying = keying or AccountKeying(None)
        self._cipher = keying.cipher
        self._meta_pending = keying.meta_pending
        self._account = account
        self._conn = conn
        self._lock = lock
        self._seq = seq
        self._written_seq = seq
        """The account's seq in the database: what the last committed write left there.
        Only written under the connection lock, after a COMMIT (the account's lock file
        keeps every other writer off it)."""
        # The one connection is shared by trio's worker threads, one call at a time.
        self._conn_lock = threading.Lock()
        self._closed = False
        self._committer: GroupCommitter[_Pending] = GroupCommitter(
            self._write_group,
            location=str(db_path),
            apply=self._applied,
            item_size=_size,
            short_write=self._short_write,
            inline_below=inline_write_below,
        )
        self._wal_pages = 0
        """Estimated WAL pages written since the last checkpoint (under ``_conn_lock``)."""
        self._checkpoint_failure: DurabilityError | None = None
        """Why the last checkpoint failed: the next group fails with it, writing nothing."""
        self._creds_writes = 0
        self._key_prefixes: dict[str, codec.IdentityPrefix] = {}
        """Per key type, the identity prefix the writer checksums rows with."""

    def __repr__(self) -> str:
        return f"SqliteBackend({str(self._db_path)!r}, account={self._account!r})"

    # -- identity ---------------------------------------------------------------------

    @property
    def location(self) -> str:
        """The database file's path."""
        return str(self._db_path)

    @property
    def db_path(self) -> Path:
        return self._db_path

    @property
    def account(self) -> str:
        return self._account

    @property
    def read_only(self) -> bool:
        """True once a failed write made the backend refuse further writes."""
        return self._committer.read_only

    def statistics(self) -> SqliteStatistics:
        group_stats = self._committer.statistics()
        return SqliteStatistics(
            batches=group_stats.commits,
            transactions=group_stats.groups,
            creds_writes=self._creds_writes,
            seq=self._seq,
            transactions_written_here=group_stats.written_here,
        )

    def _where(self, table: str, key: str = "") -> str:
        row = f" row ({key})" if key else ""
        return f"{self._db_path} table {table} account {self._account!r}{row}"

    # -- reads ------------------------------------------------------------------------

    async def read_creds(self) -> AuthCreds | None:
        """The newest creds of this account, or None when it has none (a new device)."""
        return await self._read_creds_slot(_CURRENT)

    async def read_previous_creds(self) -> AuthCreds | None:
        """The creds copy before the newest, kept to recover from a damaged newest copy."""
        return await self._read_creds_slot(_PREVIOUS)

    async def _read_creds_slot(self, slot: int) -> AuthCreds | None:
        row = await self._run(
            lambda c: c.execute(
                "SELECT crc, blob FROM creds WHERE account = ? AND slot = ?",
                (self._account, slot),
            ).fetchone()
        )
        if row is None:
            return None
        return self._decode_creds(slot, row[0], row[1])

    def _decode_creds(self, slot: int, crc: int, blob: bytes) -> AuthCreds:
        name = "newest" if slot == _CURRENT else "previous"
        where = self._where("creds", f"slot {slot}, {name}")
        plain = codec.decode(blob, crc, _creds_identity(self._account), where, self._cipher)
        if not isinstance(plain, dict):
            raise CorruptStateError(where, f"creds are a {type(plain).__name__}, not a map")
        try:
            return AuthCreds.from_plain(plain, where)
        except InvalidValueError as exc:
            raise CorruptStateError(where, f"invalid creds: {exc}") from exc

    async def read_keys(self, type: str, ids: Sequence[str]) -> dict[str, Value]:
        """The values of the present ``ids`` of ``type``; absent ids are left out."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        rows = await self._run(lambda c: self._select_keys(c, type, wanted))
        out: dict[str, Value] = {}
        for key_id, crc, blob in rows:
            out[key_id] = self._decode_key(type, key_id, crc, blob)
        return out

    def _select_keys(
        self, conn: sqlite3.Connection, type: str, ids: list[str]
    ) -> list[tuple[str, int, bytes]]:
        rows: list[tuple[str, int, bytes]] = []
        # SQLite limits bound parameters (32766 since 3.32); stay far below it.
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows.extend(
                conn.execute(
                    "SELECT id, crc, value FROM keys WHERE account = ? AND type = ?"
                    f" AND id IN ({marks})",
                    (self._account, type, *chunk),
                ).fetchall()
            )
        return rows

    def _decode_key(self, type: str, key_id: str, crc: int, blob: bytes) -> Value:
        where = self._where("keys", f"type {type!r}, id {key_id!r}")
        identity = _key_identity(self._account, type, key_id)
        return codec.decode(blob, crc, identity, where, self._cipher)

    async def snapshot(self) -> StoreSnapshot:
        """Creds and every key of this account, read in one SQLite read transaction."""

        def read(c: sqlite3.Connection) -> tuple[Any, list[Any]]:
            c.execute("BEGIN")
            try:
                return self._read_snapshot_rows(c)
            finally:
                c.execute("COMMIT")

        return self._decode_snapshot(*await self._run(read))

    def _read_snapshot_rows(self, c: sqlite3.Connection) -> tuple[Any, list[Any]]:
        creds = c.execute(
            "SELECT crc, blob FROM creds WHERE account = ? AND slot = ?",
            (self._account, _CURRENT),
        ).fetchone()
        keys = c.execute(
            "SELECT type, id, crc, value FROM keys WHERE account = ?", (self._account,)
        ).fetchall()
        return creds, keys

    def _decode_snapshot(self, creds_row: Any, key_rows: list[Any]) -> StoreSnapshot:
        creds = None if creds_row is None else self._decode_creds(_CURRENT, *creds_row)
        keys: dict[str, dict[str, Value]] = {}
        for type, key_id, crc, blob in key_rows:
            keys.setdefault(type, {})[key_id] = self._decode_key(type, key_id, crc, blob)
        return StoreSnapshot(creds=creds, keys=keys)

    async def is_empty(self) -> bool:
        """True when this account has no rows at all (a new device)."""
        return await self._run(lambda c: not _account_has_rows(c, self._account))

    # -- writes -----------------------------------------------------------------------

    @sequenced_on_call  # queued before the first checkpoint: durable in call order
    async def commit(self, batch: Batch) -> int:
        """Make ``batch`` durable in one SQLite transaction; return its sequence number.

        Commits arriving while another is written are grouped into the next one.
        Raises ``DurabilityError`` (and the backend turns read-only) when SQLite fails.
        """
        self._check_open()
        self._committer.check_writable()
        pending = self._encode(batch)
        if pending is None:
            await trio.lowlevel.checkpoint()
            return self._seq
        return await self._committer.commit(pending)

    def _encode(self, batch: Batch) -> _Pending | None:
        keys: dict[tuple[str, str], bytes | None] = {}
        size = 64
        encode = codec.encode
        for type, writes in batch.keys.items():
            check_key_type(type)
            for key_id, value in writes.items():
                if not isinstance(key_id, str) or not key_id:
                    raise InvalidValueError(f"{type} id", f"{key_id!r} is not a non-empty str")
                size += 64 + len(type) + len(key_id)
                if value is None:
                    keys[(type, key_id)] = None
                    continue
                if value.__class__ is not bytes:  # bytes (most values) are plain already
                    codec.check_plain(value, f"{type}/{key_id}")
                encoded = keys[(type, key_id)] = encode(value)
                size += len(encoded)
        creds = None
        snapshot = batch.backend_creds()
        if snapshot is not None:
            plain = snapshot.to_plain()
            codec.check_plain(plain, "creds")
            try:
                # Refuse creds that could not be read back: they would brick the account.
                AuthCreds.from_plain(plain, "creds")
            except CorruptStateError as exc:
                raise InvalidValueError("creds", exc.reason) from exc
            creds = codec.encode(plain)
        if not keys:
            # Creds only: a group writes just its newest creds row, so a creds burst is
            # one transaction (each batch still gets its own seq).
            return None if creds is None else _Pending(keys, creds, 0, _PAGES_PER_BATCH)
        if creds is not None:
            size += len(creds)
        return _Pending(keys, creds, size, len(keys) + _PAGES_PER_BATCH + size // _SPILL_BYTES)

    def _applied(self, group: Sequence[_Pending], seqs: Sequence[int]) -> None:
        self._seq = seqs[-1]
        self._meta_pending = False
        for pending in group:
            if pending.creds is not None:
                self._creds_writes += 1
                break

    def _write_group(self, group: Sequence[_Pending]) -> list[int]:
        """One SQLite transaction for the whole group; return each batch's seq (blocking)."""
        with self._conn_lock:
            if self._closed:
                raise DurabilityError(self.location, "commit", StoreClosedError("closed"))
            if self._checkpoint_failure is not None:
                raise self._checkpoint_failure  # before anything of this group is written
            first = self._write_group_locked(self._conn, group)
            self._wal_pages += _pages(group)
            if self._wal_pages >= CHECKPOINT_PAGES:
                self._checkpoint(self._conn)
        return list(range(first, first + len(group)))

    def _short_write(self, group: Sequence[_Pending]) -> bool:
        """Whether writing ``group`` is one transaction without a checkpoint after it."""
        return self._wal_pages + _pages(group) < CHECKPOINT_PAGES

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        # After the COMMIT: the group is durable whatever happens here, so it is
        # acknowledged; a failed checkpoint fails the next group instead, before it
        # writes anything (and the backend turns read-only, as for any failed write).
        # PASSIVE never waits for readers; what it cannot copy now the next one copies.
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            self._checkpoint_failure = DurabilityError(self.location, "sqlite checkpoint", exc)
            return
        self._wal_pages = 0

    def _write_group_locked(self, conn: sqlite3.Connection, group: Sequence[_Pending]) -> int:
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                first = self._write_rows(conn, group)
                conn.execute("COMMIT")
            except BaseException:
                _rollback_quietly(conn)
                raise
        except sqlite3.Error as exc:
            raise DurabilityError(self.location, "sqlite commit", exc) from exc
        self._written_seq = first + len(group) - 1
        return first

    def _write_rows(self, conn: sqlite3.Connection, group: Sequence[_Pending]) -> int:
        """The writes of a group inside an open transaction; return the first seq."""
        if len(group) == 1:
            keys, creds = group[0].keys, group[0].creds
        else:
            keys = {}
            creds = None
            for pending in group:
                keys.update(pending.keys)
                creds = pending.creds or creds
        account, cipher = self._account, self._cipher
        upserts, deletes = codec.seal_key_rows(account, keys, self._key_prefixes, cipher)
        if self._meta_pending and self._cipher is not None:
            # In the account's first transaction: no row is ever sealed without it.
            _write_encryption(conn, self._account, self._cipher.encryption)
        first = self._written_seq + 1
        last = first + len(group) - 1
        _upsert_keys(conn, upserts)
        if deletes:
            conn.executemany("DELETE FROM keys WHERE account = ? AND type = ? AND id = ?", deletes)
        if creds is not None:
            self._write_creds(conn, last, codec.seal_row(creds, _creds_identity(account), cipher))
        conn.execute(
            "INSERT INTO accounts (account, seq) VALUES (?, ?)"
            " ON CONFLICT (account) DO UPDATE SET seq = excluded.seq",
            (self._account, last),
        )
        return first

    def _write_creds(self, conn: sqlite3.Connection, seq: int, creds: tuple[int, bytes]) -> None:
        account = self._account
        old = conn.execute(
            "SELECT crc, blob FROM creds WHERE account = ? AND slot = ?", (account, _CURRENT)
        ).fetchone()
        if old is not None and codec.row_crc(_creds_identity(account), old[1]) == old[0]:
            # The newest copy becomes the previous one; a damaged newest copy is dropped
            # instead, so it never replaces a good previous copy.
            conn.execute("DELETE FROM creds WHERE account = ? AND slot = ?", (account, _PREVIOUS))
            conn.execute(
                "UPDATE creds SET slot = ? WHERE account = ? AND slot = ?",
                (_PREVIOUS, account, _CURRENT),
            )
        else:
            conn.execute("DELETE FROM creds WHERE account = ? AND slot = ?", (account, _CURRENT))
        conn.execute(
            "INSERT INTO creds (account, slot, seq, crc, blob) VALUES (?, ?, ?, ?, ?)",
            (account, _CURRENT, seq, *creds),
        )

    async def import_snapshot(
        self, snapshot: StoreSnapshot, verify: Callable[[StoreSnapshot], None]
    ) -> int:
        """Write ``snapshot`` into this (empty) account and verify it in one transaction.

        Everything is written, read back and handed to ``verify`` before COMMIT; if the
        account is not empty or ``verify`` raises, the transaction rolls back and the
        account stays empty. For migration into an existing database file.
        """
        self._check_open()
        self._committer.check_writable()
        pending = self._encode(Batch(keys=snapshot.keys, creds=snapshot.creds))
        if pending is None:
            raise InvalidValueError("snapshot", "holds neither creds nor keys")

        def run(conn: sqlite3.Connection) -> int:
            if _account_has_rows(conn, self._account):
                raise MigrationError(f"{self._where('accounts')} already holds data")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    first = self._write_rows(conn, [pending])
                    verify(self._decode_snapshot(*self._read_snapshot_rows(conn)))
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback_quietly(conn)
                    raise
            except sqlite3.Error as exc:
                raise DurabilityError(self.location, "sqlite import", exc) from exc
            self._written_seq = first
            return first

        with trio.CancelScope(shield=True):
            seq = await self._run(run)
        self._seq = seq
        self._meta_pending = False
        return seq

    @property
    def key_id(self) -> str | None:
        """The id of the key this account is encrypted with (``None``: plain)."""
        return None if self._cipher is None else self._cipher.key.key_id

    async def rekey(self, key: StoreKey | None) -> None:
        """Re-seal every row of this account under ``key`` (``None``: plain), atomically.

        One SQLite transaction rewrites the rows and the account's encryption row, so a
        crash leaves the old key or the new one in force, never a mix. Freed pages are
        zeroed (``secure_delete``) and the WAL is checkpointed and truncated afterwards,
        so the old form of the rows does not linger in the files.
        """
        self._check_open()
        self._committer.check_writable()
        cipher = None if key is None else RecordCipher(key, new_encryption(key))

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA secure_delete = ON")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    self._reseal_rows(conn, cipher)
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback_quietly(conn)
                    raise
                # Still under the connection lock: the next group is sealed with it.
                self._cipher, self._meta_pending = cipher, False
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                raise DurabilityError(self.location, "sqlite rekey", exc) from exc
            finally:
                conn.execute("PRAGMA secure_delete = OFF")

        with trio.CancelScope(shield=True):
            await self._run(run)

    def _reseal_rows(self, conn: sqlite3.Connection, new: RecordCipher | None) -> None:
        account, old = self._account, self._cipher
        creds = conn.execute(
            "SELECT slot, crc, blob FROM creds WHERE account = ?", (account,)
        ).fetchall()
        for slot, crc, blob in creds:
            where = self._where("creds", f"slot {slot}")
            row = codec.reseal(blob, crc, _creds_identity(account), where, old, new)
            conn.execute(
                "UPDATE creds SET crc = ?, blob = ? WHERE account = ? AND slot = ?",
                (*row, account, slot),
            )
        keys = conn.execute(
            "SELECT type, id, crc, value FROM keys WHERE account = ?", (account,)
        ).fetchall()
        for type_, key_id, crc, blob in keys:
            where = self._where("keys", f"type {type_!r}, id {key_id!r}")
            identity = _key_identity(account, type_, key_id)
            conn.execute(
                "UPDATE keys SET crc = ?, value = ? WHERE account = ? AND type = ? AND id = ?",
                (*codec.reseal(blob, crc, identity, where, old, new), account, type_, key_id),
            )
        if new is None:
            conn.execute("DELETE FROM store_meta WHERE name = ?", (account_meta_name(account),))
        else:
            _write_encryption(conn, account, new.encryption)

    # -- lifetime ---------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection and release the account lock; idempotent."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        await self._committer.aclose()  # queued commits land first
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._close_blocking)

    def _close_blocking(self) -> None:
        # Waits for a write in flight: the connection closes between transactions.
        with self._conn_lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._conn.close()
            finally:
                self._lock.release()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{self._db_path} account {self._account!r} is closed")

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on a worker thread, one connection user at a time."""
        self._check_open()
        try:
            return await trio.to_thread.run_sync(self._call_locked, fn)
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorname", "").startswith("SQLITE_IOERR"):
                error = DurabilityError(self.location, "sqlite read", exc)
                self._committer.fail(error)
                raise error from exc
            raise CorruptStateError(self.location, f"database error: {exc}") from exc

    def _call_locked(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._conn_lock:
            self._check_open()
            return fn(self._conn)


def _size(pending: _Pending) -> int:
    """Bytes a batch adds to its group's SQLite transaction (about; counted by ``_encode``)."""
    return pending.size


_UPSERT_PARAMS = 5
_ROWS_PER_UPSERT = 16
"""Rows per upsert statement at most: one statement per group of a few transactions,
and never more than this many distinct statements in the connection's cache."""


@functools.cache
def _upsert_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?)"] * rows)
    return (
        f"INSERT INTO keys (account, type, id, crc, value) VALUES {values}"
        " ON CONFLICT (account, type, id) DO UPDATE SET crc = excluded.crc, value = excluded.value"
    )


def _upsert_keys(conn: sqlite3.Connection, params: list[str | int | bytes]) -> None:
    """Upsert key rows given flat (``seal_key_rows``), up to ``_ROWS_PER_UPSERT`` rows a
    statement: one multi-row ``VALUES`` is bound and stepped once, where ``executemany``
    binds, steps and resets once per row."""
    step = _UPSERT_PARAMS * _ROWS_PER_UPSERT
    if len(params) <= step:
        if params:
            conn.execute(_upsert_sql(len(params) // _UPSERT_PARAMS), params)
        return
    for start in range(0, len(params), step):
        chunk = params[start : start + step]
        conn.execute(_upsert_sql(len(chunk) // _UPSERT_PARAMS), chunk)


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the transaction is gone either way; the caller reports the first error


def _account_has_rows(conn: sqlite3.Connection, account: str) -> bool:
    for table in ("accounts", "creds", "keys"):
        sql = f"SELECT 1 FROM {table} WHERE account = ? LIMIT 1"
        if conn.execute(sql, (account,)).fetchone() is not None:
            return True
    return False


def read_encryption(conn: sqlite3.Connection, account: str, where: str) -> Encryption | None:
    """What the account's encryption row says (``None``: the account is plain)."""
    row = conn.execute(
        "SELECT value FROM store_meta WHERE name = ?", (account_meta_name(account),)
    ).fetchone()
    return None if row is None else encryption_from_text(row[0], where)


def _write_encryption(conn: sqlite3.Connection, account: str, encryption: Encryption) -> None:
    conn.execute(
        "INSERT INTO store_meta (name, value) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (account_meta_name(account), encryption_to_text(encryption)),
    )


def _keying(
    conn: sqlite3.Connection, account: str, where: str, key: StoreKey | None
) -> AccountKeying:
    found = read_encryption(conn, account, where)
    return account_keying(where, found, key, _account_has_rows(conn, account))


def _key_identity(account: str, type: str, key_id: str) -> str:
    return codec.key_identity_prefix(account, type) + key_id


def _creds_identity(account: str) -> str:
    return f"creds\0{account}"


def _check_account(account: str) -> None:
    if not isinstance(account, str) or not account:
        raise InvalidValueError("account", f"{account!r} is not a non-empty str")
    if len(account) > _MAX_ACCOUNT_LEN or "\0" in account:
        raise InvalidValueError("account", f"longer than {_MAX_ACCOUNT_LEN} or holds NUL")


def lock_name(db_path: Path, account: str) -> str:
    """The lock file name of one account of a database: ``<db>.<account>.lock``."""
    return f"{db_path.name}.{urllib.parse.quote(account, safe='@.+-_')}.lock"


async def open_sqlite_backend(
    db_path: str | os.PathLike[str],
    *,
    account: str = "default",
    connection_factory: type[sqlite3.Connection] = sqlite3.Connection,
    migrations: Sequence[Migration] = MIGRATIONS,
    encryption_key: KeySource | None = None,
    inline_write_below: float = DEFAULT_INLINE_BELOW,
) -> SqliteBackend:
    """Open (creating if absent) one account of a SQLite auth database.

    Raises ``StoreLockedError`` when another live owner holds the account,
    ``WrongBackendError`` for a file that is not ours, ``UnsupportedFormatError`` for a
    newer schema, ``CorruptStateError`` when the integrity check fails.
    ``connection_factory`` and ``migrations`` are seams for fault-injection and schema
    tests; leave them alone otherwise. With ``encryption_key`` (``stores.encryption``)
    a new account is encrypted and an existing one must be encrypted under that key
    (``WrongKeyError`` otherwise, also for a plain account, before anything changes).
    A commit without a checkpoint after it is written on Trio's thread itself when no
    other task is runnable and recent writes took less than ``inline_write_below``
    seconds (``stores.writer_thread``; 0: never).
    """
    _check_account(account)
    if inline_write_below < 0:
        raise ValueError("inline_write_below must not be negative")
    key = await resolve_key(encryption_key)
    path, conn, lock, seq, keying = await trio.to_thread.run_sync(
        _open_blocking, db_path, account, connection_factory, migrations, key
    )
    return SqliteBackend(path, account, conn, lock, seq, keying, inline_write_below)


def _open_blocking(
    db_path: str | os.PathLike[str],
    account: str,
    factory: type[sqlite3.Connection],
    migrations: Sequence[Migration],
    key: StoreKey | None,
) -> tuple[Path, sqlite3.Connection, LockHandle, int, AccountKeying]:
    path = Path(os.path.abspath(db_path))
    exists = check_header(path)
    _ensure_parent(path)
    try:
        lock = acquire_lock(path.parent, lock_name(path, account))
    except StoreLockedError as exc:
        raise StoreLockedError(f"{path} account {account!r}", exc.owner) from None
    try:
        conn = _connect(path, exists, factory, migrations)
        try:
            seq = _read_seq(conn, account)
            keying = _keying(conn, account, f"{path} account {account!r}", key)
        except BaseException:
            conn.close()
            raise
    except BaseException:
        lock.release()
        raise
    return path, conn, lock, seq, keying


def _ensure_parent(path: Path) -> None:
    # Only a directory we create is made 0700: an existing one is not ours to chmod.
    if not path.parent.exists():
        ensure_private_dir(path.parent)


def _connect(
    path: Path,
    exists: bool,
    factory: type[sqlite3.Connection],
    migrations: Sequence[Migration],
) -> sqlite3.Connection:
    location = str(path)
    if not exists:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
            os.chmod(path, 0o600)
            sync_dir(REAL_FS, path.parent)
        except OSError as exc:
            raise DurabilityError(location, "creating the database file", exc) from exc
    try:
        conn = sqlite3.connect(
            location,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # used from trio's worker threads, one call at a time
            factory=factory,
            timeout=_BUSY_TIMEOUT_MS / 1000,
        )
    except sqlite3.Error as exc:
        raise StoreError(f"{location}: cannot open the database: {exc}") from exc
    try:
        conn.execute("PRAGMA cell_size_check = ON")
        conn.execute("PRAGMA trusted_schema = OFF")
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # the backend checkpoints (see above)
        try:
            prepare(conn, location, migrations)
        except sqlite3.OperationalError as exc:
            raise StoreLockedError(
                location, f"another connection holding the database write lock ({exc})"
            ) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _pages(group: Sequence[_Pending]) -> int:
    """An estimate of the WAL pages a group's transaction writes: per batch a leaf page
    per row, the account's and an interior page (``_PAGES_PER_BATCH``), and a page per
    two pages of bytes (values too large for a leaf spill into overflow pages), counted
    by ``_encode``. About 1.2x what SQLite wrote for the bench's transactions (1-8 rows
    of 1 KiB: 5.4 frames each)."""
    if len(group) == 1:
        return group[0].pages
    return sum(p.pages for p in group)


def _read_seq(conn: sqlite3.Connection, account: str) -> int:
    row = conn.execute("SELECT seq FROM accounts WHERE account = ?", (account,)).fetchone()
    return 0 if row is None else int(row[0])
