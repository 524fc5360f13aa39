"""The Signal crypto benchmark (bench/signal.py) runs with tiny counts, both sides, every row."""

from __future__ import annotations

import re

import pytest

from bench import signal as bench_signal
from tests.baileys_peer import BaileysPeer

TINY = ["--count", "6", "--pingpong-count", "4", "--sk-count", "3"]
LEVELS = [level for level, _ in bench_signal.LEVELS]
WORKLOADS = [key for key, _ in bench_signal.WORKLOADS]
NUMBER = r"(\d+)"


def _rows(out: str) -> dict[tuple[str, str], list[str]]:
    """(level, workload) -> the figures printed on its row."""
    labels = {label: key for key, label in bench_signal.WORKLOADS}
    rows: dict[tuple[str, str], list[str]] = {}
    level = None
    for line in out.splitlines():
        head = line.split(":", 1)[0]
        if head in LEVELS:
            level = head
            continue
        for label, key in labels.items():
            if line.startswith(f"  {label} ") and level is not None:
                rows[(level, key)] = line[len(label) + 2 :].split()
    return rows


def test_ours_alone_prints_every_row_with_a_positive_rate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without node every level and workload still runs; the node column says why it is empty."""
    result = bench_signal.main([*TINY, "--no-node"])
    out = capsys.readouterr().out
    rows = _rows(out)
    assert set(rows) == {(level, key) for level in LEVELS for key in WORKLOADS}
    for figures in rows.values():
        assert re.fullmatch(NUMBER, figures[0]) and int(figures[0]) > 0, figures
        assert figures[1:] == ["-", "-"]
    assert "node: skipped: --no-node given" in out
    counts = {"encrypt": 6, "decrypt": 6, "pingpong": 4, "sk_encrypt": 3, "sk_decrypt": 3}
    for level in LEVELS:
        for key, expected in counts.items():
            assert result["ours"][level][key]["messages"] == expected
            assert result["ours"][level][key]["messages_per_s"] > 0


def test_a_subset_of_levels_and_a_bad_count() -> None:
    """``--levels`` picks levels; a count below 1 or an unknown level is refused."""
    result = bench_signal.main([*TINY, "--no-node", "--levels", "core"])
    assert set(result["ours"]) == {"core"}
    with pytest.raises(SystemExit):
        bench_signal.main(["--count", "0", "--no-node"])
    with pytest.raises(SystemExit):
        bench_signal.main([*TINY, "--no-node", "--levels", "core,fast"])


def test_both_sides_print_every_row_with_positive_figures_and_ratios(
    baileys_peer: BaileysPeer, capsys: pytest.CaptureFixture[str]
) -> None:
    """libsignal-node and Baileys' group cipher run the same workloads; every row has both."""
    result = bench_signal.main(TINY)
    out = capsys.readouterr().out
    rows = _rows(out)
    assert set(rows) == {(level, key) for level in LEVELS for key in WORKLOADS}, out
    for row, figures in rows.items():
        ours, node, ratio = figures
        assert int(ours) > 0 and int(node) > 0, (row, figures)
        assert re.fullmatch(r"\d+\.\d\dx", ratio) and float(ratio[:-1]) > 0, (row, figures)
    assert "reference: libsignal" in out and "skipped" not in out
    for level in LEVELS:
        assert set(result["ratio"][level]) == set(WORKLOADS)
        assert result["node"][level]["pingpong"]["messages"] == 4
        assert result["node"][level]["sk_decrypt"]["messages"] == 3
