"""Injected IO failures: DurabilityError, then read-only; a reopen keeps every ack."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import trio

from stores.errors import DurabilityError, StoreReadOnlyError
from stores.fsio import Fault, FaultyFileSystem
from stores.native import open_native_backend
from stores.native_format import log_name
from stores.types import Batch
from tests.stores.native_log import records_end, trim_log

LOG0 = log_name(0)


def batch(n: int) -> Batch:
    """Commit n writes four keys that must appear all together."""
    return Batch(keys={"session": {f"c{n}-{j}": {"n": n, "j": j} for j in range(4)}})


def ids(n: int) -> list[str]:
    return [f"c{n}-{j}" for j in range(4)]


async def present_commits(path: Path, upto: int) -> set[int]:
    """Reopen with the real file system; every commit must be all-or-nothing."""
    found = set()
    async with await open_native_backend(path) as backend:
        for n in range(1, upto + 1):
            got = await backend.read_keys("session", ids(n))
            assert len(got) in (0, 4), f"commit {n} is partial: {sorted(got)}"
            if got:
                assert got == {f"c{n}-{j}": {"n": n, "j": j} for j in range(4)}
                found.add(n)
    return found


async def test_fsync_failure_turns_read_only_and_keeps_acks(tmp_path: Path) -> None:
    """A failed log fsync raises DurabilityError; later commits are refused; acks survive."""
    fs = FaultyFileSystem()
    backend = await open_native_backend(tmp_path, fs=fs)
    for n in (1, 2, 3):
        await backend.commit(batch(n))
    fs.add(Fault("fsync", path_contains=LOG0))
    with pytest.raises(DurabilityError) as info:
        await backend.commit(batch(4))
    assert info.value.operation == "fsync"
    assert info.value.location == str(tmp_path / LOG0)
    fsyncs = fs.calls["fsync"]
    with pytest.raises(StoreReadOnlyError):
        await backend.commit(batch(5))
    assert fs.calls["fsync"] == fsyncs, "a failed fsync must never be retried"
    assert backend.statistics().read_only
    assert await backend.read_keys("session", ids(3)) != {}
    await backend.aclose()
    found = await present_commits(tmp_path, 5)
    assert {1, 2, 3} <= found and 5 not in found


async def test_enospc_midway_leaves_a_torn_tail_that_reopen_cuts(tmp_path: Path) -> None:
    """ENOSPC after part of a record: DurabilityError; reopen cuts the partial record."""
    fs = FaultyFileSystem()
    backend = await open_native_backend(tmp_path, fs=fs)
    await backend.commit(batch(1))
    size = records_end(tmp_path / LOG0)
    fs.add(Fault("write", errno=errno.ENOSPC, written=20, path_contains=LOG0))
    with pytest.raises(DurabilityError) as info:
        await backend.commit(batch(2))
    assert isinstance(info.value.cause, OSError) and info.value.cause.errno == errno.ENOSPC
    partial = (tmp_path / LOG0).read_bytes()[size:]
    assert partial[:20] != bytes(20) and partial[20:] == bytes(len(partial) - 20)
    await backend.aclose()
    assert await present_commits(tmp_path, 2) == {1}
    assert (tmp_path / LOG0).stat().st_size == size


async def test_group_failure_reaches_every_waiter(tmp_path: Path) -> None:
    """When a grouped fsync fails, every commit of the group raises, none is acked."""
    fs = FaultyFileSystem()
    backend = await open_native_backend(tmp_path, fs=fs)
    await backend.commit(batch(1))
    fs.add(Fault("fsync", path_contains=LOG0, times=None))
    outcomes: dict[int, str] = {}

    async def one(n: int) -> None:
        try:
            await backend.commit(batch(n))
            outcomes[n] = "acked"
        except DurabilityError:
            outcomes[n] = "durability"
        except StoreReadOnlyError:
            outcomes[n] = "read-only"

    async with trio.open_nursery() as nursery:
        for n in range(2, 22):
            nursery.start_soon(one, n)
    assert len(outcomes) == 20
    assert "acked" not in outcomes.values()
    assert "durability" in outcomes.values()
    await backend.aclose()
    assert 1 in await present_commits(tmp_path, 21)


async def test_snapshot_rename_failure_during_compaction(tmp_path: Path) -> None:
    """A failed rename while compacting: DurabilityError, read-only, all data on reopen."""
    fs = FaultyFileSystem()
    backend = await open_native_backend(tmp_path, fs=fs)
    for n in range(1, 6):
        await backend.commit(batch(n))
    fs.add(Fault("rename", path_contains="snapshot-"))
    with pytest.raises(DurabilityError) as info:
        await backend.compact()
    assert info.value.operation == "rename"
    with pytest.raises(StoreReadOnlyError):
        await backend.commit(batch(6))
    await backend.aclose()
    assert await present_commits(tmp_path, 6) == {1, 2, 3, 4, 5}
    assert sorted(os.listdir(tmp_path)) == ["LOCK", LOG0]


@pytest.mark.parametrize("step", ["fsync_dir", "fsync"])
async def test_new_log_failure_during_compaction(tmp_path: Path, step: str) -> None:
    """Failing to create the next log after the snapshot is published loses nothing."""
    fs = FaultyFileSystem()
    backend = await open_native_backend(tmp_path, fs=fs)
    for n in range(1, 4):
        await backend.commit(batch(n))
    # The snapshot's own fsync/dir-fsync pass; the new log's fail.
    fs.add(Fault(step, skip=1))
    with pytest.raises(DurabilityError):
        await backend.compact()
    await backend.aclose()
    assert await present_commits(tmp_path, 3) == {1, 2, 3}


async def test_short_writes_are_completed(tmp_path: Path) -> None:
    """A file system that accepts half of every write still gets whole records."""
    fs = FaultyFileSystem(short_writes=True)
    async with await open_native_backend(tmp_path, fs=fs) as backend:
        for n in range(1, 4):
            await backend.commit(batch(n))
        await backend.compact()
        await backend.commit(batch(4))
    assert fs.calls["write"] > 8
    assert await present_commits(tmp_path, 4) == {1, 2, 3, 4}


async def test_failed_creation_leaves_a_new_store(tmp_path: Path) -> None:
    """If creating the first log fails, the next open still sees a new (empty) store."""
    path = tmp_path / "auth"
    with pytest.raises(DurabilityError):
        await open_native_backend(path, fs=FaultyFileSystem(Fault("rename")))
    async with await open_native_backend(path) as backend:
        assert await backend.read_creds() is None
        assert await backend.commit(batch(1)) == 1


async def test_failed_torn_tail_truncation_refuses_to_open(tmp_path: Path) -> None:
    """If cutting a torn tail fails, open raises DurabilityError and the file is unchanged."""
    async with await open_native_backend(tmp_path) as backend:
        await backend.commit(batch(1))
        await backend.commit(batch(2))
    trim_log(tmp_path / LOG0)
    data = (tmp_path / LOG0).read_bytes()
    os.truncate(tmp_path / LOG0, len(data) - 3)
    with pytest.raises(DurabilityError):
        await open_native_backend(tmp_path, fs=FaultyFileSystem(Fault("truncate")))
    assert (tmp_path / LOG0).read_bytes() == data[:-3]
    assert await present_commits(tmp_path, 2) == {1}
