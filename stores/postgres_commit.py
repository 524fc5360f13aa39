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
(empty arrays write nothing), so psycopg prepares it once per connection; its
parameters go in binary (``%(name)b``), the arrays already encoded
(``stores.postgres_arrays``): psycopg's own list dumping, which finds each list's
element type and dumps element by element in Python, cost most of a commit's client
CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stores.postgres_arrays import ByteaArray, Int2Array, Int8Array, TextArray

__all__ = ["COMMIT_SQL", "PRE_READ_SQL", "REFUSAL_SQL", "CommitPlan", "CredsCopy", "plan"]

COMMIT_SQL = """\
WITH lease AS MATERIALIZED (
    SELECT 1 FROM baileys_leases
    WHERE account = %(account)b AND epoch = %(epoch)b AND expires_at > now()
    FOR SHARE
), bump AS (
    UPDATE baileys_accounts SET seq = seq + %(count)b
    WHERE account = %(account)b AND seq = %(prev)b AND EXISTS (SELECT FROM lease)
    RETURNING seq
), upserts AS (
    INSERT INTO baileys_keys (account, type, id, crc, value)
    SELECT %(account)b, u.t, u.i, u.c, u.v
    FROM unnest(%(types)b::text[], %(ids)b::text[], %(crcs)b::bigint[], %(values)b::bytea[])
        AS u(t, i, c, v)
    WHERE EXISTS (SELECT FROM bump)
    ON CONFLICT (account, type, id) DO UPDATE SET crc = excluded.crc, value = excluded.value
), deletes AS (
    DELETE FROM baileys_keys k
    USING unnest(%(del_types)b::text[], %(del_ids)b::text[]) AS d(t, i)
    WHERE k.account = %(account)b AND k.type = d.t AND k.id = d.i
        AND EXISTS (SELECT FROM bump)
), creds AS (
    INSERT INTO baileys_creds (account, slot, seq, crc, blob)
    SELECT %(account)b, r.s, coalesce(r.q, (SELECT seq FROM bump)), r.c, r.b
    FROM unnest(%(slots)b::smallint[], %(creds_seqs)b::bigint[], %(creds_crcs)b::bigint[],
        %(blobs)b::bytea[]) AS r(s, q, c, b)
    WHERE EXISTS (SELECT FROM bump)
    ON CONFLICT (account, slot) DO UPDATE
        SET seq = excluded.seq, crc = excluded.crc, blob = excluded.blob
), meta AS (
    INSERT INTO baileys_store_meta (name, value)
    SELECT m.n, m.v FROM unnest(%(meta_names)b::text[], %(meta_values)b::text[]) AS m(n, v)
    WHERE EXISTS (SELECT FROM bump)
    ON CONFLICT (name) DO UPDATE SET value = excluded.value
)
SELECT seq FROM bump"""

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

    params: dict[str, Any]
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
    params: dict[str, Any] = {
        "account": account,
        "epoch": epoch,
        "count": count,
        "prev": prev,
        "types": TextArray.of(types),
        "ids": TextArray.of(ids),
        "crcs": Int8Array.of(crcs),
        "values": ByteaArray.of(values),
        "del_types": TextArray.of(del_types),
        "del_ids": TextArray.of(del_ids),
        "slots": Int2Array.of(slots),
        "creds_seqs": Int8Array.of(creds_seqs),
        "creds_crcs": Int8Array.of(creds_crcs),
        "blobs": ByteaArray.of(blobs),
        "meta_names": TextArray.of([] if meta is None else [meta[0]]),
        "meta_values": TextArray.of([] if meta is None else [meta[1]]),
    }
    return CommitPlan(params=params, prev=prev, count=count, creds=new_copy)
