"""``python -m bench [NAME ...]`` or ``python -m bench NAME [OPTIONS]``.

With no name, runs every bench/*.py that has ``main()``. Each ``main()`` prints its
own table and returns a dict; the dicts are merged under the module name into
bench/results/latest.json, with the machine noted once. Pass module names (e.g.
``runtime``) to run only those.

Options after one name go to that benchmark (``python -m bench soak --kills 10`` is
``python -m bench.soak --kills 10``): a ``main(argv)`` gets them and its figures are
recorded as above; a benchmark without such a ``main`` (the soak) runs its own
command line, which keeps its own results. Exit status 1 if any failed, 2 for an
unknown name or options after more than one name.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import platform
import runpy
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench._targets import gather, print_summary

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "latest.json"


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def known() -> list[str]:
    """Every benchmark module's name (bench/NAME.py, private helpers left out)."""
    return sorted(
        p.stem
        for p in HERE.glob("*.py")
        if not p.stem.startswith("_") and not p.stem.endswith("_child")
    )


def discover() -> list[str]:
    return [
        n for n in known() if callable(getattr(importlib.import_module(f"bench.{n}"), "main", None))
    ]


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Benchmark names (up to the first option) and the options after them."""
    for i, arg in enumerate(argv):
        if arg.startswith("-"):
            return argv[:i], argv[i:]
    return argv, []


def takes_argv(main: Any) -> bool:
    """Whether ``main`` accepts the benchmark's command-line options."""
    try:
        return bool(inspect.signature(main).parameters)
    except (TypeError, ValueError):
        return False


def main(argv: list[str]) -> int:
    names, options = split_argv(argv)
    unknown = [n for n in names if n not in known()]
    if unknown:
        print(
            f"python -m bench: no benchmark {unknown[0]!r} (known: {', '.join(known())})",
            file=sys.stderr,
        )
        return 2
    if options and len(names) != 1:
        print(
            "python -m bench: options go to one benchmark: python -m bench NAME [OPTIONS]",
            file=sys.stderr,
        )
        return 2
    if len(names) == 1:
        module = importlib.import_module(f"bench.{names[0]}")
        entry = getattr(module, "main", None)
        if not callable(entry) or (options and not takes_argv(entry)):
            return run_own_command_line(names[0], options)
    return run(names, options)


def run_own_command_line(name: str, options: list[str]) -> int:
    """Run ``bench.NAME`` as ``python -m bench.NAME OPTIONS`` would; its exit status."""
    saved = sys.argv
    sys.argv = [f"python -m bench.{name}", *options]
    # Imported once to look for main(): run afresh as __main__, as python -m would.
    sys.modules.pop(f"bench.{name}", None)
    try:
        runpy.run_module(f"bench.{name}", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = saved
    return 0


def run(selected: list[str], options: list[str] | None = None) -> int:
    names = selected or discover()
    results: dict[str, Any] = {
        "machine": machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    failed = []
    for name in names:
        print(f"\n=== bench.{name} ===", flush=True)
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"bench.{name}")
            results[name] = module.main(options) if options else module.main()
        except Exception:
            traceback.print_exc()
            failed.append(name)
            results[name] = {"error": traceback.format_exc(limit=3)}
        print(f"(bench.{name}: {time.perf_counter() - started:.1f} s)", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
    print_summary(gather(results))
    print(f"\nresults: {RESULTS.relative_to(HERE.parent)}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
