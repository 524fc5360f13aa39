"""Backups of stores encrypted at rest: sealed under the same key, never plaintext."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import trio

from stores.backup import backup_location, restore_location
from stores.errors import BackupUnsupportedError, WrongKeyError
from stores.inspection import inspect_location
from stores.native import open_native_backend
from stores.sqlite import open_sqlite_backend
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


async def test_an_encrypted_sqlite_account_backs_up_sealed_under_its_key(tmp_path: Path) -> None:
    """A SQLite account under a key is copied online with it, sealed, and restores whole."""
    key = secrets.token_bytes(32)
    creds, known = first_creds()
    db = tmp_path / "auth.db"
    async with await open_sqlite_backend(db, account="ann", encryption_key=key) as store:
        await store.commit(Batch(creds=creds))
        batch, more = secret_batch(0)
        await store.commit(batch)
        known += more
        expected = await store.snapshot()
    for wrong in (None, secrets.token_bytes(32)):
        with pytest.raises(WrongKeyError):
            await backup_location(db, tmp_path / "bak", account="ann", encryption_key=wrong)
        assert not (tmp_path / "bak").exists()
    await backup_location(db, tmp_path / "bak", account="ann", encryption_key=key)
    assert scan_for_leaks(tmp_path / "bak", known) == []
    await restore_location(tmp_path / "bak", tmp_path / "loc", encryption_key=key)
    async with await open_native_backend(tmp_path / "loc", encryption_key=key) as restored:
        assert await restored.snapshot() == expected


async def test_a_key_for_a_plain_sqlite_account_or_a_postgres_uri_is_refused(
    tmp_path: Path,
) -> None:
    """A key is never silently unused: a plain account refuses it, PostgreSQL says why."""
    creds, _ = first_creds()
    db = tmp_path / "auth.db"
    async with await open_sqlite_backend(db, account="ann") as store:
        await store.commit(Batch(creds=creds))
    with pytest.raises(WrongKeyError):
        await backup_location(db, tmp_path / "bak", account="ann", encryption_key=b"k" * 32)
    with pytest.raises(BackupUnsupportedError, match=r"Session\.backup"):
        await backup_location(
            "postgresql://nobody@127.0.0.1:1/none", tmp_path / "bak", encryption_key=b"k" * 32
        )
    assert not (tmp_path / "bak").exists()
