"""`baileys-trio backup` and `restore`: summaries, JSON, and one exit code per outcome."""

from __future__ import annotations

import os
from pathlib import Path

from runtime.cli import build_parser as runtime_parser
from stores.cli import EXIT_CORRUPT, EXIT_LOCKED, EXIT_OK, EXIT_REFUSED, EXIT_USAGE
from stores.lock import acquire_lock
from stores.native_format import log_name, scan_log
from tests.cli.stores_helpers import (
    ME_ID,
    expected_counts,
    make_store,
    run_cli,
    tree_state,
)


def test_backup_then_restore_round_trip(tmp_path: Path) -> None:
    """backup prints its point and counts; restore makes a location inspect finds intact."""
    src = make_store("native", tmp_path / "auth")
    done = run_cli("backup", "--auth", src, tmp_path / "bak")
    assert done.code == EXIT_OK, done.err
    assert "backed up  native" in done.out and "(inspected and verified)" in done.out
    assert "point      seq " in done.out and ME_ID in done.out
    done = run_cli("restore", tmp_path / "bak", tmp_path / "loc", "--json")
    assert done.code == EXIT_OK, done.err
    summary = done.json()
    assert summary["account_id"] == ME_ID
    assert summary["key_counts"] == expected_counts()
    assert summary["target"] == str(tmp_path / "loc")
    report = run_cli("inspect", tmp_path / "loc", "--json").json()
    assert report["ok"] and report["accounts"][0]["durable_seq"] == summary["seq"]


def test_refusals_exit_with_their_codes_and_change_nothing(tmp_path: Path) -> None:
    """A non-empty output, a restore over a store, a Baileys folder: exit 6, one line."""
    src = make_store("native", tmp_path / "auth")
    assert run_cli("backup", "--auth", src, tmp_path / "bak").code == EXIT_OK
    before = tree_state(tmp_path / "bak")
    done = run_cli("backup", "--auth", src, tmp_path / "bak")
    assert done.code == EXIT_REFUSED
    assert done.err.strip() == f"baileys-trio backup: error: {tmp_path / 'bak'}: not empty " + (
        "(holds snapshot-0000000000000001)"
    )
    assert tree_state(tmp_path / "bak") == before
    source_before = tree_state(src)
    done = run_cli("restore", tmp_path / "bak", src)
    assert done.code == EXIT_REFUSED and str(src) in done.err
    assert tree_state(src) == source_before
    mf = make_store("multi-file", tmp_path / "mf")
    done = run_cli("backup", "--auth", mf, tmp_path / "bak2", "--log-format", "json")
    assert done.code == EXIT_REFUSED and '"error": "BackupUnsupportedError"' in done.err
    assert not (tmp_path / "bak2").exists()


def test_a_location_in_use_exits_5(tmp_path: Path) -> None:
    """Restoring into a location a live owner holds exits 5 naming the owner."""
    src = make_store("native", tmp_path / "auth")
    assert run_cli("backup", "--auth", src, tmp_path / "bak").code == EXIT_OK
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    with acquire_lock(target):
        done = run_cli("restore", tmp_path / "bak", target)
    assert done.code == EXIT_LOCKED and f"pid {os.getpid()}" in done.err
    assert os.listdir(target) == ["LOCK"]


def test_a_corrupt_source_exits_1(tmp_path: Path) -> None:
    """Damage in acknowledged records of the source is named; no backup is written."""
    src = make_store("native", tmp_path / "auth")
    log = src / log_name(0)
    data = bytearray(log.read_bytes())
    data[scan_log(bytes(data), str(log)).end // 2] ^= 0xFF  # amid the records, not the zeros
    log.write_bytes(bytes(data))
    done = run_cli("backup", "--auth", src, tmp_path / "bak")
    assert done.code == EXIT_CORRUPT and str(log) in done.err
    assert not (tmp_path / "bak").exists()


def test_the_commands_are_registered_with_their_arguments() -> None:
    """`baileys-trio backup` needs --auth and OUT; restore takes OUT and LOC."""
    parser = runtime_parser()
    args = parser.parse_args(["backup", "--auth", "a", "b", "--account", "bot1"])
    assert (args.auth, args.out, args.account, args.backend) == ("a", "b", "bot1", "auto")
    args = parser.parse_args(["restore", "b", "c", "--json"])
    assert (args.backup, args.location, args.json) == ("b", "c", True)
    done = run_cli("backup", "only-out")
    assert done.code == EXIT_USAGE and "--auth" in done.err
