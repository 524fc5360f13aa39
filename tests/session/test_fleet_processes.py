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

Fencing is judged from the database (``bench._fleet.WriteAudit``): triggers record each
takeover with the sequence number it saw and each commit with the one it wrote on and
the process that sent it; no write of a process may land after its takeover. The
stale process's event lines cannot judge that: a commit that landed before the
takeover may be answered, acknowledged and printed only after SIGCONT (the SIGSTOP
fell between the statement and its answer being read), so a ``creds_update`` read
after SIGCONT is legitimate when its version (the sequence number) is one the
takeover saw.

Throughout, a sampler reads the sandbox's connections every 20 ms: no device is ever
logged in on two connections. The sandbox ends an older connection of a device when
a newer one logs in (440), so the sharper check is its count of such replacements:
0 until the SIGSTOP (the stopped process's sockets are still open when the heir logs
in; fencing, not the socket, keeps that one from writing).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import trio

from bench._fleet import FleetDriver, Member, WriteAudit
from sandbox.server import open_sandbox
from stores.postgres import open_postgres_backend
from stores.postgres_fleet import register_account
from stores.types import Batch
from tests.stores.postgres_server import (  # noqa: F401 (fixtures, used by name)
    postgres_dsn_fixture,
    postgres_server_fixture,
    run_sql,
)

TTL = 4.0
ACCOUNTS = [f"acct{i:02d}" for i in range(30)]
TAKEOVER_BOUND = TTL + 5.0


def _as(dsn: str, process: str) -> Callable[[], psycopg.Connection[Any]]:
    """Connections that name ``process`` to the server, as PGAPPNAME does for a fleet's."""
    return lambda: psycopg.connect(dsn, autocommit=True, application_name=process)


async def test_the_write_audit_names_a_write_landing_after_a_takeover(postgres_dsn: str) -> None:
    """WriteAudit passes writes of each owner in turn and names one made after a takeover."""
    async with await open_postgres_backend(postgres_dsn, account="a", owner="A"):
        pass  # creates the tables; closing releases the lease
    audit = WriteAudit(postgres_dsn)
    audit.install()
    async with await open_postgres_backend(
        postgres_dsn, account="a", owner="A", connect=_as(postgres_dsn, "A")
    ) as old:
        await old.commit(Batch(keys={"session": {"x": b"1"}}))
        run_sql(postgres_dsn, "UPDATE baileys_leases SET expires_at = now() - interval '1 s'")
        async with await open_postgres_backend(
            postgres_dsn, account="a", owner="B", connect=_as(postgres_dsn, "B")
        ) as new:
            await new.commit(Batch(keys={"session": {"x": b"2"}}))
            assert audit.stale_writes() == []
            # What a broken fence would let through: A's write on B's sequence number.
            with _as(postgres_dsn, "A")() as conn:
                conn.execute("UPDATE baileys_accounts SET seq = seq + 1 WHERE account = 'a'")
    (stale,) = audit.stale_writes()
    assert (stale.write.process, stale.write.seq) == ("A", 2)
    assert stale.owner is not None and (stale.owner.process, stale.owner.seq) == ("B", 1)


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
        audit = WriteAudit(postgres_dsn)
        try:
            await _join_then_add(fleet, audit, postgres_dsn)
            await _spread_evenly(fleet, members)
            survivors = await _sigkill_one(fleet, members, postgres_dsn)
            await _sigstop_one(fleet, audit, survivors, postgres_dsn)
        finally:
            for member in members:
                if member.process.returncode is None:
                    member.process.kill()
        nursery.cancel_scope.cancel()
    assert fleet.twice == []
    assert fleet.samples > 200  # the sampler ran all along
    # Every process has stopped: no write can still come. None landed after a takeover.
    assert audit.stale_writes() == []


async def _join_then_add(fleet: FleetDriver, audit: WriteAudit, dsn: str) -> None:
    await fleet.wait_members(3)
    audit.install()  # the tables exist once a process joined; no account has a lease yet
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


async def _sigstop_one(
    fleet: FleetDriver, audit: WriteAudit, survivors: list[Member], dsn: str
) -> None:
    stale, heir = survivors
    stranded = set(stale.open)
    stale.process.send_signal(signal.SIGSTOP)
    await fleet.until("the heir runs every account", lambda: heir.open == set(ACCOUNTS), 30)
    owners = _db(dsn, "SELECT account, owner FROM baileys_leases")
    assert len(set(owners.values())) == 1  # the heir's owner id on every lease
    audited = audit.rows()
    seen_at_takeover = {r.account: r for r in audited if r.kind == "takeover"}  # the newest
    assert {seen_at_takeover[a].process for a in stranded} == {heir.name}
    wrote = {r.account for r in audited if r.kind == "write" and r.process == stale.name}
    assert stranded & wrote  # the audit saw this process write to accounts it then lost
    resumed_at = trio.current_time()
    stale.process.send_signal(signal.SIGCONT)

    def stale_sessions_ended() -> bool:
        ended = {e["account"] for e in stale.events("session_ended", resumed_at)}
        return stranded <= ended

    await fleet.until("the stale process's sessions end", stale_sessions_ended, 20)
    for account in stranded:
        ended = next(
            e for e in stale.events("session_ended", resumed_at) if e["account"] == account
        )
        assert ended["reason"] in ("fenced", "replaced"), ended
    # Acknowledgements read after SIGCONT are of commits the heir's takeover saw landed.
    late = [
        (e["account"], e["version"], seen_at_takeover[e["account"]].seq)
        for e in stale.events("creds_update", resumed_at)
        if e["account"] in stranded
    ]
    assert [entry for entry in late if entry[1] > entry[2]] == []
    print(f"creds_update lines read after SIGCONT, each landed before the takeover: {late}")
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
