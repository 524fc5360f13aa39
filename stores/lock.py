"""The cross-process ownership lock of an auth location.

One runtime owns a location. ``acquire_lock`` takes ``flock(LOCK_EX | LOCK_NB)`` on a
lock file (0600) and writes ``{"pid", "host", "started"}`` into it, so a second
opener gets ``StoreLockedError`` naming the owner, immediately. The kernel drops the
flock when the owner dies (even by SIGKILL), so stale content left by a dead owner
never blocks anyone: it is only read to *describe* a live owner.

flock locks belong to the open file description, so a second acquire in the *same*
process is refused too (two backends on one folder in one process is the same bug).

For an account inside a shared database file, lock a file next to it named for the
account: ``acquire_lock(db.parent, name=f"{db.name}.{account}.lock")``.

Since 0.1.0.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from stores.errors import StoreError, StoreLockedError
from stores.fsio import PRIVATE_FILE_MODE, StrPath


@dataclass(frozen=True)
class LockOwner:
    """Who holds (or last held) a lock, as written in the lock file."""

    pid: int | None
    host: str | None
    started: float | None

    def describe(self) -> str:
        pid = "unknown pid" if self.pid is None else f"pid {self.pid}"
        host = self.host or "unknown host"
        if self.started is None:
            return f"{pid} on {host}"
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return f"{pid} on {host} (since {since})"


@dataclass
class LockHandle:
    """A held lock; release it with ``release()`` or by leaving its ``with`` block."""

    path: Path
    owner: LockOwner
    _fd: int | None = field(default=None, repr=False)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Drop the lock (idempotent). The file stays: deleting it would race a new owner."""
        fd, self._fd = self._fd, None
        if fd is not None:
            # Closing the only descriptor releases the flock.
            os.close(fd)

    def __enter__(self) -> LockHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def acquire_lock(directory: StrPath, name: str = "LOCK") -> LockHandle:
    """Take the exclusive lock ``directory/name`` now, or raise ``StoreLockedError``.

    Never waits: a second runtime on the same location is a configuration error the
    user must see at once, not a hang.
    """
    path = Path(directory) / name
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    except OSError as exc:
        raise StoreError(f"{path}: cannot open lock file: {exc}") from exc
    try:
        _flock_exclusive(fd)
    except BlockingIOError:
        owner = _read_owner(fd)
        os.close(fd)
        raise StoreLockedError(str(Path(directory)), owner.describe()) from None
    except OSError as exc:
        os.close(fd)
        raise StoreError(f"{path}: cannot lock: {exc}") from exc
    owner = LockOwner(pid=os.getpid(), host=socket.gethostname(), started=time.time())
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        os.ftruncate(fd, 0)
        # Informational only (who holds it): no fsync, a stale copy is harmless.
        os.pwrite(fd, json.dumps(owner.__dict__).encode(), 0)
    except OSError as exc:
        os.close(fd)
        raise StoreError(f"{path}: cannot write lock owner: {exc}") from exc
    return LockHandle(path=path, owner=owner, _fd=fd)


# ``lock_owner`` probes with a shared lock held for microseconds; a runtime starting in
# that instant must not be refused, so contention is retried for this long before it
# counts. A real owner holds the lock for its whole life, so "at once" still holds.
PROBE_GRACE_SECONDS = 0.05
_PROBE_RETRY_SECONDS = 0.002


def _flock_exclusive(fd: int) -> None:
    deadline = time.monotonic() + PROBE_GRACE_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(_PROBE_RETRY_SECONDS)


def lock_owner(directory: StrPath, name: str = "LOCK") -> LockOwner | None:
    """The live owner of ``directory/name``, or ``None`` if nobody holds it now.

    Probes without keeping the lock (for migration's "refuse a running source").
    """
    path = Path(directory) / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_owner(fd)
        return None
    finally:
        os.close(fd)


def _read_owner(fd: int) -> LockOwner:
    try:
        raw = json.loads(os.pread(fd, 4096, 0).decode())
    except (OSError, ValueError):
        return LockOwner(pid=None, host=None, started=None)
    if not isinstance(raw, dict):
        return LockOwner(pid=None, host=None, started=None)
    pid, host, started = raw.get("pid"), raw.get("host"), raw.get("started")
    return LockOwner(
        pid=pid if isinstance(pid, int) else None,
        host=host if isinstance(host, str) else None,
        started=float(started) if isinstance(started, int | float) else None,
    )
