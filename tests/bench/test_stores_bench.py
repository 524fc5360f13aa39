"""The store benchmark (bench/stores.py): its limits arithmetic and its verdicts per target."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import stores as bench
from bench.postgres_floor import Floor, measure_floor
from stores.auth import use_native_file_auth_state
from tests.stores.postgres_server import (  # noqa: F401 (fixtures, used by name)
    postgres_dsn_fixture,
    postgres_server_fixture,
)


def test_limits_follow_from_fsync_latency_and_cpu_per_transaction() -> None:
    """1 ms fsync + 250 us CPU → one writer at best 0.8x raw; 50 us/tx → 20,000 tx/s on a core."""
    one = bench.Throughput(transactions=1000, seconds=1.25, cpu_seconds=0.5, user_seconds=0.25)
    many = bench.Throughput(transactions=20_000, seconds=2.0, cpu_seconds=1.0, user_seconds=0.9)
    lim = bench.limits(1000.0, one, many)
    assert lim.one_writer_bound == pytest.approx(0.8)
    assert lim.many_writers_bound == pytest.approx(20_000)
    assert lim.busy == pytest.approx(0.5)


def test_profile_components_name_where_the_time_went() -> None:
    """Functions are charged to the transaction layer, the backend, Trio, the workload or C."""
    assert bench.component_of("/x/stores/transactions.py") == "transaction layer"
    assert bench.component_of("/x/stores/native_format.py").startswith("backend")
    assert bench.component_of("/x/stores/writer_thread.py").startswith("backend")
    assert bench.component_of("/v/site-packages/trio/_core/_run.py") == "trio scheduling"
    assert bench.component_of("/x/bench/stores.py") == "benchmark workload"
    assert bench.component_of("~").startswith("C built-ins")


def result(one: float, many: float, raw: float, baileys: float) -> dict[str, object]:
    def t(rate: float) -> bench.Throughput:
        return bench.Throughput(int(rate), 1.0, 0.5, 0.4)

    return {
        "raw": t(raw),
        "one": t(one),
        "many": t(many),
        "baileys_many": t(baileys),
        "floor": None,
        "burst": None,
        "save_burst": None,
    }


def test_every_figure_is_printed_beside_its_target_as_met_or_not(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A backend at 0.9x fsync and 12x Baileys is met twice; one at 0.5x and 3x is NOT MET."""
    results: dict[str, object] = {
        "native": result(one=900, many=12_000, raw=1000, baileys=1000),
        "sqlite": result(one=500, many=3_000, raw=1000, baileys=1000),
        "postgres": "skipped: no server binary here",
    }
    raw = bench.Throughput(1000, 1.0)
    bench._report({"cores": 2}, raw, "node absent", "node absent", results)
    out = capsys.readouterr().out
    rows: dict[str, str] = {}
    for line in out.splitlines():
        if line.split():
            rows.setdefault(line.split()[0], line)  # the throughput table comes first
    assert rows["native"].count(" met") == 2 and "NOT MET" not in rows["native"]
    assert rows["sqlite"].count("NOT MET") == 2
    assert "0.90x" in rows["native"] and "12.00x" in rows["native"]
    assert "postgres: skipped: no server binary here" in out
    assert "Measured limits" in out


async def test_the_workload_measures_cpu_per_transaction(tmp_path: Path) -> None:
    """A short real phase counts its transactions and the CPU they cost this process."""
    async with await use_native_file_auth_state(tmp_path / "native") as auth:
        phase = await bench.workload(auth, 4, 0.2)
    assert phase.transactions > 0 and phase.cpu_seconds > 0
    assert 0 < phase.cpu_per_tx < 0.2


def test_the_postgres_floor_is_printed_beside_the_stores_one_writer_rate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The floor line states the round trip, the one-statement rate and the store's share."""
    postgres = result(one=400, many=3_000, raw=1000, baileys=1000)
    postgres["floor"] = Floor(select_one_us=80.0, insert_per_s=500.0, begin_insert_commit_per_s=300)
    bench._report({"cores": 2}, bench.Throughput(1000, 1.0), "n/a", "n/a", {"postgres": postgres})
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("postgres floor"))
    assert "SELECT 1 round trip 80us" in line
    assert "INSERT of 1 KiB 500 tx/s = 0.50x raw fsync" in line
    assert "BEGIN/INSERT/COMMIT 300 tx/s" in line and "400 tx/s = 0.80x of that floor" in line


def test_the_postgres_floor_is_measured_on_a_real_server(postgres_dsn: str) -> None:
    """A short measurement gives a round trip and durable statement rates above zero."""
    floor = measure_floor(postgres_dsn, seconds=0.3)
    assert floor.select_one_us > 0
    assert floor.insert_per_s > 0 and floor.begin_insert_commit_per_s > 0


def test_the_run_summary_gets_both_ratios_of_each_engine_with_the_bound_that_limits_them() -> None:
    """`make bench`'s closing table: per durable engine, 1 writer vs raw fsync and 32 writers vs
    Baileys; a ratio not met carries the bound its measured CPU and fsync latency give."""
    measured = {
        "native": result(one=900, many=12_000, raw=1000, baileys=1000),
        "sqlite": result(one=500, many=3_000, raw=1000, baileys=1000),
    }
    rows = {v.figure: v for v in bench.verdicts(measured, "node absent")}
    assert set(rows) == {
        "native, 1 writer",
        "native, 32 writers",
        "sqlite, 1 writer",
        "sqlite, 32 writers",
    }
    assert rows["native, 1 writer"].met and rows["native, 32 writers"].met
    assert rows["sqlite, 1 writer"].value == "0.50x raw fsync" and not rows["sqlite, 1 writer"].met
    # 1 ms fsync + 800 us of CPU per tx (0.4 s for 500): at best 1/1.8 = 0.56x raw.
    assert "at best 0.56x raw" in rows["sqlite, 1 writer"].limit
    # 500 ms of CPU for 3,000 tx on one core: at best 6,000 tx/s = 6x Baileys' 1,000.
    assert "at best 6000 tx/s = 6.00x Baileys' 1000 tx/s" in rows["sqlite, 32 writers"].limit


async def test_the_share_of_commits_written_on_trios_thread_is_counted_per_phase(
    tmp_path: Path,
) -> None:
    """The bench reads the backend's own counters before and after a phase."""
    async with await use_native_file_auth_state(tmp_path / "auth") as auth:
        before = bench._written_here(auth)
        await bench.workload(auth, 1, 0.2)
        after = bench._written_here(auth)
    assert before is not None and after is not None
    assert after[0] > before[0] and 0 <= after[1] - before[1] <= after[0] - before[0]
    assert bench._share((10, 2), (110, 92)) == pytest.approx(0.9)
    assert bench._share((10, 2), (10, 2)) is None and bench._share(None, (1, 1)) is None
