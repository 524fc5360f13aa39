"""The SQLite backend: schema, accounts in one file, locks, integrity, durability."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

import stores.sqlite as sqlite_backend
from stores.creds import AuthCreds, init_auth_creds
from stores.errors import (
    CorruptStateError,
    DurabilityError,
    InvalidValueError,
    StoreClosedError,
    StoreLockedError,
    StoreReadOnlyError,
    UnsupportedFormatError,
    WrongBackendError,
)
from stores.sqlite import SqliteBackend, open_sqlite_backend
from stores.sqlite_schema import MIGRATIONS, SCHEMA_VERSION, Migration
from stores.types import Batch, Persistence


def _session(n: int) -> bytes:
    return bytes([n % 256]) * 1024


def _raw(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(db, isolation_level=None)


async def test_implements_persistence(tmp_path: Path) -> None:
    """The backend satisfies the Persistence protocol and names itself "sqlite"."""
    async with await open_sqlite_backend(tmp_path / "auth.db") as backend:
        assert isinstance(backend, Persistence)
        assert backend.backend_name == "sqlite"
        assert backend.location == str(tmp_path / "auth.db")


async def test_absent_file_is_a_new_device(tmp_path: Path) -> None:
    """An absent database opens empty: no creds, no keys."""
    async with await open_sqlite_backend(tmp_path / "auth.db") as backend:
        assert await backend.read_creds() is None
        assert await backend.read_keys("session", ["a"]) == {}
        snap = await backend.snapshot()
        assert snap.creds is None and snap.keys == {}


async def test_schema_version_and_wal(tmp_path: Path) -> None:
    """A new file gets the current schema version, WAL journal and a backend mark."""
    db = tmp_path / "auth.db"
    backend = await open_sqlite_backend(db)
    await backend.aclose()
    conn = _raw(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
    assert {"store_meta", "accounts", "creds", "keys"} <= tables
    conn.close()


async def test_commit_and_reopen_keeps_creds_and_keys(tmp_path: Path) -> None:
    """Committed creds and keys are there, equal, after closing and reopening."""
    db = tmp_path / "auth.db"
    creds = init_auth_creds()
    value: dict[str, Any] = {"private": b"\x01" * 32, "public": b"\x02" * 32}
    async with await open_sqlite_backend(db) as backend:
        seq = await backend.commit(
            Batch(keys={"pre-key": {"1": value}, "session": {"a.0": _session(1)}}, creds=creds)
        )
        assert seq == 1
    async with await open_sqlite_backend(db) as backend:
        got = await backend.read_creds()
        assert got is not None and got.to_plain() == creds.to_plain()
        assert await backend.read_keys("pre-key", ["1", "2"]) == {"1": value}
        assert await backend.read_keys("session", ["a.0"]) == {"a.0": _session(1)}
        assert backend.statistics().seq == 1


async def test_none_deletes_and_missing_delete_is_noop(tmp_path: Path) -> None:
    """None deletes an id; deleting an absent id changes nothing."""
    async with await open_sqlite_backend(tmp_path / "auth.db") as backend:
        await backend.commit(Batch(keys={"pre-key": {"1": b"x", "2": b"y"}}))
        await backend.commit(Batch(keys={"pre-key": {"1": None, "99": None}}))
        assert await backend.read_keys("pre-key", ["1", "2", "99"]) == {"2": b"y"}


async def test_sequence_numbers_increase(tmp_path: Path) -> None:
    """Every batch gets the next durable sequence number, also after a reopen."""
    db = tmp_path / "auth.db"
    async with await open_sqlite_backend(db) as backend:
        seqs = [await backend.commit(Batch(keys={"session": {str(i): b"v"}})) for i in range(3)]
        assert seqs == [1, 2, 3]
    async with await open_sqlite_backend(db) as backend:
        assert await backend.commit(Batch(keys={"session": {"x": b"v"}})) == 4


async def test_the_account_row_holds_the_last_acknowledged_seq(tmp_path: Path) -> None:
    """The seq each commit returns is the one written with it: one by one, grouped, after
    a refused batch (which wrote nothing), after an imported snapshot, after a reopen."""
    db = tmp_path / "auth.db"

    def stored_seq(account: str) -> int:
        conn = _raw(db)
        try:
            row = conn.execute("SELECT seq FROM accounts WHERE account = ?", (account,)).fetchone()
        finally:
            conn.close()
        return int(row[0])

    async with await open_sqlite_backend(db) as backend:
        assert await backend.commit(Batch(keys={"session": {"a": b"1"}})) == 1
        seqs: list[int] = []

        async def one(i: int) -> None:
            seqs.append(await backend.commit(Batch(keys={"session": {str(i): b"v"}})))

        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(one, i)
        assert sorted(seqs) == list(range(2, 10))
        assert stored_seq("default") == backend.statistics().seq == 9
        with pytest.raises(InvalidValueError):
            await backend.commit(Batch(keys={"session": {"bad": {1: b"x"}}}))
        assert await backend.commit(Batch(keys={"session": {"b": b"2"}})) == 10
        assert stored_seq("default") == 10
        snapshot = await backend.snapshot()
    async with await open_sqlite_backend(db, account="copy") as copy:
        assert await copy.import_snapshot(snapshot, lambda _: None) == 1
        assert await copy.commit(Batch(keys={"session": {"c": b"3"}})) == 2
        assert stored_seq("copy") == 2
    async with await open_sqlite_backend(db) as backend:
        assert await backend.commit(Batch(keys={"session": {"d": b"4"}})) == 11


async def test_concurrent_commits_are_grouped(tmp_path: Path) -> None:
    """32 concurrent commits all land, in fewer SQLite transactions than batches."""
    async with await open_sqlite_backend(tmp_path / "auth.db") as backend:
        seqs: list[int] = []

        async def one(i: int) -> None:
            seqs.append(await backend.commit(Batch(keys={"session": {str(i): _session(i)}})))

        async with trio.open_nursery() as nursery:
            for i in range(32):
                nursery.start_soon(one, i)
        assert sorted(seqs) == list(range(1, 33))
        stats = backend.statistics()
        assert stats.batches == 32
        assert stats.transactions < 32
        got = await backend.read_keys("session", [str(i) for i in range(32)])
        assert got == {str(i): _session(i) for i in range(32)}


async def test_creds_burst_writes_only_newest_per_group(tmp_path: Path) -> None:
    """A burst of concurrent creds commits writes fewer creds rows; the newest wins."""
    async with await open_sqlite_backend(tmp_path / "auth.db") as backend:
        base = init_auth_creds()
        by_seq: dict[int, int] = {}

        async def one(i: int) -> None:
            creds = base.copy()
            creds.next_pre_key_id = i
            by_seq[await backend.commit(Batch(creds=creds))] = i

        async with trio.open_nursery() as nursery:
            for i in range(1, 51):
                nursery.start_soon(one, i)
        stats = backend.statistics()
        assert stats.creds_writes == stats.transactions < 50
        newest = await backend.read_creds()
        assert newest is not None and newest.next_pre_key_id == by_seq[max(by_seq)]


async def test_two_accounts_in_one_file_are_isolated(tmp_path: Path) -> None:
    """Two accounts share the file but never see each other's creds or keys."""
    db = tmp_path / "auth.db"
    a_creds = init_auth_creds()
    async with (
        await open_sqlite_backend(db, account="alice") as a,
        await open_sqlite_backend(db, account="bob") as b,
    ):
        await a.commit(Batch(keys={"session": {"s": b"alice"}}, creds=a_creds))
        await b.commit(Batch(keys={"session": {"s": b"bob"}, "pre-key": {"1": b"k"}}))
        assert await a.read_keys("session", ["s"]) == {"s": b"alice"}
        assert await b.read_keys("session", ["s"]) == {"s": b"bob"}
        assert await a.read_keys("pre-key", ["1"]) == {}
        assert await b.read_creds() is None
        await b.commit(Batch(keys={"session": {"s": None}}))
        assert await a.read_keys("session", ["s"]) == {"s": b"alice"}
        snap = await a.snapshot()
        assert snap.keys == {"session": {"s": b"alice"}}
        assert snap.creds is not None and snap.creds.to_plain() == a_creds.to_plain()


