"""docs/cli.md's exit-code table says what the commands actually return."""

from __future__ import annotations

import re
from pathlib import Path

from actors import cli as run_command
from stores import cli as stores_cli

CLI_DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def exit_table() -> dict[int, str]:
    section = CLI_DOC.read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.*?) \|", section, flags=re.M)
    return {int(code): meaning for code, meaning in rows}


def test_inspect_and_migrate_codes_are_documented() -> None:
    """Every exit code of inspect/migrate has the row that describes it."""
    table = exit_table()
    assert table[stores_cli.EXIT_OK].startswith("done")
    assert "corruption" in table[stores_cli.EXIT_CORRUPT]
    assert "bad arguments" in table[stores_cli.EXIT_USAGE]
    assert "locked" in table[stores_cli.EXIT_LOCKED]
    assert "refused" in table[stores_cli.EXIT_REFUSED]
    assert "failed" in table[stores_cli.EXIT_FAILED]


def test_one_number_means_one_thing_across_commands() -> None:
    """`run` uses the same numbers for the same outcomes, and its own rows exist."""
    table = exit_table()
    assert run_command.EXIT_STORE_LOCKED == stores_cli.EXIT_LOCKED
    assert run_command.EXIT_USAGE == stores_cli.EXIT_USAGE
    assert "logged out" in table[run_command.EXIT_LOGGED_OUT]
    assert "replaced" in table[run_command.EXIT_REPLACED]
    assert "server refuses" in table[run_command.EXIT_REFUSED]
    assert "other error" in table[run_command.EXIT_ERROR]


DOCS = CLI_DOC.parent
STALE = (
    "until this section is filled in",
    "python -m actors.cli run",
    "until `runtime/cli.py` registers",
    "not yet listed",
    "runtime.run_command",
)


def test_every_command_has_a_section_with_its_usage() -> None:
    """Each registered command has a `## \\`NAME\\`` section in docs/cli.md opening with usage."""
    from runtime.cli import COMMANDS

    text = CLI_DOC.read_text()
    for command in COMMANDS:
        section = text.split(f"\n## `{command.name}`\n", 1)
        assert len(section) == 2, f"docs/cli.md has no section for {command.name}"
        body = section[1].split("\n## ", 1)[0]
        assert f"```console\nbaileys-trio {command.name}" in body, command.name


def test_no_page_speaks_of_the_cli_as_unfinished() -> None:
    """No doc page (nor the README) says a command is not registered or a section is to come."""
    pages = [*sorted(DOCS.glob("*.md")), DOCS.parent / "README.md"]
    found = [
        f"{page.name}: {phrase}"
        for page in pages
        for phrase in STALE
        if phrase in page.read_text()
    ]
    assert found == []
