"""`baileys-trio migrate`: a verified copy between backends, with a summary and a
progress bar, that refuses a locked source and a non-empty target."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from stores import buffer_json
from stores.cli import (
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    build_parser,
    render_bar,
)
from stores.lock import acquire_lock
from tests.cli.stores_helpers import (
    ME_ID,
    PARSER_SCRIPT,
    ROOT,
    expected_counts,
    make_store,
    run_cli,
    tree_state,
)


def baileys_files(directory: Path) -> dict[str, object]:
    """The JSON content of every file Baileys reads (creds.json and key files)."""
    return {
        f.name: buffer_json.loads(f.read_bytes(), str(f))
        for f in sorted(directory.iterdir())
        if f.name.endswith(".json") and not f.name.startswith(".")
    }


def migrate_in_process(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Parse ``migrate argv`` with the registered command and run its handler here."""
    args = build_parser().parse_args(["migrate", *argv])
    code = args._run(args, None)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_round_trip_multi_file_native_multi_file_gives_equal_json(tmp_path: Path) -> None:
    """multi-file → native → multi-file yields the same files with equal JSON content."""
    src = make_store("multi-file", tmp_path / "baileys_auth_info")
    there = run_cli("migrate", src, tmp_path / "auth")
    assert there.code == EXIT_OK, there.err
    assert "multi-file" in there.out and "native" in there.out
    back = run_cli("migrate", tmp_path / "auth", tmp_path / "back", "--to", "multi-file")
    assert back.code == EXIT_OK, back.err
    assert baileys_files(tmp_path / "back") == baileys_files(src)
    assert len(baileys_files(src)) == 1 + sum(expected_counts().values())


def test_summary_names_account_and_counts_per_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The summary gives the account id, the total and the count of every key type."""
    src = make_store("multi-file", tmp_path / "baileys_auth_info")
    code, out, _ = migrate_in_process(capsys, str(src), str(tmp_path / "auth"))
    assert code == EXIT_OK
    assert f"account    {ME_ID}" in out and "keys       10" in out
    for key_type, count in expected_counts().items():
        assert any(line.split() == [key_type, str(count)] for line in out.splitlines())


def test_json_summary_and_auto_detected_sqlite_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--from is detected (a SQLite file); --json prints the summary as one object."""
    db = make_store("sqlite", tmp_path / "bots.db", account="bot1")
    code, out, _ = migrate_in_process(
        capsys, str(db), str(tmp_path / "auth"), "--src-account", "bot1", "--json"
    )
    summary = json.loads(out)
    assert code == EXIT_OK
    assert summary["src_backend"] == "sqlite" and summary["src_account"] == "bot1"
    assert summary["dst_backend"] == "native" and summary["account_id"] == ME_ID
    assert summary["key_counts"] == expected_counts()


def test_into_a_sqlite_account_and_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """native → SQLite account → native keeps every key, by the inspect report."""
    src = make_store("native", tmp_path / "auth")
    db = tmp_path / "bots.db"
    code, _, err = migrate_in_process(
        capsys, str(src), str(db), "--to", "sqlite", "--dst-account", "bot9"
    )
    assert code == EXIT_OK, err
    done = run_cli("inspect", db, "--account", "bot9", "--json")
    assert done.code == EXIT_OK
    assert done.json()["accounts"][0]["key_counts"] == expected_counts()


@pytest.mark.parametrize("backend", ["native", "multi-file"])
def test_locked_source_is_refused_naming_the_owner(backend: str, tmp_path: Path) -> None:
    """A source held by a running owner exits 3 naming its pid; nothing is written."""
    src = make_store(backend, tmp_path / "src")
    before = tree_state(src)
    lock = "LOCK" if backend == "native" else ".baileys-trio.lock"
    with acquire_lock(src, lock):
        done = run_cli("migrate", src, tmp_path / "dst", "--to", "sqlite")
    assert done.code == EXIT_LOCKED
    assert f"locked by pid {os.getpid()}" in done.err and len(done.err.splitlines()) == 1
    assert not (tmp_path / "dst").exists()
    # The test's own acquire rewrote the lock file's owner; every data file is as it was.
    del before[lock]
    after = tree_state(src)
    del after[lock]
    assert after == before


def test_locked_sqlite_account_is_refused(tmp_path: Path) -> None:
    """A SQLite account held by a running owner exits 3."""
    db = make_store("sqlite", tmp_path / "bots.db", account="bot1")
    from stores.sqlite import lock_name

    with acquire_lock(db.parent, lock_name(db, "bot1")):
        done = run_cli("migrate", db, tmp_path / "auth", "--src-account", "bot1")
    assert done.code == EXIT_LOCKED and "locked by" in done.err


def test_non_empty_target_is_refused_and_left_alone(tmp_path: Path) -> None:
    """A target holding data exits 4 naming it, and keeps exactly what it held."""
    src = make_store("multi-file", tmp_path / "src")
    dst = make_store("native", tmp_path / "dst", pre_keys=2)
    before = tree_state(dst)
    done = run_cli("migrate", src, dst)
    assert done.code == EXIT_REFUSED
    assert f"{dst}: the target directory is not empty" in done.err
    assert tree_state(dst) == before


def test_empty_or_absent_source_is_refused(tmp_path: Path) -> None:
    """An empty directory or a missing path as source exits 4; no target appears."""
    (tmp_path / "empty").mkdir()
    for src in (tmp_path / "empty", tmp_path / "absent"):
        done = run_cli("migrate", src, tmp_path / "dst")
        assert done.code == EXIT_REFUSED and len(done.err.splitlines()) == 1
        assert not (tmp_path / "dst").exists()


