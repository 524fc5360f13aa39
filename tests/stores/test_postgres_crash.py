"""Crash test on PostgreSQL: a child committing is SIGKILLed at random moments, many times.

After every kill the account must open cleanly (at the next lease epoch), hold every
acknowledged commit, and hold no partial commit. The parent, knowing the child is
dead, expires its lease the way the TTL would, so no cycle waits for real time; a
transaction the dead child left running on the server is ordered by the lease row
lock before the next owner's open.
"""

from __future__ import annotations

import os
import random
import selectors
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import trio

from stores.postgres import open_postgres_backend
from tests.stores.crash_child import KEYS_PER_COMMIT, value
from tests.stores.postgres_server import (  # noqa: F401 (fixtures, used by name)
    postgres_dsn_fixture,
    postgres_server_fixture,
)
from tests.stores.test_crash import History

KILLS = int(os.environ.get("CRASH_KILLS_POSTGRES", "20"))
ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "crash"


def run_child(dsn: str, first: int, rng: random.Random) -> list[str]:
    """Start the child, SIGKILL it at a random moment, return its complete output lines."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.stores.postgres_crash_child", dsn, ACCOUNT, str(first)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        bufsize=0,
    )
    assert child.stdout is not None
    head = b""
    if rng.random() < 0.2:
        time.sleep(rng.uniform(0.0, 0.5))
    else:
        with selectors.DefaultSelector() as selector:
            selector.register(child.stdout, selectors.EVENT_READ)
            if selector.select(timeout=30):
                head = child.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.3))
    child.kill()
    out, err = child.communicate(timeout=30)
    assert child.returncode == -9, f"child ended by itself: {err.decode()[-2000:]}"
    return (head + out).decode().split("\n")[:-1]


def expire_dead_lease(dsn: str) -> None:
    """The child is dead: let its lease lapse now instead of after the TTL."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('baileys_leases')").fetchone() == (None,):
            return
        conn.execute(
            "UPDATE baileys_leases SET expires_at = now() - interval '1 second' WHERE account = %s",
            (ACCOUNT,),
        )


async def verify(dsn: str, history: History, seed: int, cycle: int) -> int:
    """Open the account and check the history against it; return the lease epoch taken."""
    where = f"(seed {seed}, cycle {cycle})"
    async with await open_postgres_backend(dsn, account=ACCOUNT) as backend:
        stats = backend.statistics()
        last = max(history.acked.values(), default=0)
        assert stats.seq >= last, f"lost acked seq {last} {where}"
        top = history.next_first
        ids = [f"c{n}-{j}" for n in range(1, top) for j in range(KEYS_PER_COMMIT)]
        got = await backend.read_keys("session", ids)
        for n in range(1, top):
            present = [j for j in range(KEYS_PER_COMMIT) if f"c{n}-{j}" in got]
            assert len(present) in (0, KEYS_PER_COMMIT), f"commit {n} is partial {where}"
            if n in history.acked:
                assert present, f"acknowledged commit {n} is missing {where}"
            for j in present:
                assert got[f"c{n}-{j}"] == value(n, j), f"commit {n} has wrong data {where}"
        creds = await backend.read_creds()
        acked_creds = [n for n in history.acked if n % 5 == 0]
        if acked_creds:
            assert creds is not None, f"acknowledged creds lost {where}"
            newest = max(acked_creds, key=lambda n: history.acked[n])
            holder = creds.next_pre_key_id
            assert holder % 5 == 0 and f"c{holder}-0" in got, f"creds from no commit {where}"
            if holder in history.acked:
                assert history.acked[holder] >= history.acked[newest], f"stale creds {where}"
        return stats.epoch


@pytest.mark.slow
def test_sigkill_during_commits_never_loses_an_ack(postgres_dsn: str) -> None:
    """20 SIGKILLs of a committing owner: every reopen is complete and all-or-nothing."""
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    history = History()
    kills_after_open = 0
    epochs: list[int] = []
    for cycle in range(KILLS):
        lines = run_child(postgres_dsn, history.next_first, rng)
        for line in lines:
            kind, *rest = line.split()
            if kind == "OPEN":
                kills_after_open += 1
            elif kind == "ACK":
                history.acked[int(rest[0])] = int(rest[1])
        history.next_first = max(history.next_first, max(history.acked, default=0) + 1) + 200
        expire_dead_lease(postgres_dsn)
        epochs.append(trio.run(verify, postgres_dsn, history, seed, cycle))
    assert epochs == sorted(set(epochs)), f"lease epochs must only grow (seed {seed})"
    assert len(history.acked) > KILLS, f"too few commits to mean anything (seed {seed})"
    assert kills_after_open >= KILLS // 2, f"most kills should hit a running child (seed {seed})"
