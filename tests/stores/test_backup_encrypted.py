"""Backups of a native store encrypted at rest: sealed under the same key, never plaintext."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import trio

from stores.backup import backup_location, restore_location
from stores.errors import WrongKeyError
from stores.inspection import inspect_location
from stores.native import open_native_backend
from stores.types import Batch
from tests.cli.stores_helpers import run_cli
from tests.stores.encryption_helpers import (
    first_creds,
    scan_for_leaks,
    secret_batch,
    write_key_file,
)


async def _encrypted_store(path: Path, key: bytes) -> list[bytes]:
    """A store encrypted under ``key`` holding creds and two commits of secret keys."""
    creds, known = first_creds()
    async with await open_native_backend(path, encryption_key=key) as store:
        await store.commit(Batch(creds=creds))
        for n in range(2):
            batch, more = secret_batch(n)
            await store.commit(batch)
            known += more
    return known


async def test_an_encrypted_store_backs_up_and_restores_under_its_key(tmp_path: Path) -> None:
    """With its key the backup is sealed (no secret in its files) and restores whole."""
    key = secrets.token_bytes(32)
    known = await _encrypted_store(tmp_path / "auth", key)
    summary = await backup_location(tmp_path / "auth", tmp_path / "bak", encryption_key=key)
    assert scan_for_leaks(tmp_path / "bak", known) == []
    with pytest.raises(WrongKeyError):
        inspect_location(tmp_path / "bak")
    await restore_location(tmp_path / "bak", tmp_path / "loc", encryption_key=key)
    assert scan_for_leaks(tmp_path / "loc", known) == []
    async with await open_native_backend(tmp_path / "auth", encryption_key=key) as src:
        expected = await src.snapshot()
    async with await open_native_backend(tmp_path / "loc", encryption_key=key) as restored:
        assert await restored.snapshot() == expected
        assert restored.statistics().durable_seq == summary.seq


async def test_without_or_with_another_key_nothing_is_written(tmp_path: Path) -> None:
    """A missing or wrong key is WrongKeyError for backup and restore, and no copy is made."""
    key = secrets.token_bytes(32)
    await _encrypted_store(tmp_path / "auth", key)
    with pytest.raises(WrongKeyError):
        await backup_location(tmp_path / "auth", tmp_path / "bak")
    with pytest.raises(WrongKeyError):
        await backup_location(
            tmp_path / "auth", tmp_path / "bak", encryption_key=secrets.token_bytes(32)
        )
    assert not (tmp_path / "bak").exists()
    await backup_location(tmp_path / "auth", tmp_path / "bak", encryption_key=key)
    with pytest.raises(WrongKeyError):
        await restore_location(tmp_path / "bak", tmp_path / "loc")
    assert not (tmp_path / "loc").exists()


def test_the_cli_takes_the_key_by_reference(tmp_path: Path) -> None:
    """backup/restore --key PATH seal with the key file's key; without it: exit 6."""
    key = write_key_file(tmp_path / "store.key")
    trio.run(_encrypted_store, tmp_path / "auth", key)
    assert run_cli("backup", "--auth", tmp_path / "auth", tmp_path / "bak").code == 6
    done = run_cli(
        "backup", "--auth", tmp_path / "auth", tmp_path / "bak", "--key", tmp_path / "store.key"
    )
    assert done.code == 0, done.err
    done = run_cli("restore", tmp_path / "bak", tmp_path / "loc", "--key", tmp_path / "store.key")
    assert done.code == 0, done.err
