"""The PostgreSQL backend: schema and versions, accounts, checksums, connection loss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import trio

from stores.auth import use_postgres_auth_state
from stores.errors import (
    CorruptStateError,
    DurabilityError,
    UnsupportedFormatError,
    WrongBackendError,
)
from stores.postgres import (
    PostgresBackend,
    describe_dsn,
    location_of,
    open_postgres_backend,
    parse_location,
)
from stores.postgres_commit import COMMIT_NAME
from stores.postgres_schema import BACKEND_MARK, MIGRATIONS, SCHEMA_VERSION, Migration
from stores.types import Batch, Persistence
from tests.stores.contract import make_creds
from tests.stores.postgres_server import (  # noqa: F401 (fixtures, used by name)
    PostgresServer,
    postgres_dsn_fixture,
    postgres_server_fixture,
)
from tests.stores.postgres_server import run_sql as _sql


async def test_implements_persistence_and_names_its_location(postgres_dsn: str) -> None:
    """The backend is a Persistence named "postgres"; its location is the DSN and account."""
    async with await open_postgres_backend(postgres_dsn, account="alice") as backend:
        assert isinstance(backend, Persistence)
        assert backend.backend_name == "postgres"
        assert backend.location == f"{describe_dsn(postgres_dsn)}#account=alice"
        assert parse_location(backend.location) == (describe_dsn(postgres_dsn), "alice")


def test_location_never_shows_the_password() -> None:
    """A DSN's password is left out of the location; the account survives quoting."""
    location = location_of("postgresql://bot:s3cret@db.example:5433/auth", "a b/c")
    assert "s3cret" not in location
    assert location == "postgresql://bot@db.example:5433/auth#account=a%20b%2Fc"
    assert parse_location(location) == ("postgresql://bot@db.example:5433/auth", "a b/c")
    assert parse_location("postgres://h/db") == ("postgres://h/db", "default")


async def test_new_database_gets_schema_version_and_mark(postgres_dsn: str) -> None:
    """An empty database gets the baileys_* tables, the backend mark and the schema version."""
    async with await open_postgres_backend(postgres_dsn):
        pass
    meta = dict(_sql(postgres_dsn, "SELECT name, value FROM baileys_store_meta"))
    assert meta == {"backend": BACKEND_MARK, "schema_version": str(SCHEMA_VERSION)}


async def test_newer_schema_is_refused(postgres_dsn: str) -> None:
    """A schema version newer than this build knows raises UnsupportedFormatError."""
    async with await open_postgres_backend(postgres_dsn):
        pass
    _sql(postgres_dsn, "UPDATE baileys_store_meta SET value = '99' WHERE name = 'schema_version'")
    with pytest.raises(UnsupportedFormatError) as info:
        await open_postgres_backend(postgres_dsn)
    assert info.value.version == 99


async def test_meta_table_of_another_backend_is_refused(postgres_dsn: str) -> None:
    """A baileys_store_meta with another backend mark raises WrongBackendError."""
    _sql(postgres_dsn, "CREATE TABLE baileys_store_meta (name text PRIMARY KEY, value text)")
    _sql(postgres_dsn, "INSERT INTO baileys_store_meta VALUES ('backend', 'someone-else')")
    with pytest.raises(WrongBackendError, match="someone-else"):
        await open_postgres_backend(postgres_dsn)


async def test_forward_migration_keeps_data(postgres_dsn: str) -> None:
    """A newer build's migration runs once on open, in place, and keeps every row."""
    async with await open_postgres_backend(postgres_dsn) as backend:
        await backend.commit(Batch(keys={"session": {"a": b"1"}}))
    newer = (*MIGRATIONS, Migration(SCHEMA_VERSION + 1, ("CREATE TABLE baileys_extra (x int)",)))
    async with await open_postgres_backend(postgres_dsn, migrations=newer) as backend:
        assert await backend.read_keys("session", ["a"]) == {"a": b"1"}
    async with await open_postgres_backend(postgres_dsn, migrations=newer):
        pass
    meta = dict(_sql(postgres_dsn, "SELECT name, value FROM baileys_store_meta"))
    assert meta["schema_version"] == str(SCHEMA_VERSION + 1)


