"""Online backup and restore: a consistent copy while the owner writes, a restore that
refuses what it must and publishes whole."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from stores import backup as backup_mod
from stores.backup import BACKUP_GENERATION, backup_location, restore_location
from stores.creds import init_auth_creds
from stores.errors import (
    BackupError,
    BackupTargetNotEmpty,
    BackupUnsupportedError,
    BackupVerificationError,
    CorruptStateError,
    StoreLockedError,
    WrongBackendError,
)
from stores.inspection import detect_backend, inspect_location
from stores.lock import acquire_lock
from stores.native import open_native_backend
from stores.native_format import log_name, snapshot_name
from stores.sqlite import open_sqlite_backend
from stores.types import Batch, StoreSnapshot
from tests.cli.stores_helpers import ME_ID, expected_counts, make_store, tree_state


def _creds() -> Any:
    creds = init_auth_creds()
    creds.me = {"id": ME_ID, "name": "bot"}
    return creds


async def _make(backend: str, path: Path, **options: Any) -> Path:
    """``make_store`` (which runs trio itself) from a worker thread."""
    return await trio.to_thread.run_sync(partial(make_store, backend, path, **options))


async def _snapshot_of(path: Path) -> StoreSnapshot:
    async with await open_native_backend(path) as backend:
        return await backend.snapshot()


async def test_backup_of_a_closed_store_restores_the_same_state(tmp_path: Path) -> None:
    """A backup holds creds and every key; restored, it opens with the same state."""
    src = await _make("native", tmp_path / "auth")
    before = tree_state(src)
    summary = await backup_location(src, tmp_path / "bak")
    assert tree_state(src) == before  # the source is not touched, not even a lock file
    assert summary.account_id == ME_ID
    assert dict(summary.key_counts) == expected_counts()
    assert summary.source_backend == "native"
    assert sorted(os.listdir(tmp_path / "bak")) == ["LOCK", snapshot_name(BACKUP_GENERATION)]
    report = inspect_location(tmp_path / "bak")
    assert report.ok and report.accounts[0].durable_seq == summary.seq
    restored = await restore_location(tmp_path / "bak", tmp_path / "restored")
    assert restored.seq == summary.seq
    assert await _snapshot_of(tmp_path / "restored") == await _snapshot_of(src)


async def test_backup_while_the_owner_holds_the_store_and_commits(tmp_path: Path) -> None:
    """Taken while a backend owns the store and commits, the copy holds a prefix of commits
    including every commit acknowledged before it began, and its point names it."""
    acked: list[int] = []
    async with await open_native_backend(tmp_path / "auth", compact_min_bytes=4096) as owner:
        await owner.commit(Batch(creds=_creds()))

        async def writer() -> None:
            for n in range(1, 400):
                value = {"n": n, "pad": bytes(64)}
                await owner.commit(Batch(keys={"session": {f"s{n}": value, "last": value}}))
                acked.append(n)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            results = []
            for i in range(5):
                await trio.sleep(0.01)
                before = len(acked)
                summary = await backup_location(tmp_path / "auth", tmp_path / f"bak{i}")
                results.append((before, summary))
        assert owner.statistics().compactions > 0  # reads raced compactions too
    for i, (before, summary) in enumerate(results):
        state = await _snapshot_of(tmp_path / f"bak{i}")
        ids = {int(k[1:]) for k in state.keys.get("session", {}) if k != "last"}
        n = len(ids)
        assert ids == set(range(1, n + 1))  # a prefix
        assert n >= before
        if n:
            assert state.keys["session"]["last"]["n"] == n
        assert summary.seq == n + 1  # the creds commit, then one per key write


async def test_a_torn_tail_is_left_out(tmp_path: Path) -> None:
    """Bytes of a write never acknowledged (a torn frame) are not part of the backup."""
    src = await _make("native", tmp_path / "auth")
    log = src / log_name(0)
    with log.open("ab") as f:
        f.write(b"\xf0BTR\x00\x00\x01\x00garbage")
    before = tree_state(src)
    summary = await backup_location(src, tmp_path / "bak")
    assert tree_state(src) == before
    assert inspect_location(tmp_path / "bak").accounts[0].durable_seq == summary.seq
    assert dict(summary.key_counts) == expected_counts()


async def test_sqlite_account_is_copied_while_its_owner_has_it_open(tmp_path: Path) -> None:
    """SQLite's online backup API copies one account while its backend holds it."""
    db = tmp_path / "bots.db"
    await _make("sqlite", db, account="bot1")
    async with await open_sqlite_backend(db, account="bot1") as owner:
        await owner.commit(Batch(keys={"tctoken": {"late": b"x"}}))
        summary = await backup_location(db, tmp_path / "bak", account="bot1")
        expected = await owner.snapshot()
        seq = owner.statistics().seq
    assert summary.seq == seq and summary.source_backend == "sqlite"
    await restore_location(tmp_path / "bak", tmp_path / "restored")
    assert await _snapshot_of(tmp_path / "restored") == expected
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".bak")]  # scratch removed


async def test_sqlite_account_without_creds_is_refused(tmp_path: Path) -> None:
    """An account that holds nothing is not backed up (and nothing is written)."""
    db = tmp_path / "bots.db"
    await _make("sqlite", db, account="bot1")
    with pytest.raises(BackupError, match="no creds"):
        await backup_location(db, tmp_path / "bak", account="other")
    assert not (tmp_path / "bak").exists()


