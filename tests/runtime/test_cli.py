"""The baileys-trio command line: the demo end to end, usage errors, help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.cli import COMMANDS, build_parser, main

BIN = Path(sys.executable).parent
DEMO_STEPS = [
    "start",
    "work",
    "crash-worker",
    "worker-back",
    "crash-counter",
    "counter-back",
    "flapping",
    "gave-up",
    "stop",
    "done",
]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "baileys-trio"), *args], capture_output=True, text=True, timeout=60
    )


def test_demo_via_console_script_shows_every_stage() -> None:
    """`baileys-trio demo` exits 0 and logs start, crash, restart, give-up and stop."""
    done = run_cli("demo", "--supervision", "--log-format", "json")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["step"] for r in records if r["event"] == "demo_step"] == DEMO_STEPS
    kinds = {r["event"] for r in records}
    assert {
        "child_started",
        "child_crashed",
        "child_restarting",
        "supervisor_gave_up",
        "child_stopped",
    } <= kinds
    gave_up = [r for r in records if r["event"] == "supervisor_gave_up"]
    assert gave_up[0]["path"] == "demo/jobs/flaky"
    restarts = [r for r in records if r["event"] == "child_restarting" and r["child"] == "flapper"]
    assert [r["restart_count"] for r in restarts] == [1, 2, 3]
    assert all(r["delay"] > 0 for r in restarts)
    stops = [r["path"] for r in records if r["event"] == "child_stopped"][-4:]
    assert stops == ["demo/jobs", "demo/pipeline/worker", "demo/pipeline/counter", "demo/pipeline"]


def test_python_dash_m_runtime_runs_the_console_demo() -> None:
    """`python -m runtime demo --log-format console` prints readable lines and exits 0."""
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "demo", "--supervision", "--log-format", "console"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "supervisor_gave_up" in done.stdout and "child_restarting" in done.stdout
    assert not done.stdout.lstrip().startswith("{")


@pytest.mark.parametrize(
    "argv",
    [[], ["nonsense"], ["demo", "--log-format", "xml"], ["demo", "--bogus"]],
)
def test_bad_arguments_print_one_line_and_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Usage errors are a single line on stderr and exit status 2."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error:" in err


def test_help_lists_commands_and_examples(capsys: pytest.CaptureFixture[str]) -> None:
    """--help names every command and shows examples; exits 0."""
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    for command in COMMANDS:
        assert command.name in out


def test_log_format_accepted_before_and_after_the_command() -> None:
    """--log-format works as a global and as a per-command option."""
    parser = build_parser()
    assert parser.parse_args(["--log-format", "json", "demo"]).log_format == "json"
    assert parser.parse_args(["demo", "--log-format", "console"]).log_format == "console"
    assert parser.parse_args(["demo"]).log_format == "auto"


def test_cli_module_imports_nothing_heavy() -> None:
    """Importing runtime.cli loads only light cli modules: no protocol, socket or store code."""
    code = (
        "import sys, runtime.cli; "
        "heavy = ('trio_websocket', 'cryptography', 'google', 'xeddsa'); "
        "bad = [m for m in sys.modules if m.split('.')[0] in heavy "
        "or m.startswith(('actors.connection', 'sandbox.server', 'stores.native'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout
