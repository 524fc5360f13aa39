"""docs/cli.md's `demo` section lists the stages the demo really prints."""

from __future__ import annotations

import re
from pathlib import Path

from actors.demo import STAGES

CLI_DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_the_stage_table_names_every_stage_in_order():
    """The table in the `demo` section has one row per stage, in the demo's order."""
    section = CLI_DOC.read_text().split("## `demo`", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|", section, flags=re.M)
    assert [name for _, name in rows] == list(STAGES)
    assert [int(n) for n, _ in rows] == list(range(1, len(STAGES) + 1))
