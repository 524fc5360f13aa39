"""The IO seam every durable backend writes through, and the atomic-write recipe.

``FileSystem`` is a thin object over ``os``: the real one is the default, and tests
pass a ``FaultyFileSystem`` that fails chosen operations (an fsync error, a rename
error, ENOSPC halfway through a write, short writes) to prove that a failure becomes
a ``DurabilityError`` and nothing acknowledged is lost.

Everything here is synchronous and blocking: async callers run it in
``trio.to_thread.run_sync``.

Since 0.1.0.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stores.errors import DurabilityError

StrPath = str | os.PathLike[str]

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
TEMP_MARKER = ".tmp-"
"""Temp files are named ``.<target>.tmp-<random>``: never published data, safe to delete."""


class FileSystem:
    """The real file system: every blocking primitive a backend needs, one method each."""

    def open(self, path: StrPath, flags: int, mode: int = PRIVATE_FILE_MODE) -> int:
        return os.open(path, flags | os.O_CLOEXEC, mode)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        return os.write(fd, data)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fdatasync(self, fd: int) -> None:
        # Enough for appends: the file size is metadata fdatasync must flush too.
        os.fdatasync(fd)

    def truncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def close(self, fd: int) -> None:
        os.close(fd)

    def rename(self, src: StrPath, dst: StrPath) -> None:
        os.replace(src, dst)

    def unlink(self, path: StrPath) -> None:
        os.unlink(path)

    def link(self, src: StrPath, dst: StrPath) -> None:
        os.link(src, dst)

    def mkdir(self, path: StrPath, mode: int = PRIVATE_DIR_MODE) -> None:
        os.mkdir(path, mode)

    def chmod(self, path: StrPath, mode: int) -> None:
        os.chmod(path, mode)

    def fsync_dir(self, path: StrPath) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def listdir(self, path: StrPath) -> list[str]:
        return os.listdir(path)

    def read_bytes(self, path: StrPath) -> bytes:
        return Path(path).read_bytes()

    def stat(self, path: StrPath) -> os.stat_result:
        return os.stat(path)


REAL_FS = FileSystem()


def write_all(fs: FileSystem, fd: int, data: bytes | memoryview, location: str) -> None:
    """Write every byte of ``data`` (looping over short writes) or raise ``DurabilityError``."""
    view = memoryview(data)
    while view:
        try:
            n = fs.write(fd, view)
        except OSError as exc:
            raise DurabilityError(location, "write", exc) from exc
        if n <= 0:
            raise DurabilityError(location, "write", OSError(errno.EIO, "write returned 0"))
        view = view[n:]


def write_all_at(
    fs: FileSystem, fd: int, data: bytes | memoryview, offset: int, location: str
) -> None:
    """``write_all`` at ``offset`` (``pwrite``: the file position is not used)."""
    view = memoryview(data)
    while view:
        try:
            n = fs.pwrite(fd, view, offset)
        except OSError as exc:
            raise DurabilityError(location, "write", exc) from exc
        if n <= 0:
            raise DurabilityError(location, "write", OSError(errno.EIO, "write returned 0"))
        view = view[n:]
        offset += n


FsyncObserver = Callable[[float], None]
"""Called with the seconds one successful fsync took (from the thread that made it)."""

_fsync_observers: list[FsyncObserver] = []


def observe_fsyncs(observer: FsyncObserver) -> Callable[[], None]:
    """Time every later ``sync_file``/``sync_dir`` of this process; returns the undo.

    Process-wide on purpose: fsyncs happen in writer threads that know no session,
    and a metrics endpoint wants the disk's view.
    """
    _fsync_observers.append(observer)

    def stop() -> None:
        if observer in _fsync_observers:
            _fsync_observers.remove(observer)

    return stop


def _observed(started: float) -> None:
    if _fsync_observers:
        elapsed = time.perf_counter() - started
        for observer in list(_fsync_observers):
            observer(elapsed)


def sync_file(fs: FileSystem, fd: int, location: str, *, data_only: bool = False) -> None:
    """fsync (or fdatasync) ``fd``; a failure is final: the caller must stop writing."""
    started = time.perf_counter()
    try:
        if data_only:
            fs.fdatasync(fd)
        else:
            fs.fsync(fd)
    except OSError as exc:
        raise DurabilityError(location, "fsync", exc) from exc
    _observed(started)


def sync_dir(fs: FileSystem, directory: StrPath) -> None:
    """fsync a directory so a create, rename or unlink inside it is durable."""
    started = time.perf_counter()
    try:
        fs.fsync_dir(directory)
    except OSError as exc:
        raise DurabilityError(str(directory), "fsync of directory", exc) from exc
    _observed(started)


def temp_path_for(path: Path) -> Path:
    """A fresh temp name beside ``path`` (same directory, so the rename is atomic)."""
    return path.with_name(f".{path.name}{TEMP_MARKER}{secrets.token_hex(6)}")


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and TEMP_MARKER in name


def atomic_write(
    path: StrPath, data: bytes, *, mode: int = PRIVATE_FILE_MODE, fs: FileSystem = REAL_FS
) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    Temp file in the same directory, write, fsync, rename over ``path``, fsync of the
    directory. After a crash ``path`` holds either the old or the new content, never a
    mix. Any failure raises ``DurabilityError`` and leaves the old content in place.
    """
    target = Path(path)
    location = str(target)
    tmp = temp_path_for(target)
    try:
        fd = fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as exc:
        raise DurabilityError(location, "create temp file", exc) from exc
    try:
        try:
            write_all(fs, fd, data, location)
            sync_file(fs, fd, location)
        except BaseException:
            _close_quietly(fs, fd)
            raise
        try:
            fs.close(fd)
        except OSError as exc:
            # close(2) may report a deferred write error (NFS): the data is not safe.
            raise DurabilityError(location, "close", exc) from exc
        try:
            fs.rename(tmp, target)
        except OSError as exc:
            raise DurabilityError(location, "rename", exc) from exc
    except BaseException:
        _discard(fs, tmp)
        raise
    sync_dir(fs, target.parent)


