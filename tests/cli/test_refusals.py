"""A refused command leaves every location as it found it, and says why in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stores.native_format import log_name
from tests.cli.stores_helpers import ROOT, Done, make_store, tree_state


def baileys_trio(*argv: str | os.PathLike[str], timeout: float = 60) -> Done:
    """Run the full `baileys-trio` command line in a fresh interpreter of the venv."""
    done = subprocess.run(
        [sys.executable, "-m", "runtime", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return Done(done.returncode, done.stdout, done.stderr)


def everything(path: Path) -> tuple[int, dict[str, tuple[int, int, bytes]]]:
    """The directory's mode and every file's mode, mtime and bytes."""
    return path.stat().st_mode, tree_state(path)


def loosen(path: Path) -> None:
    """Give the directory and its files the modes a user's umask would (0755/0644)."""
    path.chmod(0o755)
    for file in path.iterdir():
        file.chmod(0o644)


@pytest.mark.parametrize("backend", ["multi-file", "native"])
def test_run_refuses_unreadable_creds_before_touching_the_directory(
    backend: str, tmp_path: Path
) -> None:
    """run on garbage creds exits 1 naming the file; no mode changed, no lock file made."""
    auth = tmp_path / "auth"
    if backend == "multi-file":
        auth.mkdir()
        (auth / "creds.json").write_text("garbage\n")
        bad = auth / "creds.json"
    else:
        make_store("native", auth)
        (auth / "LOCK").unlink()
        bad = auth / log_name(0)
        data = bytearray(bad.read_bytes())
        data[60] ^= 0xFF
        bad.write_bytes(bytes(data))
    loosen(auth)
    before = everything(auth)
    done = baileys_trio("run", "--auth", auth, "--backend", backend)
    assert done.code == 1, done.err
    assert str(bad.name) in done.err.splitlines()[-1]
    assert everything(auth) == before


def unused_port() -> int:
    """A local TCP port nothing listens on (bound, then closed)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize(
    "argv",
    [["phone", "scan", "QR"], ["sandbox", "contact", "add", "--name", "Ann"]],
)
def test_sandbox_commands_with_nothing_listening_say_so_in_one_line(argv: list[str]) -> None:
    """phone/sandbox commands against a closed port exit 1 with one line naming the refusal."""
    url = f"ws://127.0.0.1:{unused_port()}/ws/chat"
    done = baileys_trio(*argv, "--sandbox", url)
    assert done.code == 1
    assert len(done.err.splitlines()) == 1, done.err
    assert "Connection refused" in done.err and "Traceback" not in done.err


@pytest.mark.parametrize(
    ("backend", "claimed", "says"),
    [
        ("native", "multi-file", "found a native auth directory, expected a Baileys multi-file"),
        ("native", "sqlite", "found a native auth directory, expected a SQLite database file"),
        ("multi-file", "native", "found a Baileys multi-file JSON directory, expected a native"),
    ],
)
def test_wrong_backend_errors_say_what_was_found_and_what_was_expected(
    backend: str, claimed: str, says: str, tmp_path: Path
) -> None:
    """migrate/inspect with the wrong backend: one line, the user's path, found and expected."""
    src = make_store(backend, tmp_path / "auth")
    for argv in (["migrate", src, tmp_path / "out", "--from", claimed], ["inspect", src]):
        if argv[0] == "inspect":
            argv += ["--backend", claimed]
        done = baileys_trio(*argv)
        assert done.code == 6
        assert done.err.startswith(f"baileys-trio {argv[0]}: error: {src}: {says}"), done.err
        assert len(done.err.splitlines()) == 1


def test_a_corrupt_source_is_named_by_the_users_path_not_the_scratch_copy(tmp_path: Path) -> None:
    """migrate of a damaged native directory names SRC's own file, never a staging path."""
    src = make_store("native", tmp_path / "auth")
    log = src / log_name(0)
    data = bytearray(log.read_bytes())
    data[60] ^= 0xFF
    log.write_bytes(bytes(data))
    done = baileys_trio("migrate", src, tmp_path / "out")
    assert done.code == 1
    assert f"error: {log} at offset" in done.err and "migrating" not in done.err


@pytest.mark.parametrize(
    "argv",
    [["run", "--auth", "x"], ["inspect", "x"], ["phone", "scan", "QR", "--sandbox", "ws://h/"]],
)
def test_an_unknown_option_names_its_subcommand(argv: list[str], tmp_path: Path) -> None:
    """`baileys-trio CMD --frobnicate` exits 2 with one line starting `baileys-trio CMD:`."""
    done = baileys_trio(*argv, "--frobnicate")
    assert done.code == 2
    assert done.err == f"baileys-trio {argv[0]}: error: unrecognized arguments: --frobnicate\n"


def test_run_keeps_log_lines_off_stdout(tmp_path: Path) -> None:
    """run --log-format json: the runtime's log lines are JSON on stderr, stdout holds none."""
    auth = tmp_path / "auth"
    auth.mkdir()
    (auth / "creds.json").write_text("garbage\n")
    done = baileys_trio("--log-format", "json", "run", "--auth", auth, "--backend", "multi-file")
    assert done.code == 1 and done.out == ""
    *logs, error = done.err.splitlines()
    assert "supervisor_started" in [json.loads(line)["event"] for line in logs]
    assert error.startswith("baileys-trio run: ")