async def test_second_owner_of_an_account_is_refused(tmp_path: Path) -> None:
    """A second open of the same account is refused at once; another account is not."""
    db = tmp_path / "auth.db"
    async with await open_sqlite_backend(db, account="alice"):
        with pytest.raises(StoreLockedError) as info:
            await open_sqlite_backend(db, account="alice")
        assert "alice" in info.value.location
        assert f"pid {os.getpid()}" in info.value.owner
        async with await open_sqlite_backend(db, account="bob"):
            pass
    # Released on close: the account opens again.
    async with await open_sqlite_backend(db, account="alice"):
        pass
    assert (tmp_path / "auth.db.alice.lock").exists()


async def test_file_modes_are_private(tmp_path: Path) -> None:
    """The database and lock files are 0600; a parent directory we create is 0700."""
    db = tmp_path / "new" / "dir" / "auth.db"
    async with await open_sqlite_backend(db) as backend:
        await backend.commit(Batch(keys={"session": {"a": b"v"}}))
        for name in ("auth.db", "auth.db-wal", "auth.db.default.lock"):
            mode = stat.S_IMODE((db.parent / name).stat().st_mode)
            assert mode == 0o600, (name, oct(mode))
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700


async def test_not_a_sqlite_file_is_wrong_backend(tmp_path: Path) -> None:
    """A file that is not SQLite is refused, left as it was, with WrongBackendError."""
    db = tmp_path / "auth.db"
    db.write_bytes(b'{"noiseKey": {}}')
    with pytest.raises(WrongBackendError) as info:
        await open_sqlite_backend(db)
    assert info.value.location == str(db)
    assert db.read_bytes() == b'{"noiseKey": {}}'


