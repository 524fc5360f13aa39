"""Durable store throughput, side by side in one run (not a test: nothing is asserted).

Run: ``.venv/bin/python -m bench.stores`` (about a minute).

Workload (TARGETS.md): session-style transactions, each writing 1-8 ids chosen
uniformly among 500, values of 1 KiB, through the transaction layer
(``PersistedAuth.keys.transaction``), for each backend, with one writer and with 32
concurrent writers. Beside it, in the same run and on the same file system:

* the raw disk rate of ``write 1 KiB + fsync`` (the ceiling of one durable commit),
  measured at the start and again right before each backend's one-writer phase:
  on a shared VM the disk's rate drifts by several times within a minute, so each
  backend's one-writer ratio is taken against the sample adjacent to it (all
  samples are printed);
* Baileys' ``useMultiFileAuthState`` doing the same workload under node
  (``bench/baileys_store_workload.mjs``; skipped, saying why, without node);
* creds bursts: 10,000 creds updates at once, straight to ``backend.commit`` (group
  commit coalesces creds-only items) and through ``PersistedAuth.save_creds`` (the
  transaction layer coalesces saves into rounds), counting the disk commits
  (group-commit groups) they cost and those made after the last update was issued.

Ratios are printed against the TARGETS.md targets: >= 0.8x raw fsync for one writer,
>= 10x Baileys for 32 writers, <= 100 disk commits for the burst and the newest
snapshot durable within 2 disk commits after it. Printed, never asserted. Beside
each figure: the figure of the same benchmark before the 0.1 speed work (``BEFORE``,
an earlier run on the same VM, so compare its ratio to its own run's baseline, not
absolute rates across runs).
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:
    # Run as a script (python bench/stores.py): bench/ heads sys.path, where this file
    # shadows the `stores` package. Run it as the module it is instead.
    import os
    import runpy
    import sys

    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runpy.run_module("bench.stores", run_name="__main__", alter_sys=True)
    sys.exit(0)

import json
import os
import platform
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio

from bench._common import baileys_root
from stores.auth import (
    PersistedAuth,
    use_memory_auth_state,
    use_multi_file_auth_state,
    use_native_file_auth_state,
    use_sqlite_auth_state,
)
from stores.types import Batch

REPO = Path(__file__).resolve().parent.parent
NODE_SCRIPT = Path(__file__).resolve().parent / "baileys_store_workload.mjs"

IDS = 500
VALUE_SIZE = 1024
MAX_KEYS = 8
CONCURRENT = 32
PHASE_SECONDS = 2.5
RAW_SECONDS = 2.0
ADJACENT_RAW_SECONDS = 1.0
BURST = 10_000
SAVE_CREDS_BURST = 10_000
TARGET_ONE_WRITER = 0.8
TARGET_VS_BAILEYS = 10.0
TARGET_BURST_COMMITS = 100

Opener = Callable[[Path], Awaitable[PersistedAuth]]

BEFORE: dict[str, Any] = {
    "commit": "aa4623b",
    "raw_fsync_per_s": 4315.0,
    "baileys_many": 1738.0,
    "one": {"native": 1863.0, "multi-file": 290.0, "sqlite": 1885.0, "memory": 16979.0},
    "many": {"native": 7009.0, "multi-file": 420.0, "sqlite": 5578.0, "memory": 17795.0},
    # disk commits of a creds burst: (updates, disk commits, after the last update)
    "burst": {
        "native": (10_000, 11, 11),
        "multi-file": (10_000, 11, 11),
        "sqlite": (10_000, 11, 11),
    },
    "save_burst": {
        "native": (500, 500, 500),
        "multi-file": (500, 500, 500),
        "sqlite": (500, 500, 500),
    },
}
"""One full run of this benchmark at commit aa4623b (before creds coalescing, byte-bound
groups, pipelined blind writes and the cheaper transaction path), on this 2-core VM.
save_creds bursts were 500 updates then: 10,000 took minutes (one commit each, with
an O(n) wake-up per commit)."""

BACKENDS: dict[str, Opener] = {
    "native": lambda d: use_native_file_auth_state(d / "native"),
    "multi-file": lambda d: use_multi_file_auth_state(d / "multi-file"),
    "sqlite": lambda d: use_sqlite_auth_state(d / "auth.db"),
    "memory": lambda d: use_memory_auth_state(),
}


@dataclass(frozen=True)
class Throughput:
    transactions: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.transactions / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Burst:
    updates: int
    seconds: float
    disk_commits: int | None
    commits_after_queued: int | None
    fsyncs: int | None
    newest_durable: bool


# --- measurements --------------------------------------------------------------------


def raw_fsync_rate(directory: Path, seconds: float = RAW_SECONDS) -> Throughput:
    """Appends of 1 KiB, each followed by fsync, for ``seconds``."""
    path = directory / "raw-fsync.bin"
    data = os.urandom(VALUE_SIZE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    count = 0
    start = time.perf_counter()
    try:
        while time.perf_counter() - start < seconds:
            os.write(fd, data)
            os.fsync(fd)
            count += 1
    finally:
        os.close(fd)
        elapsed = time.perf_counter() - start
        path.unlink()
    return Throughput(count, elapsed)


async def workload(auth: PersistedAuth, writers: int, seconds: float) -> Throughput:
    """``writers`` tasks committing session transactions until ``seconds`` have passed."""
    pool = [os.urandom(VALUE_SIZE) for _ in range(64)]
    store = auth.keys
    count = 0
    deadline = time.perf_counter() + seconds

    async def writer(w: int) -> None:
        nonlocal count
        rng = random.Random(1000 + w)
        while time.perf_counter() < deadline:
            ids = rng.sample(range(IDS), rng.randint(1, MAX_KEYS))
            async with store.transaction(f"writer-{w}") as tx:
                await tx.set({"session": {str(i): rng.choice(pool) for i in ids}})
            count += 1

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for w in range(writers):
            nursery.start_soon(writer, w)
    return Throughput(count, time.perf_counter() - start)


def _disk_counters(auth: PersistedAuth) -> tuple[int | None, int | None]:
    """(disk commits, fsyncs) as far as the backend reports them."""
    stats_fn = getattr(auth.backend, "statistics", None)
    if stats_fn is None:
        return None, None
    stats = stats_fn()
    groups = getattr(stats, "groups", getattr(stats, "transactions", None))
    fsyncs = getattr(stats, "fsyncs", None)
    if fsyncs is None and hasattr(stats, "transactions"):
        fsyncs = stats.transactions  # SQLite WAL, synchronous=FULL: one fsync a transaction
    return groups, fsyncs


async def creds_burst(auth: PersistedAuth, updates: int, *, through: str) -> Burst:
    """``updates`` concurrent creds commits, each a newer snapshot.

    ``through="backend"``: straight to ``backend.commit`` (its group commit coalesces);
    ``through="save_creds"``: ``PersistedAuth.save_creds``, via the transaction layer.
    """
    base = auth.state.creds
    snapshots = []
    for i in range(updates):
        creds = base.copy()
        creds.account_sync_counter = i + 1
        snapshots.append(creds)
    groups0, fsyncs0 = _disk_counters(auth)

    started = 0
    groups_queued: int | None = None

    async def save(i: int) -> None:
        nonlocal started, groups_queued
        # Trio starts tasks in any order: the n-th call issued saves snapshot n, so
        # the last one issued is the newest.
        snapshot = snapshots[started]
        started += 1
        if started == updates:
            # The last update of the burst is being issued now.
            groups_queued, _ = _disk_counters(auth)
        if through == "backend":
            await auth.backend.commit(Batch(creds=snapshot))
        else:
            await auth.save_creds(snapshot)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(updates):
            nursery.start_soon(save, i)
    elapsed = time.perf_counter() - start
    groups1, fsyncs1 = _disk_counters(auth)
    durable = await auth.backend.read_creds()
    return Burst(
        updates=updates,
        seconds=elapsed,
        disk_commits=None if groups1 is None or groups0 is None else groups1 - groups0,
        commits_after_queued=(
            None if groups1 is None or groups_queued is None else groups1 - groups_queued
        ),
        fsyncs=None if fsyncs1 is None or fsyncs0 is None else fsyncs1 - fsyncs0,
        newest_durable=durable is not None and durable.account_sync_counter == updates,
    )


def baileys_workload(directory: Path, writers: int, seconds: float) -> Throughput | str:
    """Run the node workload; a string says why it was skipped."""
    root, why = baileys_root()
    if root is None:
        return why
    package = root / "node_modules" / "baileys"
    auth_dir = directory / f"baileys-{writers}"
    proc = subprocess.run(
        ["node", str(NODE_SCRIPT), str(package), str(auth_dir), str(writers), str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    if proc.returncode != 0:
        return f"node failed ({proc.returncode}): {proc.stderr.strip()[-300:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return Throughput(int(out["transactions"]), float(out["seconds"]))


# --- machine facts -------------------------------------------------------------------


def filesystem_of(path: Path) -> str:
    """The mount's file system type and device, from /proc/mounts (longest prefix)."""
    best = ("", "unknown", "?")
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown"
    target = str(path.resolve())
    for line in lines:
        device, mount, fstype, *_ = line.split()
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best[0]):
            best = (mount, fstype, device)
    return f"{best[1]} ({best[2]} on {best[0]})"


