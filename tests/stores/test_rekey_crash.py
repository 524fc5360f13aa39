"""Rekey is crash-safe: a child SIGKILLed at any point leaves the old key or the new one.

Native: the child is killed at every file-system change of the rekey in turn (before
each, and in the middle of each write), so every step of the switch is covered, not a
sample. SQLite and PostgreSQL: the child is killed at random moments during its one
transaction.
After every kill the store opens with exactly one of the two keys, holds all the
data, and the other key is refused with ``WrongKeyError``.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from stores.encryption import StoreKey
from stores.errors import StoreLockedError, WrongKeyError
from stores.native import open_native_backend
from stores.postgres import open_postgres_backend
from stores.sqlite import open_sqlite_backend
from stores.types import Batch, StoreSnapshot
from tests.stores.encryption_helpers import (
    creds_secrets,
    first_creds,
    scan_for_leaks,
    secret_batch,
)
from tests.stores.postgres_server import (  # noqa: F401 (fixtures, used by name)
    PostgresServer,
    postgres_server_fixture,
)

ROOT = Path(__file__).resolve().parents[2]
SQLITE_KILLS = int(os.environ.get("REKEY_CRASH_KILLS", "8"))
POSTGRES_KILLS = int(os.environ.get("REKEY_CRASH_KILLS", "4"))
Opener = Callable[..., Any]


def hexkey(key: StoreKey | None) -> str:
    return "-" if key is None else key._raw.hex()


def child(*args: str, wait_for: bytes | None = None, kill_after: float = 0.0) -> tuple[int, str]:
    """Run the child; with ``wait_for``, SIGKILL it ``kill_after`` s after that line.

    Returns its exit code (0, or -9 when killed) and what it printed.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.stores.rekey_crash_child", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    if wait_for is not None:
        line = proc.stdout.readline()
        assert line.strip() == wait_for, line
        time.sleep(kill_after)
        proc.kill()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, -9), err.decode()[-2000:]
    return proc.returncode, out.decode()


async def fill(
    opener: Opener, where: Path, key: StoreKey | None, compact: bool, bulk: int = 0
) -> StoreSnapshot:
    """A store with creds, many keys and (optionally) a compacted generation."""
    creds, _ = first_creds()
    async with await opener(where, encryption_key=key) as backend:
        await backend.commit(Batch(creds=creds))
        for n in range(40):
            await backend.commit(secret_batch(n)[0])
        if bulk:
            pre_keys = {str(1000 + n): {"private": os.urandom(32)} for n in range(bulk)}
            await backend.commit(Batch(keys={"pre-key": pre_keys}))
        if compact:
            await backend.compact()
            await backend.commit(secret_batch(99)[0])
        snapshot: StoreSnapshot = await backend.snapshot()
        return snapshot


def byte_values(snapshot: StoreSnapshot) -> list[bytes]:
    """Every private creds key and every byte string of 16+ bytes in the stored keys."""
    found: list[bytes] = [] if snapshot.creds is None else creds_secrets(snapshot.creds)

    def walk(value: object) -> None:
        if isinstance(value, bytes) and len(value) >= 16:
            found.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(snapshot.keys)
    return found


async def opens_with(opener: Opener, where: Path, key: StoreKey | None) -> StoreSnapshot | None:
    """The store's content under ``key``, or None when the key is refused."""
    try:
        backend = await opener(where, encryption_key=key)
    except WrongKeyError:
        return None
    async with backend:
        snapshot: StoreSnapshot = await backend.snapshot()
        return snapshot


async def check_one_key_opens(
    opener: Opener, where: Path, old: StoreKey | None, new: StoreKey | None, want: StoreSnapshot
) -> str:
    """Exactly one key opens the store, with all of ``want``; returns which."""
    with_old = await opens_with(opener, where, old)
    with_new = await opens_with(opener, where, new)
    assert (with_old is None) != (with_new is None), "readable with both keys or neither"
    got = with_old or with_new
    assert got == want
    return "old" if with_new is None else "new"


KEY_PAIRS = [("plain", "key"), ("key", "key2"), ("key", "plain")]


