"""The native log's preallocated tail: records overwrite written zeros, fdatasync'd.

The log grows by zero-filled chunks whose size is made durable (fsync) before any
record goes there; the records' durable end is where the zeros begin. A zero tail
is not damage, garbage after the end is a torn tail and is cut, damage before
intact records of a later group is still ``CorruptStateError``, and a kill at any
change to the disk (appending into a chunk or growing it) reopens with exactly the
acknowledged commits.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from stores.errors import CorruptStateError, DurabilityError, StoreReadOnlyError
from stores.fsio import Fault, FaultyFileSystem, FileSystem
from stores.native import MIN_LOG_CHUNK_BYTES, open_native_backend
from stores.native_format import log_name
from tests.stores.native_log import records_end
from tests.stores.prealloc_crash_child import COMMITS, batch

LOG0 = log_name(0)
ROOT = Path(__file__).resolve().parents[2]


def ids(n: int) -> list[str]:
    return [f"c{n}-0", f"c{n}-1"]


async def commits_present(path: Path, upto: int) -> list[int]:
    """Reopen; every commit is all or nothing, and they form a prefix 1..k."""
    found = []
    async with await open_native_backend(path) as backend:
        for n in range(1, upto + 1):
            got = await backend.read_keys("session", ids(n))
            assert len(got) in (0, 2), f"commit {n} is partial: {sorted(got)}"
            if got:
                assert got == batch(n).keys["session"]
                found.append(n)
        assert backend.statistics().durable_seq == len(found)
    assert found == list(range(1, len(found) + 1)), f"not a prefix: {found}"
    return found


async def fill(path: Path, first: int, count: int, **options: object) -> None:
    async with await open_native_backend(path, **options) as backend:  # type: ignore[arg-type]
        for n in range(first, first + count):
            await backend.commit(batch(n))


async def test_the_log_grows_by_zero_filled_chunks_and_reopens_clean(tmp_path: Path) -> None:
    """Records go into written zeros; a clean reopen finds no torn tail and keeps the tail."""
    async with await open_native_backend(tmp_path) as backend:
        for n in range(1, 21):
            await backend.commit(batch(n))
        stats = backend.statistics()
        end = stats.log_bytes
    size = (tmp_path / LOG0).stat().st_size
    assert end == records_end(tmp_path / LOG0) and size > end
    assert (tmp_path / LOG0).read_bytes()[end:] == bytes(size - end)
    growths = stats.fsyncs - stats.groups  # one full fsync per growth besides the groups
    assert 1 <= growths < 20, "the log must grow by chunks, not per commit"
    async with await open_native_backend(tmp_path) as backend:
        assert backend.recovery.torn_tail is None
        assert backend.statistics().log_bytes == end
    assert (tmp_path / LOG0).stat().st_size == size
    assert await commits_present(tmp_path, 21) == list(range(1, 21))


async def test_an_append_only_log_opens_and_continues_in_chunks(tmp_path: Path) -> None:
    """A log without a zero tail (as earlier versions wrote it) opens and grows."""
    await fill(tmp_path, 1, 3)
    os.truncate(tmp_path / LOG0, records_end(tmp_path / LOG0))
    await fill(tmp_path, 4, 3)
    assert (tmp_path / LOG0).stat().st_size > records_end(tmp_path / LOG0)
    assert await commits_present(tmp_path, 7) == list(range(1, 7))


async def test_garbage_after_the_end_inside_the_chunk_is_a_torn_tail(tmp_path: Path) -> None:
    """Bytes of a record never completed, inside the preallocated tail, are cut there."""
    await fill(tmp_path, 1, 4)
    log = tmp_path / LOG0
    end = records_end(log)
    with log.open("r+b") as f:
        f.seek(end + 100)  # a torn write: its first page never reached the disk
        f.write(random.Random(1).randbytes(700))
    async with await open_native_backend(tmp_path) as backend:
        torn = backend.recovery.torn_tail
        assert torn is not None and torn.offset == end and torn.damage is None
        assert await backend.commit(batch(5)) == 5
    assert await commits_present(tmp_path, 6) == [1, 2, 3, 4, 5]


async def test_a_corrupt_middle_record_with_a_zero_tail_is_corruption(tmp_path: Path) -> None:
    """A zero tail after the records does not excuse damage before intact records."""
    async with await open_native_backend(tmp_path) as backend:
        ends = []
        for n in range(1, 4):
            await backend.commit(batch(n))
            ends.append(backend.statistics().log_bytes)
    log = tmp_path / LOG0
    data = bytearray(log.read_bytes())
    data[ends[0] + 40] ^= 0x08  # inside record 2; record 3 is intact after it
    log.write_bytes(bytes(data))
    with pytest.raises(CorruptStateError) as info:
        await open_native_backend(tmp_path)
    assert info.value.location == str(log) and info.value.offset == ends[0]
    assert log.read_bytes() == bytes(data), "nothing may be cut on corruption"


@pytest.mark.parametrize(
    "fault",
    [
        Fault("full_fsync", path_contains=LOG0),  # the growth's fsync (commits fdatasync)
        Fault("write", errno=errno.ENOSPC, path_contains=LOG0, written=4096),  # zero fill
    ],
    ids=["growth fsync fails", "zero fill hits ENOSPC"],
)
async def test_a_failed_growth_turns_read_only_and_loses_nothing_acknowledged(
    tmp_path: Path, fault: Fault
) -> None:
    """The commit needing the growth fails typed; later ones are refused; reopen is whole."""
    fs = FaultyFileSystem()
    backend = await open_native_backend(tmp_path, fs=fs)
    acked = 0
    try:
        # Fill the chunk until the next commit (over 8 KiB) cannot fit: it must grow.
        while (tmp_path / LOG0).stat().st_size - backend.statistics().log_bytes >= 8192:
            acked += 1
            await backend.commit(batch(acked))
        fs.add(fault)
        with pytest.raises(DurabilityError):
            await backend.commit(batch(acked + 1))
        assert fault.hits == 1
        with pytest.raises(StoreReadOnlyError):
            await backend.commit(batch(99))
    finally:
        await backend.aclose()
    present = await commits_present(tmp_path, acked + 1)
    assert present == list(range(1, acked + 1)), "the failed growth came before its record"


def run_child(path: Path, crash_at: int) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "tests.stores.prealloc_crash_child", str(path), str(crash_at), "1"],
        capture_output=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    lines = out.stdout.decode().splitlines()
    if crash_at:
        assert out.returncode == -9, (out.returncode, out.stderr.decode()[-2000:])
    else:
        assert out.returncode == 0, out.stderr.decode()[-2000:]
    return lines


async def test_sigkill_at_any_change_while_appending_or_growing_keeps_the_acked_prefix(
    tmp_path: Path,
) -> None:
    """Killed at a record write, an fdatasync, a zero fill or a growth fsync: reopen
    holds every acknowledged commit and nothing after the one in flight."""
    survey = [
        line.split(" ", 1)[1] for line in run_child(tmp_path / "survey", 0) if line[:3] == "OP "
    ]
    assert {"zero fill", "growth fsync", "record write", "fdatasync"} <= set(survey)
    rng = random.Random(13)
    growth = [i + 1 for i, what in enumerate(survey) if what in ("zero fill", "growth fsync")]
    appends = [i + 1 for i, what in enumerate(survey) if what in ("record write", "fdatasync")]
    points = sorted(set(growth) | set(rng.sample(appends, 10)))
    hit: Counter[str] = Counter()
    for crash_at in points:
        work = tmp_path / f"kill{crash_at}"
        lines = run_child(work, crash_at)
        hit[next(line[4:] for line in lines if line.startswith("DIE "))] += 1
        acked = [int(line.split()[1]) for line in lines if line.startswith("ACK ")]
        last = max(acked, default=0)
        present = await commits_present(work, COMMITS)
        assert last <= len(present) <= last + 1, (crash_at, last, present[-3:])
        shutil.rmtree(work)
    assert hit["zero fill"] and hit["growth fsync"] and hit["record write"] and hit["fdatasync"]
    assert MIN_LOG_CHUNK_BYTES < COMMITS * 8192, "the child's log must outgrow a chunk"


class ThreadNotingFileSystem(FileSystem):
    """Notes which thread made each write to the log and each fsync."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    def _note(self, op: str) -> None:
        self.calls.append((op, threading.get_ident() == threading.main_thread().ident))

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        self._note("pwrite")
        return super().pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        self._note("fsync")
        super().fsync(fd)

    def fdatasync(self, fd: int) -> None:
        self._note("fdatasync")
        super().fdatasync(fd)