async def test_accounts_in_one_database_are_separate(postgres_dsn: str) -> None:
    """Two accounts share the tables but never see each other's keys, creds or sequence."""
    alice_creds, bob_creds = make_creds(), make_creds()
    async with (
        await open_postgres_backend(postgres_dsn, account="alice") as alice,
        await open_postgres_backend(postgres_dsn, account="bob") as bob,
    ):
        await alice.commit(Batch(keys={"session": {"s": b"alice"}}, creds=alice_creds))
        await alice.commit(Batch(keys={"pre-key": {"1": {"private": b"a", "public": b"b"}}}))
        assert await bob.commit(Batch(keys={"session": {"s": b"bob"}}, creds=bob_creds)) == 1
        assert await alice.read_keys("session", ["s"]) == {"s": b"alice"}
        assert await bob.read_keys("session", ["s"]) == {"s": b"bob"}
        assert await bob.read_keys("pre-key", ["1"]) == {}
        assert await alice.read_creds() == alice_creds
        assert await bob.read_creds() == bob_creds
    accounts = _sql(postgres_dsn, "SELECT DISTINCT account FROM baileys_keys ORDER BY account")
    assert accounts == [("alice",), ("bob",)]


async def test_flipped_value_is_caught_by_its_checksum(postgres_dsn: str) -> None:
    """A changed value byte fails its CRC: CorruptStateError naming the table and row."""
    async with await open_postgres_backend(postgres_dsn, account="a") as backend:
        await backend.commit(Batch(keys={"session": {"s": b"value"}}))
        _sql(postgres_dsn, "UPDATE baileys_keys SET value = overlay(value placing '\\x00' from 2)")
        with pytest.raises(CorruptStateError, match=r"baileys_keys.*'session'.*'s'"):
            await backend.read_keys("session", ["s"])


async def test_row_pasted_into_another_account_is_caught(postgres_dsn: str) -> None:
    """A key row copied under another account fails the CRC, which covers the row identity."""
    async with await open_postgres_backend(postgres_dsn, account="a") as a:
        await a.commit(Batch(keys={"session": {"s": b"secret"}}))
    _sql(
        postgres_dsn,
        "INSERT INTO baileys_keys SELECT 'b', type, id, crc, value FROM baileys_keys",
    )
    async with await open_postgres_backend(postgres_dsn, account="b") as b:
        with pytest.raises(CorruptStateError, match="checksum"):
            await b.read_keys("session", ["s"])


async def test_previous_creds_are_kept(postgres_dsn: str) -> None:
    """The creds row before the newest stays readable (slot 1)."""
    first, second = make_creds(), make_creds()
    async with await open_postgres_backend(postgres_dsn) as backend:
        await backend.commit(Batch(creds=first))
        await backend.commit(Batch(creds=second))
        assert await backend.read_creds() == second
        assert await backend.read_previous_creds() == first


async def test_concurrent_commits_are_grouped(postgres_dsn: str) -> None:
    """Commits queued while one is written share SQL transactions; each gets its own seq."""
    async with await open_postgres_backend(postgres_dsn) as backend:
        seqs: list[int] = []

        async def one(n: int) -> None:
            seqs.append(await backend.commit(Batch(keys={"session": {str(n): b"x" * 512}})))

        async with trio.open_nursery() as nursery:
            for n in range(200):
                nursery.start_soon(one, n)
        stats = backend.statistics()
        assert sorted(seqs) == list(range(1, 201))
        assert stats.batches == 200
        assert stats.transactions < 200
        assert len(await backend.read_keys("session", [str(n) for n in range(200)])) == 200


async def test_idle_connection_killed_by_the_server_is_replaced(
    postgres_server: PostgresServer, postgres_dsn: str
) -> None:
    """After the server drops an idle connection, the next read and commit reconnect and work."""
    async with await open_postgres_backend(postgres_dsn) as backend:
        await backend.commit(Batch(keys={"session": {"a": b"1"}}))
        assert postgres_server.terminate_backends(postgres_dsn) >= 1
        assert await backend.commit(Batch(keys={"session": {"b": b"2"}})) == 2
        postgres_server.terminate_backends(postgres_dsn)
        assert await backend.read_keys("session", ["a", "b"]) == {"a": b"1", "b": b"2"}
        assert backend.statistics().reconnects == 2


class _FlakyCommit:
    """A connection whose next commit statements lose their answer: after the server ran
    one ("after"), or instead of sending it ("instead"); modes are popped from the end.

    Commits are sent through libpq's asynchronous calls (``pgconn``), so that is where
    the answer is lost: the connection is closed and the send raises, as libpq does
    for a peer gone mid-exchange."""

    def __init__(self, real: Any, mode: list[str]) -> None:
        self._real = real
        self._mode = mode
        self._broke = False
        self.pgconn = _FlakyPGconn(self)

    def send_commit(self, args: tuple[Any, ...]) -> None:
        if not self._mode:
            self._real.pgconn.send_query_prepared(*args)
            return
        if self._mode.pop() == "after":
            result = self._real.pgconn.exec_prepared(*args)  # run and committed
            assert result.status == psycopg.pq.ExecStatus.TUPLES_OK
        self._real.close()
        self._broke = True
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    @property
    def broken(self) -> bool:
        return self._broke or bool(self._real.broken)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _FlakyPGconn:
    def __init__(self, conn: _FlakyCommit) -> None:
        self._conn = conn

    def send_query_prepared(self, *args: Any) -> None:
        if args[0] == COMMIT_NAME:
            self._conn.send_commit(args)
        else:
            self._conn._real.pgconn.send_query_prepared(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn._real.pgconn, name)


