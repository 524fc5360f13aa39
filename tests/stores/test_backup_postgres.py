"""Backing up a PostgreSQL account while its owner holds the lease and commits."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import trio

from stores.backup import backup_location, restore_location
from stores.creds import init_auth_creds
from stores.errors import BackupError, BackupUnsupportedError, WrongBackendError
from stores.native import open_native_backend
from stores.postgres import open_postgres_backend
from stores.types import Batch, StoreSnapshot
from tests.stores.postgres_server import (  # noqa: F401 (fixtures, used by name)
    postgres_dsn_fixture,
    postgres_server_fixture,
)

ME = "15551234567:12@s.whatsapp.net"


async def _restored(backup: Path, tmp_path: Path) -> StoreSnapshot:
    loc = tmp_path / f"restored-{backup.name}"
    await restore_location(backup, loc)
    async with await open_native_backend(loc) as store:
        return await store.snapshot()


async def test_backup_while_the_owner_commits_holds_a_prefix_at_its_seq(
    tmp_path: Path, postgres_dsn: str
) -> None:
    """With the lease held and commits running, each backup holds commits 1..n exactly,
    n at least the last acknowledged before it, and its point is that commit's seq."""
    creds = init_auth_creds()
    creds.me = {"id": ME, "name": "bot"}
    acked: list[tuple[int, int]] = []
    results = []
    async with await open_postgres_backend(postgres_dsn, account="bot1") as owner:
        await owner.commit(Batch(creds=creds))

        async def writer() -> None:
            for n in range(1, 200):
                seq = await owner.commit(Batch(keys={"session": {f"s{n}": {"n": n}}}))
                acked.append((n, seq))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            for i in range(3):
                await trio.sleep(0.05)
                before = len(acked)
                location = f"{postgres_dsn}#account=bot1"
                results.append((before, await backup_location(location, tmp_path / f"b{i}")))
    seqs = dict(acked)
    for i, (before, summary) in enumerate(results):
        state = await _restored(tmp_path / f"b{i}", tmp_path)
        held = {int(k[1:]) for k in state.keys.get("session", {})}
        n = len(held)
        assert held == set(range(1, n + 1)) and n >= before
        assert state.creds is not None and state.creds.me == {"id": ME, "name": "bot"}
        if n:
            assert summary.seq == seqs[n]  # the point is the seq of its last commit
        assert summary.source_backend == "postgres" and summary.account_id == ME
        assert summary.source.endswith("#account=bot1")


async def test_refusals_name_the_account(tmp_path: Path, postgres_dsn: str) -> None:
    """An account that holds nothing, a conflicting account and a wrong --backend are
    refused, and no backup is written."""
    with pytest.raises(BackupError, match="nothing to back up"):
        await backup_location(postgres_dsn, tmp_path / "b", account="nobody")
    with pytest.raises(BackupError, match="names account 'a'"):
        await backup_location(f"{postgres_dsn}#account=a", tmp_path / "b", account="b")
    with pytest.raises(WrongBackendError):
        await backup_location(postgres_dsn, tmp_path / "b", backend="sqlite")
    assert not (tmp_path / "b").exists()


async def test_the_password_is_never_shown(tmp_path: Path, postgres_dsn: str) -> None:
    """The summary names the database by its DSN without a password."""
    creds = init_auth_creds()
    async with await open_postgres_backend(postgres_dsn, account="default") as owner:
        await owner.commit(Batch(creds=creds))
    dsn = postgres_dsn.replace("postgres:@", "postgres:hunter2@")
    summary = await backup_location(dsn, tmp_path / "b")
    assert "hunter2" not in summary.source and summary.seq == 1


async def test_an_encrypted_account_is_refused_never_copied_as_plaintext(
    tmp_path: Path, postgres_dsn: str
) -> None:
    """An account whose metadata says it is encrypted at rest is refused by name."""
    async with await open_postgres_backend(postgres_dsn, account="bot1") as owner:
        await owner.commit(Batch(creds=init_auth_creds()))
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO baileys_store_meta (name, value) VALUES ('encryption:bot1', '{}')"
        )
    with pytest.raises(BackupUnsupportedError, match="encrypted at rest"):
        await backup_location(postgres_dsn, tmp_path / "b", account="bot1")
    assert not (tmp_path / "b").exists()
