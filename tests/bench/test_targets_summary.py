"""`python -m bench` closes with every figure that has a target, met or not, and why not."""

from __future__ import annotations

import pytest

from bench._targets import Verdict, gather, print_summary


def test_the_summary_lists_each_verdict_with_its_limit_when_not_met(
    capsys: pytest.CaptureFixture[str],
) -> None:
    results = {
        "machine": {"cores": 2},
        "stores": {
            "verdicts": [
                Verdict("native, 1 writer", "0.91x raw fsync", ">= 0.8x", True).as_dict(),
                Verdict("native, 32 wr", "2.1x Baileys", ">= 10x", False, "one core").as_dict(),
            ]
        },
        "wire": {"error": "Traceback ..."},
    }
    print_summary(gather(results))
    out = capsys.readouterr().out
    assert "targets in this run: 1 of 2 met" in out
    lines = out.splitlines()
    met = next(line for line in lines if "native, 1 writer" in line)
    missed = next(line for line in lines if "native, 32 wr" in line)
    assert met.rstrip().endswith(" met") and missed.rstrip().endswith("NOT MET")
    assert lines[lines.index(missed) + 1].strip() == "limit: one core"


def test_a_run_without_targets_prints_no_summary(capsys: pytest.CaptureFixture[str]) -> None:
    print_summary(gather({"runtime": {"rows": []}}))
    assert capsys.readouterr().out == ""