def _flaky(dsn: str, mode: list[str]) -> Callable[[], Any]:
    def connect() -> Any:
        conn = psycopg.connect(dsn, autocommit=True)
        return _FlakyCommit(conn, mode)

    return connect


async def test_commit_whose_answer_was_lost_is_acknowledged_once(postgres_dsn: str) -> None:
    """A commit the server applied before the connection broke is acknowledged, not redone."""
    mode: list[str] = []
    async with await open_postgres_backend(postgres_dsn, connect=_flaky(postgres_dsn, mode)) as b:
        await b.commit(Batch(keys={"session": {"a": b"1"}}))
        mode.append("after")
        assert await b.commit(Batch(keys={"session": {"b": b"2"}})) == 2
        assert await b.read_keys("session", ["a", "b"]) == {"a": b"1", "b": b"2"}
        assert await b.commit(Batch(keys={"session": {"c": b"3"}})) == 3
        assert _sql(postgres_dsn, "SELECT seq FROM baileys_accounts") == [(3,)]


async def test_commit_the_server_never_got_is_sent_again_and_lands(postgres_dsn: str) -> None:
    """A commit lost before it reached the server is sent once more on a new connection."""
    mode: list[str] = []
    async with await open_postgres_backend(postgres_dsn, connect=_flaky(postgres_dsn, mode)) as b:
        await b.commit(Batch(keys={"session": {"a": b"1"}}))
        mode.append("instead")
        assert await b.commit(Batch(keys={"session": {"b": b"2"}})) == 2
        assert await b.read_keys("session", ["a", "b"]) == {"a": b"1", "b": b"2"}
        assert b.statistics().reconnects == 1


async def test_commit_lost_twice_fails_and_the_backend_goes_on(postgres_dsn: str) -> None:
    """Lost on both connections: DurabilityError, nothing of it written; later commits land."""
    mode: list[str] = []
    async with await open_postgres_backend(postgres_dsn, connect=_flaky(postgres_dsn, mode)) as b:
        await b.commit(Batch(keys={"session": {"a": b"1"}}))
        mode.extend(["instead", "instead"])
        with pytest.raises(DurabilityError, match="outcome unknown"):
            await b.commit(Batch(keys={"session": {"b": b"2"}}))
        assert await b.read_keys("session", ["a", "b"]) == {"a": b"1"}
        assert await b.commit(Batch(keys={"session": {"c": b"3"}})) == 2
        assert await b.read_keys("session", ["b", "c"]) == {"c": b"3"}


async def test_commit_of_unknown_outcome_that_landed_is_not_overwritten(
    postgres_dsn: str,
) -> None:
    """Applied, then its resend lost too: the next commit reads the sequence and goes on."""
    mode: list[str] = []
    async with await open_postgres_backend(postgres_dsn, connect=_flaky(postgres_dsn, mode)) as b:
        await b.commit(Batch(keys={"session": {"a": b"1"}}))
        mode.extend(["instead", "after"])
        with pytest.raises(DurabilityError, match="outcome unknown"):
            await b.commit(Batch(keys={"session": {"b": b"2"}}))
        assert await b.commit(Batch(keys={"session": {"c": b"3"}})) == 3
        assert await b.read_keys("session", ["a", "b", "c"]) == {"a": b"1", "b": b"2", "c": b"3"}


async def test_unreachable_server_is_a_durability_error(postgres_dsn: str) -> None:
    """Opening against a server that refuses connections raises DurabilityError."""
    dead = "postgresql://postgres@/nowhere?host=/nonexistent-socket-dir"
    with pytest.raises(DurabilityError, match="connecting"):
        await open_postgres_backend(dead)


async def test_use_postgres_auth_state_starts_and_reopens_a_device(postgres_dsn: str) -> None:
    """use_postgres_auth_state makes fresh creds durable once and reads them back after."""
    async with await use_postgres_auth_state(postgres_dsn, account="bot") as auth:
        assert isinstance(auth.backend, PostgresBackend)
        creds = auth.state.creds
        await auth.state.keys.set({"session": {"peer": b"s"}})
    async with await use_postgres_auth_state(postgres_dsn, account="bot") as auth:
        assert auth.state.creds == creds
        assert await auth.state.keys.get("session", ["peer"]) == {"peer": b"s"}
