"""The messages benchmark (bench/messages.py) runs with tiny counts: every row, both sides.

Figures are printed, never asserted beyond being measured (positive, finite); what is
asserted is that each side received, answered and sent everything without a single
undecryptable message or a failure at the contacts.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench import messages as bench_messages
from tests.baileys_peer import BaileysPeer

TINY = ["--light", "5", "--burst", "12", "--out", "5", "--first", "2", "--rounds", "2"]


def _check_side(figures: dict[str, Any]) -> None:
    assert figures["undecryptable"] == 0
    assert figures["errors_at_contacts"] == 0
    assert figures["retry_receipts_at_contacts"] == 0
    assert figures["in_burst"]["messages"] == 12 * 2  # two rounds
    assert figures["out"]["messages"] == 5 * 2
    assert figures["first_send_ms"]["n"] == 2 * 2 and figures["in_light_latency_ms"]["n"] == 5 * 2
    for value in (
        figures["in_light_latency_ms"]["p50"],
        figures["in_burst"]["acked_per_s"],
        figures["in_burst"]["events_per_s"],
        figures["out"]["per_s"],
        figures["first_send_ms"]["p50"],
    ):
        assert math.isfinite(value) and value > 0, figures


def _table_rows(out: str) -> dict[str, list[str]]:
    labels = [label for label, *_ in bench_messages.rows(_EMPTY)]
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        for label in labels:
            if line.startswith(label + " "):
                found[label] = line[len(label) :].split()
    return found


_FIGURES = {
    "in_light_latency_ms": {"p50": 1.0, "p99": 1.0},
    "in_light_ack_ms": {"p50": 1.0},
    "in_burst": {"acked_per_s": 1.0, "events_per_s": 1.0, "latency_ms": {"p50": 1.0, "p99": 1.0}},
    "out": {"per_s": 1.0, "calls_per_s": 1.0},
    "first_send_ms": {"p50": 1.0, "p99": 1.0},
    "first_send_call_ms": {"p50": 1.0},
}
_EMPTY = {"ours": _FIGURES, "baileys": {"skipped": "-"}}


@pytest.mark.slow
def test_ours_alone_measures_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    """Without Baileys every row still has our figure; the Baileys column says why it is empty."""
    result = bench_messages.main([*TINY, "--no-baileys"])
    out = capsys.readouterr().out
    _check_side(result["ours"])
    assert result["baileys"] == {"skipped": "--no-baileys"}
    rows = _table_rows(out)
    assert len(rows) == len(bench_messages.rows(_EMPTY)), out
    for figures in rows.values():
        assert float(figures[0]) > 0 and figures[1:] == ["-", "-"], figures
    assert "Baileys: skipped: --no-baileys" in out


@pytest.mark.slow
@pytest.mark.peer
def test_both_sides_measure_every_row_with_a_ratio(
    baileys_peer: BaileysPeer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Baileys v7 on the same sandbox host runs the same workload; every row has a ratio."""
    del baileys_peer  # installed (or the test skipped, saying why) before the bench runs
    result = bench_messages.main(TINY)
    out = capsys.readouterr().out
    _check_side(result["ours"])
    _check_side(result["baileys"])
    rows = _table_rows(out)
    assert len(rows) == len(bench_messages.rows(_EMPTY)), out
    for figures in rows.values():
        ours, theirs, ratio = (float(f) for f in figures)
        assert ours > 0 and theirs > 0 and ratio > 0, figures
