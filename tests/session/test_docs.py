"""Every ```python block of docs/configuration.md runs as written (against the sandbox)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.M | re.S)
EXPECTED = [
    ["paired as ", "state open", "logged in again without a QR"],
    ["building the signal store with {'cache': 1024}", "open "],
]


def test_the_guide_has_runnable_samples():
    """The guide carries runnable samples (so the test below cannot pass vacuously)."""
    assert len(BLOCKS) == len(EXPECTED)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_configuration_sample_runs(index):
    """Sample number `index` runs to completion in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", BLOCKS[index]],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=DOC.parents[1],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stdout
    for text in EXPECTED[index]:
        assert text in done.stdout
