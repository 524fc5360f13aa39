"""The PostgreSQL commit statement: one round trip per group commit, fenced, all or nothing.

The connection is wrapped to count statements and hold back commit statements (sent
from Trio through libpq's asynchronous calls, see ``_Watched``): a held commit
statement lets the test queue more commits behind it (they form the next group) and
look at the database from another connection meanwhile; a held answer is a statement
the server ran and committed whose reply the writer has not read yet (what a process
stopped by SIGSTOP at that instruction sees when it resumes).
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import trio

from stores.creds import AuthCreds
from stores.errors import DurabilityError, FencedError
from stores.postgres import PostgresBackend, open_postgres_backend
from stores.postgres_commit import COMMIT_NAME, COMMIT_SQL
from stores.types import Batch
from tests.stores.contract import make_creds
from tests.stores.postgres_server import (  # noqa: F401 (fixtures, used by name)
    postgres_dsn_fixture,
    postgres_server_fixture,
)
from tests.stores.postgres_server import run_sql as _sql


class _Watched:
    """A connection that counts statements and can hold the next commit statement.

    Reads and jobs run ``execute`` on the writer thread; a commit statement is sent
    through libpq's asynchronous calls from Trio (``pgconn``), where it is counted and
    held: while held, the writer sees a busy connection whose socket never turns
    readable, and Trio's loop goes on.
    """

    def __init__(self, real: Any, probe: _Probe) -> None:
        self._real = real
        self._probe = probe
        self.pgconn = _WatchedPGconn(real.pgconn, probe)

    def execute(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        self._probe.statements.append(statement)
        return self._real.execute(statement, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _WatchedPGconn:
    def __init__(self, real: Any, probe: _Probe) -> None:
        self._real = real
        self._probe = probe
        self._gate, self._opener = socket.socketpair()

    def send_prepare(self, *args: Any) -> None:
        self._probe.statements.append("prepare")
        self._real.send_prepare(*args)

    def send_query_prepared(self, *args: Any) -> None:
        probe = self._probe
        if args[0] != COMMIT_NAME:
            self._real.send_query_prepared(*args)
            return
        probe.statements.append(COMMIT_SQL)
        self._drain_gate()
        if probe.hold.is_set():
            probe.hold.clear()
            probe.holding = (self, lambda: self._real.send_query_prepared(*args))
            probe.held.set()
        elif probe.hold_answer.is_set():
            probe.hold_answer.clear()
            # Run and committed by the server; the writer gets the answer once let go.
            self._answer = [self._real.exec_prepared(*args), None]
            probe.holding = (self, lambda: None)
            probe.held.set()
        else:
            self._real.send_query_prepared(*args)

    def _drain_gate(self) -> None:
        self._gate.setblocking(False)
        try:
            self._gate.recv(64)
        except BlockingIOError:
            pass  # not opened since the last hold

    def let_go(self, send: Callable[[], None]) -> None:
        send()
        while self._real.flush():
            pass
        self._opener.send(b"x")

    def is_busy(self) -> bool:
        return self._held() or bool(self._real.is_busy())

    def consume_input(self) -> None:
        if not self._held():
            self._real.consume_input()

    def get_result(self) -> Any:
        answer = getattr(self, "_answer", None)
        if answer:
            return answer.pop(0)
        return self._real.get_result()

    @property
    def socket(self) -> int:
        return self._gate.fileno() if self._held() else int(self._real.socket)

    def _held(self) -> bool:
        holding = self._probe.holding
        return holding is not None and holding[0] is self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _Probe:
    def __init__(self) -> None:
        self.statements: list[Any] = []
        self.hold = threading.Event()
        self.hold_answer = threading.Event()
        self.held = trio.Event()
        self.holding: tuple[_WatchedPGconn, Callable[[], None]] | None = None

    def connect(self, dsn: str) -> Callable[[], Any]:
        def connect() -> Any:
            return _Watched(psycopg.connect(dsn, autocommit=True), self)

        return connect

    async def wait_held(self) -> None:
        with trio.fail_after(10):
            await self.held.wait()

    def let_go(self) -> None:
        """Send the held statement (or hand over its answer) to the waiting writer."""
        assert self.holding is not None, "no commit statement is held"
        (pgconn, send), self.holding = self.holding, None
        pgconn.let_go(send)


async def _open(dsn: str, probe: _Probe, **kwargs: Any) -> PostgresBackend:
    return await open_postgres_backend(dsn, connect=probe.connect(dsn), **kwargs)


async def _queue_behind_held(
    backend: PostgresBackend, probe: _Probe, batches: list[Batch]
) -> list[int | BaseException]:
    """Commit ``batches[0]`` held at the server's door, queue the rest behind it, release."""
    results: list[int | BaseException] = [0] * len(batches)

    async def one(n: int) -> None:
        try:
            results[n] = await backend.commit(batches[n])
        except (DurabilityError, FencedError) as exc:
            results[n] = exc

    probe.hold.set()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, 0)
        await probe.wait_held()
        for n in range(1, len(batches)):
            nursery.start_soon(one, n)
        await trio.testing.wait_all_tasks_blocked()
        probe.let_go()
    return results


