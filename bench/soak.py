"""Crash soak: SIGKILL a writing session at random moments, N times; nothing acknowledged is lost.

``python -m bench.soak [--kills N] [--seed S] [--per-dir K]`` (default 1,000 kills;
not part of ``make bench``: this module has no ``main``). The short variant runs in
CI: tests/soak/test_soak_short.py (30 kills). ``python -m bench.soak --messages
[--kills N] [--seed S] [--rate R]`` runs the message soak instead
(bench/soak_messages.py: an echo bot SIGKILLed while a contact streams to it).

A ``baileys-trio sandbox`` subprocess serves; bench/soak_child.py runs one session
that pairs (a fresh auth folder every ``--per-dir`` kills, so pairing and the
pre-key upload are hit again and again), logs in and runs key transactions,
printing each acknowledged commit. Each run is SIGKILLed at a random moment
anchored to what it printed: its spawn (start-up, store open, connect), its QR
(scan, durable identity, 515, login, pre-key upload) or its open (transactions
in flight). After every kill, before the next run:

1. ``inspect_native`` reports the store intact (a torn, never-acknowledged tail is
   counted, not an error; anything else is a corruption);
2. the store opens and every acknowledged commit is present: each key holds the
   acknowledged write or a later one of the same run order, and the creds hold at
   least what the last acknowledged ``creds_update`` said (``durable_seq`` at or
   past its version, monotone fields at or past it, ``registered``/``me`` kept);
3. once the sandbox acknowledged the pairing (its link count rose), no later run
   shows a QR: a QR then is a re-pairing.

Each folder ends with a run that is not killed and must reach ``open`` without a
QR. Prints kills survived / data lost / corruptions found / re-pairings, and
writes bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

from bench._common import PYTHON, REPO, JsonLines, machine_facts, print_machine, wall
from bench.soak_child import KEY_TYPE, parse_value

RESULTS = Path(__file__).resolve().parent / "results" / "soak.json"
DEFAULT_KILLS = 1000
DEFAULT_PER_DIR = 10
STEP_LIMIT = 60.0


@dataclass
class Tally:
    """What the soak found; the first five must stay 0."""

    kills: int = 0
    kills_survived: int = 0
    data_lost: int = 0
    corruptions: int = 0
    repairings: int = 0
    failed_logins: int = 0
    acked_key_commits: int = 0
    acked_creds_commits: int = 0
    torn_tails: int = 0
    pairings_acknowledged: int = 0
    pairings_abandoned: int = 0
    logins_verified: int = 0
    folders: int = 0
    kills_by_anchor: dict[str, int] = field(default_factory=dict)
    kills_by_stage: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)


@dataclass
class Folder:
    """One auth folder's acknowledged history, as the killed runs printed it."""

    path: Path
    links_before: int
    keys: dict[str, tuple[int, int]] = field(default_factory=dict)
    creds_version: int = 0
    creds_fields: dict[str, Any] = field(default_factory=dict)
    acknowledged: bool = False


# --- the sandbox -------------------------------------------------------------------


@dataclass(frozen=True)
class Sandbox:
    url: str
    root: str


@asynccontextmanager
async def sandbox_process() -> AsyncIterator[Sandbox]:
    """``baileys-trio sandbox`` as a subprocess (its URL and root key from its first lines)."""
    script = Path(PYTHON).parent / "baileys-trio"
    argv = [str(script), "sandbox"] if script.exists() else [PYTHON, "-m", "runtime", "sandbox"]
    process = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, cwd=REPO)
    try:
        assert process.stdout is not None
        buffer = b""
        with trio.fail_after(STEP_LIMIT):
            while buffer.count(b"\n") < 2:
                chunk = await process.stdout.receive_some(4096)
                if not chunk:
                    raise RuntimeError("baileys-trio sandbox exited before its URL and key")
                buffer += chunk
        url, root = buffer.decode().splitlines()[:2]
        yield Sandbox(url, root)
    finally:
        process.send_signal(signal.SIGINT)
        with trio.CancelScope(shield=True):
            with trio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


