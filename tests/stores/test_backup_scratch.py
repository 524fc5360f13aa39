"""A SQLite backup's scratch copy: never left behind for long.

The copy SQLite's online backup makes holds the account's keys. A backup killed while
it held one leaves it; the next backup beside the same target removes it, and never one
a live backup still uses.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import trio

from stores.backup import (
    SCRATCH_IN_USE,
    UNLOCKED_SCRATCH_AGE,
    backup_location,
    sweep_abandoned_scratch,
)
from tests.cli.stores_helpers import ROOT, make_store

# Runs a backup whose online copy, once made, waits to be killed.
KILLED_BACKUP = """
import sys, time, trio
from stores import backup
copy = backup._sqlite_online_copy
def copy_then_wait(db, out):
    copy(db, out)
    print("copied", flush=True)
    time.sleep(60)
backup._sqlite_online_copy = copy_then_wait
trio.run(backup.backup_location, sys.argv[1], sys.argv[2])
"""


def _scratch_dirs(parent: Path, target: str) -> list[Path]:
    return sorted(p for p in parent.iterdir() if p.name.startswith(f".{target}.backup-"))


def _kill_a_backup_after_its_copy(db: Path, out: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_BACKUP, str(db), str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"copied\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


def test_the_copy_a_killed_backup_left_is_removed_by_the_next_backup(tmp_path: Path) -> None:
    db = make_store("sqlite", tmp_path / "bots.db")
    _kill_a_backup_after_its_copy(db, tmp_path / "bak")
    (left,) = _scratch_dirs(tmp_path, "bak")
    assert (left / "bots.db").stat().st_size > 0  # the keys' copy, left behind

    trio.run(backup_location, db, tmp_path / "bak")

    assert _scratch_dirs(tmp_path, "bak") == []
    assert (tmp_path / "bak").is_dir()


def test_a_scratch_directory_a_live_backup_holds_is_left_alone(tmp_path: Path) -> None:
    db = make_store("sqlite", tmp_path / "bots.db")
    held = tmp_path / ".bak.backup-live"
    held.mkdir()
    fd = os.open(held / SCRATCH_IN_USE, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        trio.run(backup_location, db, tmp_path / "bak")
        assert _scratch_dirs(tmp_path, "bak") == [held]
    finally:
        os.close(fd)


def test_one_without_its_lock_file_is_removed_only_once_old(tmp_path: Path) -> None:
    """A kill between making the directory and locking it leaves no lock file; a young
    one may be a backup being set up right now."""
    young, old = tmp_path / ".bak.backup-young", tmp_path / ".bak.backup-old"
    young.mkdir()
    old.mkdir()
    then = time.time() - UNLOCKED_SCRATCH_AGE - 1
    os.utime(old, (then, then))

    assert sweep_abandoned_scratch(tmp_path / "bak") == [old]
    assert _scratch_dirs(tmp_path, "bak") == [young]


def test_only_the_scratch_of_the_same_target_is_touched(tmp_path: Path) -> None:
    other = tmp_path / ".other.backup-x"
    other.mkdir()
    (other / SCRATCH_IN_USE).touch()
    link = tmp_path / ".bak.backup-link"
    link.symlink_to(other)

    assert sweep_abandoned_scratch(tmp_path / "bak") == []
    assert other.is_dir() and link.is_symlink()


def test_a_target_whose_parent_does_not_exist_has_nothing_to_sweep(tmp_path: Path) -> None:
    assert sweep_abandoned_scratch(tmp_path / "absent" / "bak") == []
