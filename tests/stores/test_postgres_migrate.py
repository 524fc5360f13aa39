"""Migration to and from PostgreSQL, and `inspect` on a PostgreSQL location."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from stores.auth import enter_backend
from stores.creds import init_auth_creds
from stores.errors import MigrationError, StoreLockedError, WrongBackendError
from stores.inspection import detect_backend, inspect_location
from stores.migrate import BACKENDS, Layout, migrate
from stores.postgres import describe_dsn, open_postgres_backend
from stores.postgres_schema import SCHEMA_VERSION
from stores.types import Batch, StoreSnapshot
from tests.cli.stores_helpers import run_cli
from tests.stores.postgres_server import (  # noqa: F401 (fixtures, used by name)
    postgres_dsn_fixture,
    postgres_server_fixture,
)

ME = "15551234567:12@s.whatsapp.net"
OTHERS = ["native", "multi-file", "sqlite"]


def _sample() -> StoreSnapshot:
    creds = init_auth_creds()
    creds.me = {"id": ME, "name": "bot"}
    keys = {
        "pre-key": {
            str(i): {"private": bytes([i]) * 32, "public": bytes([i]) * 32} for i in (1, 2)
        },
        "session": {"15551234567.0": {"_sessions": {"BQUF": {"registrationId": 7}}}},
        "sender-key": {"120363@g.us::15551234567::0": b'[{"senderKeyId":7}]'},
        "identity-key": {"15557654321.0": b"\x05" + b"\x0c" * 32},
    }
    return StoreSnapshot(creds=creds, keys=keys)


def _place(tmp_path: Path, kind: str, name: str) -> Path:
    return tmp_path / (f"{name}.db" if BACKENDS[kind].layout is Layout.DATABASE else name)


async def _write(kind: str, where: Path | str, snapshot: StoreSnapshot, account: str) -> None:
    async with AsyncExitStack() as stack:
        backend = await enter_backend(stack, BACKENDS[kind].open(where, account))
        await backend.commit(Batch(keys=snapshot.keys, creds=snapshot.creds))


async def _read(kind: str, where: Path | str, account: str = "default") -> StoreSnapshot:
    async with AsyncExitStack() as stack:
        backend = await enter_backend(stack, BACKENDS[kind].open(where, account))
        return await backend.snapshot()


def _same(a: StoreSnapshot, b: StoreSnapshot) -> None:
    assert a.creds is not None and b.creds is not None
    assert a.creds.to_plain() == b.creds.to_plain()
    assert {t: v for t, v in a.keys.items() if v} == {t: v for t, v in b.keys.items() if v}


def _tables(dsn: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE 'baileys%' ORDER BY 1"
        ).fetchall()
    return [str(r[0]) for r in rows]


@pytest.mark.parametrize("other", OTHERS)
async def test_every_backend_migrates_into_postgres_and_back(
    tmp_path: Path, postgres_dsn: str, other: str
) -> None:
    """other -> postgres -> other copies creds and every key exactly, both ways."""
    sample = _sample()
    src = _place(tmp_path, other, "src")
    await _write(other, src, sample, "default")
    into = await migrate(other, src, "postgres", postgres_dsn, dst_account="bot1")
    assert (into.dst_backend, into.dst_account, into.account_id) == ("postgres", "bot1", ME)
    _same(await _read("postgres", postgres_dsn, "bot1"), sample)
    back = _place(tmp_path, other, "back")
    out = await migrate("postgres", postgres_dsn, other, back, src_account="bot1")
    assert out.src_account == "bot1" and out.total_keys == 5
    _same(await _read(other, back), sample)


async def test_postgres_to_postgres_takes_the_account_from_the_uri(postgres_dsn: str) -> None:
    """An account named by #account= in the URI is read; the same account is refused."""
    sample = _sample()
    await _write("postgres", postgres_dsn, sample, "a")
    summary = await migrate(
        "postgres", f"{postgres_dsn}#account=a", "postgres", postgres_dsn, dst_account="b"
    )
    assert (summary.src_account, summary.dst_account) == ("a", "b")
    _same(await _read("postgres", postgres_dsn, "b"), sample)
    with pytest.raises(MigrationError, match="same location"):
        await migrate(
            "postgres", postgres_dsn, "postgres", postgres_dsn, src_account="a", dst_account="a"
        )


async def test_summary_never_shows_the_password(tmp_path: Path, postgres_dsn: str) -> None:
    """The summary names the database by its DSN without a password."""
    await _write("native", tmp_path / "src", _sample(), "default")
    dsn = postgres_dsn.replace("postgres:@", "postgres:hunter2@")
    summary = await migrate("native", tmp_path / "src", "postgres", dsn)
    assert "hunter2" not in summary.dst
    assert summary.dst == describe_dsn(postgres_dsn)


