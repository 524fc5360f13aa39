"""The sessions bench says met / NOT MET against its targets only at the targets' scale."""

from __future__ import annotations

from bench.sessions import TARGET_N, TARGETS, verdict, verdicts


def test_a_figure_within_its_target_at_scale_is_met() -> None:
    """At N=1,000 a figure at or under its target is met."""
    assert verdict("rss_kib_per_session", TARGETS["rss_kib_per_session"], TARGET_N) == "met"
    assert verdict("reopen_s", 12.0, TARGET_N) == "met"


def test_a_figure_over_its_target_at_scale_is_not_met_with_the_factor() -> None:
    """At N=1,000 a figure over its target is NOT MET, saying by how much."""
    assert verdict("rss_kib_per_session", 300.0, TARGET_N) == "NOT MET (2.0x the target)"


def test_a_missing_figure_at_scale_is_not_met() -> None:
    """A figure not measured (sessions did not all open) is not counted as met."""
    assert verdict("idle_cpu_pct_of_core", None, TARGET_N).startswith("NOT MET")


def test_below_scale_and_untargeted_figures_get_no_verdict() -> None:
    """Fewer sessions only show a trend; figures without a target get nothing."""
    assert verdict("reopen_s", 99.0, 100) == f"(target at N={TARGET_N})"
    assert verdict("pairings_per_s", 1.0, TARGET_N) == ""


def _row(n: int, **ours: float | None) -> dict[str, object]:
    return {"n": n, "ours": ours, "baileys": {"skipped": "not run"}}


def test_the_run_summary_carries_our_figures_at_scale_only() -> None:
    """`make bench`'s closing table gets the three targets at N=1,000, met or not; no trend rows."""
    rows = [
        _row(100, rss_kib_per_session=90.0, idle_cpu_pct_of_core=1.0, reopen_s=2.0),
        _row(TARGET_N, rss_kib_per_session=151.0, idle_cpu_pct_of_core=2.5, reopen_s=None),
    ]
    found = {v.figure: v for v in verdicts(rows)}
    assert set(found) == {
        f"resident per idle session (N={TARGET_N})",
        f"idle CPU, % of one core (N={TARGET_N})",
        f"all open again after a drop (N={TARGET_N})",
    }
    assert not found[f"resident per idle session (N={TARGET_N})"].met
    assert found[f"idle CPU, % of one core (N={TARGET_N})"].met
    reopen = found[f"all open again after a drop (N={TARGET_N})"]
    assert not reopen.met and reopen.value == "not measured"


def test_a_skipped_run_at_scale_gives_no_verdict() -> None:
    """If our side did not run at 1,000 there is nothing to judge (the table says skipped)."""
    assert verdicts([{"n": TARGET_N, "ours": {"skipped": "x"}, "baileys": {}}]) == []