@pytest.mark.slow
@pytest.mark.parametrize(
    "start,end,compacted", [("plain", "key", False), ("key", "key2", True), ("key", "plain", False)]
)
def test_native_rekey_killed_at_every_step(
    tmp_path: Path, start: str, end: str, compacted: bool
) -> None:
    """SIGKILL before each change (and mid-write) of a native rekey: one key opens, not zero."""
    keys = {"plain": None, "key": StoreKey.generate(), "key2": StoreKey.generate()}
    old, new = keys[start], keys[end]
    pristine = tmp_path / "pristine"
    want = trio.run(fill, open_native_backend, pristine, old, compacted)
    work = tmp_path / "work"
    shutil.copytree(pristine, work)
    code, out = child("native", str(work), hexkey(old), hexkey(new), "0")
    assert code == 0 and out.startswith("OPS ")
    total = int(out.split()[1])
    assert total >= 10  # two atomic writes and the old generation's removal at least
    seen = set()
    for kill_at in range(1, total + 1):
        shutil.rmtree(work)
        shutil.copytree(pristine, work)
        code, _ = child("native", str(work), hexkey(old), hexkey(new), str(kill_at))
        assert code == -9, f"not killed at step {kill_at} of {total}"
        if old is not None and new is not None:
            # Temp and half-written files of the new generation are sealed too.
            assert scan_for_leaks(work, byte_values(want)) == [], f"step {kill_at}"
        seen.add(trio.run(check_one_key_opens, open_native_backend, work, old, new, want))
    assert seen == {"old", "new"}  # the kills straddle the switch


@pytest.mark.slow
@pytest.mark.parametrize("start,end", KEY_PAIRS)
def test_sqlite_rekey_killed_at_random_moments(tmp_path: Path, start: str, end: str) -> None:
    """SIGKILLs at random moments of a SQLite rekey: old or new key opens, never neither."""
    keys = {"plain": None, "key": StoreKey.generate(), "key2": StoreKey.generate()}
    old, new = keys[start], keys[end]
    pristine = tmp_path / "pristine"
    pristine.mkdir()
    # Enough rows that the rekey transaction takes a while to be killed inside.
    want = trio.run(fill, open_sqlite_backend, pristine / "auth.db", old, False, 4000)
    rng = random.Random(int(os.environ.get("CRASH_SEED", random.randrange(1 << 30))))
    work = tmp_path / "work"
    for _ in range(SQLITE_KILLS):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(pristine, work)
        delay = rng.uniform(0.0, 0.25)
        db = str(work / "auth.db")
        child("sqlite", db, hexkey(old), hexkey(new), "-", wait_for=b"REKEYING", kill_after=delay)
        trio.run(check_one_key_opens, open_sqlite_backend, work / "auth.db", old, new, want)


async def fill_postgres(dsn: str, key: StoreKey | None) -> StoreSnapshot:
    async def opener(where: Path, encryption_key: StoreKey | None) -> Any:
        return await open_postgres_backend(dsn, encryption_key=encryption_key)

    return await fill(opener, Path("unused"), key, False, 2000)


async def postgres_opens_with_one_key(
    dsn: str, old: StoreKey | None, new: StoreKey | None, want: StoreSnapshot
) -> str:
    async def opener(where: Path, encryption_key: StoreKey | None) -> Any:
        # The killed child's one-second lease may still run: wait it out.
        for _ in range(50):
            try:
                return await open_postgres_backend(dsn, encryption_key=encryption_key)
            except StoreLockedError:
                await trio.sleep(0.1)
        return await open_postgres_backend(dsn, encryption_key=encryption_key)

    return await check_one_key_opens(opener, Path("unused"), old, new, want)


@pytest.mark.slow
@pytest.mark.parametrize("start,end", [("plain", "key"), ("key", "key2")])
def test_postgres_rekey_killed_at_random_moments(
    postgres_server: PostgresServer, start: str, end: str
) -> None:
    """SIGKILLs of a client rekeying a PostgreSQL account: old or new key, never neither."""
    keys = {"plain": None, "key": StoreKey.generate(), "key2": StoreKey.generate()}
    old, new = keys[start], keys[end]
    rng = random.Random(int(os.environ.get("CRASH_SEED", random.randrange(1 << 30))))
    for _ in range(POSTGRES_KILLS):
        dsn = postgres_server.create_database()
        want = trio.run(fill_postgres, dsn, old)
        delay = rng.uniform(0.0, 0.3)
        child(
            "postgres", dsn, hexkey(old), hexkey(new), "-", wait_for=b"REKEYING", kill_after=delay
        )
        trio.run(postgres_opens_with_one_key, dsn, old, new, want)
