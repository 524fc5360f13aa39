"""Sessions per process: N accounts paired and logged in from ONE runtime, ours vs Baileys v7.

For each N (default 1, 100 and 1,000, Baileys up to 100; ``--full`` runs Baileys at
1,000 too; ``--accounts`` or ``BENCH_SESSIONS=1,100`` choose the counts):

1. pairing: a fresh worker process opens one runtime and starts N sessions under its
   DynamicSupervisor (``start_session`` per account, at most ``PAIR_WINDOW`` pairings
   in flight); the sandbox's phone scans each QR. Figure: accounts paired per second.
2. login: a second fresh worker starts the N sessions again from the saved creds.
   Figures: logins per second; resident memory per open idle session
   (VmRSS after - before, / N); idle CPU with keepalives running (process CPU time
   over a ``IDLE_WINDOW`` window / wall time, default keepalive 30 s); then the
   sandbox drops every socket at once and we time until all N are open again,
   with the server's view of when the reconnects arrived (spread or herd).

The sandbox runs in its own process (bench/_common.py), so its CPU and memory are
not the runtime's. The same workload runs in one node process holding N Baileys
v7 sockets (bench/sessions_baileys.mjs) for the ratio. Targets from TARGETS.md
(scale) are printed beside the figures, never asserted.

``python -m bench sessions`` (default, ~8 min) or
``python -m bench.sessions [--full] [--accounts 1,100] [--no-baileys] [--idle SECONDS]``.

To see what one keepalive costs: ``--keepalive 2`` makes every session ping every 2 s
(the window then holds many exchanges per session; the sandbox counts the pings, and
the worker prints its CPU per exchange), ``--profile FILE`` writes a cProfile of the
worker's idle window, timed with the thread's CPU clock (``python -m pstats FILE``).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import math
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import trio

from bench import _heap
from bench._common import (
    PYTHON,
    REPO,
    HostInfo,
    admin,
    baileys_root,
    cpu_seconds,
    machine_facts,
    percentile,
    print_machine,
    rss_kib,
    sandbox_host,
    wall,
)
from bench._targets import Verdict

DEFAULT_ACCOUNTS = (1, 100, 1000)
DEFAULT_BAILEYS_MAX = 100
"""Baileys' 1,000 pairings take over 30 minutes here: the default run stops its side at 100."""
PAIR_WINDOW = 32
IDLE_WINDOW = 30.0
SETTLE = 3.0
REOPEN_LIMIT = 120.0
NODE_SCRIPT = Path(__file__).resolve().parent / "sessions_baileys.mjs"
TARGETS = {
    "rss_kib_per_session": 150.0,
    "idle_cpu_pct_of_core": 5.0,
    "reopen_s": 30.0,
}
TARGET_N = 1000
"""The targets hold at this many sessions (TARGETS.md, scale); fewer only show a trend."""


def verdict(key: str, value: float | None, n: int) -> str:
    """``met`` / ``NOT MET`` for a figure with a target at ``TARGET_N`` or more sessions."""
    limit = TARGETS.get(key)
    if limit is None:
        return ""
    if n < TARGET_N:
        return f"(target at N={TARGET_N})"
    if value is None:
        return "NOT MET (not measured: not every session opened)"
    return "met" if value <= limit else f"NOT MET ({value / limit:.1f}x the target)"


# --- the worker (one runtime process) ------------------------------------------------


class Opened:
    """Counts sessions whose connection is open, from the runtime's events."""

    def __init__(self) -> None:
        self.open: set[str] = set()
        self.opened_at: dict[str, list[float]] = {}
        self.connecting_at: dict[str, list[float]] = {}
        self.qrs = 0
        self.changed = trio.Event()

    def __call__(self, event: dict[str, Any]) -> None:
        update = event.get("connection_update")
        if not isinstance(update, dict):
            return
        account = str(update.get("account"))
        state = update.get("connection")
        if "qr" in update:
            self.qrs += 1
        if state == "open":
            self.open.add(account)
            self.opened_at.setdefault(account, []).append(wall())
        elif state in ("close", "connecting"):
            self.open.discard(account)
            if state == "connecting":
                self.connecting_at.setdefault(account, []).append(wall())
        self.changed.set()
        self.changed = trio.Event()

    async def wait_count(self, n: int, limit: float) -> bool:
        with trio.move_on_after(limit):
            while len(self.open) < n:
                await self.changed.wait()
            return True
        return False