@pytest.mark.parametrize("backend", ["multi-file"])
async def test_backends_without_a_durable_order_are_refused(tmp_path: Path, backend: str) -> None:
    """A Baileys multi-file directory is refused by name, before anything is written."""
    src = await _make(backend, tmp_path / "auth")
    before = tree_state(src)
    with pytest.raises(BackupUnsupportedError, match=r"Session\.backup"):
        await backup_location(src, tmp_path / "bak")
    assert tree_state(src) == before
    assert not (tmp_path / "bak").exists()


async def test_backup_refuses_an_empty_source_and_an_output_inside_it(tmp_path: Path) -> None:
    """Nothing to copy, or a copy that would land inside its source: refused."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackupError, match="nothing to back up"):
        await backup_location(tmp_path / "empty", tmp_path / "bak")
    src = await _make("native", tmp_path / "auth")
    with pytest.raises(BackupError, match="outside"):
        await backup_location(src, src / "bak")
    with pytest.raises(WrongBackendError):
        await backup_location(tmp_path / "absent", tmp_path / "bak")
    assert not (tmp_path / "bak").exists() and not (src / "bak").exists()


async def test_backup_never_overwrites_an_earlier_backup(tmp_path: Path) -> None:
    """A non-empty output is refused and left byte for byte."""
    src = await _make("native", tmp_path / "auth")
    await backup_location(src, tmp_path / "bak")
    before = tree_state(tmp_path / "bak")
    with pytest.raises(BackupTargetNotEmpty, match="not empty"):
        await backup_location(src, tmp_path / "bak")
    assert tree_state(tmp_path / "bak") == before


async def test_restore_refuses_a_non_empty_target(tmp_path: Path) -> None:
    """Restoring over a store (or any file) is refused; the target is left as it was."""
    src = await _make("native", tmp_path / "auth")
    await backup_location(src, tmp_path / "bak")
    other = await _make("native", tmp_path / "other", commits=1)
    before = tree_state(other)
    with pytest.raises(BackupTargetNotEmpty) as info:
        await restore_location(tmp_path / "bak", other)
    assert info.value.location == str(other)
    assert tree_state(other) == before
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(BackupTargetNotEmpty, match="not a directory"):
        await restore_location(tmp_path / "bak", tmp_path / "file")


async def test_restore_refuses_a_location_in_use(tmp_path: Path) -> None:
    """A target whose lock a live owner holds is refused, naming the owner; nothing added."""
    src = await _make("native", tmp_path / "auth")
    await backup_location(src, tmp_path / "bak")
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    with acquire_lock(target):
        with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}"):
            await restore_location(tmp_path / "bak", target)
    assert os.listdir(target) == ["LOCK"]


async def test_restore_into_an_empty_directory_with_leftovers(tmp_path: Path) -> None:
    """A stale lock file and the temp file of a killed restore still count as empty."""
    src = await _make("native", tmp_path / "auth")
    await backup_location(src, tmp_path / "bak")
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    acquire_lock(target).release()
    (target / f".{snapshot_name(1)}.tmp-0123456789ab").write_bytes(b"half")
    await restore_location(tmp_path / "bak", target)
    assert await _snapshot_of(target) == await _snapshot_of(src)


async def test_restore_refuses_what_is_not_a_backup(tmp_path: Path) -> None:
    """An empty directory or another backend's data is not restored."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackupError, match="no backup"):
        await restore_location(tmp_path / "empty", tmp_path / "target")
    mf = await _make("multi-file", tmp_path / "mf")
    with pytest.raises(WrongBackendError):
        await restore_location(mf, tmp_path / "target")
    assert not (tmp_path / "target").exists()


async def test_a_copy_that_does_not_read_back_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the written copy differs from the state read, the backup fails and leaves
    an empty output (nothing that could be taken for a store)."""
    src = await _make("native", tmp_path / "auth")
    real = backup_mod.encode_snapshot

    def lossy(header: Any, creds: Any, previous: Any, keys: Any, cipher: Any) -> bytes:
        kept = {t: ids for t, ids in keys.items() if t != "tctoken"}
        return real(header, creds, previous, kept, cipher)

    monkeypatch.setattr(backup_mod, "encode_snapshot", lossy)
    with pytest.raises(BackupVerificationError, match="key counts differ"):
        await backup_location(src, tmp_path / "bak")
    assert detect_backend(tmp_path / "bak") is None


def test_backup_files_are_private(tmp_path: Path) -> None:
    """The backup directory is 0700 and its snapshot 0600."""
    src = make_store("native", tmp_path / "auth")
    trio.run(backup_location, src, tmp_path / "bak")
    assert (tmp_path / "bak").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "bak" / snapshot_name(1)).stat().st_mode & 0o777 == 0o600


async def test_a_log_without_its_snapshot_is_refused_as_an_open_would(tmp_path: Path) -> None:
    """A newer log with no snapshot under it is damage (no owner to blame): refused."""
    src = await _make("native", tmp_path / "auth")
    (src / log_name(1)).write_bytes((src / log_name(0)).read_bytes())
    with pytest.raises(CorruptStateError, match="has no snapshot"):
        await backup_location(src, tmp_path / "bak")
    assert not (tmp_path / "bak").exists()
