"""Child process for the preallocated-log crash test: dies at its N-th change to disk.

Usage: ``python -m tests.stores.prealloc_crash_child <dir> <crash_at> <first_n>``.

Opens the native store (counting starts once it is open), then commits ``first_n``,
``first_n + 1``, ... one at a time, each of ``VALUE_BYTES`` so the log outgrows its
first preallocated chunk within a few commits. Prints ``OPEN <seq>``, ``ACK <n>
<seq>`` after each acknowledged commit, and, just before dying, ``DIE <what>``: the
change it dies at (``record write``, ``fdatasync``, ``zero fill`` or ``growth
fsync`` of the log, or another change), so the parent knows what each kill hit.
With ``crash_at`` 0 it never dies and prints ``OP <what>`` for every change instead
(the survey the parent picks its crash points from).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import trio

from stores.fsio import StrPath
from stores.native import open_native_backend
from stores.types import Batch
from tests.stores.dying_fs import DyingFileSystem

VALUE_BYTES = 8 << 10
COMMITS = 40


def batch(n: int) -> Batch:
    """Commit n: two keys that must appear together, one of them large."""
    return Batch(keys={"session": {f"c{n}-0": bytes([n % 251]) * VALUE_BYTES, f"c{n}-1": n}})


class ReportingFileSystem(DyingFileSystem):
    """Names the change it dies at."""

    what = "another change"

    def _step(self) -> bool:
        fatal = super()._step()
        if self.armed and self.crash_at == 0:
            print(f"OP {self.what}", flush=True)
        return fatal

    def _die(self) -> None:
        print(f"DIE {self.what}", flush=True)
        super()._die()

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        self.what = "zero fill" if not any(data) else "record write"
        return super().pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        self.what = "growth fsync"
        super().fsync(fd)

    def fdatasync(self, fd: int) -> None:
        self.what = "fdatasync"
        super().fdatasync(fd)

    def open(self, path: StrPath, flags: int, mode: int = 0o600) -> int:
        self.what = "another change"
        return super().open(path, flags, mode)


async def main(path: Path, crash_at: int, first: int) -> None:
    fs = ReportingFileSystem(crash_at, armed=False)
    backend = await open_native_backend(path, fs=fs)
    print(f"OPEN {backend.statistics().durable_seq}", flush=True)
    fs.armed = True
    for n in range(first, first + COMMITS):
        seq = await backend.commit(batch(n))
        print(f"ACK {n} {seq}", flush=True)
    await backend.aclose()
    os._exit(0)


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
