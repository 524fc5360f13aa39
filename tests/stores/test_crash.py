"""Crash test: a child committing transactions is SIGKILLed at random moments, many times.

After every kill the store must open cleanly, hold every acknowledged commit, and
hold no partial commit (each commit's four keys appear all together or not at all).
The child uses a tiny compaction threshold so kills also land mid-compaction and
mid-recovery (some kills hit the child while it is still opening).
"""

from __future__ import annotations

import os
import random
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from stores.native import open_native_backend
from tests.stores.crash_child import KEYS_PER_COMMIT, value

KILLS = int(os.environ.get("CRASH_KILLS", "50"))
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class History:
    """What the parent knows for sure: acknowledged commits (n -> seq) across all runs."""

    acked: dict[int, int] = field(default_factory=dict)
    next_first: int = 1
    opened_seq: int = 0


def run_child(path: Path, first: int, rng: random.Random) -> list[str]:
    """Start the child, SIGKILL it at a random moment, return its complete output lines.

    One kill in five lands at a random time after spawn (often during start-up or
    recovery); the others at a random time after the child reported the store open,
    so that machine load cannot turn every kill into a kill before the first commit.
    """
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.stores.crash_child", str(path), str(first), "16384"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        bufsize=0,  # unbuffered, so communicate() later loses nothing readline() saw
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
    text = (head + out).decode()
    # A line cut by the kill (no newline yet) was never fully acknowledged.
    return text.split("\n")[:-1]


async def verify(path: Path, history: History, seed: int, cycle: int) -> int:
    """Open the store and check the history against it; return its generation."""
    where = f"(seed {seed}, cycle {cycle})"
    async with await open_native_backend(path) as backend:
        stats = backend.statistics()
        last = max(history.acked.values(), default=0)
        assert stats.durable_seq >= last, f"lost acked seq {last} {where}"
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
    return stats.generation


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_an_ack(tmp_path: Path) -> None:
    """50 SIGKILLs at random moments: every reopen is clean, complete and all-or-nothing."""
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    path = tmp_path / "auth"
    history = History()
    kills_after_open = 0
    generation = 0
    for cycle in range(KILLS):
        lines = run_child(path, history.next_first, rng)
        for line in lines:
            kind, *rest = line.split()
            if kind == "OPEN":
                kills_after_open += 1
            elif kind == "ACK":
                n, seq = int(rest[0]), int(rest[1])
                history.acked[n] = seq
        # Fresh numbers each run, past any commit that was durable but not acknowledged.
        history.next_first = max(history.next_first, max(history.acked, default=0) + 1) + 200
        generation = trio.run(verify, path, history, seed, cycle)
    assert generation >= 1, f"the run should have compacted at least once (seed {seed})"
    assert len(history.acked) > KILLS, f"too few commits to mean anything (seed {seed})"
    assert kills_after_open >= KILLS // 2, f"most kills should hit a running child (seed {seed})"
