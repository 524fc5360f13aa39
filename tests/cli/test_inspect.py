"""`baileys-trio inspect`: backend, account, counts, lock owner, and an integrity check
that reads every record, exits 1 naming what is corrupt, and never changes anything."""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import cbor2
import pytest
import trio

from stores.cli import EXIT_CORRUPT, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, build_parser
from stores.inspection import inspect_location
from stores.lock import acquire_lock
from stores.native_format import (
    LOCK_NAME,
    MAGIC,
    decode_header,
    frame,
    log_name,
    read_frame,
    scan_log,
)
from stores.sqlite import open_sqlite_backend
from stores.types import Batch
from tests.cli.stores_helpers import ME_ID, expected_counts, make_store, run_cli, tree_state

BACKENDS = ("native", "multi-file", "sqlite")


def location(backend: str, tmp_path: Path) -> Path:
    return tmp_path / ("bots.db" if backend == "sqlite" else "auth")


def inspect_in_process(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Parse ``inspect argv`` with the registered command and run its handler here."""
    args = build_parser().parse_args(["inspect", *argv])
    code = args._run(args, None)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("backend", BACKENDS)
def test_intact_store_reports_everything_as_one_json_object(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json prints one object: backend, format, account id, counts, seq, no owner, ok."""
    path = make_store(backend, location(backend, tmp_path))
    code, out, err = inspect_in_process(capsys, str(path), "--json")
    assert code == EXIT_OK and err == ""
    report = json.loads(out)
    assert report["backend"] == backend and report["ok"] is True and report["problems"] == []
    assert report["format_version"] == (None if backend == "multi-file" else 1)
    (account,) = report["accounts"]
    assert account["account_id"] == ME_ID and account["paired"] is True
    assert account["key_counts"] == expected_counts()
    assert account["lock_owner"] is None
    assert account["name"] == ("default" if backend == "sqlite" else None)
    if backend != "multi-file":
        # new-device creds, paired creds, pre-keys, 3 sessions, sender-key+tctoken
        assert account["durable_seq"] == 7
    assert report["records_checked"] >= sum(expected_counts().values()) + 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_console_report_names_the_facts(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The human report shows backend, account id, counts per type, lock and integrity."""
    path = make_store(backend, location(backend, tmp_path))
    code, out, _ = inspect_in_process(capsys, str(path))
    assert code == EXIT_OK
    assert f"backend    {backend}" in out and ME_ID in out
    assert "pre-key 5" in out and "session 3" in out
    assert "free (no running owner)" in out and "integrity ok" in out


def test_unpaired_device_says_unpaired(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A store whose creds have no `me` yet reports the account as unpaired."""
    from stores.auth import use_native_file_auth_state

    async def fresh() -> None:
        async with await use_native_file_auth_state(tmp_path / "auth"):
            pass

    trio.run(fresh)
    code, out, _ = inspect_in_process(capsys, str(tmp_path / "auth"))
    assert code == EXIT_OK and "unpaired" in out


def test_flipped_byte_in_a_native_log_record_is_corruption(tmp_path: Path) -> None:
    """A bit flip in an acknowledged native record exits 1 naming the log and offset."""
    path = make_store("native", tmp_path / "auth")
    log = path / log_name(0)
    data = bytearray(log.read_bytes())
    offsets = [offset for offset, _ in scan_log(bytes(data), str(log)).records]
    assert len(offsets) >= 3
    data[offsets[1] + 30] ^= 0x01
    log.write_bytes(bytes(data))
    done = run_cli("inspect", path)
    assert done.code == EXIT_CORRUPT
    assert "integrity CORRUPT" in done.out
    assert f"{log} at offset {offsets[1]}" in done.out
    assert "intact records before the damage" in done.out


def test_torn_native_tail_is_a_warning_not_corruption(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A torn last record (never acknowledged) exits 0 with a warning naming its offset."""
    path = make_store("native", tmp_path / "auth")
    log = path / log_name(0)
    scan = scan_log(log.read_bytes(), str(log))
    offsets = [offset for offset, _ in scan.records]
    os.truncate(log, scan.end - 3)  # the records end before the log's zero-filled tail
    code, out, _ = inspect_in_process(capsys, str(path), "--json")
    report = json.loads(out)
    assert code == EXIT_OK and report["ok"]
    assert any(f"at offset {offsets[-1]}" in w for w in report["warnings"])
    assert report["accounts"][0]["durable_seq"] == 6


def test_truncated_creds_json_is_corruption(tmp_path: Path) -> None:
    """A truncated creds.json exits 1 naming the file and the offset where JSON ends."""
    path = make_store("multi-file", tmp_path / "auth")
    creds = path / "creds.json"
    size = creds.stat().st_size
    os.truncate(creds, size // 2)
    done = run_cli("inspect", path, "--json")
    assert done.code == EXIT_CORRUPT
    report = done.json()
    assert report["ok"] is False
    assert any(p.startswith(f"{creds} at offset ") for p in report["problems"])


def test_corrupt_multi_file_key_file_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key file that is not JSON any more exits 1 naming that file."""
    path = make_store("multi-file", tmp_path / "auth")
    key = path / "pre-key-3.json"
    key.write_bytes(b'{"private": {"type": "Buffer", "data": "AAA')
    code, out, _ = inspect_in_process(capsys, str(path))
    assert code == EXIT_CORRUPT and str(key) in out


def test_pending_multi_file_journal_is_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A damaged intent journal (an interrupted commit) is corruption naming the journal."""
    path = make_store("multi-file", tmp_path / "auth")
    journal = path / ".baileys-trio-journal"
    journal.write_bytes(b"BTMFJ\x00garbage")
    code, out, _ = inspect_in_process(capsys, str(path))
    assert code == EXIT_CORRUPT and str(journal) in out


def test_corrupt_sqlite_blob_is_named_by_table_account_and_row(tmp_path: Path) -> None:
    """A changed key blob fails its CRC: exit 1 naming table, account and row."""
    db = make_store("sqlite", tmp_path / "bots.db", account="bot1")
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE keys SET value = ? WHERE account = 'bot1' AND type = 'pre-key' AND id = '2'",
            (b"\xa1\x61x\x01",),
        )
    conn.close()
    done = run_cli("inspect", db)
    assert done.code == EXIT_CORRUPT
    assert f"{db} table keys account 'bot1' row (type 'pre-key', id '2')" in done.out
    assert "checksum mismatch" in done.out


def test_corrupt_sqlite_creds_row_is_named(tmp_path: Path) -> None:
    """A flipped bit in the creds blob exits 1 naming the creds row."""
    db = make_store("sqlite", tmp_path / "bots.db")
    with sqlite3.connect(db) as conn:
        (blob,) = conn.execute("SELECT blob FROM creds WHERE slot = 0").fetchone()
        damaged = bytearray(blob)
        damaged[len(damaged) // 2] ^= 0x10
        conn.execute("UPDATE creds SET blob = ? WHERE slot = 0", (bytes(damaged),))
    conn.close()
    done = run_cli("inspect", db, "--json")
    assert done.code == EXIT_CORRUPT
    report = done.json()
    assert any("table creds account 'default' row (slot 0)" in p for p in report["problems"])
    # Unreadable creds: the pairing state is unknown, not "unpaired".
    assert report["accounts"][0]["paired"] is None
    assert report["accounts"][0]["creds_valid"] is False


def test_sqlite_reports_every_account_or_the_one_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every account of a database is reported; --account picks one; an unknown one is refused."""
    db = make_store("sqlite", tmp_path / "bots.db", account="bot1")
    make_store("sqlite", db, account="bot2", pre_keys=7)
    code, out, _ = inspect_in_process(capsys, str(db), "--json")
    accounts = {a["name"]: a for a in json.loads(out)["accounts"]}
    assert code == EXIT_OK and set(accounts) == {"bot1", "bot2"}
    assert accounts["bot2"]["key_counts"]["pre-key"] == 7
    code, out, _ = inspect_in_process(capsys, str(db), "--json", "--account", "bot2")
    assert [a["name"] for a in json.loads(out)["accounts"]] == ["bot2"]
    code, _, err = inspect_in_process(capsys, str(db), "--account", "nobody")
    assert code == EXIT_REFUSED and "'nobody'" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_inspect_creates_no_file_and_changes_nothing(backend: str, tmp_path: Path) -> None:
    """Inspecting (intact or corrupt) leaves every file, mode and mtime as it was."""
    path = make_store(backend, location(backend, tmp_path))
    # No lock file left (as Baileys leaves a folder): inspect must not create one.
    for lock in ("LOCK", ".baileys-trio.lock", "bots.db.default.lock"):
        (path if path.is_dir() else path.parent).joinpath(lock).unlink(missing_ok=True)
    before = tree_state(path)
    assert run_cli("inspect", path).code == EXIT_OK
    assert tree_state(path) == before
    if backend == "native":
        log = path / log_name(0)
        data = bytearray(log.read_bytes())
        data[60] ^= 0xFF
        log.write_bytes(bytes(data))
        before = tree_state(path)
        assert run_cli("inspect", path).code == EXIT_CORRUPT
        assert tree_state(path) == before


@pytest.mark.parametrize("backend", ["native", "multi-file"])
def test_a_running_owner_is_named_and_keeps_its_lock(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the lock held, inspect names the owner, exits 0 and never takes the lock."""
    path = make_store(backend, location(backend, tmp_path))
    name = LOCK_NAME if backend == "native" else ".baileys-trio.lock"
    with acquire_lock(path, name) as held:
        code, out, _ = inspect_in_process(capsys, str(path), "--json")
        assert held.held
        owner = json.loads(out)["accounts"][0]["lock_owner"]
        assert code == EXIT_OK and owner is not None and f"pid {os.getpid()}" in owner
        # Still ours alone: a second acquire is refused.
        with pytest.raises(Exception, match="locked by"):
            acquire_lock(path, name)


def test_live_sqlite_account_is_read_with_its_wal_and_no_new_file(tmp_path: Path) -> None:
    """An open SQLite account (data in the WAL) is read in full; no file is created."""
    db = make_store("sqlite", tmp_path / "bots.db")

    async def main() -> None:
        async with await open_sqlite_backend(db) as backend:
            await backend.commit(Batch(keys={"device-list": {"1555": ["0", "7"]}}))
            assert (tmp_path / "bots.db-wal").stat().st_size > 0
            before = tree_state(db)
            report = await trio.to_thread.run_sync(inspect_location, db)
            assert tree_state(db) == before
            (account,) = report.accounts
            assert report.ok and account.key_counts["device-list"] == 1
            assert account.lock_owner is not None and f"pid {os.getpid()}" in account.lock_owner

    trio.run(main)


def test_empty_directory_is_a_new_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty directory is reported as a new device, exit 0."""
    code, out, _ = inspect_in_process(capsys, str(tmp_path), "--json")
    report = json.loads(out)
    assert code == EXIT_OK and report["backend"] is None and report["accounts"] == []


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (["{tmp}/absent"], EXIT_REFUSED, "does not exist"),
        (["{tmp}/file.txt"], EXIT_REFUSED, "not a SQLite database"),
        (["{tmp}/auth", "--backend", "sqlite"], EXIT_REFUSED, "found a native auth directory"),
        (["{tmp}/auth", "--account", "bot1"], EXIT_USAGE, "--account is for SQLite"),
        (["{tmp}/auth", "--backend", "nope"], EXIT_USAGE, "invalid choice"),
        (["{tmp}/auth", "--frobnicate"], EXIT_USAGE, "unrecognized arguments"),
    ],
)
def test_bad_paths_and_arguments_are_one_line_on_stderr(
    argv: list[str], code: int, says: str, tmp_path: Path
) -> None:
    """Each bad path or argument exits with its documented code and one stderr line."""
    make_store("native", tmp_path / "auth", pre_keys=1, commits=0)
    (tmp_path / "file.txt").write_text("hello")
    done = run_cli("inspect", *(a.format(tmp=tmp_path) for a in argv))
    assert done.code == code, done.err
    assert done.out == ""
    assert len(done.err.strip().splitlines()) == 1 and says in done.err


def test_json_log_format_makes_the_error_line_json(tmp_path: Path) -> None:
    """With --log-format json the error line on stderr is one JSON object."""
    done = run_cli("inspect", "--log-format", "json", tmp_path / "absent")
    assert done.code == EXIT_REFUSED
    error = json.loads(done.err)
    assert error["event"] == "inspect_failed" and error["exit_code"] == EXIT_REFUSED
    assert error["error"] == "WrongBackendError"


def test_help_shows_examples() -> None:
    """`inspect --help` exits 0 and shows usage examples."""
    done = run_cli("inspect", "--help")
    assert done.code == 0
    assert "examples:" in done.out and "baileys-trio inspect auth/" in done.out
    assert "--log-format" in done.out


def test_keys_without_creds_are_corruption(tmp_path: Path) -> None:
    """A multi-file folder holding keys but no creds.json is corrupt, not a new device."""
    path = make_store("multi-file", tmp_path / "auth")
    (path / "creds.json").unlink()
    (path / ".creds.json.last-good").unlink()
    done = run_cli("inspect", path)
    assert done.code == EXIT_CORRUPT
    assert "creds.json: missing, but the directory holds Signal keys" in done.out


def test_missing_creds_beside_a_last_good_copy_is_corruption(tmp_path: Path) -> None:
    """creds.json gone but .creds.json.last-good present: corrupt, naming both."""
    path = make_store("multi-file", tmp_path / "auth")
    (path / "creds.json").unlink()
    done = run_cli("inspect", path)
    assert done.code == EXIT_CORRUPT
    assert "creds.json: missing, but .creds.json.last-good holds the last good creds" in done.out


def test_newer_native_format_is_refused_not_called_corrupt(tmp_path: Path) -> None:
    """A native log of format version 2 exits 6 naming the version, not 1 (corrupt)."""
    path = make_store("native", tmp_path / "auth")
    log = path / log_name(0)
    data = log.read_bytes()
    _, records_start = decode_header(data, str(log), "log")
    intact = read_frame(data, len(MAGIC))
    assert intact is not None
    header = cbor2.loads(bytes(intact[0]))
    header["version"] = 2
    log.write_bytes(MAGIC + frame(cbor2.dumps(header)) + data[records_start:])
    done = run_cli("inspect", path)
    assert done.code == EXIT_REFUSED
    assert "format version 2 is not supported" in done.err


def test_newer_sqlite_schema_is_refused(tmp_path: Path) -> None:
    """A SQLite file of a newer schema version exits 6 naming the version."""
    db = make_store("sqlite", tmp_path / "bots.db")
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA user_version = 9")
    done = run_cli("inspect", db)
    assert done.code == EXIT_REFUSED
    assert "format version 9 is not supported" in done.err


def test_native_creds_whose_keys_do_not_match_are_corruption(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Latest creds with a public key that is not its private key's: exit 1, named."""
    from stores.creds import KeyPair, init_auth_creds
    from stores.native import open_native_backend

    async def main() -> None:
        creds = init_auth_creds()
        creds.noise_key = KeyPair(private=creds.noise_key.private, public=bytes(32))
        async with await open_native_backend(tmp_path / "auth") as backend:
            await backend.commit(Batch(creds=creds))

    trio.run(main)
    code, out, _ = inspect_in_process(capsys, str(tmp_path / "auth"))
    assert code == EXIT_CORRUPT
    assert "creds.noise_key: public key does not match private key" in out
    assert "before the damage" not in out


def test_another_applications_sqlite_file_is_refused(tmp_path: Path) -> None:
    """A SQLite database without our backend mark exits 6 and is left unchanged."""
    db = tmp_path / "other.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.commit()
    before = tree_state(db)
    done = run_cli("inspect", db)
    assert done.code == EXIT_REFUSED and "another application" in done.err
    assert tree_state(db) == before


def test_garbage_after_the_sqlite_header_is_corruption(tmp_path: Path) -> None:
    """A file with SQLite's header but damaged pages exits 1 naming the file."""
    db = make_store("sqlite", tmp_path / "bots.db")
    data = bytearray(db.read_bytes())
    data[100:4096] = bytes(range(256)) * 15 + bytes(range(156))
    db.write_bytes(bytes(data))
    done = run_cli("inspect", db)
    assert done.code == EXIT_CORRUPT
    assert str(db) in done.out


@pytest.mark.parametrize("backend", ["native", "multi-file"])
def test_any_backends_lock_file_keeps_a_directory_recognised(backend: str, tmp_path: Path) -> None:
    """Both backends' lock files in a directory: inspect reads it and the backend opens it."""
    path = make_store(backend, location(backend, tmp_path))
    for lock in ("LOCK", ".baileys-trio.lock"):
        acquire_lock(path, lock).release()
    assert run_cli("inspect", path).code == EXIT_OK
    # Opening as the backend (what run --auth does) is not refused either.
    make_store(backend, path, pre_keys=1, commits=0)


def test_an_empty_file_is_named_as_such_not_taken_for_a_database(tmp_path: Path) -> None:
    """inspect on a 0-byte file exits 6 saying it is an empty file, and leaves it alone."""
    empty = tmp_path / "bots.db"
    empty.touch()
    before = tree_state(empty)
    done = run_cli("inspect", empty)
    assert done.code == EXIT_REFUSED and done.out == ""
    assert f"{empty}: found an empty file" in done.err and len(done.err.splitlines()) == 1
    assert tree_state(empty) == before