async def test_a_commit_is_one_statement(postgres_dsn: str) -> None:
    """Keys, deletes and creds commit in one statement; the first creds commit reads slot 0."""
    probe = _Probe()
    async with await _open(postgres_dsn, probe) as backend:
        probe.statements.clear()
        await backend.commit(Batch(keys={"session": {"a": b"1", "b": b"2"}}))
        await backend.commit(Batch(keys={"session": {"a": None, "c": b"3"}}))
        # Prepared once per connection, then one statement per commit.
        assert probe.statements == ["prepare", COMMIT_SQL, COMMIT_SQL]
        probe.statements.clear()
        await backend.commit(Batch(creds=make_creds()))
        assert len(probe.statements) == 2  # slot 0 read once after open
        probe.statements.clear()
        await backend.commit(Batch(keys={"session": {"d": b"4"}}, creds=make_creds()))
        assert probe.statements == [COMMIT_SQL]
        assert await backend.read_keys("session", ["a", "b", "c", "d"]) == {
            "b": b"2",
            "c": b"3",
            "d": b"4",
        }


async def test_a_commit_statement_the_server_forgot_is_prepared_again(postgres_dsn: str) -> None:
    """A DEALLOCATE (or DISCARD ALL, from an operator or a pooler) drops the prepared commit
    statement on the connection: the next commit prepares it again and lands, once."""
    probe = _Probe()
    async with await _open(postgres_dsn, probe) as backend:
        await backend.commit(Batch(keys={"session": {"a": b"1"}}))
        await backend._writer.run(lambda conn: conn.execute("DEALLOCATE ALL"))
        probe.statements.clear()
        seq = await backend.commit(Batch(keys={"session": {"b": b"2"}}))
        assert probe.statements == [COMMIT_SQL, "prepare", COMMIT_SQL]
        assert await backend.read_keys("session", ["a", "b"]) == {"a": b"1", "b": b"2"}
    assert seq == 2
    assert _sql(postgres_dsn, "SELECT seq FROM baileys_accounts") == [(2,)]


async def test_grouped_commits_are_acknowledged_only_after_the_server_committed(
    postgres_dsn: str,
) -> None:
    """Commits queued behind a held one share one statement; none returns before it ran."""
    probe = _Probe()
    async with await _open(postgres_dsn, probe) as backend:
        acked: list[int] = []

        async def one(n: int) -> None:
            acked.append(await backend.commit(Batch(keys={"session": {str(n): b"v" * 100}})))

        probe.hold.set()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, 0)
            await probe.wait_held()
            for n in range(1, 32):
                nursery.start_soon(one, n)
            await trio.testing.wait_all_tasks_blocked()
            assert acked == []
            assert _sql(postgres_dsn, "SELECT count(*) FROM baileys_keys") == [(0,)]
            probe.let_go()
        assert sorted(acked) == list(range(1, 33))
        assert _sql(postgres_dsn, "SELECT count(*), 0 FROM baileys_keys") == [(32, 0)]
        assert _sql(postgres_dsn, "SELECT seq FROM baileys_accounts") == [(32,)]
        assert backend.statistics().transactions == 2  # the held one, then the rest