@pytest.mark.parametrize(
    ("backend", "claimed"),
    [
        ("native", "multi-file"),
        ("native", "sqlite"),
        ("multi-file", "native"),
        ("multi-file", "sqlite"),
        ("sqlite", "native"),
        ("sqlite", "multi-file"),
    ],
)
def test_wrong_from_is_refused_leaving_the_source_byte_for_byte(
    backend: str, claimed: str, tmp_path: Path
) -> None:
    """--from naming another backend exits 6 naming SRC; SRC (lock files too) is untouched."""
    src = make_store(backend, tmp_path / "src" / ("bots.db" if backend == "sqlite" else "auth"))
    before = tree_state(src)
    done = run_cli("migrate", src, tmp_path / "out", "--from", claimed)
    assert done.code == EXIT_REFUSED, done.err
    assert len(done.err.splitlines()) == 1 and str(src) in done.err
    assert ".migrating" not in done.err and ": found " in done.err and ", expected " in done.err
    assert tree_state(src) == before
    assert not (tmp_path / "out").exists()
    assert run_cli("inspect", src).code == EXIT_OK


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["{src}", "{tmp}/d", "--dst-account", "x"], "--dst-account is for a SQLite target"),
        (["{src}", "{tmp}/d", "--src-account", "x"], "--src-account is for a SQLite source"),
        (["{src}", "{tmp}/d", "--to", "mongodb"], "invalid choice"),
        (["{src}", "{tmp}/d", "--progress-after", "-1"], "must be 0 or more"),
        (["{src}"], "required: DST"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv: list[str], says: str, tmp_path: Path) -> None:
    """Each bad argument exits 2 with one line on stderr naming it."""
    src = make_store("native", tmp_path / "auth", pre_keys=1, commits=0)
    done = run_cli("migrate", *(a.format(src=src, tmp=tmp_path) for a in argv))
    assert done.code == EXIT_USAGE
    assert len(done.err.strip().splitlines()) == 1 and says in done.err
    assert not (tmp_path / "d").exists()


def test_many_keys_show_progress_on_stderr_and_summary_on_stdout(tmp_path: Path) -> None:
    """A long migration reports progress on stderr (with the key count) and ends it."""
    src = make_store("multi-file", tmp_path / "src", pre_keys=1500, commits=1)
    done = run_cli("migrate", src, tmp_path / "dst", "--progress-after", "0")
    assert done.code == EXIT_OK, done.err
    assert "migrating 1503 keys..." in done.err
    assert "migrated 1503 keys in" in done.err
    assert "migrating" not in done.out and "keys       1503" in done.out


def test_no_progress_keeps_stderr_silent(tmp_path: Path) -> None:
    """--no-progress prints nothing on stderr for a successful migration."""
    src = make_store("multi-file", tmp_path / "src", pre_keys=20)
    done = run_cli("migrate", src, tmp_path / "dst", "--no-progress", "--progress-after", "0")
    assert done.code == EXIT_OK and done.err == ""


def test_the_bar_is_a_block_that_bounces_within_its_width() -> None:
    """Every frame of the indeterminate bar is `width` cells with one block of `=`."""
    frames = [render_bar(n, 24) for n in range(60)]
    assert all(len(f) == 24 and f.count("=") == 6 and "= " not in f.strip() for f in frames)
    starts = [f.index("=") for f in frames]
    assert min(starts) == 0 and max(starts) == 18 and len(set(frames)) == 19


def test_help_shows_examples() -> None:
    """`migrate --help` exits 0 and shows usage examples and the options."""
    done = run_cli("migrate", "--help")
    assert done.code == 0
    assert "examples:" in done.out and "baileys-trio migrate baileys_auth_info auth/" in done.out
    for option in ("--from", "--to", "--src-account", "--dst-account", "--log-format"):
        assert option in done.out


def test_progress_bar_redraws_one_line_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal the bar redraws in place and ends full, on its own line."""
    src = make_store("multi-file", tmp_path / "src", pre_keys=300)
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                PARSER_SCRIPT,
                "migrate",
                src,
                tmp_path / "dst",
                "--progress-after",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=120,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        os.close(follower)
        follower = -1
        err = b""
        while chunk := _read_available(leader):
            err += chunk
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert done.returncode == EXIT_OK
    text = err.decode()
    # 300 pre-keys, 3 sessions, a sender key and a tctoken.
    assert text.startswith("\r[") and "] migrating 305 keys " in text
    assert f"\r[{'=' * 24}] migrated 305 keys in " in text and text.endswith(" s\x1b[K\r\n")


def _read_available(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the other end is closed and everything was read
        return b""


def test_json_log_format_makes_progress_json_lines(tmp_path: Path) -> None:
    """With --log-format json, progress on stderr is JSON lines and stdout the summary."""
    src = make_store("multi-file", tmp_path / "src", pre_keys=40)
    done = run_cli(
        "migrate", "--log-format", "json", src, tmp_path / "dst", "--json", "--progress-after", "0"
    )
    assert done.code == EXIT_OK, done.err
    lines = [json.loads(line) for line in done.err.splitlines()]
    assert [line["event"] for line in lines] == ["migrate_progress", "migrate_done"]
    assert lines[0]["keys"] == lines[1]["keys"] == 45
    assert json.loads(done.out)["total_keys"] == 45