async def worker(args: argparse.Namespace, sink: TextIO) -> dict[str, Any]:
    from runtime.app import Config, open_runtime
    from runtime.log import make_logger

    root = Path(args.root)
    n: int = args.n
    opened = Opened()
    result: dict[str, Any] = {"n": n, "phase": args.phase}
    gc.collect()
    async with open_runtime(log=make_logger("json", sink), subscribe=opened) as rt:
        async with trio.open_nursery() as nursery:

            async def scan(qr: str) -> None:
                try:
                    await admin(args.admin, {"op": "scan", "qr": qr})
                except Exception:
                    pass  # the QR rotated or the pairing failed: the session shows another

            def config(i: int) -> Config:
                scanned: list[str] = []

                def on_qr(qr: str) -> None:
                    if not scanned:
                        scanned.append(qr)
                        nursery.start_soon(scan, qr)

                return Config(
                    auth=root / f"a{i:04d}",
                    account=f"a{i:04d}",
                    ws_url=args.url,
                    server_root_key=args.key,
                    on_qr=on_qr,
                    keepalive_interval=args.keepalive,
                )

            await trio.sleep(0.2)
            gc.collect()
            rss_before = rss_kib()
            if args.heap:
                heap_objects = _heap.start()
                heap_base = tracemalloc.take_snapshot()
            started = wall()
            if args.phase == "pair":
                window = trio.Semaphore(PAIR_WINDOW)
                for i in range(n):
                    await window.acquire()
                    await rt.start_session(config(i))
                    nursery.start_soon(release_when_open, opened, f"a{i:04d}", window)
                all_open = await opened.wait_count(n, 60 + n * 2.0)
                result["pair_s"] = wall() - started
                result["all_open"] = all_open
                result["qrs"] = opened.qrs
            else:
                for i in range(n):
                    await rt.start_session(config(i))
                all_open = await opened.wait_count(n, 60 + n * 0.5)
                result["login_s"] = wall() - started
                result["all_open"] = all_open
                result["qrs"] = opened.qrs
                if all_open and args.heap:
                    await trio.sleep(SETTLE)
                    gc.collect()
                    result["heap"] = _heap.breakdown(heap_base, heap_objects, n)
                elif all_open and args.idle > 0:
                    await idle_figures(args, opened, rss_before, result)
            result["open_at_end"] = len(opened.open)
            nursery.cancel_scope.cancel()
        await rt.stop()
    return result


async def release_when_open(opened: Opened, account: str, window: trio.Semaphore) -> None:
    with trio.move_on_after(120):
        while account not in opened.open:
            await opened.changed.wait()
    window.release()


async def idle_figures(
    args: argparse.Namespace, opened: Opened, rss_before: int, result: dict[str, Any]
) -> None:
    n: int = args.n
    await trio.sleep(SETTLE)
    gc.collect()
    rss_after = rss_kib()
    result["rss_before_kib"] = rss_before
    result["rss_after_kib"] = rss_after
    result["rss_kib_per_session"] = (rss_after - rss_before) / n
    pings0 = (await admin(args.admin, {"op": "stats"}))["pings"]
    profile = cProfile.Profile(time.thread_time) if args.profile else None
    collections = GcWatch()
    cpu0, t0 = cpu_seconds(), wall()
    if profile is not None:
        profile.enable()
    with collections:
        await trio.sleep(args.idle)
    if profile is not None:
        profile.disable()
    cpu1, t1 = cpu_seconds(), wall()
    result["gc_in_window"] = collections.summary()
    pings = (await admin(args.admin, {"op": "stats"}))["pings"] - pings0
    if profile is not None:
        profile.dump_stats(args.profile)
    result["idle_window_s"] = t1 - t0
    result["idle_cpu_pct_of_core"] = 100.0 * (cpu1 - cpu0) / (t1 - t0)
    result["keepalive_s"] = args.keepalive
    result["keepalives_in_window"] = pings
    # Everything the idle process did, charged to the exchanges: an upper bound on one.
    result["cpu_us_per_keepalive"] = 1e6 * (cpu1 - cpu0) / pings if pings else None
    # Every socket dropped at once; time until all N are open again.
    before = {a: len(v) for a, v in opened.opened_at.items()}
    reply = await admin(args.admin, {"op": "drop"})
    dropped_at = wall()
    result["dropped"] = reply["dropped"]
    while len(opened.open) == n:  # the drops reach us as closes
        with trio.move_on_after(5):
            await opened.changed.wait()
        if wall() - dropped_at > 5:
            break
    reopened = await wait_reopened(opened, before, n, REOPEN_LIMIT)
    result["reopen_s"] = wall() - dropped_at if reopened else None
    result["reopened"] = sum(1 for a, v in opened.opened_at.items() if len(v) > before.get(a, 0))
    firsts = [
        min(t for t in times if t >= dropped_at) - dropped_at
        for times in opened.connecting_at.values()
        if any(t >= dropped_at for t in times)
    ]
    result["reconnect_attempt_s"] = spread(firsts)


