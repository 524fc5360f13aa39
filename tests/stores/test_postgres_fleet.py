"""stores/postgres_fleet.py: the fleet's accounts, members, claims and balance, on a real server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from stores.errors import AlreadyInFleetError, StoreLockedError
from stores.postgres import open_postgres_backend
from stores.postgres_fleet import (
    AddOutcome,
    add_account,
    balance,
    claim,
    fleet_accounts,
    join,
    leave,
    retire,
)
from stores.postgres_schema import prepare
from stores.types import Batch
from tests.stores.postgres_server import (  # noqa: F401 (fixtures, used by name)
    postgres_dsn_fixture,
    postgres_server_fixture,
)

TTL = 30.0
NEVER = 3600.0  # stale_after: beyond the share only after an hour (never, in a test)


@pytest.fixture(name="conn")
def conn_fixture(postgres_dsn: str) -> Iterator[Any]:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        prepare(conn, "test")
        yield conn


def _add(conn: Any, count: int) -> list[str]:
    names = [f"acct{i:02d}" for i in range(count)]
    for name in names:
        assert add_account(conn, name, TTL) is AddOutcome.NEW
    return names


def _expire(conn: Any, account: str) -> None:
    conn.execute(
        "UPDATE baileys_leases SET expires_at = now() - interval '1 second' WHERE account = %s",
        (account,),
    )


def test_add_registers_a_new_account_once(conn: Any) -> None:
    """fleet add: a new account is NEW; adding it again is refused and changes nothing."""
    assert add_account(conn, "alice", TTL) is AddOutcome.NEW
    before = conn.execute("SELECT * FROM baileys_fleet").fetchall()
    with pytest.raises(AlreadyInFleetError, match="'alice' is already in the fleet"):
        add_account(conn, "alice", TTL)
    assert conn.execute("SELECT * FROM baileys_fleet").fetchall() == before
    (only,) = fleet_accounts(conn)
    assert (only.account, only.state, only.owner, only.live) == ("alice", "active", None, False)


async def test_add_of_an_account_holding_data_is_existing(postgres_dsn: str, conn: Any) -> None:
    """An account that already holds keys (migrated in) joins the fleet as EXISTING."""
    async with await open_postgres_backend(postgres_dsn, account="old", owner="x") as backend:
        await backend.commit(Batch(keys={"pre-key": {"1": {"k": 1}}}))
    assert add_account(conn, "old", TTL) is AddOutcome.EXISTING


def test_three_members_claim_their_fair_share_each(conn: Any) -> None:
    """30 accounts, 3 live members: each claim takes 10, no account twice, epoch 1 each."""
    _add(conn, 30)
    for owner in ("p1", "p2", "p3"):
        join(conn, owner, capacity=100, ttl=TTL)
    taken = {owner: claim(conn, owner, 100, TTL, NEVER) for owner in ("p1", "p2", "p3")}
    assert [len(c) for c in taken.values()] == [10, 10, 10]
    accounts = [c.account for claims in taken.values() for c in claims]
    assert len(set(accounts)) == 30
    assert {c.epoch for claims in taken.values() for c in claims} == {1}
    assert not any(c.takeover for claims in taken.values() for c in claims)
    assert claim(conn, "p1", 100, TTL, NEVER) == []  # at its share: nothing more


def test_capacity_bounds_a_claim(conn: Any) -> None:
    """A member never holds more than its capacity, even alone with more accounts."""
    _add(conn, 5)
    join(conn, "p1", capacity=2, ttl=TTL)
    assert len(claim(conn, "p1", 2, TTL, NEVER)) == 2
    assert claim(conn, "p1", 2, TTL, NEVER) == []


def test_accounts_nobody_took_are_claimed_beyond_the_share(conn: Any) -> None:
    """When the others are at capacity, the leftovers go to a member with room once stale."""
    _add(conn, 6)
    join(conn, "small", capacity=1, ttl=TTL)
    join(conn, "big", capacity=10, ttl=TTL)
    assert len(claim(conn, "small", 1, TTL, NEVER)) == 1
    assert len(claim(conn, "big", 10, TTL, NEVER)) == 3  # its share, ceil(6 / 2)
    assert claim(conn, "big", 10, TTL, NEVER) == []  # 2 left: not stale yet
    assert len(claim(conn, "big", 10, TTL, stale_after=0)) == 2


def test_a_dead_members_accounts_are_taken_over_at_the_next_epoch(conn: Any) -> None:
    """Expired (not released) leases are a takeover naming the old owner; released ones are not."""
    names = _add(conn, 2)
    join(conn, "dead", capacity=10, ttl=TTL)
    assert len(claim(conn, "dead", 10, TTL, NEVER)) == 2
    _expire(conn, names[0])
    conn.execute(
        "UPDATE baileys_leases SET expires_at = now(), released = true WHERE account = %s",
        (names[1],),
    )
    leave(conn, "dead")
    join(conn, "heir", capacity=10, ttl=TTL)
    claims = claim(conn, "heir", 10, TTL, NEVER)
    assert [(c.account, c.epoch, c.previous_owner, c.takeover) for c in claims] == [
        (names[0], 2, "dead", True),
        (names[1], 2, "dead", False),
    ]


def test_a_live_lease_is_never_claimed(conn: Any) -> None:
    """An account whose lease is live stays with its owner, whatever the others' share."""
    _add(conn, 1)
    join(conn, "owner", capacity=10, ttl=TTL)
    assert len(claim(conn, "owner", 10, TTL, NEVER)) == 1
    join(conn, "other", capacity=10, ttl=TTL)
    assert claim(conn, "other", 10, TTL, stale_after=0) == []