async def test_a_directory_is_wrong_backend(tmp_path: Path) -> None:
    """A Baileys directory at the database path is refused with WrongBackendError."""
    folder = tmp_path / "auth"
    folder.mkdir()
    (folder / "creds.json").write_text("{}")
    with pytest.raises(WrongBackendError, match="Baileys multi-file"):
        await open_sqlite_backend(folder)


async def test_another_applications_database_is_wrong_backend(tmp_path: Path) -> None:
    """A SQLite file of another application is refused and not modified."""
    db = tmp_path / "other.db"
    conn = _raw(db)
    conn.execute("CREATE TABLE whatsmeow_device (jid TEXT)")
    conn.close()
    before = db.read_bytes()
    with pytest.raises(WrongBackendError, match="whatsmeow_device"):
        await open_sqlite_backend(db)
    assert db.read_bytes() == before


async def test_empty_file_is_a_new_device(tmp_path: Path) -> None:
    """A zero-byte file counts as absent: it becomes a fresh database."""
    db = tmp_path / "auth.db"
    db.touch()
    async with await open_sqlite_backend(db) as backend:
        assert await backend.read_creds() is None


async def test_newer_schema_is_unsupported(tmp_path: Path) -> None:
    """A database from a newer build (higher schema version) raises UnsupportedFormatError."""
    db = tmp_path / "auth.db"
    await (await open_sqlite_backend(db)).aclose()
    conn = _raw(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(UnsupportedFormatError) as info:
        await open_sqlite_backend(db)
    assert info.value.version == SCHEMA_VERSION + 1


async def test_forward_migration_applies_and_keeps_data(tmp_path: Path) -> None:
    """Opening with a newer migration list upgrades the schema and keeps every row."""
    db = tmp_path / "auth.db"
    async with await open_sqlite_backend(db) as backend:
        await backend.commit(Batch(keys={"session": {"a": b"v"}}))
    upgraded = (
        *MIGRATIONS,
        Migration(SCHEMA_VERSION + 1, ("CREATE TABLE extra (x INTEGER)",)),
    )
    async with await open_sqlite_backend(db, migrations=upgraded) as backend:
        assert await backend.read_keys("session", ["a"]) == {"a": b"v"}
    conn = _raw(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    conn.close()


async def test_failing_migration_rolls_back_entirely(tmp_path: Path) -> None:
    """A migration that fails halfway leaves the old schema version and tables intact."""
    db = tmp_path / "auth.db"
    await (await open_sqlite_backend(db)).aclose()
    broken = (
        *MIGRATIONS,
        Migration(SCHEMA_VERSION + 1, ("CREATE TABLE extra (x)", "THIS IS NOT SQL")),
    )
    with pytest.raises(CorruptStateError):
        await open_sqlite_backend(db, migrations=broken)
    conn = _raw(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema")}
    assert "extra" not in names
    conn.close()


async def test_flipped_key_blob_is_corrupt_state_naming_the_row(tmp_path: Path) -> None:
    """A bit flip in a stored key value raises CorruptStateError naming table and row."""
    db = tmp_path / "auth.db"
    async with await open_sqlite_backend(db) as backend:
        await backend.commit(Batch(keys={"session": {"peer.0": _session(7)}}))
    conn = _raw(db)
    blob = bytearray(conn.execute("SELECT value FROM keys").fetchone()[0])
    blob[100] ^= 0x01
    conn.execute("UPDATE keys SET value = ?", (bytes(blob),))
    conn.close()
    async with await open_sqlite_backend(db) as backend:
        with pytest.raises(CorruptStateError) as info:
            await backend.read_keys("session", ["peer.0"])
        assert "table keys" in info.value.location and "peer.0" in info.value.location
        with pytest.raises(CorruptStateError):
            await backend.snapshot()


async def test_corrupt_newest_creds_leave_previous_for_recovery(tmp_path: Path) -> None:
    """Damaged newest creds raise CorruptStateError; the previous copy is still readable."""
    db = tmp_path / "auth.db"
    first, second = init_auth_creds(), init_auth_creds()
    async with await open_sqlite_backend(db) as backend:
        await backend.commit(Batch(creds=first))
        await backend.commit(Batch(creds=second))
    conn = _raw(db)
    conn.execute("UPDATE creds SET blob = x'a0' WHERE slot = 0")
    conn.close()
    async with await open_sqlite_backend(db) as backend:
        with pytest.raises(CorruptStateError) as info:
            await backend.read_creds()
        assert "table creds" in info.value.location
        previous = await backend.read_previous_creds()
        assert previous is not None and previous.to_plain() == first.to_plain()
        # Writing new creds drops the damaged copy instead of keeping it as "previous".
        await backend.commit(Batch(creds=second))
        again = await backend.read_previous_creds()
        assert again is not None and again.to_plain() == first.to_plain()


async def test_undecodable_blob_with_valid_crc_is_corrupt(tmp_path: Path) -> None:
    """A blob that passes the CRC but is not CBOR still raises CorruptStateError."""
    from stores.sqlite_codec import row_crc

    db = tmp_path / "auth.db"
    async with await open_sqlite_backend(db) as backend:
        await backend.commit(Batch(keys={"pre-key": {"1": b"v"}}))
    conn = _raw(db)
    bad = b"\xff\xff"
    crc = row_crc("key\0default\0pre-key\x001", bad)
    conn.execute("UPDATE keys SET value = ?, crc = ?", (bad, crc))
    conn.close()
    async with await open_sqlite_backend(db) as backend:
        with pytest.raises(CorruptStateError, match="CBOR"):
            await backend.read_keys("pre-key", ["1"])


async def test_every_key_row_is_checksummed_over_its_own_identity(tmp_path: Path) -> None:
    """Each key row's CRC covers its account, type and id before its blob, for rows of
    several types and accounts written in one commit and in later ones."""
    from stores.sqlite_codec import row_crc

    db = tmp_path / "auth.db"
    for account in ("alice", "bob"):
        async with await open_sqlite_backend(db, account=account) as backend:
            await backend.commit(
                Batch(keys={"session": {"s1": b"a", "s22": b"b"}, "pre-key": {"7": b"c"}})
            )
            await backend.commit(Batch(keys={"session": {"s1": b"d", "s3": b"e"}}))
    conn = _raw(db)
    rows = conn.execute("SELECT account, type, id, crc, value FROM keys").fetchall()
    conn.close()
    assert len(rows) == 8
    for account, type_, key_id, crc, blob in rows:
        assert crc == row_crc(f"key\0{account}\0{type_}\0{key_id}", blob), (account, key_id)


async def test_a_commit_of_many_keys_lands_whole_across_upsert_statements(
    tmp_path: Path,
) -> None:
    """A commit with more keys than one upsert statement takes (new keys, replaced keys
    and deletes mixed) lands whole, and reads back the same after a reopen."""
    db = tmp_path / "auth.db"
    async with await open_sqlite_backend(db) as backend:
        await backend.commit(Batch(keys={"session": {str(i): _session(i) for i in range(30)}}))
        writes: dict[str, bytes | None] = {str(i): _session(i + 100) for i in range(20, 57)}
        writes.update({str(i): None for i in range(5)})
        seq = await backend.commit(Batch(keys={"session": writes, "pre-key": {"1": b"p"}}))
        assert seq == 2
    want = {str(i): _session(i) for i in range(5, 20)}
    want.update({str(i): _session(i + 100) for i in range(20, 57)})
    async with await open_sqlite_backend(db) as backend:
        got = await backend.read_keys("session", [str(i) for i in range(60)])
        assert got == want
        assert await backend.read_keys("pre-key", ["1"]) == {"1": b"p"}
        assert backend.statistics().seq == 2


async def test_damaged_database_pages_are_corrupt_state(tmp_path: Path) -> None:
    """Garbage over the database's pages (header intact) raises CorruptStateError at open."""
    db = tmp_path / "auth.db"
    async with await open_sqlite_backend(db) as backend:
        await backend.commit(Batch(keys={"session": {str(i): _session(i) for i in range(50)}}))
    data = bytearray(db.read_bytes())
    assert len(data) > 8192
    data[4096:8192] = b"\xa5" * 4096
    db.write_bytes(bytes(data))
    with pytest.raises(CorruptStateError) as info:
        await open_sqlite_backend(db)
    assert info.value.location == str(db)


async def test_invalid_values_are_refused_before_writing(tmp_path: Path) -> None:
    """Non-plain values, empty ids, unknown types raise InvalidValueError; nothing is written."""
    async with await open_sqlite_backend(tmp_path / "auth.db") as backend:
        with pytest.raises(InvalidValueError):
            await backend.commit(Batch(keys={"session": {"a": {1: b"x"}}}))
        with pytest.raises(InvalidValueError):
            await backend.commit(Batch(keys={"session": {"": b"x"}}))
        with pytest.raises(InvalidValueError):
            await backend.commit(Batch(keys={"session": {"a": {3, 4}}}))
        with pytest.raises(InvalidValueError, match="no-such-type"):
            await backend.commit(Batch(keys={"no-such-type": {"a": b"x"}}))
        assert (await backend.snapshot()).keys == {}
        assert backend.statistics().seq == 0


async def test_invalid_account_is_refused(tmp_path: Path) -> None:
    """An empty account name is an InvalidValueError, before any file is made."""
    with pytest.raises(InvalidValueError):
        await open_sqlite_backend(tmp_path / "auth.db", account="")
    assert not (tmp_path / "auth.db").exists()


class _FailingCommit(sqlite3.Connection):
    """A connection whose COMMIT fails like a full disk once ``armed`` is set."""

    armed = False

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if type(self).armed and sql == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return super().execute(sql, *args)


async def test_io_failure_raises_durability_error_then_read_only(tmp_path: Path) -> None:
    """A failing commit raises DurabilityError, keeps earlier data, and refuses writes after."""
    db = tmp_path / "auth.db"
    _FailingCommit.armed = False
    backend = await open_sqlite_backend(db, connection_factory=_FailingCommit)
    try:
        await backend.commit(Batch(keys={"session": {"kept": b"1"}}))
        _FailingCommit.armed = True
        with pytest.raises(DurabilityError) as info:
            await backend.commit(Batch(keys={"session": {"lost": b"2"}}))
        assert "full" in str(info.value)
        assert backend.read_only
        _FailingCommit.armed = False
        with pytest.raises(StoreReadOnlyError):
            await backend.commit(Batch(keys={"session": {"later": b"3"}}))
        # Reads still work and show only the acknowledged commit.
        assert await backend.read_keys("session", ["kept", "lost", "later"]) == {"kept": b"1"}
    finally:
        _FailingCommit.armed = False
        await backend.aclose()
    async with await open_sqlite_backend(db) as reopened:
        assert await reopened.read_keys("session", ["kept", "lost"]) == {"kept": b"1"}


async def test_use_after_close_is_refused(tmp_path: Path) -> None:
    """Reads and commits after aclose raise StoreClosedError; aclose is idempotent."""
    backend = await open_sqlite_backend(tmp_path / "auth.db")
    await backend.aclose()
    await backend.aclose()
    with pytest.raises(StoreClosedError):
        await backend.read_creds()
    with pytest.raises(StoreClosedError):
        await backend.commit(Batch(keys={"session": {"a": b"v"}}))


async def test_repr_shows_no_secrets(tmp_path: Path) -> None:
    """The backend's repr names the file and account only."""
    async with await open_sqlite_backend(tmp_path / "auth.db", account="bot1") as backend:
        assert repr(backend) == f"SqliteBackend({str(tmp_path / 'auth.db')!r}, account='bot1')"


async def test_creds_round_trip_every_field(tmp_path: Path) -> None:
    """Creds with pairing fields set (me, account, routing info) round-trip exactly."""
    creds = init_auth_creds()
    creds.me = {"id": "123:4@s.whatsapp.net", "name": "bot", "lid": "9:4@lid"}
    creds.routing_info = b"\x08\x01"
    creds.registered = True
    creds.signal_identities = [
        {"identifier": {"name": "x", "deviceId": 0}, "identifierKey": b"\x05" * 33}
    ]
    db = tmp_path / "auth.db"
    async with await open_sqlite_backend(db) as backend:
        await backend.commit(Batch(creds=creds))
    async with await open_sqlite_backend(db) as backend:
        got = await backend.read_creds()
        assert isinstance(got, AuthCreds) and got.to_plain() == creds.to_plain()


async def test_creds_that_cannot_be_read_back_are_refused(tmp_path: Path) -> None:
    """Invalid creds (a 1-byte identity key) raise InvalidValueError; the old creds stay."""
    good = init_auth_creds()
    bad = good.copy()
    bad.signal_identities = [{"identifier": {"name": "x", "deviceId": 0}, "identifierKey": b"k"}]
    async with await open_sqlite_backend(tmp_path / "auth.db") as backend:
        await backend.commit(Batch(creds=good))
        with pytest.raises(InvalidValueError, match="identifierKey"):
            await backend.commit(Batch(creds=bad))
        got = await backend.read_creds()
        assert got is not None and got.to_plain() == good.to_plain()


def test_backend_class_is_exported() -> None:
    """The public names exist."""
    import stores.sqlite as mod

    assert set(mod.__all__) == {"SqliteBackend", "SqliteStatistics", "open_sqlite_backend"}
    assert SqliteBackend.backend_name == "sqlite"


async def test_two_accounts_commit_concurrently_in_one_file(tmp_path: Path) -> None:
    """Two accounts committing at the same time through two connections both land fully."""
    db = tmp_path / "auth.db"
    async with (
        await open_sqlite_backend(db, account="a") as a,
        await open_sqlite_backend(db, account="b") as b,
    ):

        async def burst(backend: SqliteBackend, tag: bytes) -> None:
            async with trio.open_nursery() as nursery:
                for i in range(32):
                    batch = Batch(keys={"session": {str(i): tag * 1024}})
                    nursery.start_soon(backend.commit, batch)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(burst, a, b"a")
            nursery.start_soon(burst, b, b"b")
        ids = [str(i) for i in range(32)]
        assert await a.read_keys("session", ids) == {i: b"a" * 1024 for i in ids}
        assert await b.read_keys("session", ids) == {i: b"b" * 1024 for i in ids}
        assert a.statistics().seq == b.statistics().seq == 32


_CRASH_CHILD = """
import sys, trio
from stores.creds import init_auth_creds
from stores.sqlite import open_sqlite_backend
from stores.types import Batch

def batch(i, creds):
    keys = {f"k{i}-{j}": bytes([i % 256]) * 1024 for j in range(1 + i % 8)}
    creds.next_pre_key_id = i
    return Batch(keys={"session": keys, "pre-key": {"last": {"n": i}}}, creds=creds)

async def main():
    backend = await open_sqlite_backend(sys.argv[1])
    creds = await backend.read_creds() or init_auth_creds()
    found = await backend.read_keys("pre-key", ["last"])
    i = found["last"]["n"] + 1 if found else 1
    while True:
        await backend.commit(batch(i, creds))
        print(i, flush=True)
        i += 1

trio.run(main)
"""


def _run_child_until(db: Path, acks: int) -> int:
    """Start a committing child, SIGKILL it after ``acks`` acknowledged commits."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASH_CHILD, str(db)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    last = 0
    try:
        assert proc.stdout is not None
        for _ in range(acks):
            line = proc.stdout.readline()
            if not line:
                break
            last = int(line)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert last > 0, "the child acknowledged nothing"
    return last


async def test_sigkill_loses_no_acknowledged_commit(tmp_path: Path) -> None:
    """After SIGKILLs mid-commit, every acknowledged batch is whole and none is half there."""
    import random

    db = tmp_path / "auth.db"
    rng = random.Random(7)
    for _ in range(8):
        acked = await trio.to_thread.run_sync(_run_child_until, db, rng.randint(1, 40))
        async with await open_sqlite_backend(db) as backend:
            last = (await backend.read_keys("pre-key", ["last"]))["last"]["n"]
            assert last >= acked
            creds = await backend.read_creds()
            assert creds is not None and creds.next_pre_key_id == last
            for i in (last, last - 1, acked):
                if i < 1:
                    continue
                ids = [f"k{i}-{j}" for j in range(1 + i % 8)]
                assert await backend.read_keys("session", ids) == {
                    k: bytes([i % 256]) * 1024 for k in ids
                }
            after = [f"k{last + 1}-{j}" for j in range(8)]
            assert await backend.read_keys("session", after) == {}


@pytest.mark.parametrize("keep", [16, 100, 4096, 6000])
async def test_truncated_database_is_corrupt_not_new(tmp_path: Path, keep: int) -> None:
    """A database cut short raises CorruptStateError and is never read as a new device."""
    db = tmp_path / "auth.db"
    async with await open_sqlite_backend(db) as backend:
        await backend.commit(
            Batch(
                keys={"session": {str(i): _session(i) for i in range(20)}}, creds=init_auth_creds()
            )
        )
    data = db.read_bytes()
    assert len(data) > keep
    db.write_bytes(data[:keep])
    with pytest.raises(CorruptStateError) as info:
        async with await open_sqlite_backend(db) as backend:
            await backend.snapshot()
    assert str(db) in info.value.location
    assert db.read_bytes() == data[:keep]


class _FailingRead(sqlite3.Connection):
    """A connection whose key reads fail like a dying disk once ``armed`` is set."""

    armed = False

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if type(self).armed and sql.startswith("SELECT id, crc, value FROM keys"):
            exc = sqlite3.OperationalError("disk I/O error")
            exc.sqlite_errorname = "SQLITE_IOERR_READ"
            raise exc
        return super().execute(sql, *args)


async def test_read_io_error_is_durability_error_then_read_only(tmp_path: Path) -> None:
    """An IO error while reading raises DurabilityError and stops further writes."""
    _FailingRead.armed = False
    async with await open_sqlite_backend(
        tmp_path / "auth.db", connection_factory=_FailingRead
    ) as backend:
        await backend.commit(Batch(keys={"session": {"a": b"v"}}))
        _FailingRead.armed = True
        try:
            with pytest.raises(DurabilityError):
                await backend.read_keys("session", ["a"])
        finally:
            _FailingRead.armed = False
        assert backend.read_only
        with pytest.raises(StoreReadOnlyError):
            await backend.commit(Batch(keys={"session": {"b": b"v"}}))


async def test_bursts_beyond_a_thousand_batches_share_one_transaction(tmp_path: Path) -> None:
    """3,000 small key commits, then 3,000 creds commits, queued at once: two SQLite
    transactions each (the first caller's, then everyone queued behind it)."""
    async with await open_sqlite_backend(tmp_path / "auth.db") as backend:
        base = init_auth_creds()

        async def key(i: int) -> None:
            await backend.commit(Batch(keys={"session": {f"s{i}": b"v"}}))

        async def creds(i: int) -> None:
            update = base.copy()
            update.next_pre_key_id = i
            await backend.commit(Batch(creds=update))

        async with trio.open_nursery() as nursery:
            for i in range(3000):
                nursery.start_soon(key, i)
        assert backend.statistics().transactions == 2
        async with trio.open_nursery() as nursery:
            for i in range(3000):
                nursery.start_soon(creds, i)
        stats = backend.statistics()
        assert stats.transactions == 4 and stats.creds_writes == 2 and stats.batches == 6000
        assert len(await backend.read_keys("session", [f"s{i}" for i in range(3000)])) == 3000


class _NotingConnection(sqlite3.Connection):
    """Notes each statement and whether Trio's (the main) thread ran it."""

    statements: list[tuple[str, bool]] = []

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        here = threading.current_thread() is threading.main_thread()
        type(self).statements.append((sql, here))
        return super().execute(sql, *args)


async def test_checkpoints_keep_the_wal_bounded_and_never_run_on_trios_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backend checkpoints every CHECKPOINT_PAGES (estimated) on the writer thread;
    the ordinary commits in between may run on Trio's thread, never a checkpoint."""
    monkeypatch.setattr(sqlite_backend, "CHECKPOINT_PAGES", 40)
    _NotingConnection.statements = []
    db = tmp_path / "auth.db"
    value = bytes(range(256)) * 4
    # A bound no write reaches here: where commits run must not hang on the disk's speed.
    async with await open_sqlite_backend(
        db, connection_factory=_NotingConnection, inline_write_below=60.0
    ) as backend:
        for n in range(200):
            keys = {f"{n}-{k}": value for k in range(4)}
            await backend.commit(Batch(keys={"session": keys}))
        wal = db.with_name(db.name + "-wal").stat().st_size
        assert len(await backend.read_keys("session", ["0-0", "199-3"])) == 2
    statements = _NotingConnection.statements
    checkpoints = [here for sql, here in statements if sql.startswith("PRAGMA wal_checkpoint")]
    commits_here = [here for sql, here in statements if sql == "COMMIT"]
    assert len(checkpoints) >= 10 and not any(checkpoints)
    assert sum(commits_here) >= 150
    assert wal < 1 << 20, f"the WAL grew to {wal} bytes: 200 commits without checkpoints"
    assert any(sql == "PRAGMA wal_autocheckpoint = 0" for sql, _ in statements)


async def test_a_negative_inline_write_bound_is_refused_before_anything_is_made(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="inline_write_below"):
        await open_sqlite_backend(tmp_path / "auth.db", inline_write_below=-1.0)
    assert not (tmp_path / "auth.db").exists()


class _FailingCheckpoint(sqlite3.Connection):
    """A connection whose WAL checkpoint fails like a broken disk once ``armed`` is set."""

    armed = False

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if type(self).armed and sql.startswith("PRAGMA wal_checkpoint"):
            raise sqlite3.OperationalError("disk I/O error")
        return super().execute(sql, *args)


async def test_a_failed_checkpoint_acknowledges_its_durable_commit_and_fails_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit before the checkpoint is durable and acknowledged; the next commit
    gets DurabilityError without writing anything, then the backend is read-only."""
    monkeypatch.setattr(sqlite_backend, "CHECKPOINT_PAGES", 1)  # every commit checkpoints
    db = tmp_path / "auth.db"
    _FailingCheckpoint.armed = False
    backend = await open_sqlite_backend(db, connection_factory=_FailingCheckpoint)
    try:
        await backend.commit(Batch(keys={"session": {"a": b"1"}}))
        _FailingCheckpoint.armed = True
        seq = await backend.commit(Batch(keys={"session": {"b": b"2"}}))
        assert seq == 2
        with pytest.raises(DurabilityError, match="checkpoint"):
            await backend.commit(Batch(keys={"session": {"c": b"3"}}))
        with pytest.raises(StoreReadOnlyError):
            await backend.commit(Batch(keys={"session": {"d": b"4"}}))
    finally:
        _FailingCheckpoint.armed = False
        await backend.aclose()
    async with await open_sqlite_backend(db) as reopened:
        got = await reopened.read_keys("session", ["a", "b", "c", "d"])
        assert got == {"a": b"1", "b": b"2"}
        assert reopened.statistics().seq == 2