class GcWatch:
    """The garbage collector's runs and their CPU time while the block runs, per generation."""

    def __init__(self) -> None:
        self.runs = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.thread_time()
            return
        generation = int(info["generation"])
        self.runs[generation] += 1
        self.seconds[generation] += time.thread_time() - self._started

    def __enter__(self) -> GcWatch:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> dict[str, Any]:
        return {"runs": self.runs, "cpu_s": [round(s, 4) for s in self.seconds]}


async def wait_reopened(opened: Opened, before: dict[str, int], n: int, limit: float) -> bool:
    with trio.move_on_after(limit):
        while sum(1 for a, v in opened.opened_at.items() if len(v) > before.get(a, 0)) < n:
            await opened.changed.wait()
        return True
    return False


def spread(offsets: list[float]) -> dict[str, Any]:
    """When the first reconnect attempts came after the drop, and the busiest 100 ms."""
    if not offsets:
        return {"count": 0}
    bins: dict[int, int] = {}
    for t in offsets:
        bins[int(t * 10)] = bins.get(int(t * 10), 0) + 1
    return {
        "count": len(offsets),
        "min_s": min(offsets),
        "p50_s": percentile(offsets, 0.5),
        "max_s": max(offsets),
        "busiest_100ms": max(bins.values()),
    }


# --- the orchestrator ----------------------------------------------------------------


@dataclass(frozen=True)
class Measure:
    """How the idle window is measured (the keepalive period, an optional profile)."""

    keepalive: float = 30.0
    profile: str | None = None

    def argv(self) -> list[str]:
        return ["--keepalive", str(self.keepalive)] + (
            ["--profile", self.profile] if self.profile else []
        )


