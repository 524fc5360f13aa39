"""PostgreSQL leases with fencing: who owns an account, and why a stale owner never writes.

A "paused" owner is simulated by expiring its lease row in the database (what the
server sees when a process stops renewing), so no test waits for a real TTL; the
renewal loop runs on trio's MockClock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import trio
import trio.testing

from stores.errors import FencedError, StoreLockedError
from stores.postgres import PostgresBackend, open_postgres_backend
from stores.postgres_lease import process_owner_id, read_lease
from stores.transactions import TransactionalStore
from stores.types import Batch
from tests.stores.contract import make_creds
from tests.stores.postgres_server import (  # noqa: F401 (fixtures, used by name)
    PostgresServer,
    postgres_dsn_fixture,
    postgres_server_fixture,
)
from tests.stores.postgres_server import run_sql as _sql


def _expire(dsn: str, account: str) -> None:
    """What the server sees when the owner stopped renewing: the lease is past its expiry."""
    _sql(
        dsn,
        "UPDATE baileys_leases SET expires_at = now() - interval '1 second' WHERE account = %s",
        (account,),
    )


async def _until(condition: Callable[[], bool]) -> None:
    """Wait (real time: the writer thread runs outside trio's clock) until ``condition()``."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        await trio.to_thread.run_sync(time.sleep, 0.01)


async def test_open_takes_the_lease_at_epoch_one(postgres_dsn: str) -> None:
    """A new account's lease row names this process, host and pid, at epoch 1."""
    async with await open_postgres_backend(postgres_dsn, account="a", lease_ttl=30) as backend:
        lease = await read_lease(postgres_dsn, "a")
        assert lease is not None
        assert (lease.owner, lease.epoch) == (process_owner_id(), 1)
        assert backend.epoch == 1
        assert 25 < lease.expires_in <= 30


async def test_second_owner_is_refused_naming_the_live_owner(postgres_dsn: str) -> None:
    """Opening an account another owner holds raises StoreLockedError naming it."""
    async with await open_postgres_backend(postgres_dsn, account="a", owner="proc-A"):
        with pytest.raises(StoreLockedError) as info:
            await open_postgres_backend(postgres_dsn, account="a", owner="proc-B")
        assert "owner proc-A" in info.value.owner
        assert "epoch 1" in info.value.owner
        assert "expires in" in info.value.owner
        async with await open_postgres_backend(postgres_dsn, account="other", owner="proc-B"):
            pass  # another account of the same database is free


async def test_closing_releases_the_lease_for_the_next_owner(postgres_dsn: str) -> None:
    """A closed backend releases its lease: the next open takes it at once, at epoch + 1."""
    async with await open_postgres_backend(postgres_dsn, account="a", owner="proc-A") as a:
        await a.commit(Batch(keys={"session": {"x": b"1"}}))
    async with await open_postgres_backend(postgres_dsn, account="a", owner="proc-B") as b:
        assert b.epoch == 2
        assert await b.read_keys("session", ["x"]) == {"x": b"1"}
        assert await b.commit(Batch(keys={"session": {"y": b"2"}})) == 2


async def test_takeover_after_expiry_fences_the_old_owner(postgres_dsn: str) -> None:
    """After a takeover, the old owner's next commit raises FencedError and writes nothing."""
    creds = make_creds()
    old = await open_postgres_backend(postgres_dsn, account="a", owner="proc-A")
    try:
        await old.commit(Batch(keys={"session": {"x": b"old-1"}}, creds=creds))
        _expire(postgres_dsn, "a")  # proc-A is paused past its lease
        async with await open_postgres_backend(postgres_dsn, account="a", owner="proc-B") as new:
            assert new.epoch == 2
            await new.commit(Batch(keys={"session": {"x": b"new"}}))
            with pytest.raises(FencedError, match="proc-B took epoch 2") as info:
                await old.commit(Batch(keys={"session": {"x": b"stale", "y": b"stale"}}))
            assert info.value.epoch == 1
            assert old.lease_lost.is_set()
            assert old.fenced is not None
            # It never writes again, even keys nobody else touched, and creds neither.
            with pytest.raises(FencedError):
                await old.commit(Batch(keys={"session": {"z": b"stale"}}, creds=make_creds()))
            assert await new.read_keys("session", ["x", "y", "z"]) == {"x": b"new"}
            assert await new.read_creds() == creds
            assert new.statistics().fenced is False
    finally:
        await old.aclose()
    lease = await read_lease(postgres_dsn, "a")
    assert lease is not None and lease.owner == "proc-B"  # the stale close released nothing


async def test_expired_lease_refuses_commits_even_before_a_takeover(postgres_dsn: str) -> None:
    """A commit under an expired lease is fenced though nobody took the account yet."""
    async with await open_postgres_backend(postgres_dsn, account="a") as backend:
        _expire(postgres_dsn, "a")
        with pytest.raises(FencedError, match="expired"):
            await backend.commit(Batch(keys={"session": {"x": b"1"}}))
        assert _sql(postgres_dsn, "SELECT count(*) FROM baileys_keys") == [(0,)]


async def test_fenced_transaction_store_stays_unchanged(postgres_dsn: str) -> None:
    """A transaction whose commit is fenced raises FencedError and its writes stay invisible."""
    async with await open_postgres_backend(postgres_dsn, account="a", owner="proc-A") as old:
        store = TransactionalStore(old.read_keys, old.commit)
        await store.set({"session": {"x": b"1"}})
        _expire(postgres_dsn, "a")
        async with await open_postgres_backend(postgres_dsn, account="a", owner="proc-B"):
            with pytest.raises(FencedError):
                async with store.transaction("x") as tx:
                    await tx.set({"session": {"x": b"2"}})
            assert await store.get("session", ["x"]) == {"x": b"1"}
            assert await old.read_keys("session", ["x"]) == {"x": b"1"}


async def test_renewal_of_a_taken_over_lease_fences(postgres_dsn: str) -> None:
    """A renewal that no longer finds our epoch sets lease_lost and fences the backend."""
    async with await open_postgres_backend(postgres_dsn, account="a", owner="proc-A") as old:
        _expire(postgres_dsn, "a")
        async with await open_postgres_backend(postgres_dsn, account="a", owner="proc-B"):
            assert await old.renew_lease() is False
            assert old.lease_lost.is_set()
            with pytest.raises(FencedError, match="lost"):
                await old.commit(Batch(keys={"session": {"x": b"1"}}))


async def test_one_statement_renews_every_lease_of_the_process(
    postgres_dsn: str, mock_clock: trio.testing.MockClock
) -> None:
    """Backends of one process share renewals: one statement a period, whatever the count."""
    ttl = 9.0
    backends: list[PostgresBackend] = []
    for n in range(5):
        backends.append(await open_postgres_backend(postgres_dsn, account=f"a{n}", lease_ttl=ttl))

    def renewals() -> int:
        return sum(b.statistics().renewals for b in backends)

    try:
        for period in range(1, 4):
            mock_clock.jump(ttl / 3)
            await _until(lambda p=period: renewals() >= p)  # type: ignore[misc]
            await trio.testing.wait_all_tasks_blocked()
        await trio.to_thread.run_sync(time.sleep, 0.2)  # room for a wrong extra renewal
        assert renewals() == 3
        for n in range(5):
            lease = await read_lease(postgres_dsn, f"a{n}")
            assert lease is not None and ttl - 2 < lease.expires_in <= ttl
        mock_clock.jump(ttl)  # renewals kept up: still ours
        for backend in backends:
            assert backend.fenced is None
    finally:
        for backend in backends:
            await backend.aclose()


async def test_lost_renewal_past_expiry_stops_the_owner(
    postgres_server: PostgresServer, postgres_dsn: str, mock_clock: trio.testing.MockClock
) -> None:
    """When no renewal gets through for a whole TTL, lease_lost is set and commits are fenced."""
    reachable = [True]

    def connect() -> Any:
        if not reachable[0]:
            raise psycopg.OperationalError("partitioned")
        return psycopg.connect(postgres_dsn, autocommit=True)

    backend = await open_postgres_backend(
        postgres_dsn, account="a", lease_ttl=6.0, connect=connect, reconnect_timeout=0.05
    )
    try:
        reachable[0] = False
        postgres_server.terminate_backends(postgres_dsn)
        for _ in range(30):
            mock_clock.jump(6.0 / 15)
            await trio.testing.wait_all_tasks_blocked()
            if backend.lease_lost.is_set():
                break
            await trio.to_thread.run_sync(time.sleep, 0.02)
        assert backend.lease_lost.is_set()
        assert trio.current_time() < 6.0 + 6.0 / 15 + 0.5  # no later than the TTL
        with pytest.raises(FencedError, match="not renewed"):
            await backend.commit(Batch(keys={"session": {"x": b"1"}}))
    finally:
        await backend.aclose()


class _HangingRenewal:
    """A connection whose lease renewals block until released (a black-holed network)."""

    def __init__(self, real: Any, hang: threading.Event, release: threading.Event) -> None:
        self._real, self._hang, self._release = real, hang, release

    def execute(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        if self._hang.is_set() and "expires_at = now() + ttl" in str(statement):
            self._release.wait(30)
        return self._real.execute(statement, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


async def test_a_hung_renewal_loses_the_lease_when_the_ttl_runs_out(
    postgres_dsn: str, mock_clock: trio.testing.MockClock
) -> None:
    """A renewal stuck on a hung connection is given up at the TTL: lease_lost, then fenced."""
    hang, release = threading.Event(), threading.Event()

    def connect() -> Any:
        return _HangingRenewal(psycopg.connect(postgres_dsn, autocommit=True), hang, release)

    backend = await open_postgres_backend(postgres_dsn, account="a", lease_ttl=6.0, connect=connect)
    try:
        hang.set()
        mock_clock.jump(2.1)  # the renewal is sent, and hangs
        await trio.testing.wait_all_tasks_blocked()
        assert not backend.lease_lost.is_set()
        mock_clock.jump(4.0)  # past the TTL counted from the open
        await _until(backend.lease_lost.is_set)
        with pytest.raises(FencedError, match="not renewed"):
            await backend.commit(Batch(keys={"session": {"x": b"1"}}))
    finally:
        release.set()
        await backend.aclose()


async def test_a_sibling_hung_on_its_renewal_neither_stops_nor_keeps_the_others(
    postgres_dsn: str, mock_clock: trio.testing.MockClock
) -> None:
    """One backend's hung renewal: its siblings renew by themselves, and its lease lapses."""
    hang, release = threading.Event(), threading.Event()

    def hanging() -> Any:
        return _HangingRenewal(psycopg.connect(postgres_dsn, autocommit=True), hang, release)

    stuck = await open_postgres_backend(postgres_dsn, account="a", lease_ttl=6.0, connect=hanging)
    fine = await open_postgres_backend(postgres_dsn, account="b", lease_ttl=6.0)
    try:
        hang.set()
        for _ in range(8):  # 8 s of virtual time, renewals due every 2 s
            mock_clock.jump(1.0)
            await trio.testing.wait_all_tasks_blocked()
            await trio.to_thread.run_sync(time.sleep, 0.05)
        assert stuck.lease_lost.is_set()
        assert not fine.lease_lost.is_set()
        assert fine.fenced is None
        lost = await read_lease(postgres_dsn, "a")
        assert lost is not None
        renewals = fine.statistics().renewals
        mock_clock.jump(2.5)
        await _until(lambda: fine.statistics().renewals > renewals)
        again = await read_lease(postgres_dsn, "a")
        kept = await read_lease(postgres_dsn, "b")
        assert again is not None and kept is not None
        assert again.expires_in < lost.expires_in  # a's lease is no longer renewed
        assert kept.expires_in > 5.0
    finally:
        release.set()
        await stuck.aclose()
        await fine.aclose()