def _close_quietly(fs: FileSystem, fd: int) -> None:
    try:
        fs.close(fd)
    except OSError:
        pass


def _discard(fs: FileSystem, path: Path) -> None:
    # Best effort: a leftover temp file is harmless (never read as data) and is
    # cleaned up by the next open, so a failure here must not hide the real error.
    try:
        fs.unlink(path)
    except OSError:
        pass


def ensure_private_dir(path: StrPath, *, fs: FileSystem = REAL_FS) -> Path:
    """Make ``path`` exist as a 0700 directory, creating parents as needed.

    Directories we create are 0700 and their creation is made durable (fsync of the
    parent). An existing ``path`` with looser permissions is tightened to 0700;
    existing parents are left alone (they are not ours).
    """
    target = Path(path)
    missing: list[Path] = []
    probe = target
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        try:
            fs.mkdir(directory, PRIVATE_DIR_MODE)
        except FileExistsError:
            pass
        except OSError as exc:
            raise DurabilityError(str(directory), "mkdir", exc) from exc
        sync_dir(fs, directory.parent)
    try:
        st = fs.stat(target)
    except OSError as exc:
        raise DurabilityError(str(target), "stat", exc) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise DurabilityError(str(target), "mkdir", NotADirectoryError(errno.ENOTDIR, "not a dir"))
    if stat.S_IMODE(st.st_mode) & 0o077:
        try:
            fs.chmod(target, PRIVATE_DIR_MODE)
        except OSError as exc:
            raise DurabilityError(str(target), "chmod 0700", exc) from exc
    return target


# --- fault injection (the seam's test side) ------------------------------------------


@dataclass
class Fault:
    """Fail the ``skip+1``-th and following calls of ``op`` (up to ``times``) with ``errno``.

    ``op`` is a ``FileSystem`` method name. ``path_contains`` restricts the fault to
    paths (for fd operations: the path the fd was opened from) containing that text.
    For ``write``, ``written`` bytes are really written before the error is raised,
    modelling a disk that fills up in the middle of a record.
    """

    op: str
    errno: int = errno.EIO
    path_contains: str | None = None
    skip: int = 0
    times: int | None = 1
    written: int = 0
    hits: int = 0
    seen: int = 0

    def matches(self, op: str, path: str) -> bool:
        if op != self.op:
            return False
        return self.path_contains is None or self.path_contains in path

    def fire(self) -> bool:
        """Count a matching call; true if this one must fail."""
        self.seen += 1
        if self.seen <= self.skip:
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        self.hits += 1
        return True


