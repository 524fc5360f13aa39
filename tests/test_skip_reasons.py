"""A skipped test says why: the summary names its reason and its place, never a bare `Skipped`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_skip_inside_a_trio_test_is_reported_with_its_reason() -> None:
    """The memory backend's reopen tests show their reason and contract.py, not _pytest."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/stores/test_contract.py",
            "-k",
            "Memory and reopen_shows_committed_data",
            "-rs",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    skips = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skips) == 1, done.stdout
    assert "tests/stores/contract.py:" in skips[0]
    assert skips[0].endswith(": memory keeps nothing across reopen, by design")