async def links(sb: Sandbox) -> int:
    from sandbox.control import request_control

    with trio.fail_after(STEP_LIMIT):
        reply = await request_control(sb.url, {"op": "statistics"})
    return int(reply["statistics"]["links"])


# --- one run -------------------------------------------------------------------------


@dataclass
class RunOutcome:
    stage: str
    qrs: int
    opened: bool
    ended: str | None
    exit: int | None


async def run_child(
    sb: Sandbox,
    folder: Folder,
    run: int,
    seed: int,
    tally: Tally,
    kill_after: tuple[str, float] | None,
) -> RunOutcome:
    """Run soak_child once; SIGKILL it ``delay`` s after ``anchor`` (None: until open)."""
    argv = [
        PYTHON,
        "-m",
        "bench.soak_child",
        "--auth",
        str(folder.path),
        "--url",
        sb.url,
        "--key",
        sb.root,
        "--run",
        str(run),
        "--seed",
        str(seed),
    ]
    process = await trio.lowlevel.open_process(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO
    )
    lines = JsonLines(process)
    outcome = RunOutcome(stage="start", qrs=0, opened=False, ended=None, exit=None)
    reached = {"start": trio.Event(), "qr": trio.Event(), "open": trio.Event()}
    reached["start"].set()
    done = trio.Event()

    async def read() -> None:
        while True:
            line = await lines.next()
            if line is None:
                break
            record(line, folder, tally, outcome, reached)
        done.set()
        for event in reached.values():
            event.set()  # nothing more will come

    try:
        with trio.fail_after(STEP_LIMIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                if kill_after is None:
                    await reached["open"].wait()
                else:
                    anchor, delay = kill_after
                    await reached[anchor].wait()
                    await trio.sleep(delay)
                if process.returncode is None:
                    process.send_signal(signal.SIGKILL if kill_after else signal.SIGINT)
                await process.wait()
                await done.wait()  # every line it printed before dying
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
    outcome.exit = process.returncode
    return outcome


def record(
    line: dict[str, Any],
    folder: Folder,
    tally: Tally,
    outcome: RunOutcome,
    reached: dict[str, trio.Event],
) -> None:
    """Fold one printed line into the folder's acknowledged history."""
    ack = line.get("ack")
    if ack == "keys":
        run, i = int(line["run"]), int(line["i"])
        for key_id in line["ids"]:
            folder.keys[key_id] = (run, i)
        tally.acked_key_commits += 1
        outcome.stage = "transactions"
    elif ack == "creds":
        tally.acked_creds_commits += 1
        folder.creds_version = max(folder.creds_version, int(line.get("version") or 0))
        folder.creds_fields.update(line.get("fields") or {})
        if outcome.stage == "start":
            outcome.stage = "creds"
    event = line.get("event")
    if event == "qr":
        outcome.qrs += 1
        outcome.stage = "pairing"
        reached["qr"].set()
    elif event == "open":
        outcome.opened = True
        outcome.stage = "open"
        reached["open"].set()
    elif event == "ended":
        outcome.ended = str(line.get("reason"))


# --- the checks after a kill -----------------------------------------------------------


async def check_store(folder: Folder, tally: Tally, label: str) -> None:
    """inspect, then open: no corruption, every acknowledged commit present."""
    from stores.auth import use_native_file_auth_state
    from stores.errors import StoreError
    from stores.native_inspect import inspect_native

    report = await trio.to_thread.run_sync(inspect_native, folder.path)
    if report.torn_tail is not None:
        tally.torn_tails += 1
    if not report.ok or (report.creds_present and report.creds_valid is False):
        tally.corruptions += 1
        tally.problem(f"{label}: inspect: ok={report.ok} problems={list(report.problems)}")
        return
    if report.new:
        if folder.creds_version or folder.keys:
            tally.data_lost += 1
            tally.problem(f"{label}: the store reads as new after acknowledged commits")
        return
    if folder.creds_version and (report.durable_seq or 0) < folder.creds_version:
        tally.data_lost += 1
        tally.problem(
            f"{label}: durable_seq {report.durable_seq} < acknowledged creds version "
            f"{folder.creds_version}"
        )
    try:
        auth = await use_native_file_auth_state(folder.path)
    except StoreError as exc:
        tally.corruptions += 1
        tally.problem(f"{label}: open failed: {exc!r}")
        return
    try:
        creds = auth.state.creds
        lost = creds_lost(folder.creds_fields, creds)
        if lost:
            tally.data_lost += 1
            tally.problem(f"{label}: creds behind the acknowledged ones: {lost}")
        ids = sorted(folder.keys)
        stored = await auth.state.keys.get(KEY_TYPE, ids) if ids else {}
        for key_id in ids:
            got = parse_value(stored.get(key_id))
            if got is None or got < folder.keys[key_id]:
                tally.data_lost += 1
                tally.problem(
                    f"{label}: {KEY_TYPE}/{key_id} is {got}, acknowledged {folder.keys[key_id]}"
                )
    finally:
        await auth.aclose()


def creds_lost(acked: dict[str, Any], creds: Any) -> list[str]:
    """Fields whose durable value is behind what an acknowledged creds_update said."""
    lost = []
    for name in ("next_pre_key_id", "first_unuploaded_pre_key_id"):
        if name in acked and getattr(creds, name) < int(acked[name]):
            lost.append(f"{name} {getattr(creds, name)} < {acked[name]}")
    if acked.get("registered") and not creds.registered:
        lost.append("registered")
    if acked.get("me") and (creds.me or {}).get("id") != acked["me"]:
        lost.append("me")
    return lost


# --- the soak --------------------------------------------------------------------------


def kill_moment(rng: random.Random, acknowledged: bool) -> tuple[str, float]:
    """Where to kill: mostly inside pairing/login while unpaired, spread over a run after."""
    if not acknowledged:
        return (
            ("qr", rng.uniform(0.0, 0.08)) if rng.random() < 0.8 else ("start", rng.uniform(0, 1.2))
        )
    roll = rng.random()
    if roll < 0.35:
        return ("start", rng.uniform(0.0, 1.5))
    return ("open", rng.uniform(0.0, 0.4))


async def soak(kills: int, seed: int, per_dir: int, workdir: Path, progress: bool) -> Tally:
    rng = random.Random(seed)
    tally = Tally()
    run = 0
    async with sandbox_process() as sb:
        while tally.kills < kills:
            tally.folders += 1
            folder = Folder(workdir / f"auth{tally.folders:04d}", await links(sb))
            in_folder = 0
            while in_folder < per_dir and tally.kills < kills:
                run += 1
                paired_before = folder.acknowledged
                anchor, delay = kill_moment(rng, paired_before)
                outcome = await run_child(sb, folder, run, seed, tally, (anchor, delay))
                await trio.sleep(0.1)  # a reply the dying run sent reaches the sandbox's count
                bad_before = tally.data_lost + tally.corruptions + tally.repairings
                folder.acknowledged = folder.acknowledged or await links(sb) > folder.links_before
                label = f"seed {seed} run {run} ({anchor}+{delay:.2f}s, {outcome.stage})"
                if paired_before and outcome.qrs:
                    tally.repairings += 1
                    tally.problem(f"{label}: a QR after the pairing was acknowledged")
                if outcome.opened and not outcome.qrs:
                    tally.logins_verified += 1
                if outcome.ended is not None and outcome.exit is not None and outcome.exit >= 0:
                    if folder.acknowledged:
                        tally.failed_logins += 1
                        tally.problem(
                            f"{label}: ended {outcome.ended} after an acknowledged pairing"
                        )
                    else:
                        tally.pairings_abandoned += 1  # identity durable, reply never arrived: 401
                    break
                tally.kills += 1
                in_folder += 1
                tally.kills_by_anchor[anchor] = tally.kills_by_anchor.get(anchor, 0) + 1
                tally.kills_by_stage[outcome.stage] = tally.kills_by_stage.get(outcome.stage, 0) + 1
                await check_store(folder, tally, label)
                if tally.data_lost + tally.corruptions + tally.repairings == bad_before:
                    tally.kills_survived += 1
                if progress and tally.kills % 50 == 0:
                    print(
                        f"  {tally.kills} kills: lost {tally.data_lost}, corrupt "
                        f"{tally.corruptions}, re-pairings {tally.repairings}",
                        flush=True,
                    )
            extra = await links(sb) - folder.links_before - 1
            if extra > 0:  # the sandbox linked this folder more than once: paired again
                tally.repairings += extra
                tally.problem(f"seed {seed} folder {tally.folders}: linked {extra + 1} times")
            if folder.acknowledged:
                tally.pairings_acknowledged += 1
                run += 1
                final = await run_child(sb, folder, run, seed, tally, None)
                if final.qrs or not final.opened:
                    tally.repairings += int(bool(final.qrs))
                    tally.failed_logins += int(not final.opened)
                    tally.problem(f"seed {seed} folder {tally.folders}: final run {final}")
                else:
                    tally.logins_verified += 1
                await check_store(folder, tally, f"seed {seed} folder {tally.folders} final")
    return tally


def print_summary(tally: Tally, seconds: float) -> None:
    print(f"kills survived:     {tally.kills_survived} / {tally.kills}")
    print(f"data lost:          {tally.data_lost}")
    print(f"corruptions found:  {tally.corruptions}")
    print(f"re-pairings:        {tally.repairings}")
    print(f"failed logins:      {tally.failed_logins}")
    print(
        f"acknowledged commits checked: {tally.acked_key_commits} key transactions, "
        f"{tally.acked_creds_commits} creds updates; torn tails seen {tally.torn_tails}"
    )
    print(
        f"folders {tally.folders}: pairings acknowledged {tally.pairings_acknowledged}, "
        f"abandoned before the phone's ack {tally.pairings_abandoned}; logins without QR "
        f"verified {tally.logins_verified}"
    )
    print(f"kills by anchor {tally.kills_by_anchor}; by stage reached {tally.kills_by_stage}")
    print(f"{seconds:.0f} s ({seconds / max(1, tally.kills):.2f} s per kill)")
    for problem in tally.problems[:20]:
        print(f"  problem: {problem}")


def run_soak(
    kills: int, *, seed: int = 1, per_dir: int = DEFAULT_PER_DIR, progress: bool = False
) -> tuple[Tally, float]:
    """Run the soak in a temporary folder; returns the tally and the seconds it took."""
    started = wall()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        tally = trio.run(soak, kills, seed, per_dir, Path(tmp), progress)
    return tally, wall() - started


def entry(argv: Sequence[str]) -> int:
    if "--messages" in argv:  # the message soak: bench/soak_messages.py
        from bench.soak_messages import entry as messages_entry

        return messages_entry([arg for arg in argv if arg != "--messages"])
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        epilog="--messages [--kills N] [--seed S] [--rate R]: the message soak instead "
        "(bench/soak_messages.py)",
    )
    parser.add_argument("--kills", type=int, default=DEFAULT_KILLS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--per-dir", type=int, default=DEFAULT_PER_DIR)
    args = parser.parse_args(argv)
    facts = machine_facts()
    print_machine(facts)
    print(f"soak: {args.kills} SIGKILLs, seed {args.seed}, a new auth folder every {args.per_dir}")
    tally, seconds = run_soak(args.kills, seed=args.seed, per_dir=args.per_dir, progress=True)
    print_summary(tally, seconds)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {"machine": facts, "seed": args.seed, "seconds": seconds, **asdict(tally)},
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    print(f"results: {RESULTS.relative_to(REPO)}")
    bad = tally.data_lost + tally.corruptions + tally.repairings + tally.failed_logins
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(entry(sys.argv[1:]))
