"""The PostgreSQL backend: many accounts of many processes in one database, fenced.

Format: the tables of ``stores.postgres_schema`` (schema version and forward
migrations there); every row carries its ``account``; key values and creds are CBOR
blobs of plain data with a CRC32 over row identity and blob, exactly as in the SQLite
backend; the creds row before the newest is kept (slot 1). An encrypted account (since
0.2.0) has the row ``encryption:<account>`` in ``baileys_store_meta`` (cipher, key id,
store id; never the key) and its blobs sealed as ``stores.sqlite_codec`` describes.

Durability: one ``commit`` is one SQL transaction (keys, creds and the account's
sequence number together), acknowledged only after the server acknowledged COMMIT
with ``synchronous_commit = on``. Commits that queue up while one is written are
grouped into the next single transaction. That transaction is one statement
(``stores.postgres_commit``): the fence, the sequence and every row in one round trip.

The writer (``stores.postgres_writer``): each backend owns one connection, used by one
Trio task in the order work was queued, so commits are durable in call order
(``sequenced_on_call``). A commit statement is driven from Trio through libpq's
asynchronous calls (no thread hop); reads and other jobs run psycopg's synchronous
calls on one writer thread, since psycopg 3 has no Trio support.

Ownership (a lease with fencing):

* Opening takes the account's lease row: a new row at epoch 1, or a row whose lease
  expired (by the server's clock) or was released, at epoch + 1. A live lease of
  another owner raises ``StoreLockedError`` naming it (owner id, host, pid, expiry).
* Every commit locks the lease row ``FOR SHARE`` in the same transaction and writes
  nothing (``FencedError``) unless the epoch is still ours and unexpired. The row
  lock orders the commit against a takeover: a takeover that commits first fences
  the commit; a commit that locks first lands before the takeover.
* A lease is renewed every ``ttl / 3`` by one statement renewing *every* lease the
  process holds in the database (``WHERE owner = <process owner id>``); backends of
  one process on one database share that statement's result, so renewal costs one
  statement per period, however many accounts the process owns.
* A renewal that does not return our (account, epoch) fences the backend; when no
  renewal succeeds until ``ttl`` after the last successful one was *sent*, the lease
  is lost locally: ``lease_lost`` is set and commits raise ``FencedError``, before
  the server would let another process take the account.
* Once fenced, the backend never writes again.

Connection loss: a commit statement is a compare-and-set on the account's sequence
number, so sending it twice lands it once. When the connection broke before its answer
came, the writer reconnects and sends it once more: it lands, or the server says it
had landed already (acknowledged either way), or it is fenced. When that fails too,
the commit fails with ``DurabilityError`` (outcome unknown) and the next one reads the
sequence number first. Broken connections are re-made with backoff (up to
``reconnect_timeout``) by the next job; the backend stays writable, because PostgreSQL
either applied a transaction or did not (no page cache to lose).
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

import psycopg
import psycopg.conninfo
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
    FencedError,
    InvalidValueError,
    MigrationError,
    StoreClosedError,
    StoreError,
)
from stores.postgres_commit import (
    COMMIT_NAME,
    COMMIT_SQL,
    COMMIT_TYPES,
    PRE_READ_SQL,
    REFUSAL_SQL,
    CommitPlan,
    CredsCopy,
    plan,
    seq_of,
)
from stores.postgres_lease import (
    LeaseInfo,
    adopt_lease,
    join_board,
    leave_board,
    process_owner_id,
    take_lease,
)
from stores.postgres_schema import MIGRATIONS, Migration, prepare
from stores.postgres_writer import Connect, Prepared, Writer, first_value
from stores.transactions import sequenced_on_call
from stores.types import Batch, StoreSnapshot, Value, check_key_type

__all__ = [
    "DEFAULT_LEASE_TTL",
    "LeaseInfo",
    "PostgresBackend",
    "PostgresStatistics",
    "account_holds_data",
    "creds_identity",
    "describe_dsn",
    "is_postgres_location",
    "key_identity",
    "location_of",
    "open_postgres_backend",
    "parse_location",
    "process_owner_id",
]

T = TypeVar("T")

DEFAULT_LEASE_TTL = 15.0
"""Seconds a lease lives without renewal; renewed every third of it."""

DEFAULT_RECONNECT_TIMEOUT = 10.0
"""Seconds a job spends re-making a broken connection (with backoff) before it fails."""

_MAX_ACCOUNT_LEN = 200
_CURRENT, _PREVIOUS = 0, 1
_CONNECT_TIMEOUT = 10
_COMMIT = Prepared(COMMIT_NAME, COMMIT_SQL.encode(), COMMIT_TYPES)


@dataclass(frozen=True)
class PostgresStatistics:
    """What the backend did since it was opened (``statistics()``)."""

    batches: int
    """Batches acknowledged by ``commit``."""
    transactions: int
    """SQL transactions committed for batches (group commit makes it < batches)."""
    renewals: int
    """Renewal statements this backend sent (shared with the process's other backends)."""
    reconnects: int
    """Connections re-made after a broken one."""
    seq: int
    """The account's durable sequence number."""
    epoch: int
    """The lease epoch this backend holds."""
    fenced: bool


@dataclass(frozen=True)
class _Pending:
    """A batch encoded in the committing task: CBOR per key (None deletes) and creds.

    Rows are sealed and checksummed by the writer, in queue order, so a rekey job
    between encoding and writing cannot mix keys.
    """

    keys: dict[tuple[str, str], bytes | None]
    creds: bytes | None


# -- the backend ------------------------------------------------------------------------


class PostgresBackend:
    """One account of a PostgreSQL store, owned under a lease; implements ``Persistence``.

    Open it with ``open_postgres_backend``; use ``async with`` or ``aclose()``. Since 0.2.0.
    """

    backend_name: ClassVar[str] = "postgres"

    def __init__(
        self,
        *,
        conninfo: str,
        location: str,
        account: str,
        owner: str,
        epoch: int,
        ttl: float,
        seq: int,
        connect: Connect,
        reconnect_timeout: float,
        valid_until: float,
        keying: AccountKeying | None = None,
    ) -> None:
        keying = keying or AccountKeying(None)
        self._cipher = keying.cipher
        self._meta_pending = keying.meta_pending
        self._conninfo = conninfo
        self._location = location
        self._account = account
        self._owner = owner
        self._epoch = epoch
        self._ttl = ttl
        self._seq = seq
        self._reconnect_timeout = reconnect_timeout
        self._writer: Writer[_Pending] = Writer(
            connect, location, self._write_group, _size, reconnect_timeout
        )
        self._closed = False
        self._fenced: FencedError | None = None
        self.lease_lost = trio.Event()
        """Set when the lease is lost (fenced or expired): the session must stop."""
        self._valid_until = valid_until
        # Writer state: the sequence our last statement made durable (None: read
        # it first) and the creds copy in slot 0 (read before the first creds commit).
        self._known_seq: int | None = seq
        self._creds_now: CredsCopy | None = None
        self._creds_known = False
        self._board = join_board(conninfo, owner, account, epoch)
        self._renewals = 0
        self._batches = 0
        self._renewal_scope = trio.CancelScope()
        self._renewal_done = trio.Event()

    def __repr__(self) -> str:
        return f"PostgresBackend({self._location!r})"

    # -- identity ---------------------------------------------------------------------

    @property
    def location(self) -> str:
        """``postgresql://user@host/db#account=NAME`` (never the password)."""
        return self._location

    @property
    def account(self) -> str:
        return self._account

    @property
    def epoch(self) -> int:
        """The lease epoch this backend writes under."""
        return self._epoch

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def lease_ttl(self) -> float:
        return self._ttl

    @property
    def fenced(self) -> FencedError | None:
        """Why the backend stopped writing (lease lost), or None while it owns the account."""
        return self._fenced

    def statistics(self) -> PostgresStatistics:
        return PostgresStatistics(
            batches=self._batches,
            transactions=self._writer.transactions,
            renewals=self._renewals,
            reconnects=self._writer.reconnects,
            seq=self._seq,
            epoch=self._epoch,
            fenced=self._fenced is not None,
        )

    def _where(self, table: str, key: str = "") -> str:
        row = f" row ({key})" if key else ""
        return f"{self._location} table {table}{row}"

    # -- reads ------------------------------------------------------------------------

    async def read_creds(self) -> AuthCreds | None:
        """The newest creds of this account, or None when it has none (a new device)."""
        return await self._read_creds_slot(_CURRENT)

    async def read_previous_creds(self) -> AuthCreds | None:
        """The creds copy before the newest."""
        return await self._read_creds_slot(_PREVIOUS)

    async def _read_creds_slot(self, slot: int) -> AuthCreds | None:
        row = await self._run(
            lambda c: c.execute(
                "SELECT crc, blob FROM baileys_creds WHERE account = %s AND slot = %s",
                (self._account, slot),
            ).fetchone()
        )
        if row is None:
            return None
        return self._decode_creds(slot, row[0], row[1])

    def _decode_creds(self, slot: int, crc: int, blob: bytes) -> AuthCreds:
        name = "newest" if slot == _CURRENT else "previous"
        where = self._where("baileys_creds", f"slot {slot}, {name}")
        identity = creds_identity(self._account)
        plain = codec.decode(_bytes(blob), crc, identity, where, self._cipher)
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
            await trio.lowlevel.checkpoint()
            return {}
        rows = await self._run(
            lambda c: c.execute(
                "SELECT id, crc, value FROM baileys_keys"
                " WHERE account = %s AND type = %s AND id = ANY(%s)",
                (self._account, type, wanted),
            ).fetchall()
        )
        return {key_id: self._decode_key(type, key_id, crc, blob) for key_id, crc, blob in rows}

    def _decode_key(self, type: str, key_id: str, crc: int, blob: bytes) -> Value:
        where = self._where("baileys_keys", f"type {type!r}, id {key_id!r}")
        identity = key_identity(self._account, type, key_id)
        return codec.decode(_bytes(blob), crc, identity, where, self._cipher)

    async def snapshot(self) -> StoreSnapshot:
        """Creds and every key of this account, read in one repeatable-read transaction."""
        return self._decode_snapshot(*await self._run(self._read_snapshot_rows))

    def _read_snapshot_rows(self, conn: Any) -> tuple[Any, list[Any]]:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return self._snapshot_rows_in(conn)

    def _snapshot_rows_in(self, conn: Any) -> tuple[Any, list[Any]]:
        creds = conn.execute(
            "SELECT crc, blob FROM baileys_creds WHERE account = %s AND slot = %s",
            (self._account, _CURRENT),
        ).fetchone()
        keys = conn.execute(
            "SELECT type, id, crc, value FROM baileys_keys WHERE account = %s", (self._account,)
        ).fetchall()
        return creds, keys

    def _decode_snapshot(self, creds_row: Any, key_rows: list[Any]) -> StoreSnapshot:
        creds = None if creds_row is None else self._decode_creds(_CURRENT, *creds_row)
        keys: dict[str, dict[str, Value]] = {}
        for type, key_id, crc, blob in key_rows:
            keys.setdefault(type, {})[key_id] = self._decode_key(type, key_id, crc, blob)
        return StoreSnapshot(creds=creds, keys=keys)

    async def is_empty(self) -> bool:
        """True when this account holds neither creds nor keys (a new device)."""
        return await self._run(lambda c: not _account_has_rows(c, self._account))

    # -- writes -----------------------------------------------------------------------

    @sequenced_on_call  # queued before the first checkpoint: durable in call order
    async def commit(self, batch: Batch) -> int:
        """Make ``batch`` durable in one SQL transaction, fenced on the lease epoch.

        Raises ``FencedError`` once the lease is lost, ``DurabilityError`` when the
        server did not confirm the transaction.
        """
        self._check_open()
        self._check_lease()
        pending = self._encode(batch)
        if pending is None:
            await trio.lowlevel.checkpoint()
            return self._seq
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            seq: int = await self._writer.commit(pending)
        except FencedError as exc:
            self._fence(exc)
            raise
        self._batches += 1
        self._seq = max(self._seq, seq)
        self._meta_pending = False  # durable with this commit (idempotent until then)
        return seq

    def _encode(self, batch: Batch) -> _Pending | None:
        keys: dict[tuple[str, str], bytes | None] = {}
        for type, writes in batch.keys.items():
            check_key_type(type)
            for key_id, value in writes.items():
                if not isinstance(key_id, str) or not key_id or "\0" in key_id:
                    raise InvalidValueError(f"{type} id", f"{key_id!r} is not a non-empty str")
                if value is None:
                    keys[(type, key_id)] = None
                    continue
                codec.check_plain(value, f"{type}/{key_id}")
                keys[(type, key_id)] = codec.encode(value)
        if getattr(batch, "patch", None):
            # The creds owner merges patches; one reaching a backend is refused, not dropped.
            raise InvalidValueError(
                "batch", "a creds patch reached a backend unmerged (the creds owner merges it)"
            )
        creds = None
        if batch.creds is not None:
            plain = batch.creds.to_plain()
            codec.check_plain(plain, "creds")
            try:
                # Refuse creds that could not be read back: they would brick the account.
                AuthCreds.from_plain(plain, "creds")
            except CorruptStateError as exc:
                raise InvalidValueError("creds", exc.reason) from exc
            creds = codec.encode(plain)
        if not keys and creds is None:
            return None
        return _Pending(keys=keys, creds=creds)

    async def _write_group(self, group: Sequence[_Pending]) -> list[int]:
        """One statement (one transaction) for the whole group; each batch's seq (writer)."""
        if self._needs_pre_read(group):
            await self._writer.blocking(self._pre_read)
        plan = self._plan(group)
        try:
            seq = await self._send(plan)
        except psycopg.OperationalError as exc:
            if not self._writer.lost():
                raise DurabilityError(self._location, "postgres commit", exc) from exc
            # No answer: the statement may or may not have landed. It is idempotent (the
            # sequence compare-and-set), so it is sent once more on a new connection.
            seq = await self._send_again(plan, exc)
        except psycopg.Error as exc:
            raise DurabilityError(self._location, "postgres commit", exc) from exc
        self._landed(plan)
        return list(range(seq - plan.count + 1, seq + 1))

    async def _send_again(self, plan: CommitPlan, cause: psycopg.Error) -> int:
        try:
            return await self._send(plan, again=True)
        except (psycopg.Error, DurabilityError) as exc:
            self._known_seq = None  # it may still land: read the sequence before the next
            raise DurabilityError(
                self._location, "postgres commit (outcome unknown: no answer)", exc
            ) from cause

    async def _send(self, plan: CommitPlan, *, again: bool = False) -> int:
        """Run the commit statement from Trio; its last seq, or why it wrote nothing raised."""
        seq = seq_of(await self._writer.query(_COMMIT, plan.params))
        if seq is not None:
            return seq
        return await self._writer.blocking(lambda c: self._refused(c, plan, again))

    def _send_blocking(self, conn: Any, plan: CommitPlan) -> int:
        """``_send`` on the thread, inside a transaction of ``conn`` (blocking)."""
        formats = [1] * len(plan.params)
        result = conn.pgconn.exec_params(_COMMIT.sql, plan.params, _COMMIT.types, formats, 1)
        seq = seq_of(first_value(conn, result))
        return self._refused(conn, plan, False) if seq is None else seq

    def _refused(self, conn: Any, plan: CommitPlan, again: bool) -> int:
        """The statement wrote nothing: fenced, or (sent again) it had landed already."""
        row = conn.execute(REFUSAL_SQL, (self._account,)).fetchone()
        if row is None or row[1] is None:
            gone = "lease taken over: the lease row is gone"
            raise FencedError(self._location, gone, self._epoch)
        seq, epoch, owner, live = int(row[0]), int(row[1]), row[2], bool(row[3])
        if epoch != self._epoch:
            raise FencedError(
                self._location, f"lease taken over: {owner} took epoch {epoch}", self._epoch
            )
        if again and seq == plan.last:
            return seq  # the first sending landed: under our epoch only we write
        if not live:
            raise FencedError(self._location, "lease expired without renewal", self._epoch)
        self._known_seq = seq
        state = "not applied" if again else "refused"
        raise DurabilityError(
            self._location,
            f"postgres commit ({state}: the sequence is {seq}, this writer expected {plan.prev})",
        )

    def _landed(self, plan: CommitPlan) -> None:
        self._known_seq = plan.last
        if plan.creds is not None:
            self._creds_now, self._creds_known = plan.creds, True

    def _check_epoch(self, conn: Any) -> None:
        """Inside a transaction: refuse (``FencedError``) unless the lease is still ours."""
        row = conn.execute(
            "SELECT epoch, owner, expires_at > now() FROM baileys_leases"
            " WHERE account = %s FOR SHARE",
            (self._account,),
        ).fetchone()
        if row is None or int(row[0]) != self._epoch:
            taken = "the lease row is gone" if row is None else f"{row[1]} took epoch {row[0]}"
            raise FencedError(self._location, f"lease taken over: {taken}", self._epoch)
        if not row[2]:
            raise FencedError(self._location, "lease expired without renewal", self._epoch)

    def _needs_pre_read(self, group: Sequence[_Pending]) -> bool:
        """Whether ``_pre_read`` must run before ``group`` is planned."""
        if self._known_seq is None:
            return True
        return not self._creds_known and any(p.creds is not None for p in group)

    def _plan(self, group: Sequence[_Pending]) -> CommitPlan:
        """The statement writing ``group``, sealed under the cipher in force now (writer).

        After ``_pre_read`` when ``_needs_pre_read`` said so.
        """
        account, cipher = self._account, self._cipher
        keys: dict[tuple[str, str], bytes | None] = {}
        creds: bytes | None = None
        for pending in group:
            keys.update(pending.keys)
            creds = pending.creds or creds
        assert self._known_seq is not None
        meta = None
        if self._meta_pending and cipher is not None:
            # In the account's first commit: no row is ever sealed without it.
            meta = (account_meta_name(account), encryption_to_text(cipher.encryption))
        return plan(
            account=account,
            epoch=self._epoch,
            prev=self._known_seq,
            count=len(group),
            keys={
                (t, i): v if v is None else codec.seal_row(v, key_identity(account, t, i), cipher)
                for (t, i), v in keys.items()
            },
            creds=None if creds is None else codec.seal_row(creds, creds_identity(account), cipher),
            previous=None if creds is None else self._creds_now,
            meta=meta,
        )

    def _pre_read(self, conn: Any) -> None:
        """Read the sequence and the creds in slot 0 (after open, or an unknown outcome)."""
        row = conn.execute(PRE_READ_SQL, (self._account,)).fetchone()
        if row is None:
            raise CorruptStateError(self._where("baileys_accounts"), "the account row is gone")
        self._known_seq = int(row[0])
        self._creds_now, self._creds_known = None, True
        if row[1] is not None:
            blob = _bytes(row[3])
            # A damaged newest copy is not kept as the previous one: it is dropped.
            if codec.row_crc(creds_identity(self._account), blob) == row[2]:
                self._creds_now = CredsCopy(int(row[1]), int(row[2]), blob)

    async def import_snapshot(
        self, snapshot: StoreSnapshot, verify: Callable[[StoreSnapshot], None]
    ) -> int:
        """Write ``snapshot`` into this (empty) account and verify it in one transaction.

        Everything is written, read back and handed to ``verify`` before COMMIT; if the
        account is not empty or ``verify`` raises, nothing is written. For migration.
        """
        self._check_open()
        self._check_lease()
        pending = self._encode(Batch(keys=snapshot.keys, creds=snapshot.creds))
        if pending is None:
            raise InvalidValueError("snapshot", "holds neither creds nor keys")

        def run(conn: Any) -> int:
            with conn.transaction():
                if _account_has_rows(conn, self._account):
                    raise MigrationError(f"{self._location} already holds data")
                if self._needs_pre_read([pending]):
                    self._pre_read(conn)
                plan = self._plan([pending])
                seq = self._send_blocking(conn, plan)
                verify(self._decode_snapshot(*self._snapshot_rows_in(conn)))
            self._landed(plan)
            return seq

        try:
            seq = await self._run(run)
        except FencedError as exc:
            self._fence(exc)
            raise
        self._seq = seq
        self._meta_pending = False
        return seq

    @property
    def key_id(self) -> str | None:
        """The id of the key this account is encrypted with (``None``: plain)."""
        return None if self._cipher is None else self._cipher.key.key_id

    async def rekey(self, key: StoreKey | None) -> None:
        """Re-seal every row of this account under ``key`` (``None``: plain), atomically.

        One SQL transaction, fenced on the lease like a commit, rewrites the rows and
        the account's encryption row: a crash leaves the old key or the new one in
        force. It runs as a writer job, so commits queued after it are sealed anew.
        """
        self._check_open()
        self._check_lease()
        cipher = None if key is None else RecordCipher(key, new_encryption(key))

        def run(conn: Any) -> None:
            with conn.transaction():
                self._check_epoch(conn)
                self._reseal_rows(conn, cipher)
            self._cipher, self._meta_pending = cipher, False
            self._creds_known = False  # slot 0 was sealed anew

        try:
            await self._run(run)
        except FencedError as exc:
            self._fence(exc)
            raise

    def _reseal_rows(self, conn: Any, new: RecordCipher | None) -> None:
        account, old = self._account, self._cipher
        creds = conn.execute(
            "SELECT slot, crc, blob FROM baileys_creds WHERE account = %s", (account,)
        ).fetchall()
        for slot, crc, blob in creds:
            where = self._where("baileys_creds", f"slot {slot}")
            row = codec.reseal(_bytes(blob), crc, creds_identity(account), where, old, new)
            conn.execute(
                "UPDATE baileys_creds SET crc = %s, blob = %s WHERE account = %s AND slot = %s",
                (*row, account, slot),
            )
        keys = conn.execute(
            "SELECT type, id, crc, value FROM baileys_keys WHERE account = %s", (account,)
        ).fetchall()
        updates = []
        for type_, key_id, crc, blob in keys:
            where = self._where("baileys_keys", f"type {type_!r}, id {key_id!r}")
            identity = key_identity(account, type_, key_id)
            row = codec.reseal(_bytes(blob), crc, identity, where, old, new)
            updates.append((*row, account, type_, key_id))
        with conn.cursor() as cur:
            if updates:
                cur.executemany(
                    "UPDATE baileys_keys SET crc = %s, value = %s"
                    " WHERE account = %s AND type = %s AND id = %s",
                    updates,
                )
        if new is None:
            conn.execute(
                "DELETE FROM baileys_store_meta WHERE name = %s", (account_meta_name(account),)
            )
        else:
            _write_encryption(conn, account, new.encryption)

    # -- the lease ------------------------------------------------------------------------

    def _check_lease(self) -> None:
        if self._fenced is None and trio.current_time() >= self._valid_until:
            self._fence(
                FencedError(
                    self._location,
                    f"lease not renewed for {self._ttl:g} s (it may be taken over now)",
                    self._epoch,
                )
            )
        if self._fenced is not None:
            raise FencedError(self._fenced.location, self._fenced.reason, self._epoch)

    def _fence(self, error: FencedError) -> None:
        if self._fenced is None:
            self._fenced = error
        self._board.drop(self._account, self._epoch)
        self.lease_lost.set()

    async def renew_lease(self) -> bool:
        """Renew this process's leases in the database now; True if ours is still held.

        One statement renews every lease the process holds there (the board's
        ``wanted`` accounts at their epochs); a renewal another backend of this process
        sent less than ``ttl / 3`` ago is reused instead, and one in flight is waited
        for, but never longer than ``ttl / 6`` (its connection may hang).
        Fences the backend (and returns False) when our lease is no longer ours.
        """
        self._check_open()
        if self._fenced is not None:
            await trio.lowlevel.checkpoint()
            return False
        board = self._board
        if board.in_flight is not None:
            with trio.move_on_after(self._ttl / 6):
                await board.in_flight.wait()  # a sibling's statement is renewing ours too
        fresh = board.sent_at is not None and (
            trio.current_time() - board.sent_at < self._ttl / 3 * 0.9
        )
        if fresh and board.sent_at is not None and self._account in board.held:
            await trio.lowlevel.checkpoint()
            return self._renewed(board.held, board.sent_at)
        sent_at = trio.current_time()
        board.in_flight = done = trio.Event()
        wanted = dict(board.wanted)
        accounts, epochs = list(wanted), list(wanted.values())
        try:
            rows = await self._writer.run(
                lambda c: c.execute(
                    "UPDATE baileys_leases SET expires_at = now() + ttl"
                    " WHERE owner = %s AND expires_at > now() AND (account, epoch) IN"
                    " (SELECT * FROM unnest(%s::text[], %s::bigint[]))"
                    " RETURNING account, epoch",
                    (self._owner, accounts, epochs),
                ).fetchall(),
                cancellable=True,
            )
            self._renewals += 1
            held = {str(account): int(epoch) for account, epoch in rows}
            if board.sent_at is None or sent_at >= board.sent_at:
                board.sent_at, board.held = sent_at, held
        finally:
            if board.in_flight is done:
                board.in_flight = None
            done.set()
        return self._renewed(held, sent_at)

    def _renewed(self, held: dict[str, int], sent_at: float) -> bool:
        if held.get(self._account) != self._epoch:
            self._fence(FencedError(self._location, "lease lost before renewal", self._epoch))
            return False
        self._valid_until = max(self._valid_until, sent_at + self._ttl)
        return True

    async def _renew_forever(self) -> None:
        """The renewal loop (a system task): every ttl/3, retrying every ttl/15 on error."""
        try:
            with self._renewal_scope:
                next_at = trio.current_time() + self._ttl / 3
                while not self.lease_lost.is_set():
                    await trio.sleep_until(next_at)
                    held: bool | None = None
                    # A renewal still unanswered when the lease runs out locally (a hung
                    # connection) is given up: the lease is lost either way.
                    with trio.move_on_at(self._valid_until):
                        try:
                            held = await self.renew_lease()
                        except (StoreError, psycopg.Error):
                            pass  # connection trouble: retried soon
                    if held is None:
                        next_at = trio.current_time() + self._ttl / 15
                        self._check_expiry_quietly()
                        continue
                    if not held:
                        return
                    next_at = trio.current_time() + self._ttl / 3
        finally:
            self._renewal_done.set()

    def _check_expiry_quietly(self) -> None:
        try:
            self._check_lease()
        except FencedError:
            pass  # recorded in self._fenced; lease_lost is set

    def _start_renewal(self) -> None:
        trio.lowlevel.spawn_system_task(
            self._renew_forever, name=f"postgres lease renewal {self._location}"
        )

    # -- lifetime ---------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop renewing, release the lease (if still ours), close the connection."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            self._renewal_scope.cancel()
            await self._renewal_done.wait()
            leave_board(self._board, self._account, self._epoch)
            # Bounded: a hung connection must not hang the close (the thread is a
            # daemon, and an unreleased lease expires by itself after the TTL).
            with trio.move_on_after(self._reconnect_timeout + _CONNECT_TIMEOUT):
                if self._fenced is None:
                    try:
                        await self._writer.run(self._release, cancellable=True)
                    except (StoreError, psycopg.Error):
                        pass  # the lease expires by itself after the TTL
                self._writer.stop()
                await trio.to_thread.run_sync(self._writer.join, abandon_on_cancel=True)

    def _release(self, conn: Any) -> None:
        conn.execute(
            "UPDATE baileys_leases SET expires_at = now(), released = true"
            " WHERE account = %s AND epoch = %s",
            (self._account, self._epoch),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{self._location} is closed")

    async def _run(self, fn: Callable[[Any], T]) -> T:
        self._check_open()
        try:
            return await self._writer.run(fn)
        except psycopg.OperationalError as exc:
            raise DurabilityError(self._location, "postgres read", exc) from exc
        except psycopg.Error as exc:
            raise StoreError(f"{self._location}: database error: {exc}") from exc


# -- helpers ----------------------------------------------------------------------------


def _size(pending: _Pending) -> int:
    size = 64 if pending.creds is None else 64 + len(pending.creds)
    for (type_, id_), value in pending.keys.items():
        size += 64 + len(type_) + len(id_) + (0 if value is None else len(value))
    return size


def read_encryption(conn: Any, account: str, where: str) -> Encryption | None:
    """What the account's encryption row says (``None``: the account is plain)."""
    row = conn.execute(
        "SELECT value FROM baileys_store_meta WHERE name = %s", (account_meta_name(account),)
    ).fetchone()
    return None if row is None else encryption_from_text(row[0], where)


def _write_encryption(conn: Any, account: str, encryption: Encryption) -> None:
    conn.execute(
        "INSERT INTO baileys_store_meta (name, value) VALUES (%s, %s)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (account_meta_name(account), encryption_to_text(encryption)),
    )


def _keying(conn: Any, account: str, where: str, key: StoreKey | None) -> AccountKeying:
    found = read_encryption(conn, account, where)
    return account_keying(where, found, key, _account_has_rows(conn, account))


def _bytes(blob: Any) -> bytes:
    return bytes(blob) if isinstance(blob, memoryview | bytearray) else blob


def _account_has_rows(conn: Any, account: str) -> bool:
    for table in ("baileys_creds", "baileys_keys"):
        sql = f"SELECT 1 FROM {table} WHERE account = %s LIMIT 1"
        if conn.execute(sql, (account,)).fetchone() is not None:
            return True
    return False


def key_identity(account: str, type: str, key_id: str) -> str:
    """What a key row's CRC covers besides its blob (shared with ``inspect``)."""
    return f"key\0{account}\0{type}\0{key_id}"


def creds_identity(account: str) -> str:
    """What a creds row's CRC covers besides its blob."""
    return f"creds\0{account}"


def _check_account(account: str) -> None:
    if not isinstance(account, str) or not account:
        raise InvalidValueError("account", f"{account!r} is not a non-empty str")
    if len(account) > _MAX_ACCOUNT_LEN or "\0" in account:
        raise InvalidValueError("account", f"longer than {_MAX_ACCOUNT_LEN} or holds NUL")


# -- locations --------------------------------------------------------------------------


def describe_dsn(dsn: str) -> str:
    """``postgresql://user@host:port/dbname?host=/socket/dir``: the DSN without its password."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise InvalidValueError("dsn", f"not a PostgreSQL connection string: {exc}") from exc
    user = str(params.pop("user", "") or "")
    host = str(params.pop("host", "") or "")
    port = str(params.pop("port", "") or "")
    dbname = str(params.pop("dbname", "") or "")
    params.pop("password", None)
    query: dict[str, str] = {k: str(v) for k, v in sorted(params.items()) if v is not None}
    netloc = ""
    if user:
        netloc = urllib.parse.quote(user, safe="") + "@"
    if host.startswith("/"):
        query = {"host": host, **query}
    else:
        netloc += host
    if port:
        netloc += f":{port}"
    text = f"postgresql://{netloc}/{urllib.parse.quote(dbname, safe='')}"
    if query:
        text += "?" + urllib.parse.urlencode(query, safe="/")
    return text


def location_of(dsn: str, account: str) -> str:
    """The location string of one account: ``<dsn without password>#account=<name>``."""
    return f"{describe_dsn(dsn)}#account={urllib.parse.quote(account, safe='@.+-_')}"


def is_postgres_location(text: object) -> bool:
    """True for a ``postgres://`` or ``postgresql://`` URI (what migrate and inspect take)."""
    return isinstance(text, str) and text.startswith(("postgres://", "postgresql://"))


def parse_location(location: str, default_account: str = "default") -> tuple[str, str]:
    """``postgresql://...#account=NAME`` -> ``(dsn, account)``; no fragment: the default."""
    dsn, _, fragment = location.partition("#")
    if not is_postgres_location(dsn):
        raise InvalidValueError("location", f"{location!r} is not a postgresql:// URI")
    account = default_account
    if fragment:
        values = urllib.parse.parse_qs(fragment, keep_blank_values=True)
        unknown = sorted(set(values) - {"account"})
        if unknown or len(values.get("account", [])) != 1:
            raise InvalidValueError("location", f"fragment {fragment!r} is not account=NAME")
        account = values["account"][0]
    return dsn, account


# -- opening ----------------------------------------------------------------------------


_KEEPALIVES = {
    # A peer that vanished (a partition, a dead server host) is noticed in about 30 s
    # instead of the OS default of hours; a DSN that sets these keeps its own values.
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


def _default_connect(dsn: str) -> Connect:
    given = psycopg.conninfo.conninfo_to_dict(dsn)
    extra: dict[str, Any] = {k: v for k, v in _KEEPALIVES.items() if k not in given}
    extra.setdefault("connect_timeout", _CONNECT_TIMEOUT)

    def connect() -> Any:
        conn = psycopg.connect(dsn, autocommit=True, **extra)
        try:
            # Acknowledged means on the server's disk, whatever the database default says.
            conn.execute("SET synchronous_commit TO on")
        except BaseException:
            conn.close()
            raise
        return conn

    return connect


async def open_postgres_backend(
    dsn: str,
    *,
    account: str = "default",
    lease_ttl: float = DEFAULT_LEASE_TTL,
    owner: str | None = None,
    reconnect_timeout: float = DEFAULT_RECONNECT_TIMEOUT,
    connect: Connect | None = None,
    migrations: Sequence[Migration] = MIGRATIONS,
    lease_epoch: int | None = None,
    encryption_key: KeySource | None = None,
) -> PostgresBackend:
    """Open one account of a PostgreSQL store, taking its lease. Since 0.2.0.

    Creates the tables in an empty database. Raises ``StoreLockedError`` naming the
    live owner when another process holds the lease, ``WrongBackendError`` or
    ``UnsupportedFormatError`` for tables that are not ours or newer, and
    ``DurabilityError`` when the server cannot be reached. ``owner`` defaults to this
    process's id (``process_owner_id()``); ``connect`` and ``migrations`` are seams
    for tests. With ``lease_epoch``, the lease ``owner`` already claimed at that epoch
    (``stores.postgres_fleet.claim``) is taken up instead of a new one taken;
    ``StoreLockedError`` when that claim is no longer ours.
    With ``encryption_key`` (since 0.2.0; ``stores.encryption``) a new
    account is encrypted and an existing one must be encrypted under that key
    (``WrongKeyError`` otherwise, also for a plain account; checked before the lease
    is taken, so a refused open changes nothing).
    """
    _check_account(account)
    key = await resolve_key(encryption_key)
    if not (isinstance(lease_ttl, int | float) and math.isfinite(lease_ttl) and lease_ttl > 0):
        raise InvalidValueError("lease_ttl", f"{lease_ttl!r} is not a positive number of seconds")
    location = location_of(dsn, account)
    owner = owner or process_owner_id()
    make = connect or _default_connect(dsn)
    sent_at = trio.current_time()
    conn, epoch, seq, keying = await trio.to_thread.run_sync(
        _open_blocking, make, location, account, owner, lease_ttl, migrations, lease_epoch, key
    )
    backend = PostgresBackend(
        conninfo=describe_dsn(dsn),
        location=location,
        account=account,
        owner=owner,
        epoch=epoch,
        ttl=lease_ttl,
        seq=seq,
        connect=make,
        reconnect_timeout=reconnect_timeout,
        valid_until=sent_at + lease_ttl,
        keying=keying,
    )
    backend._writer.start(conn)
    backend._start_renewal()
    return backend


def _open_blocking(
    connect: Connect,
    location: str,
    account: str,
    owner: str,
    ttl: float,
    migrations: Sequence[Migration],
    lease_epoch: int | None,
    key: StoreKey | None,
) -> tuple[Any, int, int, AccountKeying]:
    try:
        conn = connect()
    except psycopg.OperationalError as exc:
        raise DurabilityError(location, "connecting", exc) from exc
    try:
        prepare(conn, location, migrations)
        _keying(conn, account, location, key)  # a wrong key is refused before the lease
        if lease_epoch is None:
            epoch = take_lease(conn, location, account, owner, ttl)
        else:
            epoch = adopt_lease(conn, location, account, owner, ttl, lease_epoch)
        # Again under the lease: the account may have gained rows in between.
        keying = _keying(conn, account, location, key)
        row = conn.execute(
            "SELECT seq FROM baileys_accounts WHERE account = %s", (account,)
        ).fetchone()
        seq = 0 if row is None else int(row[0])
    except BaseException:
        conn.close()
        raise
    return conn, epoch, seq, keying


async def account_holds_data(dsn: str, account: str) -> bool:
    """True when ``account`` has creds or keys at ``dsn``; reads only, creates nothing.

    For migration's "is the source there" check: opening a backend would create the
    tables and take a lease on an account that does not exist.
    """
    location = location_of(dsn, account)

    def read() -> bool:
        try:
            conn = psycopg.connect(dsn, autocommit=True, connect_timeout=_CONNECT_TIMEOUT)
        except psycopg.OperationalError as exc:
            raise DurabilityError(location, "connecting", exc) from exc
        with conn:
            found = conn.execute("SELECT to_regclass('baileys_store_meta')").fetchone()
            if found is None or found[0] is None:
                return False
            return _account_has_rows(conn, account)

    return await trio.to_thread.run_sync(read)
