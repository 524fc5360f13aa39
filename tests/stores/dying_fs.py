"""A file system that SIGKILLs its own process at its N-th change to the disk.

For crash tests run in a child process: every change (an open for writing, a write,
an fsync, a truncate, a rename, an unlink, a link, a chmod, a directory fsync) is
counted, and the ``crash_at``-th is where the process dies: before the change, or for
a write after half of its bytes (a torn write). With ``armed=False`` counting starts
only once ``armed`` is set (e.g. after the store is open).
"""

from __future__ import annotations

import os
import signal

from stores.fsio import PRIVATE_FILE_MODE, FileSystem, StrPath

_WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class DyingFileSystem(FileSystem):
    """The real file system, until its ``crash_at``-th change: then SIGKILL."""

    def __init__(self, crash_at: int, *, armed: bool = True) -> None:
        self.crash_at = crash_at
        self.armed = armed
        self.ops = 0
        """Changes counted so far (while armed)."""

    def _step(self) -> bool:
        if not self.armed:
            return False
        self.ops += 1
        return self.ops == self.crash_at

    def _die(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def open(self, path: StrPath, flags: int, mode: int = PRIVATE_FILE_MODE) -> int:
        if flags & _WRITING and self._step():
            self._die()
        return super().open(path, flags, mode)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        if self._step():
            os.write(fd, bytes(data[: len(data) // 2]))
            self._die()
        return super().write(fd, data)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        if self._step():
            os.pwrite(fd, bytes(data[: len(data) // 2]), offset)
            self._die()
        return super().pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        if self._step():
            self._die()
        super().fsync(fd)

    def fdatasync(self, fd: int) -> None:
        if self._step():
            self._die()
        super().fdatasync(fd)

    def truncate(self, fd: int, length: int) -> None:
        if self._step():
            self._die()
        super().truncate(fd, length)

    def rename(self, src: StrPath, dst: StrPath) -> None:
        if self._step():
            self._die()
        super().rename(src, dst)

    def unlink(self, path: StrPath) -> None:
        if self._step():
            self._die()
        super().unlink(path)

    def link(self, src: StrPath, dst: StrPath) -> None:
        if self._step():
            self._die()
        super().link(src, dst)

    def chmod(self, path: StrPath, mode: int) -> None:
        if self._step():
            self._die()
        super().chmod(path, mode)

    def fsync_dir(self, path: StrPath) -> None:
        if self._step():
            self._die()
        super().fsync_dir(path)
