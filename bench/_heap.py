"""Where the Python heap of idle sessions goes: a tracemalloc breakdown by component.

Each traced block is charged to the innermost frame that is not trio's or the
standard library's: a socket trio opens for the websocket client is the
transport's, a task our runtime starts is the runtime's. Used by
``python -m bench.sessions --heap`` (the figures in docs/benchmarks.md).
"""

from __future__ import annotations

import gc
import sysconfig
import tracemalloc
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import trio

REPO = Path(__file__).resolve().parent.parent
STDLIB = str(Path(sysconfig.get_paths()["stdlib"]).resolve())
FRAMES = 32

# (path fragment, component), first match wins; our files are matched repo-relative.
COMPONENTS = (
    ("stores/native", "native store (index, values)"),
    ("stores/transactions.py", "transaction layer (cache, locks)"),
    ("stores/", "stores (creds, auth)"),
    ("actors/signal/", "Signal protocol"),
    ("actors/connection/noise.py", "Noise state"),
    ("actors/connection/transport.py", "connection (transport)"),
    ("actors/connection/websocket.py", "connection (transport)"),
    ("actors/connection/", "connection (actor, client)"),
    ("actors/messaging/", "messaging"),
    ("actors/", "actors (persister, signal store, session)"),
    ("runtime/log.py", "logging (structlog)"),
    ("runtime/", "runtime (supervisors, actors, mailboxes)"),
    ("/trio_websocket/", "trio-websocket"),
    ("/wsproto/", "websocket (wsproto, h11)"),
    ("/h11/", "websocket (wsproto, h11)"),
    ("/structlog/", "logging (structlog)"),
    ("/cryptography/", "cryptography"),
    ("/google/protobuf/", "protobuf"),
)
PASS_THROUGH = (
    "/trio/",
    "/outcome/",
    "/sniffio/",
    "/attr/",
    "/attrs/",
    "<attrs generated",
    "<frozen",
)


def start() -> dict[str, int]:
    """Start tracing; returns the live objects by type (the baseline of ``breakdown``)."""
    tracemalloc.start(FRAMES)
    return object_counts()


def object_counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    for obj in gc.get_objects():
        name = type(obj).__qualname__
        counts[name] = counts.get(name, 0) + 1
    return counts


def _component(frames: Iterable[tracemalloc.Frame]) -> tuple[str, str]:
    """The component and the file (repo-relative for ours) charged for one block."""
    last = "?"
    for frame in frames:  # innermost first
        name = frame.filename
        last = name
        if name.startswith(STDLIB) and "site-packages" not in name:
            continue
        if any(p in name for p in PASS_THROUGH):
            continue
        shown = name[len(str(REPO)) + 1 :] if name.startswith(str(REPO)) else name
        for fragment, component in COMPONENTS:
            if fragment in (shown if name.startswith(str(REPO)) else name):
                return component, f"{shown}:{frame.lineno}"
        return "other libraries", shown
    return "trio and the standard library", last


def _stack(task: trio.lowlevel.Task) -> list[str]:
    """The coroutine frames a task is suspended in, outermost first (ours and libraries')."""
    frames: list[str] = []
    coro: Any = task.coro
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            break
        name = frame.f_code.co_filename
        if not name.startswith(STDLIB) or "site-packages" in name:
            short = name[len(str(REPO)) + 1 :] if name.startswith(str(REPO)) else Path(name).name
            frames.append(f"{short}:{frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
    return frames


def task_tree() -> list[str]:
    """Every live task with its coroutine stack; identical sibling subtrees folded (xk).

    Folding makes the per-session structure read once: N sessions' subtrees differ
    only in objects, not in shape.
    """

    def fold(task: trio.lowlevel.Task, depth: int) -> list[str]:
        head = f"{'  ' * depth}{task.name.rsplit('.', 1)[-1]}  [{' > '.join(_stack(task))}]"
        groups: dict[tuple[str, ...], int] = {}
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                key = tuple(fold(child, depth + 1))
                groups[key] = groups.get(key, 0) + 1
        lines = [head]
        for key, count in sorted(groups.items()):
            first, *rest = key
            lines.append(first + (f"  x{count}" if count > 1 else ""))
            lines.extend(rest)
        return lines

    return fold(trio.lowlevel.current_root_task(), 0)


def breakdown(baseline: tracemalloc.Snapshot, objects: dict[str, int], n: int) -> dict[str, object]:
    """Bytes per session by component and by allocating line, since ``baseline``."""
    tree = task_tree()
    now = tracemalloc.take_snapshot()
    counts = object_counts()
    grown = {k: (v - objects.get(k, 0)) / n for k, v in counts.items()}
    by_component: dict[str, int] = {}
    by_line: dict[str, int] = {}
    for stat in now.compare_to(baseline, "traceback"):
        if stat.size_diff == 0:
            continue
        component, where = _component(reversed(list(stat.traceback)))
        by_component[component] = by_component.get(component, 0) + stat.size_diff
        by_line[where] = by_line.get(where, 0) + stat.size_diff
    tracemalloc.stop()
    total = sum(by_component.values())
    top = sorted(by_line.items(), key=lambda kv: -kv[1])[:40]
    return {
        "traced_kib_per_session": total / 1024 / n,
        "components_kib_per_session": {
            k: v / 1024 / n for k, v in sorted(by_component.items(), key=lambda kv: -kv[1])
        },
        "top_lines_kib_per_session": {k: v / 1024 / n for k, v in top},
        "objects_per_session": dict(sorted(grown.items(), key=lambda kv: -kv[1])[:30]),
        "runtime_structure_per_session": {
            name: grown.get(name, 0.0)
            for name in ("Task", "coroutine", "CancelScope", "Nursery", "MemoryChannelState")
        },
        "task_tree": tree,
    }


def print_breakdown(heap: dict[str, object], n: int) -> None:
    print(f"\ntraced Python heap per idle session at N={n} (tracemalloc, KiB):")
    total = heap["traced_kib_per_session"]
    assert isinstance(total, float)
    print(f"  {'total':58} {total:8.1f}")
    components = heap["components_kib_per_session"]
    assert isinstance(components, dict)
    for name, kib in components.items():
        print(f"  {name:58} {kib:8.1f}")
    print("  by allocating line (top 40):")
    lines = heap["top_lines_kib_per_session"]
    assert isinstance(lines, dict)
    for where, kib in lines.items():
        print(f"    {where[-70:]:70} {kib:8.1f}")
    print("  live objects (gc-tracked) per session, by type (top 30):")
    objects = heap["objects_per_session"]
    assert isinstance(objects, dict)
    print("    " + ", ".join(f"{name} {count:.1f}" for name, count in objects.items()))
    structure = heap.get("runtime_structure_per_session")
    if isinstance(structure, dict):
        print("  trio structure per session (live objects):")
        print("    " + ", ".join(f"{name} {count:.1f}" for name, count in structure.items()))
    tree = heap.get("task_tree")
    if isinstance(tree, list):
        print("  live tasks (identical sibling subtrees folded, xN):")
        for line in tree:
            print(f"    {line}")
