"""`python -m bench` passes options to a benchmark, and bench/*.py files run as scripts too."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def python(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run the venv's interpreter with ``argv`` (bounded by a timeout)."""
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.parametrize("name", ["soak", "signal", "login", "fleet"])
def test_options_after_a_name_reach_that_benchmark(name: str) -> None:
    """`python -m bench NAME --help` shows the benchmark's own options, not an import error."""
    done = python("-m", "bench", name, "--help")
    assert done.returncode == 0, done.stderr
    assert f"\nusage: python -m bench.{name}" in "\n" + done.stdout
    assert "Traceback" not in done.stderr


def test_an_unknown_name_or_options_for_several_exit_2_in_one_line() -> None:
    """An unknown benchmark and options after two names are usage errors naming the fix."""
    done = python("-m", "bench", "10")
    assert done.returncode == 2 and "no benchmark '10'" in done.stderr
    assert len(done.stderr.splitlines()) == 1
    done = python("-m", "bench", "runtime", "wire", "--kills", "3")
    assert done.returncode == 2 and "python -m bench NAME [OPTIONS]" in done.stderr


def test_a_benchmark_named_like_a_package_runs_as_a_script() -> None:
    """`python bench/runtime.py` and `python bench/signal.py --help` run, from any directory."""
    done = python(str(BENCH / "runtime.py"), cwd=BENCH.parent.parent)
    assert done.returncode == 0, done.stderr
    assert "ActorRef.call / bare throughput" in done.stdout
    done = python(str(BENCH / "signal.py"), "--help", cwd=BENCH)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m bench.signal")


def shadowed(name: str) -> bool:
    """Whether a top-level module or package ``name`` exists besides bench/NAME.py."""
    if name in sys.stdlib_module_names:
        return True
    spec = importlib.util.find_spec(name) if name.isidentifier() else None
    return spec is not None and spec.origin != str(BENCH / f"{name}.py")


SHADOWING = [p for p in sorted(BENCH.glob("[!_]*.py")) if shadowed(p.stem)]


def test_the_shadowing_benchmarks_are_found() -> None:
    """runtime, stores and signal are among the bench files named like a top-level module."""
    assert {"runtime", "stores", "signal"} <= {p.stem for p in SHADOWING}


@pytest.mark.parametrize("path", SHADOWING, ids=lambda p: p.name)
def test_every_shadowing_benchmark_hands_over_to_its_module(path: Path) -> None:
    """A bench file named like a package or stdlib module reruns itself as bench.NAME."""
    assert f'runpy.run_module("bench.{path.stem}"' in path.read_text()
