"""The ownership lock: one live owner per auth location, named to whoever else tries."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from stores.errors import StoreLockedError
from stores.lock import acquire_lock, lock_owner

HOLDER = """
import sys, time
from stores.lock import acquire_lock
h = acquire_lock(sys.argv[1])
print("locked", flush=True)
sys.stdin.readline()
"""


def test_second_opener_is_refused_naming_the_owner(tmp_path: Path) -> None:
    """A second acquire gets StoreLockedError with our pid and host, immediately."""
    with acquire_lock(tmp_path):
        with pytest.raises(StoreLockedError) as info:
            acquire_lock(tmp_path)
    assert f"pid {os.getpid()}" in info.value.owner
    assert socket.gethostname() in info.value.owner
    assert info.value.location == str(tmp_path)


def test_release_lets_the_next_owner_in(tmp_path: Path) -> None:
    """After release (or leaving the with block) the lock can be taken again."""
    handle = acquire_lock(tmp_path)
    handle.release()
    handle.release()
    assert not handle.held
    with acquire_lock(tmp_path) as again:
        assert again.held


def test_lock_file_is_private(tmp_path: Path) -> None:
    """The lock file is 0600 even if it existed with a looser mode."""
    (tmp_path / "LOCK").write_text("junk from a dead owner")
    os.chmod(tmp_path / "LOCK", 0o644)
    with acquire_lock(tmp_path):
        assert stat.S_IMODE((tmp_path / "LOCK").stat().st_mode) == 0o600


def test_per_account_lock_names_are_independent(tmp_path: Path) -> None:
    """Two accounts of one shared database lock independently."""
    with acquire_lock(tmp_path, name="db.sqlite.alice.lock"):
        with acquire_lock(tmp_path, name="db.sqlite.bob.lock"):
            with pytest.raises(StoreLockedError):
                acquire_lock(tmp_path, name="db.sqlite.alice.lock")


def test_other_process_holder_is_named_and_death_frees_the_lock(tmp_path: Path) -> None:
    """A lock held by another process names that pid; its death releases the lock."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLockedError) as info:
            acquire_lock(tmp_path)
        assert f"pid {child.pid}" in info.value.owner
        owner = lock_owner(tmp_path)
        assert owner is not None and owner.pid == child.pid
    finally:
        child.kill()
        child.wait(timeout=10)
    assert lock_owner(tmp_path) is None
    with acquire_lock(tmp_path) as handle:
        assert handle.owner.pid == os.getpid()


def test_lock_owner_of_unlocked_location_is_none(tmp_path: Path) -> None:
    """Probing a location nobody holds (or that has no lock file) reports no owner."""
    assert lock_owner(tmp_path) is None
    acquire_lock(tmp_path).release()
    assert lock_owner(tmp_path) is None


def test_a_passing_probe_does_not_refuse_a_starting_owner(tmp_path: Path) -> None:
    """An inspect-style probe holding a shared lock for an instant does not refuse the owner."""
    import fcntl
    import os
    import threading

    (tmp_path / "LOCK").touch()
    probe = os.open(tmp_path / "LOCK", os.O_RDONLY)
    fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
    # The probe lets go well within the grace period, as lock_owner() does.
    timer = threading.Timer(0.01, lambda: os.close(probe))
    timer.start()
    try:
        with acquire_lock(tmp_path) as handle:
            assert handle.held
    finally:
        timer.join()


def test_a_real_owner_is_still_refused_within_the_grace_period(tmp_path: Path) -> None:
    """A holder that keeps the lock is reported once the short probe grace has passed."""
    import time

    from stores.lock import PROBE_GRACE_SECONDS

    with acquire_lock(tmp_path):
        started = time.monotonic()
        with pytest.raises(StoreLockedError):
            acquire_lock(tmp_path)
        assert time.monotonic() - started < PROBE_GRACE_SECONDS + 0.5
