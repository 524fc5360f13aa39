"""`baileys-trio rekey`, and the keys `inspect` and `migrate` take: references, never bytes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stores.cli import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, build_parser
from stores.encryption import read_key_file
from tests.cli.stores_helpers import (
    ME_ID,
    ROOT,
    expected_counts,
    make_store,
    run_cli,
    tree_state,
)
from tests.stores.encryption_helpers import write_key_file


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    """Parse ``argv`` with the stores commands and run the handler here."""
    args = build_parser().parse_args([str(a) for a in argv])
    code = args._run(args, None)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def inspected(
    capsys: pytest.CaptureFixture[str], where: Path, *key: str | Path
) -> dict[str, object]:
    code, out, err = cli(capsys, "inspect", where, "--json", *key)
    assert code == EXIT_OK, err
    report: dict[str, object] = json.loads(out)
    return report


@pytest.mark.parametrize("backend", ["native", "sqlite"])
def test_plain_to_key_to_key_to_plain(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
) -> None:
    """Encrypt, rotate (file to env var), decrypt: inspect reads each state with its key."""
    where = make_store(backend, tmp_path / ("bots.db" if backend == "sqlite" else "auth"))
    first, second = tmp_path / "first.key", tmp_path / "second.key"
    write_key_file(first)
    write_key_file(second, hex_form=True)
    monkeypatch.setenv("SECOND_KEY", second.read_text().strip())
    first_id, second_id = read_key_file(first).key_id, read_key_file(second).key_id

    code, out, err = cli(capsys, "rekey", "--auth", where, "--new-key", first, "--json")
    assert code == EXIT_OK, err
    assert json.loads(out)["new_key_id"] == first_id and json.loads(out)["old_key_id"] is None
    account = inspected(capsys, where, "--key", f"file:{first}")["accounts"][0]  # type: ignore[index]
    assert account["key_id"] == first_id and account["account_id"] == ME_ID
    assert account["key_counts"] == expected_counts()

    code, out, err = cli(
        capsys, "rekey", "--auth", where, "--old-key", first, "--new-key", "env:SECOND_KEY"
    )
    assert code == EXIT_OK, err
    assert f"from     {first_id}" in out and f"to       {second_id}" in out

    code, _, err = cli(capsys, "rekey", "--auth", where, "--old-key", "env:SECOND_KEY", "--decrypt")
    assert code == EXIT_OK, err
    assert inspected(capsys, where)["accounts"][0]["key_id"] is None  # type: ignore[index]


def test_wrong_old_key_is_refused_and_nothing_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong --old-key exits 6 naming the key id the store expects; no byte changes."""
    where = make_store("native", tmp_path / "auth")
    key, wrong = tmp_path / "k", tmp_path / "wrong"
    write_key_file(key)
    write_key_file(wrong)
    assert cli(capsys, "rekey", "--auth", where, "--new-key", key)[0] == EXIT_OK
    before = tree_state(where)
    code, _, err = cli(capsys, "rekey", "--auth", where, "--old-key", wrong, "--decrypt")
    assert code == EXIT_REFUSED
    assert read_key_file(key).key_id in err and read_key_file(wrong).key_id in err
    code, _, err = cli(capsys, "inspect", where)
    assert code == EXIT_REFUSED and "no key was given" in err
    assert tree_state(where) == before


def test_keys_are_never_taken_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """64 hex digits as --new-key, an unset variable, a loose key file: exit 2, no change."""
    where = make_store("native", tmp_path / "auth")
    loose = tmp_path / "loose.key"
    write_key_file(loose)
    loose.chmod(0o644)
    before = tree_state(where)
    for ref, says in [
        ("ab" * 32, "never given on the command line"),
        ("env:NO_SUCH_VARIABLE_HERE", "is not set"),
        (str(loose), "0644"),
    ]:
        code, _, err = cli(capsys, "rekey", "--auth", where, "--new-key", ref)
        assert code == EXIT_USAGE and says in err, err
    assert tree_state(where) == before
    with pytest.raises(SystemExit) as exited:  # one of --new-key / --decrypt is required
        build_parser().parse_args(["rekey", "--auth", str(where)])
    assert exited.value.code == EXIT_USAGE


def test_refusals_empty_location_and_multi_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing to rekey exits 6; the Baileys folder is never encrypted (exit 2)."""
    key = tmp_path / "k"
    write_key_file(key)
    (tmp_path / "empty").mkdir()
    assert cli(capsys, "rekey", "--auth", tmp_path / "empty", "--new-key", key)[0] == EXIT_REFUSED
    baileys = make_store("multi-file", tmp_path / "baileys")
    code, _, err = cli(capsys, "rekey", "--auth", baileys, "--new-key", key)
    assert code == EXIT_USAGE and "never encrypted" in err
    code, _, err = cli(
        capsys,
        "migrate",
        make_store("native", tmp_path / "n"),
        tmp_path / "b2",
        "--to",
        "multi-file",
        "--dst-key",
        key,
    )
    assert code == EXIT_USAGE and "never encrypted" in err
    assert not (tmp_path / "b2").exists()


def test_migrate_reads_and_writes_encrypted_locations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An encrypted native source into an encrypted SQLite target, each with its own key."""
    src = make_store("native", tmp_path / "auth")
    src_key, dst_key = tmp_path / "src.key", tmp_path / "dst.key"
    write_key_file(src_key)
    write_key_file(dst_key)
    assert cli(capsys, "rekey", "--auth", src, "--new-key", src_key)[0] == EXIT_OK
    code, _, err = cli(capsys, "migrate", src, tmp_path / "bots.db", "--to", "sqlite")
    assert code == EXIT_REFUSED and "no key was given" in err
    code, out, err = cli(
        capsys,
        "migrate",
        src,
        tmp_path / "bots.db",
        "--to",
        "sqlite",
        "--src-key",
        src_key,
        "--dst-key",
        dst_key,
        "--json",
        "--no-progress",
    )
    assert code == EXIT_OK, err
    assert json.loads(out)["key_counts"] == expected_counts()
    account = inspected(capsys, tmp_path / "bots.db", "--key", dst_key)["accounts"][0]  # type: ignore[index]
    assert account["key_id"] == read_key_file(dst_key).key_id


def test_rekey_through_the_installed_command(tmp_path: Path) -> None:
    """`baileys-trio rekey` is registered with the full CLI and documented by --help."""
    where = make_store("native", tmp_path / "auth")
    key = tmp_path / "k"
    write_key_file(key)
    done = run_cli("rekey", "--auth", where, "--new-key", key)
    assert done.code == EXIT_OK, done.err
    assert "rekeyed    native" in done.out
    full = subprocess.run(
        [sys.executable, "-m", "runtime", "rekey", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert full.returncode == 0 and "env:NAME" in full.stdout
