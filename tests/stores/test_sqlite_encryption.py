"""Encryption at rest in the SQLite backend: sealed rows, the account's key row, rekey."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from stores import sqlite_codec as codec
from stores.encryption import StoreKey
from stores.errors import CorruptStateError, WrongKeyError
from stores.sqlite import open_sqlite_backend
from stores.types import Batch
from tests.stores.encryption_helpers import first_creds, scan_for_leaks, secret_batch


def files(directory: Path) -> dict[str, bytes]:
    """The data files (the account lock file is a pid note any open rewrites)."""
    names = [n for n in sorted(os.listdir(directory)) if not n.endswith(".lock")]
    return {n: (directory / n).read_bytes() for n in names}


async def test_rows_are_sealed_and_no_key_material_reaches_db_or_wal(tmp_path: Path) -> None:
    """With the database still open (WAL full), no file holds creds or session secrets."""
    key, db = StoreKey.generate(), tmp_path / "auth.db"
    creds, known = first_creds()
    async with await open_sqlite_backend(db, encryption_key=key) as backend:
        await backend.commit(Batch(creds=creds))
        for n in range(30):
            batch, found = secret_batch(n)
            known += found
            await backend.commit(batch)
        assert (tmp_path / "auth.db-wal").exists()
        assert scan_for_leaks(tmp_path, known) == []
        assert await backend.read_creds() == creds
    assert scan_for_leaks(tmp_path, known) == []
    async with await open_sqlite_backend(db, encryption_key=key) as backend:
        assert await backend.read_creds() == creds
        snap = await backend.snapshot()
        assert len(snap.keys["session"]) == 30
    with sqlite3.connect(db) as conn:
        (meta,) = conn.execute(
            "SELECT value FROM store_meta WHERE name = 'encryption:default'"
        ).fetchone()
    assert key.key_id in meta and key._raw.hex() not in meta
    # The scan is not blind: a plain database's secrets are found in its files.
    async with await open_sqlite_backend(tmp_path / "plain" / "auth.db") as backend:
        await backend.commit(Batch(creds=creds))
        assert scan_for_leaks(tmp_path / "plain", known)


@pytest.mark.parametrize("given", ["other", "none"])
async def test_wrong_or_missing_key_is_refused_and_changes_nothing(
    tmp_path: Path, given: str
) -> None:
    """WrongKeyError names the account's key id; the database files stay byte-identical."""
    key, db = StoreKey.generate(), tmp_path / "auth.db"
    async with await open_sqlite_backend(db, encryption_key=key) as backend:
        await backend.commit(secret_batch(1)[0])
    before = files(tmp_path)
    other = StoreKey.generate() if given == "other" else None
    with pytest.raises(WrongKeyError) as caught:
        await open_sqlite_backend(db, encryption_key=other)
    assert caught.value.expected == key.key_id and "'default'" in str(caught.value)
    assert files(tmp_path) == before


async def test_accounts_of_one_file_are_keyed_independently(tmp_path: Path) -> None:
    """One account encrypted, another plain, in one database: each opens as it is."""
    key, db = StoreKey.generate(), tmp_path / "auth.db"
    async with await open_sqlite_backend(db, account="a", encryption_key=key) as backend:
        await backend.commit(secret_batch(1)[0])
    async with await open_sqlite_backend(db, account="b") as backend:
        await backend.commit(secret_batch(2)[0])
    with pytest.raises(WrongKeyError, match="rekey"):
        await open_sqlite_backend(db, account="b", encryption_key=key)
    async with await open_sqlite_backend(db, account="a", encryption_key=key) as backend:
        assert await backend.read_keys("session", ["s1"])


async def test_good_checksum_bad_tag_is_corruption(tmp_path: Path) -> None:
    """A row re-sealed elsewhere and given a matching CRC: its tag fails, CorruptStateError."""
    key, db = StoreKey.generate(), tmp_path / "auth.db"
    async with await open_sqlite_backend(db, encryption_key=key) as backend:
        await backend.commit(secret_batch(1)[0])
        await backend.commit(secret_batch(2)[0])
    identity = "key\0default\0session\0s1"
    with sqlite3.connect(db) as conn:
        (blob,) = conn.execute("SELECT value FROM keys WHERE id = 's2'").fetchone()
        # s2's sealed value pasted into s1's row with the CRC recomputed for s1.
        conn.execute(
            "UPDATE keys SET value = ?, crc = ? WHERE id = 's1'",
            (blob, codec.row_crc(identity, blob)),
        )
    async with await open_sqlite_backend(db, encryption_key=key) as backend:
        with pytest.raises(CorruptStateError, match="authentication tag"):
            await backend.read_keys("session", ["s1"])
        assert await backend.read_keys("session", ["s2"])


@pytest.mark.parametrize("start,end", [("plain", "key"), ("key", "key2"), ("key", "plain")])
async def test_rekey_reseals_every_row(tmp_path: Path, start: str, end: str) -> None:
    """After rekey the data opens with the new key only; no old plaintext stays behind."""
    keys = {"plain": None, "key": StoreKey.generate(), "key2": StoreKey.generate()}
    db = tmp_path / "auth.db"
    creds, known = first_creds()
    async with await open_sqlite_backend(db, encryption_key=keys[start]) as backend:
        await backend.commit(Batch(creds=creds))
        await backend.commit(Batch(creds=creds))  # fills the previous-creds slot too
        for n in range(10):
            batch, found = secret_batch(n)
            known += found
            await backend.commit(batch)
        await backend.rekey(keys[end])
        await backend.commit(secret_batch(20)[0])
        assert await backend.read_previous_creds() == creds
    with pytest.raises(WrongKeyError):
        await open_sqlite_backend(db, encryption_key=keys[start])
    async with await open_sqlite_backend(db, encryption_key=keys[end]) as backend:
        assert await backend.read_creds() == creds
        assert len((await backend.snapshot()).keys["session"]) == 11
    if end != "plain":
        assert scan_for_leaks(tmp_path, known) == []
