"""Backups under write load and SIGKILLs: every finished backup restores to a store that
opens and holds a prefix of the writer's commits, including every commit acknowledged
before the backup began; a killed backup or restore leaves nothing half made.

A writer process commits ``n = 1, 2, 3...`` one after another into a native store and
records each acknowledged ``n`` (``backup_writer_child``); after commit ``n`` the store
holds exactly the ids of the last ``WINDOW`` commits, its creds those of the last
multiple of 7. Rounds of ``baileys-trio
backup`` run beside it; in some the backup process is SIGKILLed at a random moment of
its work, in others the writer is. Each backup left behind is restored by
``baileys-trio restore``, itself SIGKILLed at a random moment in half the rounds.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import trio

from stores.backup import restore_location
from stores.inspection import detect_backend
from stores.native import open_native_backend
from tests.stores.backup_writer_child import CREDS_EVERY, WINDOW

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 20
TIMEOUT = 120


def _start(*argv: str | Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, *map(str, argv)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _cli(*argv: str | Path) -> subprocess.Popen[bytes]:
    return _start("-m", "runtime", *argv)


def _timed(*argv: str | Path) -> float:
    """Seconds one run of the command takes (it must succeed)."""
    started = time.monotonic()
    proc = _cli(*argv)
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err.decode()
    return time.monotonic() - started


def _last_acked(ack_file: Path) -> int:
    if not ack_file.exists():
        return 0
    lines = ack_file.read_bytes().split(b"\n")[:-1]  # the last line may be half written
    return int(lines[-1]) if lines else 0


def _kill_within(proc: subprocess.Popen[bytes], delay: float) -> bool:
    """SIGKILL ``proc`` after ``delay`` seconds unless it ended; whether it was killed."""
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    return True


def _state_of(path: Path) -> tuple[int, int]:
    """``(n, next_pre_key_id)`` of a store holding commits ``1..n``; asserts the prefix."""

    async def read() -> tuple[int, int]:
        async with await open_native_backend(path) as store:
            snap = await store.snapshot()
        sessions = dict(snap.keys.get("session", {}))
        last = sessions.pop("last", {"n": 0})["n"]
        held = {int(name[1:]) for name in sessions}
        assert held == set(range(max(1, last - WINDOW + 1), last + 1)), f"{path}: not a prefix"
        assert snap.creds is not None
        return last, snap.creds.next_pre_key_id

    n, pre_key_id = trio.run(read)
    # Creds written with commit 7k are there exactly when commit 7k is.
    assert pre_key_id == max(n - n % CREDS_EVERY, 1), f"{path}: creds of another commit"
    return n, pre_key_id


@dataclass
class Tally:
    finished: int = 0
    backups_killed: int = 0
    killed_left_complete: int = 0
    writer_kills: int = 0
    restores_killed: int = 0
    restores_killed_complete: int = 0
    points: list[int] = field(default_factory=list)


def _restore(out: Path, loc: Path, n: int, rng: random.Random, span: float, t: Tally) -> None:
    """Restore ``out`` into ``loc``, perhaps killing it: never half a store, then whole."""
    if rng.random() < 0.5:
        proc = _cli("restore", out, loc)
        _kill_within(proc, rng.uniform(*span))
        _, err = proc.communicate(timeout=TIMEOUT)
        if proc.returncode == -signal.SIGKILL:
            t.restores_killed += 1
            if loc.exists() and detect_backend(loc) is not None:
                t.restores_killed_complete += 1
                assert _state_of(loc)[0] == n  # whole, as the backup
                return
        else:
            assert proc.returncode == 0, err.decode()
    if not loc.exists() or detect_backend(loc) is None:
        # Absent, or left empty by the kill: the restore can simply run again.
        trio.run(restore_location, out, loc)
    assert _state_of(loc)[0] == n


def test_backups_under_load_and_kills_restore_to_a_prefix_of_acknowledged_commits(
    tmp_path: Path,
) -> None:
    """20 rounds of backup beside a committing writer, with SIGKILLs of the backup, the
    writer and the restore at random moments: every backup left restores whole and holds
    commits 1..n with n at least the last commit acknowledged before it began."""
    seed = int.from_bytes(os.urandom(4), "big")
    print(f"seed {seed}")
    rng = random.Random(seed)
    src, acks = tmp_path / "auth", tmp_path / "acks"
    writer = _start("-m", "tests.stores.backup_writer_child", src, acks)
    t = Tally()
    try:
        while _last_acked(acks) < 20:
            assert writer.poll() is None, writer.stderr and writer.stderr.read().decode()
            time.sleep(0.05)
        startup = _timed("backup", "--help")
        work = (startup, _timed("backup", "--auth", src, tmp_path / "calibrate") * 1.1)
        restore_span = (startup, _timed("restore", tmp_path / "calibrate", tmp_path / "c2") * 1.1)
        for round_ in range(ROUNDS):
            if writer.poll() is not None:
                writer = _start("-m", "tests.stores.backup_writer_child", src, acks)
                time.sleep(0.2)
            out, loc = tmp_path / f"bak{round_}", tmp_path / f"loc{round_}"
            before = _last_acked(acks)
            proc = _cli("backup", "--auth", src, out)
            what = rng.choice(("nothing", "backup", "writer"))
            if what == "backup":
                _kill_within(proc, rng.uniform(*work))
            elif what == "writer" and _kill_within(writer, rng.uniform(0, work[1])):
                writer.wait()
                t.writer_kills += 1
            _, err = proc.communicate(timeout=TIMEOUT)
            if proc.returncode == -signal.SIGKILL:
                t.backups_killed += 1
                if not out.exists() or detect_backend(out) is None:
                    continue  # absent or empty: nothing that could be taken for a backup
                t.killed_left_complete += 1
            else:
                assert proc.returncode == 0, f"seed {seed} round {round_}: {err.decode()}"
                t.finished += 1
            n, _ = _state_of(out)
            assert n >= before, f"seed {seed} round {round_}: {n} < acked {before}"
            t.points.append(n)
            _restore(out, loc, n, rng, restore_span, t)
    finally:
        writer.kill()
        writer.wait()
    print(t)
    assert t.finished >= ROUNDS // 3
    assert t.points == sorted(t.points)  # later backups never hold fewer commits
