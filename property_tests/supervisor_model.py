"""A small pure model of OTP supervision, written from the rules table in
runtime/supervisor.py (not from the implementation), for the property test.

Vocabulary is plain strings so the model shares no code with the runtime:
strategies "one_for_one" / "one_for_all" / "rest_for_one", restart types
"permanent" / "transient" / "temporary", exit kinds "normal" / "shutdown" / "crash".

The model records an observable trace: ("start", path) when a worker's init
succeeds and ("terminate", path, kind) when a worker's terminate runs. A worker can
be *poisoned*: its next n starts fail in ``init`` (no trace entry, no terminate).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ChildTemplate:
    id: str
    restart: str
    sub: SupTemplate | None = None  # None: a worker


@dataclass(frozen=True)
class SupTemplate:
    strategy: str
    max_restarts: int
    max_seconds: float
    children: tuple[ChildTemplate, ...]


@dataclass
class MChild:
    tpl: ChildTemplate
    running: bool = False
    sup: MSup | None = None  # the running incarnation of a supervisor child
    restarts: int = 0


@dataclass
class MSup:
    tpl: SupTemplate
    path: str
    children: list[MChild] = field(default_factory=list)
    stamps: list[float] = field(default_factory=list)

    def restarts_in_window(self, now: float) -> int:
        return sum(1 for t in self.stamps if now - t < self.tpl.max_seconds)


def restarts_after(restart: str, kind: str) -> bool:
    """Rules table: permanent always; transient on abnormal exits only; temporary never."""
    if restart == "permanent":
        return True
    if restart == "transient":
        return kind == "crash"
    return False


class Model:
    """The whole tree: a root supervisor, its nested supervisors and workers."""

    def __init__(self, root: SupTemplate) -> None:
        self.trace: list[tuple[str, ...]] = []
        self.root_failed = False
        self.poison: dict[str, int] = {}
        started = self._start_sup(root, "root")
        assert started is not None, "nothing is poisoned before the root starts"
        self.root = started

    # ------------------------------------------------------------ start / stop

    def _start_sup(self, tpl: SupTemplate, path: str) -> MSup | None:
        """Start in order; on a failed child, stop the started ones in reverse: None."""
        sup = MSup(tpl, path, [MChild(c) for c in tpl.children])
        for child in sup.children:
            if not self._start_child(sup, child):
                self._stop_all(sup)
                return None
        return sup

    def _start_child(self, sup: MSup, child: MChild) -> bool:
        path = f"{sup.path}/{child.tpl.id}"
        if child.tpl.sub is None:
            if self.poison.get(path, 0) > 0:
                self.poison[path] -= 1
                return False
            self.trace.append(("start", path))
        else:
            started = self._start_sup(child.tpl.sub, path)
            if started is None:
                return False
            child.sup = started
        child.running = True
        return True

    def _stop_child(self, sup: MSup, child: MChild) -> None:
        if not child.running:
            return
        if child.sup is not None:
            self._stop_all(child.sup)
        else:
            self.trace.append(("terminate", f"{sup.path}/{child.tpl.id}", "shutdown"))
        child.running = False
        child.sup = None

    def _stop_all(self, sup: MSup) -> None:
        for child in reversed(sup.children):
            self._stop_child(sup, child)
        sup.children = [c for c in sup.children if c.tpl.restart != "temporary"]

    # ------------------------------------------------------------------ exits

    def _exit(self, sup: MSup, child: MChild, kind: str, now: float) -> bool:
        """Apply the exit of ``child`` under ``sup``; True if ``sup`` gave up."""
        child.running = False
        child.sup = None
        if not restarts_after(child.tpl.restart, kind):
            if child.tpl.restart == "temporary":
                sup.children.remove(child)
            return False
        sup.stamps = [t for t in sup.stamps if now - t < sup.tpl.max_seconds] + [now]
        if len(sup.stamps) > sup.tpl.max_restarts:
            self._stop_all(sup)
            return True
        child.restarts += 1
        index = sup.children.index(child)
        if sup.tpl.strategy == "one_for_one":
            group = [child]
        elif sup.tpl.strategy == "one_for_all":
            group = list(sup.children)
        else:
            group = sup.children[index:]
        for other in reversed(group):
            if other is not child:
                self._stop_child(sup, other)
        for other in group:
            if other is not child and other.tpl.restart == "temporary":
                sup.children.remove(other)
        for other in group:
            if other in sup.children and not self._start_child(sup, other):
                # A failed (re)start is a new crash of that child; the rest of the
                # group waits for that exit to be handled.
                return self._exit(sup, other, "crash", now)
        return False

    def worker_exits(self, path: str, kind: str, now: float) -> None:
        """A running worker ends by itself with ``kind``; effects travel up on give-up."""
        chain = self._chain(path)
        self.trace.append(("terminate", path, kind))
        sup, child = chain[-1]
        gave_up = self._exit(sup, child, kind, now)
        for parent, sup_child in reversed(chain[:-1]):
            if not gave_up:
                return
            gave_up = self._exit(parent, sup_child, "crash", now)
        if gave_up:
            self.root_failed = True

    def poison_worker(self, path: str, starts: int) -> None:
        """The next ``starts`` starts of the worker at ``path`` fail in init."""
        self.poison[path] = self.poison.get(path, 0) + starts

    def _chain(self, path: str) -> list[tuple[MSup, MChild]]:
        """(supervisor, child) pairs from the root down to the worker at ``path``."""
        parts = path.split("/")[1:]
        chain: list[tuple[MSup, MChild]] = []
        sup = self.root
        for i, part in enumerate(parts):
            child = next(c for c in sup.children if c.tpl.id == part)
            chain.append((sup, child))
            if i < len(parts) - 1:
                assert child.sup is not None
                sup = child.sup
        return chain

    # ------------------------------------------------------------- observation

    def running_workers(self) -> list[str]:
        """Paths of running workers, in tree order."""
        out: list[str] = []

        def walk(sup: MSup) -> None:
            for child in sup.children:
                if not child.running:
                    continue
                if child.sup is not None:
                    walk(child.sup)
                else:
                    out.append(f"{sup.path}/{child.tpl.id}")

        if not self.root_failed:
            walk(self.root)
        return out

    def shape(self, now: float) -> list[tuple[str, bool, int, int | None]]:
        """(path, running, restarts, restarts-in-window of a running sub-supervisor)."""
        out: list[tuple[str, bool, int, int | None]] = [
            ("root", True, 0, self.root.restarts_in_window(now))
        ]

        def walk(sup: MSup) -> None:
            for child in sup.children:
                path = f"{sup.path}/{child.tpl.id}"
                window = child.sup.restarts_in_window(now) if child.sup is not None else None
                out.append((path, child.running, child.restarts, window))
                if child.sup is not None:
                    walk(child.sup)

        walk(self.root)
        return out


def worker_paths(tpl: SupTemplate, path: str = "root") -> list[str]:
    """Every worker path the template can ever run, in tree order."""
    out: list[str] = []
    for child in tpl.children:
        child_path = f"{path}/{child.id}"
        if child.sub is None:
            out.append(child_path)
        else:
            out.extend(worker_paths(child.sub, child_path))
    return out
