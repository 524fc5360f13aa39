"""Random crash/exit schedules against a pure model of OTP supervision.

Hypothesis generates a supervision tree (all strategies and restart types, nested
supervisors, small intensities) and a schedule of steps: a running worker exits
(normal, shutdown or crash), time advances, or a worker is poisoned so that its
next n starts fail in ``init`` (exercising failed restarts and failed sub-tree
starts). After every step the real runtime,
run on a MockClock, must match ``supervisor_model.Model`` on: the trace of worker
starts and terminates (so restart order and stop order), which children run, each
child's restart count, each supervisor's restarts in its intensity window, and
whether the root gave up. This is a generated-schedule test rather than a
RuleBasedStateMachine because each schedule runs inside one ``trio.run``.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from property_tests.supervisor_model import ChildTemplate, Model, SupTemplate, worker_paths
from runtime import (
    ChildSpec,
    ExitKind,
    Restart,
    Strategy,
    Supervisor,
    SupervisorBase,
    SupervisorGaveUp,
)
from tests.runtime.helpers import Journal, Probe

EXIT_KINDS = {"normal": ExitKind.NORMAL, "shutdown": ExitKind.SHUTDOWN, "crash": ExitKind.CRASH}
Step = tuple[str, Any, Any]


def sup_templates(depth: int) -> st.SearchStrategy[SupTemplate]:
    def child(child_id: str) -> st.SearchStrategy[ChildTemplate]:
        restart = st.sampled_from(["permanent", "transient", "temporary"])
        worker = st.builds(ChildTemplate, st.just(child_id), restart)
        if depth == 0:
            return worker
        nested = st.builds(ChildTemplate, st.just(child_id), restart, sup_templates(depth - 1))
        return st.one_of(worker, worker, nested)

    children = st.integers(1, 3).flatmap(lambda n: st.tuples(*(child(c) for c in "abc"[:n])))
    return st.builds(
        SupTemplate,
        st.sampled_from(["one_for_one", "one_for_all", "rest_for_one"]),
        st.integers(0, 3),
        st.sampled_from([1.0, 2.0, 5.0]),
        children,
    )


exit_steps = st.tuples(st.just("exit"), st.integers(0, 30), st.sampled_from(sorted(EXIT_KINDS)))
tick_steps = st.tuples(st.just("tick"), st.sampled_from([0.5, 1.0, 2.5]), st.none())
poison_steps = st.tuples(st.just("poison"), st.integers(0, 30), st.integers(1, 3))
# Exits outnumber ticks so that intensity limits are reached often.
steps_strategy = st.lists(
    st.one_of(exit_steps, exit_steps, exit_steps, tick_steps, poison_steps, poison_steps),
    max_size=20,
)


class Poisonable(Probe):
    """A Probe whose init fails while its path has poison left."""

    def __init__(self, journal: Journal, poison: dict[str, int]) -> None:
        super().__init__(journal)
        self.poison = poison

    async def init(self) -> None:
        if self.poison.get(self.ctx.path, 0) > 0:
            self.poison[self.ctx.path] -= 1
            raise RuntimeError(f"{self.ctx.path} poisoned")
        await super().init()


def build(tpl: SupTemplate, journal: Journal, poison: dict[str, int]) -> Supervisor:
    """The real supervisor for a model template (fresh objects per incarnation)."""
    specs = []
    for child in tpl.children:
        if child.sub is None:
            factory: Any = lambda: Poisonable(journal, poison)  # noqa: E731 -- tiny factory
        else:
            factory = (lambda sub: lambda: build(sub, journal, poison))(child.sub)
        specs.append(ChildSpec(child.id, factory, restart=Restart(child.restart)))
    return Supervisor(
        specs,
        strategy=Strategy(tpl.strategy),
        max_restarts=tpl.max_restarts,
        max_seconds=tpl.max_seconds,
    )


def real_shape(root: SupervisorBase) -> list[tuple[str, bool, int, int | None]]:
    out: list[tuple[str, bool, int, int | None]] = [
        ("root", True, 0, root.statistics().restarts_in_window)
    ]

    def walk(sup: SupervisorBase) -> None:
        for info in sup.which_children():
            sub = info.supervisor
            window = sub.statistics().restarts_in_window if sub is not None else None
            out.append((f"{sup.path}/{info.id}", info.running, info.restarts, window))
            if sub is not None:
                walk(sub)

    walk(root)
    return out


async def check_schedule(
    tpl: SupTemplate, steps: list[Step], clock: trio.testing.MockClock
) -> None:
    journal = Journal()
    model = Model(tpl)
    poison: dict[str, int] = {}
    every_worker = worker_paths(tpl)
    applied = 0
    root = build(tpl, journal, poison)
    failures: list[SupervisorGaveUp] = []

    async def run_root(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await root.run(task_status=task_status)
        except SupervisorGaveUp as exc:
            failures.append(exc)

    async with trio.open_nursery() as nursery:
        await nursery.start(run_root)
        assert journal.entries == model.trace
        for kind, arg, exit_kind in steps:
            if kind == "tick":
                clock.jump(arg)
                continue
            if kind == "poison":
                target = every_worker[arg % len(every_worker)]
                model.poison_worker(target, exit_kind)
                poison[target] = poison.get(target, 0) + exit_kind
                applied += exit_kind
                continue
            workers = model.running_workers()
            if not workers:
                continue
            target = workers[arg % len(workers)]
            model.worker_exits(target, exit_kind, trio.current_time())
            root.registry.ref(target).cast_nowait(("exit", EXIT_KINDS[exit_kind]))
            await trio.testing.wait_all_tasks_blocked()
            assert journal.entries == model.trace, (target, exit_kind)
            assert {k: v for k, v in poison.items() if v} == {
                k: v for k, v in model.poison.items() if v
            }
            assert bool(failures) == model.root_failed
            if model.root_failed:
                event("root gave up")
                event(f"failed starts: {applied > sum(poison.values())}")
                return
            assert real_shape(root) == model.shape(trio.current_time())
        event(f"restarts at root: {root.statistics().total_restarts > 0}")
        event(f"failed starts: {applied > sum(poison.values())}")
        event(f"worker starts: {min(len(journal.starts()) // 5 * 5, 20)}+")
        await root.aclose()
    model_stop_trace = list(model.trace)
    model._stop_all(model.root)  # the orderly stop at the end, per the model
    assert journal.entries[len(model_stop_trace) :] == model.trace[len(model_stop_trace) :]


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(tpl=sup_templates(depth=2), steps=steps_strategy)
def test_runtime_matches_the_otp_model(tpl: SupTemplate, steps: list[Step]) -> None:
    """Every schedule of exits and clock ticks leaves the runtime where the model says."""
    event(f"nested: {any(c.sub is not None for c in tpl.children)}")
    clock = trio.testing.MockClock()
    trio.run(check_schedule, tpl, steps, clock, clock=clock)


def test_model_sanity_rest_for_one() -> None:
    """The model itself: a crash in rest_for_one restarts the child and those after it."""
    tpl = SupTemplate(
        "rest_for_one",
        3,
        5.0,
        (
            ChildTemplate("a", "permanent"),
            ChildTemplate("b", "permanent"),
            ChildTemplate("c", "permanent"),
        ),
    )
    model = Model(tpl)
    model.trace.clear()
    model.worker_exits("root/b", "crash", 0.0)
    assert model.trace == [
        ("terminate", "root/b", "crash"),
        ("terminate", "root/c", "shutdown"),
        ("start", "root/b"),
        ("start", "root/c"),
    ]


def test_model_sanity_give_up_travels_up() -> None:
    """The model itself: a nested give-up is a crash of the supervisor child."""
    inner = SupTemplate("one_for_one", 0, 5.0, (ChildTemplate("w", "permanent"),))
    tpl = SupTemplate("one_for_one", 1, 5.0, (ChildTemplate("s", "permanent", inner),))
    model = Model(tpl)
    model.worker_exits("root/s/w", "crash", 0.0)
    assert not model.root_failed and model.root.children[0].restarts == 1
    model.worker_exits("root/s/w", "crash", 0.0)
    assert model.root_failed