async def test_a_fenced_group_fails_whole_and_writes_nothing(postgres_dsn: str) -> None:
    """Taken over while a group waits: every commit in it is FencedError, no row written."""
    probe = _Probe()
    creds = make_creds()
    async with await _open(postgres_dsn, probe, account="a", owner="proc-A") as old:
        await old.commit(Batch(keys={"session": {"x": b"old"}}, creds=creds))
        batches = [
            Batch(keys={"session": {f"k{n}": b"stale", "x": None}}, creds=make_creds())
            for n in range(10)
        ]
        probe.hold.set()
        async with trio.open_nursery() as nursery:
            results: list[BaseException | int] = []

            async def one(batch: Batch) -> None:
                try:
                    results.append(await old.commit(batch))
                except FencedError as exc:
                    results.append(exc)

            nursery.start_soon(one, batches[0])
            await probe.wait_held()
            for batch in batches[1:]:
                nursery.start_soon(one, batch)
            await trio.testing.wait_all_tasks_blocked()
            _sql(postgres_dsn, "UPDATE baileys_leases SET epoch = 2, owner = 'proc-B'")
            probe.let_go()
        assert len(results) == 10
        assert all(isinstance(r, FencedError) for r in results)
        assert old.lease_lost.is_set()
        assert _sql(postgres_dsn, "SELECT id FROM baileys_keys") == [("x",)]
        assert await old.read_keys("session", ["x"]) == {"x": b"old"}
        assert _sql(postgres_dsn, "SELECT seq FROM baileys_accounts") == [(1,)]
        assert _sql(postgres_dsn, "SELECT slot FROM baileys_creds") == [(0,)]
        assert await old.read_creds() == creds


async def test_a_takeover_in_flight_fences_a_commit_waiting_on_the_lease_row(
    postgres_dsn: str,
) -> None:
    """A commit that reaches the lease row while a takeover holds it is fenced by it."""
    async with await open_postgres_backend(postgres_dsn, account="a", owner="proc-A") as old:
        await old.commit(Batch(keys={"session": {"x": b"old"}}))
        with psycopg.connect(postgres_dsn) as takeover:  # not autocommit: one open transaction
            takeover.execute("UPDATE baileys_leases SET epoch = 2, owner = 'proc-B'")
            async with trio.open_nursery() as nursery:
                failed: list[BaseException] = []

                async def commit() -> None:
                    with pytest.raises(FencedError, match="proc-B took epoch 2") as info:
                        await old.commit(Batch(keys={"session": {"x": b"stale"}}))
                    failed.append(info.value)

                nursery.start_soon(commit)
                await _until_waiting_on_a_lock(postgres_dsn)
                takeover.commit()
        assert len(failed) == 1
        assert await old.read_keys("session", ["x"]) == {"x": b"old"}
        assert _sql(postgres_dsn, "SELECT seq FROM baileys_accounts") == [(1,)]


async def test_a_commit_answered_after_a_takeover_had_landed_before_it(
    postgres_dsn: str,
) -> None:
    """A reply read after the takeover acknowledges a write the new owner already sees.

    The old owner's statement ran and committed under its live lease; the owner then
    stalled before reading the answer, its lease expired and another owner took the
    account at the next epoch. The acknowledgement comes late but is true: the write
    landed before the takeover (the new owner reads it, and writes on its sequence
    number). The old owner's next commit is fenced.
    """
    probe = _Probe()
    async with await _open(postgres_dsn, probe, account="a", owner="proc-A") as old:
        await old.commit(Batch(keys={"session": {"x": b"old"}}))
        acked: list[int] = []

        async def commit() -> None:
            acked.append(await old.commit(Batch(keys={"session": {"x": b"landed"}})))

        probe.hold_answer.set()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(commit)
            await probe.wait_held()
            _sql(postgres_dsn, "UPDATE baileys_leases SET expires_at = now() - interval '1 s'")
            async with await open_postgres_backend(
                postgres_dsn, account="a", owner="proc-B"
            ) as new:
                assert new.epoch == 2
                assert await new.read_keys("session", ["x"]) == {"x": b"landed"}
                assert await new.commit(Batch(keys={"session": {"y": b"new"}})) == 3
                probe.let_go()
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(FencedError, match="proc-B took epoch 2"):
                    await old.commit(Batch(keys={"session": {"x": b"stale"}}))
                assert await new.read_keys("session", ["x", "y"]) == {"x": b"landed", "y": b"new"}
        assert acked == [2]
        assert _sql(postgres_dsn, "SELECT seq FROM baileys_accounts") == [(3,)]