def test_concurrent_claimers_never_take_one_account_twice(postgres_dsn: str, conn: Any) -> None:
    """Six threads claiming at once (stale_after 0: all of them want everything): disjoint."""
    _add(conn, 60)
    owners = [f"p{i}" for i in range(6)]
    for owner in owners:
        join(conn, owner, capacity=60, ttl=TTL)
    results: dict[str, list[str]] = {}
    start = threading.Barrier(len(owners))

    def claimer(owner: str) -> None:
        with psycopg.connect(postgres_dsn, autocommit=True) as mine:
            start.wait()
            got: list[str] = []
            for _ in range(5):
                got += [c.account for c in claim(mine, owner, 60, TTL, stale_after=0)]
            results[owner] = got

    threads = [threading.Thread(target=claimer, args=(o,)) for o in owners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [a for got in results.values() for a in got]
    assert sorted(every) == sorted(set(every))
    assert len(every) == 60


def test_balance_hands_back_the_surplus_the_others_can_take(conn: Any) -> None:
    """A member holding all 30 while two joined empty hands back 20; the others then claim them."""
    _add(conn, 30)
    join(conn, "first", capacity=100, ttl=TTL)
    assert len(claim(conn, "first", 100, TTL, NEVER)) == 30
    assert balance(conn, "first", 100).surplus == 0  # alone: nobody to hand to
    join(conn, "second", capacity=100, ttl=TTL)
    join(conn, "third", capacity=5, ttl=TTL)
    state = balance(conn, "first", 100)
    assert (state.members, state.active, state.held, state.share) == (3, 30, 30, 10)
    assert state.surplus == 15  # second can take 10, third only 5 (its capacity)


def test_retire_is_guarded_by_the_epoch(conn: Any) -> None:
    """Only the current epoch's owner retires an account; a retired one is never claimed."""
    (name,) = _add(conn, 1)
    join(conn, "p1", capacity=10, ttl=TTL)
    (taken,) = claim(conn, "p1", 10, TTL, NEVER)
    assert not retire(conn, name, taken.epoch - 1, "logged_out", "stale owner")
    assert retire(conn, name, taken.epoch, "logged_out", "the device was removed")
    _expire(conn, name)
    assert claim(conn, "p1", 10, TTL, stale_after=0) == []
    assert fleet_accounts(conn)[0].state == "logged_out"
    assert add_account(conn, name, TTL) is AddOutcome.REACTIVATED
    assert len(claim(conn, "p1", 10, TTL, NEVER)) == 1


async def test_a_backend_takes_up_a_claimed_lease(postgres_dsn: str, conn: Any) -> None:
    """open with lease_epoch adopts the claim; a claim no longer ours is refused."""
    (name,) = _add(conn, 1)
    join(conn, "p1", capacity=10, ttl=TTL)
    (taken,) = claim(conn, "p1", 10, TTL, NEVER)
    with pytest.raises(StoreLockedError, match="no longer ours"):
        await open_postgres_backend(postgres_dsn, account=name, owner="p2", lease_epoch=1)
    async with await open_postgres_backend(
        postgres_dsn, account=name, owner="p1", lease_epoch=taken.epoch
    ) as backend:
        assert backend.epoch == taken.epoch
        await backend.commit(Batch(keys={"pre-key": {"1": {"k": 1}}}))
    released = conn.execute(
        "SELECT released, expires_at <= now() FROM baileys_leases WHERE account = %s", (name,)
    ).fetchone()
    assert released == (True, True)
