"""`inspect` and `migrate` plug into `runtime.cli` as its other commands do."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runtime import cli as runtime_cli
from stores.cli import EXIT_CORRUPT, EXIT_OK, EXIT_USAGE, cli_commands
from stores.native_format import log_name, scan_log
from tests.cli.stores_helpers import ME_ID, make_store


def runtime_parser() -> argparse.ArgumentParser:
    """runtime.cli's parser with these commands, whether or not it lists them yet."""
    names = {c.name for c in runtime_cli.COMMANDS}
    extra = [c for c in cli_commands(runtime_cli.Command) if c.name not in names]
    return runtime_cli.build_parser([*runtime_cli.COMMANDS, *extra])


def test_commands_run_through_the_runtime_parser(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Parsed by runtime.cli (common --log-format before the command), both commands run."""
    src = make_store("multi-file", tmp_path / "src")
    parser = runtime_parser()
    args = parser.parse_args(["--log-format", "json", "migrate", str(src), str(tmp_path / "n")])
    assert args._run(args, None) == EXIT_OK
    capsys.readouterr()
    args = parser.parse_args(["inspect", str(tmp_path / "n"), "--json"])
    assert args._run(args, None) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["accounts"][0]["account_id"] == ME_ID


def test_bad_argument_through_the_runtime_parser_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The runtime parser's one-line usage error applies to these commands too."""
    with pytest.raises(SystemExit) as exited:
        runtime_parser().parse_args(["migrate", "only-src"])
    assert exited.value.code == EXIT_USAGE
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_console_script_runs_inspect(tmp_path: Path) -> None:
    """The installed `baileys-trio` script runs inspect and reports a damaged record."""
    script = shutil.which("baileys-trio", path=str(Path(sys.executable).parent))
    assert script is not None
    path = make_store("native", tmp_path / "auth")
    log = path / log_name(0)
    data = bytearray(log.read_bytes())
    offsets = [offset for offset, _ in scan_log(bytes(data), str(log)).records]
    data[offsets[0] + 30] ^= 0x01
    log.write_bytes(bytes(data))
    done = subprocess.run(
        [script, "inspect", str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == EXIT_CORRUPT and str(log) in done.stdout