async def run_worker(
    host: HostInfo,
    phase: str,
    n: int,
    root: Path,
    idle: float,
    *,
    heap: bool = False,
    measure: Measure | None = None,
) -> dict[str, Any]:
    argv = [
        PYTHON,
        "-m",
        "bench.sessions",
        "worker",
        "--phase",
        phase,
        "--n",
        str(n),
        "--root",
        str(root),
        "--url",
        host.url,
        "--key",
        host.root,
        "--admin",
        str(host.admin),
        "--idle",
        str(idle),
        *(["--heap"] if heap else []),
        *(measure.argv() if measure is not None else []),
    ]
    # Tracing every allocation with 32 frames makes a login several times slower.
    with trio.fail_after(300 + n * (12 if heap else 3)):
        proc = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, cwd=REPO)
    lines = [line for line in proc.stdout.decode().splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker {phase} n={n} failed: {proc.stderr.decode()[-2000:]}")
    out: dict[str, Any] = json.loads(lines[-1])
    return out


async def run_node(
    peer: Path, host: HostInfo, phase: str, n: int, root: Path, idle: float
) -> dict[str, Any]:
    env = dict(os.environ, NODE_PATH=str(peer / "node_modules"))
    argv = [
        "node",
        "--expose-gc",
        str(NODE_SCRIPT),
        json.dumps(
            {
                "peer": str(peer),
                "phase": phase,
                "n": n,
                "root": str(root),
                "url": host.url,
                "admin": host.admin,
                "idle_ms": int(idle * 1000),
                "settle_ms": int(SETTLE * 1000),
                "pair_window": PAIR_WINDOW,
                "reopen_limit_ms": int(REOPEN_LIMIT * 1000),
            }
        ),
    ]
    with trio.fail_after(300 + n * 3):
        proc = await trio.run_process(
            argv, capture_stdout=True, capture_stderr=True, cwd=peer, env=env, check=False
        )
    lines = [line for line in proc.stdout.decode().splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"node {phase} n={n} failed ({proc.returncode}): {proc.stderr.decode()[-1500:]}"
        )
    out: dict[str, Any] = json.loads(lines[-1])
    return out


async def one_count(
    n: int, idle: float, peer: Path | None, why_no_peer: str, tmp: Path, measure: Measure
) -> dict[str, Any]:
    row: dict[str, Any] = {"n": n}
    idle_here = idle if n > 1 else 0.0  # one session's idle CPU is below the clock's tick
    async with sandbox_host() as host:
        ours = tmp / f"ours{n}"
        pair = await run_worker(host, "pair", n, ours, 0)
        login = await run_worker(host, "login", n, ours, idle_here, measure=measure)
        login["server_view"] = await server_view(host, n) if idle_here else {}
        row["ours"] = {"pair": pair, "login": login}
        row["ours"]["sandbox_cpu_s"] = cpu_seconds(host.pid)
    if peer is None:
        row["baileys"] = {"skipped": why_no_peer}
        return row
    async with sandbox_host() as host:
        theirs = tmp / f"baileys{n}"
        try:
            pair = await run_node(peer, host, "pair", n, theirs, 0)
            login = await run_node(peer, host, "login", n, theirs, idle_here)
            login["server_view"] = await server_view(host, n) if idle_here else {}
            row["baileys"] = {"pair": pair, "login": login}
        except (RuntimeError, trio.TooSlowError) as exc:
            row["baileys"] = {"skipped": f"could not hold {n} sockets: {exc}"}
    return row


async def heap_count(n: int, tmp: Path) -> dict[str, Any]:
    """Pair N accounts, log them in again under tracemalloc, and return the breakdown."""
    async with sandbox_host() as host:
        await run_worker(host, "pair", n, tmp / f"heap{n}", 0)
        login = await run_worker(host, "login", n, tmp / f"heap{n}", 0, heap=True)
    if "heap" not in login:
        raise RuntimeError(f"N={n}: not every session opened ({login})")
    heap: dict[str, Any] = login["heap"]
    return heap


async def server_view(host: HostInfo, n: int) -> dict[str, Any]:
    """The reconnects as the sandbox saw them after the drop (sampled every 50 ms there).

    Client-side timestamps bunch up when the client's loop is busy; the server's
    counter of accepted connections says when the attempts actually arrived.
    """
    samples = (await admin(host.admin, {"op": "drop_report"}))["samples"]
    if len(samples) < 2:
        return {}
    base = samples[0][1]
    arrivals = [(t, total - base) for t, total, _ in samples]
    peak = 0
    for (t0, c0), (t1, c1) in zip(arrivals, arrivals[2:], strict=False):  # ~100 ms apart
        peak = max(peak, round((c1 - c0) * 0.1 / max(t1 - t0, 0.1)))
    seen = [t for t, count in arrivals if count > 0]
    full = [t for t, count in arrivals if count >= n]
    back = [t for t, _, logged_in in samples if logged_in >= n]
    return {
        "first_arrival_s": seen[0] if seen else None,
        "all_arrived_s": full[0] if full else None,
        "all_logged_in_s": back[0] if back else None,
        "peak_arrivals_per_100ms": peak,
        "connections_after_drop": arrivals[-1][1],
    }


def throughput(phase: dict[str, Any], key: str) -> float | None:
    seconds = phase.get(key)
    if not phase.get("all_open") or not seconds:
        return None
    return float(phase["n"]) / float(seconds)


def summarize(row: dict[str, Any]) -> dict[str, Any]:
    """Flat figures of one N for the table and the JSON."""
    out: dict[str, Any] = {"n": row["n"]}
    for who in ("ours", "baileys"):
        side = row.get(who, {})
        if "pair" not in side:
            out[who] = {"skipped": side.get("skipped", "not run")}
            continue
        pair, login = side["pair"], side["login"]
        reconnect = login.get("reconnect_attempt_s", {})
        out[who] = {
            "pairings_per_s": throughput(pair, "pair_s"),
            "logins_per_s": throughput(login, "login_s"),
            "rss_kib_per_session": login.get("rss_kib_per_session"),
            "idle_cpu_pct_of_core": login.get("idle_cpu_pct_of_core"),
            "cpu_us_per_keepalive": login.get("cpu_us_per_keepalive"),
            "keepalives_in_window": login.get("keepalives_in_window"),
            "gc_in_window": login.get("gc_in_window"),
            "reopen_s": login.get("reopen_s"),
            "reconnects_first_s": [reconnect.get("min_s"), reconnect.get("max_s")],
            "reconnects_busiest_100ms": login.get("server_view", {}).get("peak_arrivals_per_100ms"),
            "reconnects_arrived_s": [
                login.get("server_view", {}).get("first_arrival_s"),
                login.get("server_view", {}).get("all_arrived_s"),
            ],
            "client_busiest_100ms": reconnect.get("busiest_100ms"),
            "qrs_at_login": login.get("qrs"),
            "raw": side,
        }
    return out


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0 or (isinstance(a, float) and math.isnan(a)):
        return "-"
    return f"{a / b:.2f}"


def fmt(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return format(value, spec)
    return str(value)


def print_table(rows: list[dict[str, Any]], idle: float) -> None:
    head = f"{'figure':38} {'N':>5} {'ours':>10} {'Baileys':>10} {'ours/B':>7}  target"
    print(head)
    print("-" * len(head))
    lines = (
        ("pairings/s", "pairings_per_s", ".1f", ""),
        ("logins/s (saved creds)", "logins_per_s", ".1f", ""),
        (
            "RSS KiB per open idle session",
            "rss_kib_per_session",
            ".0f",
            at_scale("rss_kib_per_session"),
        ),
        (
            f"idle CPU % of one core ({idle:.0f} s)",
            "idle_cpu_pct_of_core",
            ".2f",
            at_scale("idle_cpu_pct_of_core"),
        ),
        ("idle CPU per keepalive exchange (us)", "cpu_us_per_keepalive", ".0f", ""),
        ("all open again after drop (s)", "reopen_s", ".1f", at_scale("reopen_s")),
        ("reconnects at the server, peak/100 ms", "reconnects_busiest_100ms", "d", "spread"),
    )
    for row in rows:
        ours, theirs = row["ours"], row["baileys"]
        for label, key, spec, target in lines:
            a, b = ours.get(key), theirs.get(key)
            print(
                f"{label:38} {row['n']:>5} {fmt(a, spec):>10} {fmt(b, spec):>10} "
                f"{ratio(a, b):>7}  {target} {verdict(key, a, row['n'])}".rstrip()
            )
        if ours.get("gc_in_window"):
            runs, cpu = ours["gc_in_window"]["runs"], ours["gc_in_window"]["cpu_s"]
            print(
                f"  ours N={row['n']}: the idle window held {ours['keepalives_in_window']} "
                f"keepalive exchanges; the garbage collector ran {runs} times (generations "
                f"0, 1, 2) for {cpu} s of CPU"
            )
        for who, side in (("ours", ours), ("Baileys", theirs)):
            if "skipped" in side:
                print(f"  {who} N={row['n']}: skipped: {side['skipped'][:300]}")
            elif side.get("reconnects_arrived_s", [None])[0] is not None:
                first, last = side["reconnects_arrived_s"]
                print(
                    f"  {who} N={row['n']}: reconnects reached the sandbox {first:.2f}-"
                    f"{fmt(last, '.2f')} s after the drop (client-side busiest 100 ms: "
                    f"{side['client_busiest_100ms']})"
                )


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.sessions")
    parser.add_argument(
        "--full", action="store_true", help="Baileys at every count too (1,000: over 30 min)"
    )
    parser.add_argument("--accounts", default=None, help="comma-separated N (e.g. 1,100,1000)")
    parser.add_argument("--idle", type=float, default=IDLE_WINDOW, help="idle CPU window (s)")
    parser.add_argument("--no-baileys", action="store_true", help="ours only")
    parser.add_argument(
        "--baileys-max", type=int, default=None, help="run Baileys only for N up to this"
    )
    parser.add_argument(
        "--heap", action="store_true", help="ours only: where the heap of idle sessions goes"
    )
    parser.add_argument(
        "--keepalive", type=float, default=30.0, help="ours only: keepalive interval (s)"
    )
    parser.add_argument(
        "--profile", default=None, help="ours only: cProfile of the idle window to this file"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the counts, print the table, return the figures."""
    args = parse(list(argv) if argv is not None else [])
    if args.accounts:
        counts = tuple(int(x) for x in args.accounts.split(","))
    elif os.environ.get("BENCH_SESSIONS"):
        counts = tuple(int(x) for x in os.environ["BENCH_SESSIONS"].split(","))
    else:
        counts = DEFAULT_ACCOUNTS
    baileys_max = args.baileys_max
    if baileys_max is None and not args.full and not args.accounts:
        baileys_max = DEFAULT_BAILEYS_MAX
    facts = machine_facts()
    print_machine(facts)
    print(
        f"accounts: {', '.join(map(str, counts))}; Baileys "
        + (f"up to {baileys_max}" if baileys_max is not None else "at every count")
        + " (ours ~8 min in all on a shared 2-core VM; Baileys' 1,000 pairings take over"
        " 30 min there: `--full` runs them)"
    )
    if args.heap:
        return {"machine": facts, "heap": heap_counts(counts)}
    peer, why = (None, "--no-baileys") if args.no_baileys else baileys_root()
    profile = str(Path(args.profile).resolve()) if args.profile else None
    measure = Measure(args.keepalive, profile)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sessions-") as tmp:
        for n in counts:
            started = wall()
            if baileys_max is not None and n > baileys_max:
                peer_n, why_n = None, f"Baileys only up to {baileys_max} (--full runs it)"
            else:
                peer_n, why_n = peer, why
            row = trio.run(one_count, n, args.idle, peer_n, why_n, Path(tmp), measure)
            rows.append(summarize(row))
            rows[-1]["elapsed_s"] = wall() - started
            print(f"(N={n}: {rows[-1]['elapsed_s']:.0f} s)", flush=True)
    print_table(rows, args.idle)
    return {
        "machine": facts,
        "targets": TARGETS,
        "idle_window_s": args.idle,
        "rows": rows,
        "verdicts": [v.as_dict() for v in verdicts(rows)],
    }


TARGET_LABELS = {
    "rss_kib_per_session": ("resident per idle session", "KiB"),
    "idle_cpu_pct_of_core": ("idle CPU, % of one core", "%"),
    "reopen_s": ("all open again after a drop", "s"),
}
"""The closing table's name and unit for each figure with a target in ``TARGETS``."""


def target_text(key: str) -> str:
    """``TARGETS[key]`` as printed: ``<= 150 KiB``."""
    return f"<= {TARGETS[key]:g} {TARGET_LABELS[key][1]}"


def at_scale(key: str) -> str:
    """The table's target column: the target and the scale it holds at."""
    return f"{target_text(key)} (N={TARGET_N})"


def verdicts(rows: Sequence[dict[str, Any]]) -> list[Verdict]:
    """Our figures at the targets' scale (N >= 1,000) beside their targets."""
    out = []
    for row in rows:
        ours = row.get("ours", {})
        if row["n"] < TARGET_N or "skipped" in ours:
            continue
        for key, (label, unit) in TARGET_LABELS.items():
            value = ours.get(key)
            out.append(
                Verdict(
                    figure=f"{label} (N={row['n']})",
                    value="not measured" if value is None else f"{value:.1f} {unit}",
                    target=target_text(key),
                    met=verdict(key, value, row["n"]) == "met",
                )
            )
    return out


def heap_counts(counts: Sequence[int]) -> dict[int, Any]:
    out = {}
    with tempfile.TemporaryDirectory(prefix="bench-sessions-heap-") as tmp:
        for n in counts:
            out[n] = trio.run(heap_count, n, Path(tmp))
            _heap.print_breakdown(out[n], n)
    return out


def worker_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sessions worker")
    parser.add_argument("--phase", choices=("pair", "login"), required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--admin", type=int, required=True)
    parser.add_argument("--idle", type=float, default=0.0)
    parser.add_argument("--keepalive", type=float, default=30.0)
    parser.add_argument("--heap", action="store_true")
    parser.add_argument("--profile", default=None)
    with open(os.devnull, "w") as sink:  # the runtime's JSON logs go nowhere
        result = trio.run(worker, parser.parse_args(argv), sink)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker_main(sys.argv[2:])
    else:
        main(sys.argv[1:])
