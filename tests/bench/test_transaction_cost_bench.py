"""bench.transaction_cost measures every workload and refuses unknown ones."""

from __future__ import annotations

import pytest

from bench import transaction_cost


def test_every_workload_has_a_positive_figure_and_the_layer_is_reported(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A short run prints microseconds per operation for each workload and the layer's cost."""
    result = transaction_cost.main(["--count", "20"])
    figures = result["us_per_operation"]
    assert set(figures) == set(transaction_cost.DEFAULT_WORKLOADS)
    assert all(micros > 0 for micros in figures.values())
    out = capsys.readouterr().out
    assert "layer (blind - backend)" in out and "layer (rmw - backend)" in out


def test_the_durable_workloads_run_when_named() -> None:
    """sqlite and native run the blind transaction over a durable backend in a temp dir."""
    result = transaction_cost.main(["--count", "5", "--only", "sqlite,native"])
    figures = result["us_per_operation"]
    assert set(figures) == {"sqlite", "native"}
    assert all(micros > 0 for micros in figures.values())


def test_an_unknown_workload_is_a_usage_error() -> None:
    """--only with a name that is not a workload exits with a usage error."""
    with pytest.raises(SystemExit) as exit_info:
        transaction_cost.main(["--only", "blind,nope"])
    assert exit_info.value.code == 2