async def test_appends_run_on_the_trio_thread_while_growth_and_compaction_stay_off_it(
    tmp_path: Path,
) -> None:
    """A commit inside the allocated log may be written by Trio's thread itself (no
    handoff); one that must grow the log first (megabytes of zeros, a full fsync) or
    compact it never blocks the loop: those go to the writer thread."""
    fs = ThreadNotingFileSystem()
    # A bound no write reaches here: whether appends run here must not hang on the disk.
    async with await open_native_backend(tmp_path, fs=fs, inline_write_below=60.0) as backend:
        for n in range(1, 200):
            await backend.commit(batch(n))
        await backend.compact()
        await backend.commit(batch(200))
        here = backend.statistics()
    assert await commits_present(tmp_path, 201) == list(range(1, 201))
    on_trio = [op for op, trio_thread in fs.calls if trio_thread]
    assert "fsync" not in on_trio, "a growth or compaction fsync ran on Trio's thread"
    assert on_trio.count("fdatasync") > 150, "ordinary appends did not run here"
    growths = [op for op, trio_thread in fs.calls if op == "fsync" and not trio_thread]
    assert len(growths) >= 3 and here.compactions == 1


async def test_a_negative_inline_write_bound_is_refused_before_anything_is_made(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="inline_write_below"):
        await open_native_backend(tmp_path / "auth", inline_write_below=-1.0)
    assert not (tmp_path / "auth").exists()