class FaultyFileSystem(FileSystem):
    """A real file system that fails the operations a test asks it to.

    ``calls`` counts every operation by name (``fsync`` and ``fdatasync`` both count
    as ``fsync`` too), so tests can also check how many fsyncs a workload made.
    ``short_writes`` makes every write accept at most half of its buffer, as a real
    ``write(2)`` may.
    """

    def __init__(self, *faults: Fault, short_writes: bool = False) -> None:
        self.faults: list[Fault] = list(faults)
        self.short_writes = short_writes
        self.calls: Counter[str] = Counter()
        self._fd_paths: dict[int, str] = {}

    def add(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def _check(self, op: str, path: str) -> Fault | None:
        self.calls[op] += 1
        for fault in self.faults:
            if fault.matches(op, path) and fault.fire():
                return fault
        return None

    def _raise(self, fault: Fault, path: str) -> None:
        raise OSError(fault.errno, f"injected {fault.op} failure", path)

    def open(self, path: StrPath, flags: int, mode: int = PRIVATE_FILE_MODE) -> int:
        if fault := self._check("open", str(path)):
            self._raise(fault, str(path))
        fd = super().open(path, flags, mode)
        self._fd_paths[fd] = str(path)
        return fd

    def write(self, fd: int, data: bytes | memoryview) -> int:
        path = self._fd_paths.get(fd, "")
        if fault := self._check("write", path):
            if fault.written:
                os.write(fd, bytes(data[: fault.written]))
            self._raise(fault, path)
        if self.short_writes and len(data) > 1:
            data = data[: len(data) // 2]
        return super().write(fd, data)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        # Faults name the operation "write", whether it writes at the position or not.
        path = self._fd_paths.get(fd, "")
        if fault := self._check("write", path):
            if fault.written:
                os.pwrite(fd, bytes(data[: fault.written]), offset)
            self._raise(fault, path)
        if self.short_writes and len(data) > 1:
            data = data[: len(data) // 2]
        return super().pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        path = self._fd_paths.get(fd, "")
        # "full_fsync" faults fail fsync(2) alone, not fdatasync(2).
        if fault := self._check("fsync", path) or self._check("full_fsync", path):
            self._raise(fault, path)
        super().fsync(fd)

    def fdatasync(self, fd: int) -> None:
        path = self._fd_paths.get(fd, "")
        self.calls["fdatasync"] += 1
        if fault := self._check("fsync", path):
            self._raise(fault, path)
        super().fdatasync(fd)

    def truncate(self, fd: int, length: int) -> None:
        path = self._fd_paths.get(fd, "")
        if fault := self._check("truncate", path):
            self._raise(fault, path)
        super().truncate(fd, length)

    def close(self, fd: int) -> None:
        self._fd_paths.pop(fd, None)
        self.calls["close"] += 1
        super().close(fd)

    def rename(self, src: StrPath, dst: StrPath) -> None:
        if fault := self._check("rename", str(dst)):
            self._raise(fault, str(dst))
        super().rename(src, dst)

    def unlink(self, path: StrPath) -> None:
        if fault := self._check("unlink", str(path)):
            self._raise(fault, str(path))
        super().unlink(path)

    def link(self, src: StrPath, dst: StrPath) -> None:
        if fault := self._check("link", str(dst)):
            self._raise(fault, str(dst))
        super().link(src, dst)

    def mkdir(self, path: StrPath, mode: int = PRIVATE_DIR_MODE) -> None:
        if fault := self._check("mkdir", str(path)):
            self._raise(fault, str(path))
        super().mkdir(path, mode)

    def fsync_dir(self, path: StrPath) -> None:
        if fault := self._check("fsync_dir", str(path)):
            self._raise(fault, str(path))
        super().fsync_dir(path)