async def test_a_running_owner_of_the_source_is_refused(tmp_path: Path, postgres_dsn: str) -> None:
    """Migrating an account whose lease a live backend holds raises StoreLockedError."""
    await _write("postgres", postgres_dsn, _sample(), "live")
    async with await open_postgres_backend(postgres_dsn, account="live", owner="runner"):
        with pytest.raises(StoreLockedError, match="runner"):
            await migrate("postgres", postgres_dsn, "native", tmp_path / "dst", src_account="live")
    assert not (tmp_path / "dst").exists()


async def test_a_non_empty_target_account_is_refused_and_kept(
    tmp_path: Path, postgres_dsn: str
) -> None:
    """A target account holding data raises MigrationError and keeps its own data."""
    await _write("native", tmp_path / "src", _sample(), "default")
    theirs = StoreSnapshot(creds=init_auth_creds(), keys={"session": {"x": b"theirs"}})
    await _write("postgres", postgres_dsn, theirs, "taken")
    with pytest.raises(MigrationError, match="not empty"):
        await migrate("native", tmp_path / "src", "postgres", postgres_dsn, dst_account="taken")
    _same(await _read("postgres", postgres_dsn, "taken"), theirs)


async def test_an_absent_source_account_is_refused_without_writing(
    tmp_path: Path, postgres_dsn: str
) -> None:
    """An account with no rows is refused before opening: no table, no lease is created."""
    with pytest.raises(MigrationError, match="absent or empty"):
        await migrate("postgres", postgres_dsn, "native", tmp_path / "dst", src_account="nobody")
    assert _tables(postgres_dsn) == []


async def test_a_failed_verification_leaves_the_target_account_empty(
    postgres_dsn: str,
) -> None:
    """import_snapshot writes nothing when its read-back check raises."""

    def refuse(_: StoreSnapshot) -> None:
        raise MigrationError("read-back differs (injected)")

    async with await open_postgres_backend(postgres_dsn, account="t") as backend:
        with pytest.raises(MigrationError, match="injected"):
            await backend.import_snapshot(_sample(), refuse)
        assert await backend.is_empty()
        assert await backend.read_creds() is None


async def test_inspect_reports_every_account_and_its_lease(postgres_dsn: str) -> None:
    """inspect lists accounts, ids, key counts, seq and the live lease owner, read only."""
    await _write("postgres", postgres_dsn, _sample(), "a")
    await _write("postgres", postgres_dsn, _sample(), "b")
    assert detect_backend(postgres_dsn) == "postgres"
    async with await open_postgres_backend(postgres_dsn, account="b", owner="runner-b"):
        report = await trio.to_thread.run_sync(inspect_location, postgres_dsn)
        one = await trio.to_thread.run_sync(inspect_location, f"{postgres_dsn}#account=a")
    assert report.ok and report.backend == "postgres" and report.format_version == SCHEMA_VERSION
    assert [a.name for a in report.accounts] == ["a", "b"]
    a, b = report.accounts
    assert (a.account_id, a.total_keys, a.durable_seq, a.lock_owner) == (ME, 5, 1, None)
    assert b.lock_owner is not None and "runner-b" in b.lock_owner
    assert [x.name for x in one.accounts] == ["a"]
    assert report.records_checked == 2 * (1 + 5)


async def test_inspect_names_a_corrupt_row(postgres_dsn: str) -> None:
    """A flipped value byte makes the report not ok, naming the account, table and row."""
    await _write("postgres", postgres_dsn, _sample(), "a")
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE baileys_keys SET value = overlay(value placing '\\xff' from 3)"
            " WHERE type = 'sender-key'"
        )
    report = await trio.to_thread.run_sync(inspect_location, postgres_dsn)
    assert not report.ok
    assert len(report.problems) == 1
    assert "account=a table baileys_keys" in report.problems[0]
    assert "'sender-key'" in report.problems[0] and "checksum" in report.problems[0]


async def test_inspect_of_an_empty_database_creates_nothing(postgres_dsn: str) -> None:
    """Inspecting a database without our tables reports a new store and writes nothing."""
    report = await trio.to_thread.run_sync(inspect_location, postgres_dsn)
    assert report.ok and report.accounts == () and "a new store" in report.warnings[0]
    assert _tables(postgres_dsn) == []
    with pytest.raises(WrongBackendError):
        await trio.to_thread.run_sync(inspect_location, f"{postgres_dsn}#account=nobody")


def test_cli_migrates_into_postgres_and_inspects_it(tmp_path: Path, postgres_dsn: str) -> None:
    """`migrate DIR URI --dst-account` then `inspect URI#account=` work end to end."""
    trio.run(_write, "native", tmp_path / "src", _sample(), "default")
    done = run_cli("migrate", tmp_path / "src", postgres_dsn, "--dst-account", "bot1", "--json")
    assert done.code == 0, done.err
    summary: dict[str, Any] = json.loads(done.out)
    assert (summary["dst_backend"], summary["dst_account"]) == ("postgres", "bot1")
    done = run_cli("inspect", f"{postgres_dsn}#account=bot1", "--json")
    assert done.code == 0, done.err
    report = json.loads(done.out)
    assert report["backend"] == "postgres"
    assert [(a["name"], a["account_id"]) for a in report["accounts"]] == [("bot1", ME)]
