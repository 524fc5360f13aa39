"""Three `baileys-trio fleet` processes share 30 accounts of one database on the sandbox.

The issue's proof, in one run (real processes, real PostgreSQL, the sandbox on loopback,
a 4 s lease TTL: short, yet long enough that a process starved by a loaded 2-core
machine keeps its leases):

1. once the three processes joined, the accounts are added: each process claims its
   share, 10, in its first round, and they pair there (the sandbox's phone scans each
   account's QR from the processes' JSON lines);
2. SIGKILL one: all its accounts are open on the others within TTL + 5 s, taken over
   (not re-paired), and every creds version it acknowledged is in the database;
3. SIGSTOP another past its TTL; the last takes everything over; SIGCONT: each session
   of the stale one ends (fenced or replaced) without one more durable write;
4. SIGTERM: the last process stops with exit 0 and hands every lease back.

Throughout, a sampler reads the sandbox's connections every 20 ms: no device is ever
logged in on two connections. The sandbox ends an older connection of a device when
a newer one logs in (440), so the sharper check is its count of such replacements:
0 until the SIGSTOP (the stopped process's sockets are still open when the heir logs
in; fencing, not the socket, keeps that one from writing).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import psycopg
import trio

from bench._fleet import FleetDriver, Member
from sandbox.server import open_sandbox
from stores.postgres_fleet import register_account
from tests.stores.postgres_server import (  # noqa: F401 (fixtures, used by name)
    postgres_dsn_fixture,
    postgres_server_fixture,
)

TTL = 4.0
ACCOUNTS = [f"acct{i:02d}" for i in range(30)]
TAKEOVER_BOUND = TTL + 5.0


def _db(dsn: str, statement: str) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return dict(conn.execute(statement).fetchall())


async def test_three_fleet_processes_spread_take_over_and_fence(
    postgres_dsn: str, tmp_path: Path
) -> None:
    """30 accounts on 3 processes: even spread, takeover after SIGKILL, fencing after SIGSTOP."""
    async with open_sandbox() as sb, trio.open_nursery() as nursery:
        fleet = FleetDriver(sb, postgres_dsn, tmp_path, ttl=TTL, capacity=30)
        nursery.start_soon(fleet.sample)
        members = [await fleet.start(name, nursery) for name in ("p1", "p2", "p3")]
        try:
            await _join_then_add(fleet, postgres_dsn)
            await _spread_evenly(fleet, members)
            survivors = await _sigkill_one(fleet, members, postgres_dsn)
            await _sigstop_one(fleet, survivors, postgres_dsn)
        finally:
            for member in members:
                if member.process.returncode is None:
                    member.process.kill()
        nursery.cancel_scope.cancel()
    assert fleet.twice == []
    assert fleet.samples > 200  # the sampler ran all along


async def _join_then_add(fleet: FleetDriver, dsn: str) -> None:
    await fleet.wait_members(3)
    for account in ACCOUNTS:
        await register_account(dsn, account)


async def _spread_evenly(fleet: FleetDriver, members: list[Member]) -> None:
    def all_open() -> bool:
        return set().union(*(m.open for m in members)) == set(ACCOUNTS)

    await fleet.until("all 30 paired and open", all_open, 120)  # bounds a loaded machine
    assert sorted(len(m.open) for m in members) == [10, 10, 10], fleet.describe()
    claims = [len(m.events("fleet_claimed")) for m in members]
    # Each its share the first time: nothing handed back, nothing to rebalance.
    assert claims == [10, 10, 10], fleet.describe()
    assert fleet.sb.statistics().logins_replaced == 0


async def _sigkill_one(fleet: FleetDriver, members: list[Member], dsn: str) -> list[Member]:
    victim, survivors = members[0], members[1:]
    orphans = set(victim.open)
    acknowledged = {a: v for a, v in victim.versions.items() if a in orphans}
    killed_at = trio.current_time()
    victim.process.kill()
    await victim.process.wait()

    def taken_over() -> bool:
        held = set().union(*(m.open for m in survivors))
        return orphans <= held and {fleet.jid_of[a] for a in ACCOUNTS} <= fleet.logged_in()

    took = await fleet.until("the killed process's accounts open elsewhere", taken_over, 20)
    assert took <= TAKEOVER_BOUND, f"takeover took {took:.1f} s"
    print(f"takeover of {len(orphans)} accounts took {took:.2f} s")
    takeovers = {e["account"] for m in survivors for e in m.events("fleet_takeover", killed_at)}
    assert takeovers == orphans
    assert not [e for m in survivors for e in m.events("qr", killed_at)]  # none re-paired
    durable = _db(dsn, "SELECT account, seq FROM baileys_accounts")
    lost = {a: (v, durable[a]) for a, v in acknowledged.items() if durable[a] < v}
    assert lost == {}
    assert fleet.sb.statistics().logins_replaced == 0
    return survivors


async def _sigstop_one(fleet: FleetDriver, survivors: list[Member], dsn: str) -> None:
    stale, heir = survivors
    stranded = set(stale.open)
    stale.process.send_signal(signal.SIGSTOP)
    await fleet.until("the heir runs every account", lambda: heir.open == set(ACCOUNTS), 30)
    owners = _db(dsn, "SELECT account, owner FROM baileys_leases")
    assert len(set(owners.values())) == 1  # the heir's owner id on every lease
    resumed_at = trio.current_time()
    stale.process.send_signal(signal.SIGCONT)

    def stale_sessions_ended() -> bool:
        ended = {e["account"] for e in stale.events("session_ended", resumed_at)}
        return stranded <= ended

    await fleet.until("the stale process's sessions end", stale_sessions_ended, 20)
    for account in stranded:
        (ended,) = [
            (t, e)
            for t, e in stale.lines
            if t >= resumed_at and e.get("event") == "session_ended" and e["account"] == account
        ][:1]
        assert ended[1]["reason"] in ("fenced", "replaced"), ended
        landed = [
            e
            for t, e in stale.lines
            if resumed_at <= t <= ended[0]
            and e.get("event") in ("creds_update", "messages_upsert")
            and e.get("account") == account
        ]
        assert landed == []
    stale.process.send_signal(signal.SIGTERM)
    heir.process.send_signal(signal.SIGTERM)
    with trio.fail_after(30):
        assert await stale.process.wait() == 0
        assert await heir.process.wait() == 0
    live = _db(
        dsn,
        "SELECT account, expires_at > now() AND NOT released FROM baileys_leases",
    )
    assert set(live.values()) == {False}  # a clean stop hands every lease back
    members = _db(dsn, "SELECT owner, expires_at > now() FROM baileys_fleet_members")
    assert len(members) == 1 and set(members.values()) == {False}  # the killed one's, expired