async def _until_waiting_on_a_lock(dsn: str) -> None:
    deadline = time.monotonic() + 10
    while not _sql(
        dsn,
        "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND datname = current_database()",
    ):
        assert time.monotonic() < deadline, "the commit never waited on the lease row"
        await trio.to_thread.run_sync(time.sleep, 0.01)


async def test_a_bad_row_fails_every_commit_of_its_group_and_changes_nothing(
    postgres_dsn: str,
) -> None:
    """A row the server refuses fails its whole group with DurabilityError; later ones land."""
    probe = _Probe()
    async with await _open(postgres_dsn, probe) as backend:
        # Incompressible and beyond the primary key index's row size: the server refuses it.
        too_long = random.Random(0).randbytes(2000).hex()
        batches = [Batch(keys={"session": {"first": b"1"}})]
        batches += [Batch(keys={"session": {f"good{n}": b"g"}}) for n in range(5)]
        batches.insert(3, Batch(keys={"session": {too_long: b"bad"}}, creds=make_creds()))
        results = await _queue_behind_held(backend, probe, batches)
        assert results[0] == 1
        assert all(isinstance(r, DurabilityError) for r in results[1:])
        assert _sql(postgres_dsn, "SELECT id FROM baileys_keys") == [("first",)]
        assert _sql(postgres_dsn, "SELECT count(*) FROM baileys_creds") == [(0,)]
        assert await backend.commit(Batch(keys={"session": {"after": b"a"}})) == 2
        assert backend.statistics().seq == 2


async def test_a_damaged_newest_creds_copy_is_not_kept_as_the_previous_one(
    postgres_dsn: str,
) -> None:
    """A newest creds row failing its CRC is replaced; the intact previous copy stays."""
    first, second, third = make_creds(), make_creds(), make_creds()
    async with await open_postgres_backend(postgres_dsn) as backend:
        await backend.commit(Batch(creds=first))
        await backend.commit(Batch(creds=second))
    _sql(postgres_dsn, "UPDATE baileys_creds SET crc = crc + 1 WHERE slot = 0")
    async with await open_postgres_backend(postgres_dsn) as backend:
        await backend.commit(Batch(creds=third))
        assert await backend.read_creds() == third
        assert await backend.read_previous_creds() == first
        await backend.commit(Batch(creds=first))
        assert await backend.read_previous_creds() == third


async def test_a_burst_made_in_one_turn_of_trio_is_one_group_after_the_first(
    postgres_dsn: str,
) -> None:
    """2,000 creds commits started at once cost a few statements, not one per GIL slice."""
    async with await open_postgres_backend(postgres_dsn) as backend:
        by_seq: dict[int, AuthCreds] = {}

        async def save(creds: AuthCreds) -> None:
            by_seq[await backend.commit(Batch(creds=creds))] = creds

        async with trio.open_nursery() as nursery:
            for _ in range(2000):
                nursery.start_soon(save, make_creds())
        assert sorted(by_seq) == list(range(1, 2001))
        assert backend.statistics().transactions <= 5  # the first alone, then the rest
        assert await backend.read_creds() == by_seq[2000]


async def test_a_read_queued_behind_a_commit_in_flight_runs_after_it(postgres_dsn: str) -> None:
    """Work on the connection runs in queue order: the read waits and sees the commit."""
    probe = _Probe()
    async with await _open(postgres_dsn, probe) as backend:
        got: list[dict[str, object]] = []

        async def read() -> None:
            got.append(await backend.read_keys("session", ["a"]))

        probe.hold.set()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(backend.commit, Batch(keys={"session": {"a": b"1"}}))
            await probe.wait_held()
            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            probe.let_go()
        assert got == [{"a": b"1"}]
