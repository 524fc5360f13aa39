"""One SQL statement per group commit: fence, sequence, keys and creds, all or nothing.

A commit of the PostgreSQL backend is one statement sent on an autocommit
connection, so it is its own transaction: one round trip, answered only after the
server's COMMIT (``synchronous_commit = on``) made it durable. The statement:

* ``lease`` locks the account's lease row ``FOR SHARE`` and yields it only while the
  epoch is ours and unexpired (by the server's clock). The lock orders the commit
  against a takeover exactly as a separate ``SELECT ... FOR SHARE`` did: a takeover
  that commits first leaves ``lease`` empty (the row is re-checked at its newest
  version), a commit that locks first lands before the takeover;
* ``bump`` adds the group's batch count to the account's sequence number, only under
  that lease and only when the sequence is still the one this writer last made
  durable (``prev``): a compare-and-set that makes the statement idempotent, so the
  same statement sent again after a lost answer lands once;
* keys (upserts and deletes, as arrays through ``unnest``), creds (slot 0 the new
  copy, slot 1 the copy before it) and the account's encryption row are written
  only when ``bump`` returned a row.

The statement returns the new sequence number, or no row when nothing was written
(fenced, or the sequence moved): the caller then reads why. The SQL text is fixed
(empty arrays write nothing), so the writer prepares it once per connection
(``COMMIT_NAME``, parameter types ``COMMIT_TYPES``) and sends each commit as that
prepared statement with its parameters already in binary (``CommitPlan.params``):
the scalars packed here, the arrays built in one pass (``stores.postgres_arrays``).
No psycopg adaptation runs per commit: dumping lists element by element in Python
was most of a commit's client CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from stores.postgres_arrays import ByteaArray, Int2Array, Int8Array, TextArray

_TEXT, _INT8 = 25, 20

COMMIT_NAME = b"baileys_commit"
"""The name the commit statement is prepared under, on each connection of a writer."""

__all__ = [
    "COMMIT_NAME",
    "COMMIT_SQL",
    "COMMIT_TYPES",
    "PRE_READ_SQL",
    "REFUSAL_SQL",
    "CommitPlan",
    "CredsCopy",
    "plan",
    "seq_of",
]

COMMIT_SQL = """\
WITH lease AS MATERIALIZED (
    SELECT 1 FROM baileys_leases
    WHERE account = $1 AND epoch = $2 AND expires_at > now()
    FOR SHARE
), bump AS (
    UPDATE baileys_accounts SET seq = seq + $3
    WHERE account = $1 AND seq = $4 AND EXISTS (SELECT FROM lease)
    RETURNING seq
), upserts AS (
    INSERT INTO baileys_keys (account, type, id, crc, value)
    SELECT $1, u.t, u.i, u.c, u.v
    FROM unnest($5::text[], $6::text[], $7::bigint[], $8::bytea[])
        AS u(t, i, c, v)
    WHERE EXISTS (SELECT FROM bump)
    ON CONFLICT (account, type, id) DO UPDATE SET crc = excluded.crc, value = excluded.value
), deletes AS (
    DELETE FROM baileys_keys k
    USING unnest($9::text[], $10::text[]) AS d(t, i)
    WHERE k.account = $1 AND k.type = d.t AND k.id = d.i
        AND EXISTS (SELECT FROM bump)
), creds AS (
    INSERT INTO baileys_creds (account, slot, seq, crc, blob)
    SELECT $1, r.s, coalesce(r.q, (SELECT seq FROM bump)), r.c, r.b
    FROM unnest($11::smallint[], $12::bigint[], $13::bigint[],
        $14::bytea[]) AS r(s, q, c, b)
    WHERE EXISTS (SELECT FROM bump)
    ON CONFLICT (account, slot) DO UPDATE
        SET seq = excluded.seq, crc = excluded.crc, blob = excluded.blob
), meta AS (
    INSERT INTO baileys_store_meta (name, value)
    SELECT m.n, m.v FROM unnest($15::text[], $16::text[]) AS m(n, v)
    WHERE EXISTS (SELECT FROM bump)
    ON CONFLICT (name) DO UPDATE SET value = excluded.value
)
SELECT seq FROM bump"""

COMMIT_TYPES = (
    *(_TEXT, _INT8, _INT8, _INT8),  # account, epoch, count, prev
    *(TextArray.OID, TextArray.OID, Int8Array.OID, ByteaArray.OID),  # upserts
    *(TextArray.OID, TextArray.OID),  # deletes
    *(Int2Array.OID, Int8Array.OID, Int8Array.OID, ByteaArray.OID),  # creds
    *(TextArray.OID, TextArray.OID),  # the encryption row
)
"""The parameters' type oids, ``$1`` first (all sent in binary)."""

