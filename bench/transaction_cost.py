"""The transaction layer's Python cost per transaction, without a disk.

Workloads, each ``count`` times over ``use_memory_auth_state`` (a memory backend:
no encoding, no fsync, so what is left is Python):

* ``backend``: ``backend.commit`` of the ``blind`` batch alone, no transaction layer;
* ``blind``: ``bench/stores.py``'s transaction: 1 to 8 ids among 500, 1 KiB values,
  written without reading;
* ``rmw``: the same ids read, then written (the Signal path's shape);
* ``copy``: ``copy_value`` of a Signal session's stored form (as ``tx.get`` and
  ``tx.set`` copy it), the session of ``bench.signal.established()``;
* ``sqlite``, ``native`` (only when named in ``--only``): ``blind`` over that durable
  backend in a temporary directory: the layer, the backend's encoding, its writer
  thread and the database's own work, each commit fsynced (the fsync costs time,
  hardly any instructions).

The layer's cost is ``blind`` (or ``rmw``) minus ``backend``. Wall-clock figures on
a shared machine are noisy; for instruction counts run one workload under
callgrind with ``--count 0`` and ``--count N`` and divide the difference by N::

    valgrind --tool=callgrind python -m bench.transaction_cost --only rmw --count 2000

``--profile`` prints the top functions of a cProfile run of ``blind`` and ``rmw``.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from stores.auth import (
    PersistedAuth,
    use_memory_auth_state,
    use_native_file_auth_state,
    use_sqlite_auth_state,
)
from stores.transactions import copy_value
from stores.types import Batch

WORKLOADS = ("backend", "blind", "rmw", "copy", "sqlite", "native")
DEFAULT_WORKLOADS = ("backend", "blind", "rmw", "copy")
"""Those without a disk (each durable commit waits for an fsync: seconds per thousand)."""
DURABLE: dict[str, Callable[[Path], Awaitable[PersistedAuth]]] = {
    "sqlite": lambda d: use_sqlite_auth_state(d / "auth.db"),
    "native": lambda d: use_native_file_auth_state(d / "native"),
}
IDS = 500
MAX_KEYS = 8
VALUE_SIZE = 1024
DEFAULT_COUNT = 5_000


class Workload:
    """One auth state with 500 sessions stored, and the random draws of the stores bench."""

    def __init__(self, auth: PersistedAuth) -> None:
        self.auth = auth
        self.rng = random.Random(1)
        self.pool = [os.urandom(VALUE_SIZE) for _ in range(64)]

    def ids(self) -> list[str]:
        return [str(i) for i in self.rng.sample(range(IDS), self.rng.randint(1, MAX_KEYS))]

    async def backend(self) -> None:
        batch = Batch(keys={"session": {i: self.rng.choice(self.pool) for i in self.ids()}})
        await self.auth.backend.commit(batch)

    async def blind(self) -> None:
        ids = self.ids()
        async with self.auth.keys.transaction("w") as tx:
            await tx.set({"session": {i: self.rng.choice(self.pool) for i in ids}})

    async def rmw(self) -> None:
        ids = self.ids()
        async with self.auth.keys.transaction("w") as tx:
            found = await tx.get("session", ids)
            await tx.set({"session": {i: found[i][::-1] for i in ids}})


def session_value() -> Any:
    """A Signal session's stored form, past its pre-key stage (bench.signal's record)."""
    from bench.signal import established  # the Signal bench's record, imported on use

    _alice, _ours, _bob, theirs = established()
    return theirs.to_plain()


async def _timed(count: int, op: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    for _ in range(count):
        await op()
    return (time.perf_counter() - start) / max(count, 1) * 1e6


async def _filled(auth: PersistedAuth) -> Workload:
    work = Workload(auth)
    await auth.keys.set({"session": {str(i): work.pool[0] for i in range(IDS)}})
    return work


async def _durable(name: str, count: int) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-transaction-cost-") as directory:
        async with await DURABLE[name](Path(directory)) as auth:
            return await _timed(count, (await _filled(auth)).blind)


async def run(count: int, only: Sequence[str]) -> dict[str, float]:
    """Microseconds per operation of each workload in ``only``."""
    work = await _filled(await use_memory_auth_state("bench-transaction-cost"))
    out: dict[str, float] = {}
    for name in only:
        if name in DURABLE:
            out[name] = await _durable(name, count)
        elif name == "copy":
            value = session_value()
            start = time.perf_counter()
            for _ in range(count):
                copy_value(value)
            out[name] = (time.perf_counter() - start) / max(count, 1) * 1e6
        else:
            out[name] = await _timed(count, getattr(work, name))
    return out


def profile(count: int) -> str:
    """cProfile's top functions (own time) over ``blind`` then ``rmw``."""
    profiler = cProfile.Profile()
    profiler.enable()
    trio.run(run, count, ["blind", "rmw"])
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(20)
    return text.getvalue()


def report(figures: dict[str, float]) -> None:
    for name, micros in figures.items():
        print(f"{name:10s} {micros:8.1f} us per operation")
    for name in ("blind", "rmw"):
        if name in figures and "backend" in figures:
            layer = figures[name] - figures["backend"]
            print(f"layer ({name} - backend) {layer:8.1f} us per transaction")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.transaction_cost")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="operations per workload")
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_WORKLOADS),
        help=f"comma-separated subset of {WORKLOADS} (default: {','.join(DEFAULT_WORKLOADS)})",
    )
    parser.add_argument("--profile", action="store_true", help="print a cProfile of blind, rmw")
    args = parser.parse_args(argv)
    only = [name for name in args.only.split(",") if name]
    unknown = set(only) - set(WORKLOADS)
    if unknown or args.count < 0:
        parser.error(f"unknown workloads {sorted(unknown)} or a negative --count")
    args.only = only
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(list(argv) if argv is not None else [])
    figures = trio.run(run, args.count, args.only)
    report(figures)
    if args.profile:
        print(profile(args.count))
    return {"us_per_operation": figures}


if __name__ == "__main__":
    main(sys.argv[1:])
