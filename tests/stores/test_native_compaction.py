"""Compaction: snapshot + fresh log, crash-safe at every IO step, old creds kept."""

from __future__ import annotations

import os
from pathlib import Path

import cbor2
import pytest

from stores.creds import AuthCreds, init_auth_creds
from stores.errors import DurabilityError, StoreReadOnlyError
from stores.fsio import FaultyFileSystem
from stores.native import open_native_backend
from stores.native_format import decode_snapshot, log_name, snapshot_name
from stores.types import Batch


class CrashingFileSystem(FaultyFileSystem):
    """Once armed, the N-th mutating operation and every later one fail: a crash there."""

    MUTATING = (
        "open",
        "write",
        "fsync",
        "rename",
        "unlink",
        "link",
        "mkdir",
        "fsync_dir",
        "truncate",
    )

    def __init__(self, crash_at: int | None) -> None:
        super().__init__()
        self.crash_at = crash_at
        self.armed = False
        self.count = 0

    def _check(self, op: str, path: str) -> None:  # type: ignore[override]  # crash, not faults
        self.calls[op] += 1
        if not self.armed or op not in self.MUTATING:
            return None
        self.count += 1
        if self.crash_at is not None and self.count >= self.crash_at:
            raise OSError(5, f"crashed at {op} #{self.count}", path)
        return None


def creds_with(next_id: int) -> AuthCreds:
    creds = init_auth_creds()
    creds.next_pre_key_id = next_id
    return creds


async def fill(path: Path) -> tuple[dict[str, bytes], AuthCreds, AuthCreds]:
    first, second = creds_with(5), creds_with(9)
    keys = {f"k{i}": bytes([i]) * 50 for i in range(30)}
    async with await open_native_backend(path) as backend:
        await backend.commit(Batch(keys={"session": dict(list(keys.items())[:10])}, creds=first))
        await backend.commit(Batch(keys={"session": dict(list(keys.items())[10:])}))
        await backend.commit(Batch(keys={"pre-key": {"1": b"p"}}, creds=second))
        await backend.commit(Batch(keys={"pre-key": {"1": None}}))
    return keys, first, second


async def check_full_state(path: Path, keys: dict[str, bytes], creds: AuthCreds) -> None:
    async with await open_native_backend(path) as backend:
        assert await backend.read_keys("session", list(keys)) == keys
        assert await backend.read_keys("pre-key", ["1"]) == {}
        got = await backend.read_creds()
        assert got is not None and got.to_plain() == creds.to_plain()
        assert backend.statistics().durable_seq == 4


async def test_compaction_replaces_the_log_with_a_snapshot(tmp_path: Path) -> None:
    """compact() leaves one snapshot and one fresh log, same state, older files gone."""
    keys, _, _ = await fill(tmp_path)
    async with await open_native_backend(tmp_path) as backend:
        assert await backend.compact() == 4
        stats = backend.statistics()
        assert stats.generation == 1 and stats.records == 0 and stats.compactions == 1
        assert await backend.commit(Batch(keys={"session": {"after": b"a"}})) == 5
    assert sorted(os.listdir(tmp_path)) == ["LOCK", log_name(1), snapshot_name(1)]
    keys["after"] = b"a"
    async with await open_native_backend(tmp_path) as backend:
        assert await backend.read_keys("session", list(keys)) == keys


async def test_snapshot_keeps_the_previous_creds(tmp_path: Path) -> None:
    """After compaction the snapshot still holds the creds before the latest ones."""
    _, first, second = await fill(tmp_path)
    async with await open_native_backend(tmp_path) as backend:
        await backend.compact()
    snap = decode_snapshot((tmp_path / snapshot_name(1)).read_bytes(), "snap")
    assert snap.creds is not None and snap.previous_creds is not None
    assert AuthCreds.from_plain(cbor2.loads(snap.creds), "s").to_plain() == second.to_plain()
    assert (
        AuthCreds.from_plain(cbor2.loads(snap.previous_creds), "s").to_plain() == first.to_plain()
    )


async def test_automatic_compaction_bounds_the_log(tmp_path: Path) -> None:
    """With a small threshold the log is compacted repeatedly and no data is lost."""
    expected: dict[str, bytes] = {}
    async with await open_native_backend(tmp_path, compact_min_bytes=4096) as backend:
        for i in range(200):
            key = f"s{i % 50}"
            expected[key] = i.to_bytes(2, "big") * 40
            await backend.commit(Batch(keys={"session": {key: expected[key]}}))
        stats = backend.statistics()
        assert stats.compactions >= 3
        assert stats.log_bytes < 4096 + 200
    names = os.listdir(tmp_path)
    assert len([n for n in names if n.startswith("snapshot-")]) == 1
    assert len([n for n in names if n.startswith("log-")]) == 1
    async with await open_native_backend(tmp_path) as backend:
        assert await backend.read_keys("session", list(expected)) == expected


async def count_compaction_ops(path: Path) -> int:
    fs = CrashingFileSystem(crash_at=None)
    async with await open_native_backend(path, fs=fs) as backend:
        fs.armed = True
        await backend.compact()
    return fs.count


async def test_crash_at_every_step_of_compaction_keeps_all_data(tmp_path: Path) -> None:
    """A crash at each IO step of a compaction leaves a store that opens with all data."""
    probe = tmp_path / "probe"
    await fill(probe)
    total = await count_compaction_ops(probe)
    assert total >= 8
    for crash_at in range(1, total + 1):
        path = tmp_path / f"crash{crash_at}"
        keys, _, second = await fill(path)
        fs = CrashingFileSystem(crash_at)
        backend = await open_native_backend(path, fs=fs)
        fs.armed = True
        try:
            await backend.compact()
        except DurabilityError:
            with pytest.raises(StoreReadOnlyError):
                await backend.commit(Batch(keys={"session": {"x": b"x"}}))
        await backend.aclose()
        await check_full_state(path, keys, second)
        # And a second open after recovery (cleanup done) is clean too.
        await check_full_state(path, keys, second)
        names = os.listdir(path)
        assert len([n for n in names if n.startswith("log-")]) == 1, (crash_at, names)