def machine_facts(directory: Path) -> dict[str, Any]:
    node = shutil.which("node")
    node_version = None
    if node is not None:
        proc = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10)
        node_version = proc.stdout.strip()
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "node": node_version,
        "bench_dir": str(directory),
        "filesystem": filesystem_of(directory),
    }


# --- the run ---------------------------------------------------------------------------


async def _run_backends(directory: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, opener in BACKENDS.items():
        auth = await opener(directory)
        try:
            # Blocking on purpose: nothing else runs in this trio loop meanwhile.
            raw = raw_fsync_rate(directory, ADJACENT_RAW_SECONDS)
            one = await workload(auth, 1, PHASE_SECONDS)
            many = await workload(auth, CONCURRENT, PHASE_SECONDS)
            burst = save_burst = None
            if name != "memory":
                burst = await creds_burst(auth, BURST, through="backend")
                save_burst = await creds_burst(auth, SAVE_CREDS_BURST, through="save_creds")
        finally:
            await auth.aclose()
        results[name] = {
            "raw": raw,
            "one": one,
            "many": many,
            "burst": burst,
            "save_burst": save_burst,
        }
    return results


def _fmt_rate(t: Throughput | str | None) -> str:
    if isinstance(t, Throughput):
        return f"{t.rate:10.0f}"
    return f"{'-':>10}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:6.2f}x" if b > 0 else "   n/a"


def _report(
    facts: dict[str, Any],
    raw: Throughput,
    baileys_one: Throughput | str,
    baileys_many: Throughput | str,
    results: dict[str, Any],
) -> None:
    print("Machine:", ", ".join(f"{k}={v}" for k, v in facts.items()))
    print(
        f"Workload: 1-{MAX_KEYS} keys of {VALUE_SIZE} B per transaction, ids uniform "
        f"among {IDS}; {PHASE_SECONDS}s per phase; 1 and {CONCURRENT} writers."
    )
    adjacent = ", ".join(f"{name} {r['raw'].rate:.0f}" for name, r in results.items())
    print(
        f"Raw disk: write {VALUE_SIZE} B + fsync = {raw.rate:.0f}/s at the start;"
        f" right before each backend's 1-writer phase: {adjacent}"
        f" (before-run: {BEFORE['raw_fsync_per_s']:.0f}/s)"
    )
    for label, b in (("1 writer", baileys_one), (f"{CONCURRENT} writers", baileys_many)):
        if isinstance(b, str):
            print(f"Baileys useMultiFileAuthState ({label}): skipped: {b}")
        else:
            print(f"Baileys useMultiFileAuthState ({label}, no fsync): {b.rate:.0f} tx/s")
    print(f"(before-run Baileys, {CONCURRENT} writers: {BEFORE['baileys_many']:.0f} tx/s)")
    print()
    print(
        f"{'backend':<11}{'1 wr tx/s':>10}{'vs fsync':>9}{'':>3}{'before':>8}{'(ratio)':>8}"
        f"  {'32 wr tx/s':>10}{'vs Baileys':>11}{'':>3}{'before':>8}{'(ratio)':>8}"
    )
    b_rate = baileys_many.rate if isinstance(baileys_many, Throughput) else 0.0
    for name, r in results.items():
        one, many = r["one"], r["many"]
        raw_here = r["raw"].rate
        ok1 = " ok" if one.rate >= TARGET_ONE_WRITER * raw_here else " < "
        okm = (" ok" if many.rate >= TARGET_VS_BAILEYS * b_rate else " < ") if b_rate else "   "
        one0, many0 = BEFORE["one"].get(name, 0.0), BEFORE["many"].get(name, 0.0)
        print(
            f"{name:<11}{_fmt_rate(one)}{_ratio(one.rate, raw_here):>9}{ok1:>3}"
            f"{one0:>8.0f}{_ratio(one0, BEFORE['raw_fsync_per_s']):>8}"
            f"  {_fmt_rate(many)}{_ratio(many.rate, b_rate):>11}{okm:>3}"
            f"{many0:>8.0f}{_ratio(many0, BEFORE['baileys_many']):>8}"
        )
    print()
    print(
        f"{'creds burst':<24}{'updates':>8}{'disk commits':>13}{'after last':>11}"
        f"{'fsyncs':>8}{'newest durable':>15}{'seconds':>8}{'':>3}"
        f"  {'before: updates/commits/after':>29}"
    )
    for name, r in results.items():
        for key, how in (("burst", "backend.commit"), ("save_burst", "save_creds")):
            burst = r[key]
            if burst is None:
                continue
            ok = (
                " ok"
                if burst.disk_commits is not None
                and burst.disk_commits <= TARGET_BURST_COMMITS
                and burst.commits_after_queued is not None
                and burst.commits_after_queued <= 2
                and burst.newest_durable
                else " < "
            )
            before = BEFORE[key].get(name)
            was = "/".join(str(v) for v in before) if before else "-"
            print(
                f"{name + ' ' + how:<24}{burst.updates:>8}{_opt(burst.disk_commits):>13}"
                f"{_opt(burst.commits_after_queued):>11}{_opt(burst.fsyncs):>8}"
                f"{'yes' if burst.newest_durable else 'NO':>15}{burst.seconds:8.2f}{ok}"
                f"  {was:>29}"
            )
    print()
    print(
        f"Targets (TARGETS.md): 1 writer >= {TARGET_ONE_WRITER}x raw fsync (the sample taken"
        f" right before that backend's phase); {CONCURRENT} writers"
        f" >= {TARGET_VS_BAILEYS}x Baileys; a burst of {BURST} creds updates <="
        f" {TARGET_BURST_COMMITS} disk commits, the newest durable within 2 after it"
        " ('after last': disk commits made after the last update was issued). 'ok' / '<' mark"
        " each against this run's baselines; 'before' is the figure at commit"
        f" {BEFORE['commit']} from an earlier run, '(ratio)' its ratio to that run's own"
        " baseline (raw fsync, Baileys)."
    )


def _opt(v: int | None) -> str:
    return "n/a" if v is None else str(v)


def main() -> dict[str, Any]:
    """Run everything once, print the table, return the figures."""
    parent = REPO / ".cache"
    parent.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="bench-stores-", dir=parent))
    try:
        facts = machine_facts(directory)
        raw = raw_fsync_rate(directory)
        baileys_one = baileys_workload(directory, 1, PHASE_SECONDS)
        baileys_many = baileys_workload(directory, CONCURRENT, PHASE_SECONDS)
        results = trio.run(_run_backends, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    _report(facts, raw, baileys_one, baileys_many, results)
    return {
        "machine": facts,
        "raw_fsync_per_s": raw.rate,
        "baileys": {
            "one": baileys_one.rate if isinstance(baileys_one, Throughput) else baileys_one,
            "many": baileys_many.rate if isinstance(baileys_many, Throughput) else baileys_many,
        },
        "backends": {
            name: {
                "raw_fsync_before_one_per_s": r["raw"].rate,
                "one_tx_per_s": r["one"].rate,
                "many_tx_per_s": r["many"].rate,
                "burst": None if r["burst"] is None else asdict(r["burst"]),
                "save_creds_burst": (None if r["save_burst"] is None else asdict(r["save_burst"])),
            }
            for name, r in results.items()
        },
    }


if __name__ == "__main__":
    main()
    sys.exit(0)
