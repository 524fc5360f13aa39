"""Every ```python block of docs/supervision.md runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "supervision.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.M | re.S)


def test_the_guide_has_samples() -> None:
    """The guide carries runnable samples (so the test below cannot pass vacuously)."""
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_doc_sample_runs(index: int) -> None:
    """Sample number `index` runs to completion in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", BLOCKS[index]],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=DOC.parents[1],
    )
    assert done.returncode == 0, done.stderr
