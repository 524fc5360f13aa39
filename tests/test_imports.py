"""The import graph of the four packages: no cycle crosses packages, layers point one way.

Imports are read from the source (``ast``), including those inside functions and
under ``TYPE_CHECKING``: a cycle through a lazy import is still a cycle in the design.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("runtime", "actors", "stores", "sandbox")
ENTRY_POINTS = {
    "runtime.app",
    "runtime.fleet",
    "runtime.fleet_runner",
    "runtime.cli",
    "runtime.__main__",
}
# The runtime's entry points (and the fleet beside them) wire the WhatsApp session tree;
# the rest of runtime never does.
FORBIDDEN = {
    "runtime": ("actors", "stores", "sandbox"),
    "stores": ("actors", "runtime", "sandbox"),
}

Graph = dict[str, set[str]]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Every module name ``module`` imports, relative imports resolved."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield f"{base}.{alias.name}"
            yield base


def import_graph() -> Graph:
    """Module → the modules of the four packages it imports (names that are modules)."""
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: Graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        targets = imported(tree, module, path.name == "__init__.py")
        graph[module] = {t for t in targets if t in files and t != module}
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def crossing(component: list[str]) -> bool:
    return len({name.split(".")[0] for name in component}) > 1


def test_no_import_cycle_crosses_packages() -> None:
    """No set of modules from two or more packages imports itself round (lazy imports count)."""
    bad = [c for c in cycles(import_graph()) if crossing(c)]
    assert bad == [], f"import cycles across packages: {bad}"


def test_runtime_and_stores_import_only_downwards() -> None:
    """runtime (but its entry points) imports no actors/stores/sandbox; stores none of the rest."""
    graph = import_graph()
    wrong = sorted(
        (module, target)
        for module, targets in graph.items()
        for target in targets
        if module not in ENTRY_POINTS
        and target.split(".")[0] in FORBIDDEN.get(module.split(".")[0], ())
    )
    assert wrong == []


def test_the_cycle_finder_finds_a_crossing_cycle_and_ignores_a_chain() -> None:
    """The checker itself: a two-package loop is reported, a one-way chain is not."""
    loop = {"actors.cli": {"runtime.cli"}, "runtime.cli": {"actors.cli"}, "stores.x": set()}
    chain = {"runtime.cli": {"actors.cli"}, "actors.cli": {"runtime.log"}, "runtime.log": set()}
    assert [c for c in cycles(loop) if crossing(c)] == [["actors.cli", "runtime.cli"]]
    assert cycles(chain) == []
