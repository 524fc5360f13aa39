"""Encryption at rest in the PostgreSQL backend: sealed rows, the key row, rekey, inspect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from stores.encryption import StoreKey
from stores.errors import CorruptStateError, WrongKeyError
from stores.inspection import inspect_location
from stores.postgres import open_postgres_backend
from stores.types import Batch
from tests.stores.encryption_helpers import first_creds, scan_for_leaks, secret_batch
from tests.stores.postgres_server import (  # noqa: F401 (fixtures, used by name)
    PostgresServer,
    postgres_dsn_fixture,
    postgres_server_fixture,
)


def rows(dsn: str) -> list[tuple[Any, ...]]:
    """Every data row of the store (leases left out: they are ownership, not data)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        out: list[tuple[Any, ...]] = []
        for table in ("baileys_store_meta", "baileys_accounts", "baileys_creds", "baileys_keys"):
            out += conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
        return out


async def test_sealed_rows_round_trip_and_no_secret_reaches_the_cluster_files(
    postgres_dsn: str, postgres_server: PostgresServer
) -> None:
    """Data reads back under the key; no file of the server (tables, WAL) holds a secret."""
    key = StoreKey.generate()
    creds, known = first_creds()
    async with await open_postgres_backend(postgres_dsn, encryption_key=key) as backend:
        await backend.commit(Batch(creds=creds))
        for n in range(10):
            batch, found = secret_batch(n)
            known += found
            await backend.commit(batch)
        assert backend.key_id == key.key_id
    async with await open_postgres_backend(postgres_dsn, encryption_key=key) as backend:
        assert await backend.read_creds() == creds
        assert len((await backend.snapshot()).keys["session"]) == 10
    # The scan is not blind: a plain account's secrets are found in the same files.
    plain_batch, plain_secrets = secret_batch(99)
    async with await open_postgres_backend(postgres_dsn, account="plain") as backend:
        await backend.commit(plain_batch)
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        (data_dir,) = conn.execute("SELECT current_setting('data_directory')").fetchone()
    assert scan_for_leaks(Path(data_dir), known) == []
    assert scan_for_leaks(Path(data_dir), plain_secrets)


@pytest.mark.parametrize("given", ["other", "none"])
async def test_wrong_or_missing_key_is_refused_and_changes_no_row(
    postgres_dsn: str, given: str
) -> None:
    """WrongKeyError names the key id; every data row is as it was."""
    key = StoreKey.generate()
    async with await open_postgres_backend(postgres_dsn, encryption_key=key) as backend:
        await backend.commit(secret_batch(1)[0])
    before = rows(postgres_dsn)
    other = StoreKey.generate() if given == "other" else None
    with pytest.raises(WrongKeyError) as caught:
        await open_postgres_backend(postgres_dsn, encryption_key=other)
    assert caught.value.expected == key.key_id
    assert rows(postgres_dsn) == before


async def test_plain_account_with_a_key_is_refused(postgres_dsn: str) -> None:
    """A key given for a plain account is refused (with the rekey hint)."""
    async with await open_postgres_backend(postgres_dsn) as backend:
        await backend.commit(secret_batch(1)[0])
    with pytest.raises(WrongKeyError, match="rekey"):
        await open_postgres_backend(postgres_dsn, encryption_key=StoreKey.generate())


async def test_row_moved_to_another_row_fails_its_tag(postgres_dsn: str) -> None:
    """A sealed value pasted into another id's row (CRC fixed up) is corruption."""
    from stores import sqlite_codec as codec
    from stores.postgres import key_identity

    key = StoreKey.generate()
    async with await open_postgres_backend(postgres_dsn, encryption_key=key) as backend:
        await backend.commit(secret_batch(1)[0])
        await backend.commit(secret_batch(2)[0])
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        (blob,) = conn.execute("SELECT value FROM baileys_keys WHERE id = 's2'").fetchone()
        crc = codec.row_crc(key_identity("default", "session", "s1"), bytes(blob))
        conn.execute("UPDATE baileys_keys SET value = %s, crc = %s WHERE id = 's1'", (blob, crc))
    async with await open_postgres_backend(postgres_dsn, encryption_key=key) as backend:
        with pytest.raises(CorruptStateError, match="authentication tag"):
            await backend.read_keys("session", ["s1"])


@pytest.mark.parametrize("start,end", [("plain", "key"), ("key", "key2"), ("key", "plain")])
async def test_rekey_reseals_the_account(postgres_dsn: str, start: str, end: str) -> None:
    """After rekey only the new key opens the account; inspect reads it with that key."""
    keys = {"plain": None, "key": StoreKey.generate(), "key2": StoreKey.generate()}
    creds, _ = first_creds()
    async with await open_postgres_backend(postgres_dsn, encryption_key=keys[start]) as backend:
        await backend.commit(Batch(creds=creds))
        await backend.commit(Batch(creds=creds))
        for n in range(5):
            await backend.commit(secret_batch(n)[0])
        await backend.rekey(keys[end])
        await backend.commit(secret_batch(9)[0])
    with pytest.raises(WrongKeyError):
        await open_postgres_backend(postgres_dsn, encryption_key=keys[start])
    async with await open_postgres_backend(postgres_dsn, encryption_key=keys[end]) as backend:
        assert await backend.read_creds() == creds
        assert await backend.read_previous_creds() == creds
        assert len((await backend.snapshot()).keys["session"]) == 6
    report = inspect_location(postgres_dsn, key=keys[end])
    assert report.ok and report.accounts[0].total_keys == 12
    assert report.accounts[0].key_id == (None if keys[end] is None else keys[end].key_id)
