"""Fleet takeover: how long a killed fleet process's accounts take to open elsewhere.

``python -m bench fleet [--accounts 30] [--processes 3] [--ttl 2] [--kills 3]``

A PostgreSQL server (the embedded test server) holds ``--accounts`` accounts; the
sandbox runs in this process and its phone pairs every account on whichever
``baileys-trio fleet`` process claims it. Once the accounts are spread evenly, the
process holding the most is SIGKILLed; for each of its accounts we time from the kill
to its ``open`` on another process (the JSON event lines), then start a replacement
process and wait for the spread to even out again; ``--kills`` times.

Figures: takeover per account (p50, max) and per kill (the last account), printed
beside the target, lease TTL + 5 s (TARGETS.md); accounts per process after each
spread; how often the sandbox saw one device logged in twice (must be 0) and logins
that replaced a live connection (must be 0: none happen after a SIGKILL). Wall-clock
figures on a shared machine: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from bench._common import machine_facts, percentile, print_machine
from bench._fleet import FleetDriver, Member

DEFAULTS = {"accounts": 30, "processes": 3, "ttl": 4.0, "kills": 3}
PAIR_LIMIT = 120.0
SPREAD_LIMIT = 60.0


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__)
    parser.add_argument("--accounts", type=int, default=DEFAULTS["accounts"])
    parser.add_argument("--processes", type=int, default=DEFAULTS["processes"])
    parser.add_argument("--ttl", type=float, default=DEFAULTS["ttl"], help="lease TTL, s")
    parser.add_argument("--kills", type=int, default=DEFAULTS["kills"])
    return parser.parse_args(list(argv))


def postgres_dsn() -> str:
    """A fresh database on the embedded test server (the stores bench's)."""
    from bench.stores import postgres_dsn as fresh

    return fresh()


def even(counts: list[int]) -> bool:
    return bool(counts) and max(counts) - min(counts) <= 1


async def measure(args: argparse.Namespace, dsn: str, logs: Path) -> dict[str, Any]:
    from sandbox.server import open_sandbox
    from stores.postgres_fleet import register_account

    accounts = [f"bench{i:04d}" for i in range(args.accounts)]
    result: dict[str, Any] = {"spreads": [], "kills": []}
    async with open_sandbox() as sb, trio.open_nursery() as nursery:
        fleet = FleetDriver(sb, dsn, logs, ttl=args.ttl)
        nursery.start_soon(fleet.sample)
        live = [await fleet.start(f"p{i}", nursery) for i in range(args.processes)]
        try:
            await fleet.wait_members(args.processes)
            for account in accounts:  # added once every process joined: even claims
                await register_account(dsn, account)
            await fleet.until(
                "every account paired and open",
                lambda: fleet.open_accounts() == set(accounts),
                PAIR_LIMIT,
            )
            for round_ in range(args.kills):
                result["spreads"].append(await _spread(fleet, live, accounts))
                victim = max(live, key=lambda m: len(m.open))
                live.remove(victim)
                result["kills"].append(await _kill(fleet, victim, live))
                live.append(await fleet.start(f"r{round_}", nursery))
            result["spreads"].append(await _spread(fleet, live, accounts))
        finally:
            for member in fleet.members.values():
                if member.process.returncode is None:
                    member.process.send_signal(signal.SIGKILL)
        result["open_twice_samples"] = len(fleet.twice)
        result["samples"] = fleet.samples
        result["logins_replaced"] = sb.statistics().logins_replaced
        nursery.cancel_scope.cancel()
    return result


async def _spread(fleet: FleetDriver, live: list[Member], accounts: list[str]) -> list[int]:
    def settled() -> bool:
        counts = [len(m.open) for m in live]
        return even(counts) and sum(counts) == len(accounts)

    await fleet.until("an even spread", settled, SPREAD_LIMIT)
    return sorted(len(m.open) for m in live)


async def _kill(fleet: FleetDriver, victim: Member, survivors: list[Member]) -> dict[str, Any]:
    orphans = set(victim.open)
    killed_at = trio.current_time()
    victim.process.kill()
    await victim.process.wait()
    await fleet.until(
        "the killed process's accounts open elsewhere",
        lambda: orphans <= set().union(*(m.open for m in survivors)),
        SPREAD_LIMIT,
    )
    opened: dict[str, float] = {}
    for member in survivors:
        for t, line in member.lines:
            account = line.get("account")
            if (
                t >= killed_at
                and account in orphans
                and line.get("event") == "connection_update"
                and line.get("connection") == "open"
            ):
                opened.setdefault(account, t - killed_at)
    return {"accounts": len(orphans), "takeover_s": sorted(opened.values())}


def print_table(result: dict[str, Any], ttl: float) -> None:
    target = ttl + 5.0
    every = [s for kill in result["kills"] for s in kill["takeover_s"]]
    per_kill = [max(kill["takeover_s"]) for kill in result["kills"] if kill["takeover_s"]]

    def verdict(value: float) -> str:
        return "met" if value <= target else "NOT MET"

    print(f"fleet takeover after SIGKILL (lease TTL {ttl:g} s; target <= TTL + 5 s = {target:g} s)")
    if every:
        p50, worst = percentile(every, 0.5), max(every)
        print(
            f"  per account ({len(every)}): p50 {p50:.2f} s, max {worst:.2f} s  [{verdict(worst)}]"
        )
        print(f"  per kill (all its accounts open): {', '.join(f'{s:.2f} s' for s in per_kill)}")
    for i, spread in enumerate(result["spreads"]):
        when = "after pairing" if i == 0 else f"after kill {i} and a replacement"
        print(f"  accounts per process {when}: {spread}")
    print(
        f"  a device logged in twice: {result['open_twice_samples']} of {result['samples']}"
        f" samples; logins that replaced a live one: {result['logins_replaced']} (both must be 0)"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(argv or [])
    facts = machine_facts()
    print_machine(facts)
    dsn = postgres_dsn()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        result = trio.run(measure, args, dsn, Path(tmp))
    print_table(result, args.ttl)
    every = [s for kill in result["kills"] for s in kill["takeover_s"]]
    return {
        "machine": facts,
        "settings": vars(args),
        "takeover_p50_s": percentile(every, 0.5) if every else None,
        "takeover_max_s": max(every) if every else None,
        "target_s": args.ttl + 5.0,
        **result,
    }


if __name__ == "__main__":
    main(sys.argv[1:])