PRE_READ_SQL = (
    "SELECT a.seq, c.seq, c.crc, c.blob FROM baileys_accounts a"
    " LEFT JOIN baileys_creds c ON c.account = a.account AND c.slot = 0"
    " WHERE a.account = %s"
)
"""What a writer must know before its first statement: the sequence and creds slot 0."""

REFUSAL_SQL = (
    "SELECT a.seq, l.epoch, l.owner, l.expires_at > now() FROM baileys_accounts a"
    " LEFT JOIN baileys_leases l USING (account) WHERE a.account = %s"
)
"""Why a statement wrote nothing: the sequence and the lease as they are now."""


@dataclass(frozen=True)
class CredsCopy:
    """A creds row as it is in slot 0: the sealed blob, its CRC and sequence number."""

    seq: int
    crc: int
    blob: bytes


@dataclass(frozen=True)
class CommitPlan:
    """The parameters of one commit statement, and what it makes durable."""

    params: tuple[bytes, ...]
    """``$1``, ``$2``... of ``COMMIT_SQL``, each in binary."""
    prev: int
    count: int
    creds: CredsCopy | None
    """The creds slot 0 holds once the statement lands (None: creds unchanged)."""

    @property
    def last(self) -> int:
        return self.prev + self.count


def plan(
    *,
    account: str,
    epoch: int,
    prev: int,
    count: int,
    keys: Mapping[tuple[str, str], tuple[int, bytes] | None],
    creds: tuple[int, bytes] | None,
    previous: CredsCopy | None,
    meta: tuple[str, str] | None,
) -> CommitPlan:
    """The statement writing ``count`` batches: sealed ``keys`` (None deletes), ``creds``.

    ``previous`` is the intact copy now in slot 0, moved to slot 1 when new creds are
    written (None: slot 1 is left as it is); ``meta`` is the account's encryption
    row ``(name, value)`` when it must be written with this commit.
    """
    types: list[str] = []
    ids: list[str] = []
    crcs: list[int] = []
    values: list[bytes] = []
    del_types: list[str] = []
    del_ids: list[str] = []
    for (type_, key_id), row in keys.items():
        if row is None:
            del_types.append(type_)
            del_ids.append(key_id)
        else:
            types.append(type_)
            ids.append(key_id)
            crcs.append(row[0])
            values.append(row[1])
    slots: list[int] = []
    creds_seqs: list[int | None] = []
    creds_crcs: list[int] = []
    blobs: list[bytes] = []
    new_copy = None
    if creds is not None:
        new_copy = CredsCopy(prev + count, *creds)
        slots.append(0)
        creds_seqs.append(None)  # the sequence number the statement makes
        creds_crcs.append(creds[0])
        blobs.append(creds[1])
        if previous is not None:
            slots.append(1)
            creds_seqs.append(previous.seq)
            creds_crcs.append(previous.crc)
            blobs.append(previous.blob)
    params = (
        account.encode(),
        _int8(epoch),
        _int8(count),
        _int8(prev),
        TextArray.of(types).data,
        TextArray.of(ids).data,
        Int8Array.of(crcs).data,
        ByteaArray.of(values).data,
        TextArray.of(del_types).data,
        TextArray.of(del_ids).data,
        Int2Array.of(slots).data,
        Int8Array.of(creds_seqs).data,
        Int8Array.of(creds_crcs).data,
        ByteaArray.of(blobs).data,
        TextArray.of([] if meta is None else [meta[0]]).data,
        TextArray.of([] if meta is None else [meta[1]]).data,
    )
    return CommitPlan(params=params, prev=prev, count=count, creds=new_copy)


def _int8(value: int) -> bytes:
    return value.to_bytes(8, "big", signed=True)


def seq_of(value: bytes | None) -> int | None:
    """The statement's answer in binary: the new sequence number (``None``: no row)."""
    return None if value is None else int.from_bytes(value, "big", signed=True)
