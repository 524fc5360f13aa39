"""``baileys-trio demo --supervision``: a supervision tree crashed and restarted on purpose.

The runtime alone, no WhatsApp (``baileys-trio demo`` without the flag runs a
whole session: ``actors/demo.py``): a ``rest_for_one`` pipeline
(counter, then a worker that calls it) under a ``one_for_one`` root, plus a
``DynamicSupervisor`` into which a flapping sub-tree is started and gives up. Every
lifecycle change prints one log line; ``demo_step`` lines narrate. Runs in about a
second of real time and exits 0.

Since 0.1.0.
"""

from __future__ import annotations

import argparse
from contextlib import suppress
from typing import Any

import trio

from runtime.actor import Actor
from runtime.core import supervise
from runtime.dynamic import DynamicSupervisor
from runtime.errors import ActorDown
from runtime.log import Logger
from runtime.ref import ActorRef
from runtime.registry import Registry
from runtime.spec import Backoff, ChildSpec, Restart, Strategy
from runtime.supervisor import Supervisor

DEMO_TIMEOUT = 30.0  # real seconds; the demo needs about one


class DemoCrash(Exception):
    """The failure the demo injects on purpose."""


class Counter(Actor):
    """Keeps a count in a (pretend) durable store and rebuilds it from there on restart."""

    def __init__(self, store: dict[str, int]) -> None:
        self.store = store
        self.count = 0

    async def init(self) -> None:
        self.count = self.store.get("count", 0)
        self.ctx.log.info("counter_restored", count=self.count)

    async def handle_call(self, msg: Any) -> Any:
        if msg == "add":
            self.count += 1
            self.store["count"] = self.count  # "durable" before the reply
            return self.count
        if msg == "get":
            return self.count
        if msg == "crash":
            raise DemoCrash("counter crashed on purpose")
        return await super().handle_call(msg)


class Worker(Actor):
    """Does work by calling the counter; crashes on request."""

    def __init__(self, counter: ActorRef) -> None:
        self.counter = counter

    async def handle_call(self, msg: Any) -> Any:
        if msg == "work":
            return await self.counter.call("add", timeout=1.0)
        if msg == "crash":
            raise DemoCrash("worker crashed on purpose")
        return await super().handle_call(msg)


class Flapper(Actor):
    """Crashes shortly after every start, like a child with a broken dependency."""

    async def init(self) -> None:
        self.ctx.nursery.start_soon(self._fail_soon)

    async def _fail_soon(self) -> None:
        await trio.sleep(0.02)
        raise DemoCrash("flapper cannot reach its dependency")


def build_root(registry: Registry, store: dict[str, int], log: Logger) -> Supervisor:
    """root (one_for_one) → pipeline (rest_for_one: counter, worker) and jobs (dynamic)."""

    def pipeline() -> Supervisor:
        return Supervisor(
            [
                ChildSpec("counter", lambda: Counter(store), name="counter"),
                ChildSpec("worker", lambda: Worker(registry.ref("counter")), name="worker"),
            ],
            strategy=Strategy.REST_FOR_ONE,
        )

    return Supervisor(
        [
            ChildSpec("pipeline", pipeline),
            ChildSpec("jobs", lambda: DynamicSupervisor(name="jobs")),
        ],
        strategy=Strategy.ONE_FOR_ONE,
        name="demo",
        registry=registry,
        log=log,
    )


def flaky_spec() -> ChildSpec:
    """A temporary sub-tree whose only child flaps: it gives up after 3 restarts in 60 s."""
    return ChildSpec(
        "flaky",
        lambda: Supervisor(
            [ChildSpec("flapper", Flapper)],
            max_restarts=3,
            max_seconds=60.0,  # generous, so a loaded machine still sees the give-up
            backoff=Backoff(initial=0.05, factor=2.0, max_delay=0.2, jitter=0.2),
        ),
        restart=Restart.TEMPORARY,
    )


async def run_demo(log: Logger) -> None:
    """The scripted demo; raises if the runtime did not behave as narrated."""
    registry = Registry()
    store: dict[str, int] = {}
    step = log.bind(component="demo")
    step.info("demo_step", step="start", say="starting the tree: counter, then worker")
    async with supervise(build_root(registry, store, log)) as root:
        worker = registry.ref("worker")
        for _ in range(3):
            await worker.call("work")
        step.info(
            "demo_step", step="work", say="worker called counter 3 times", count=store["count"]
        )

        step.info(
            "demo_step", step="crash-worker", say="crashing the worker (last in rest_for_one)"
        )
        await _crash(worker)
        count = await _work(worker)
        step.info("demo_step", step="worker-back", say="worker restarted alone", count=count)

        step.info(
            "demo_step", step="crash-counter", say="crashing the counter: worker restarts too"
        )
        await _crash(registry.ref("counter"))
        count = await _work(worker)
        step.info(
            "demo_step", step="counter-back", say="both restarted, state from store", count=count
        )

        step.info("demo_step", step="flapping", say="starting a flapping sub-tree under jobs")
        jobs = root.which_children()[1].supervisor
        assert isinstance(jobs, DynamicSupervisor)
        flaky = (await jobs.start_child(flaky_spec())).supervisor
        assert flaky is not None
        await flaky.wait_stopped()
        await trio.sleep(0.01)  # let jobs log the exit before we narrate it
        step.info("demo_step", step="gave-up", say="flaky gave up after 3 restarts; jobs let it go")
        step.info("demo_step", step="stop", say="stopping the tree in reverse order")
    step.info("demo_step", step="done", say="demo finished", count=store["count"])


async def _work(worker: ActorRef) -> Any:
    """Ask the worker for work, retrying if the incarnation we reached was being replaced.

    A call waits through a restart, but one that reached an incarnation just before
    its supervisor stopped it (the worker, when rest_for_one restarts the counter)
    fails with ActorDown, as in OTP; a client retries.
    """
    for attempt in range(3):
        try:
            return await worker.call("work", timeout=2.0)
        except ActorDown:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def _crash(ref: ActorRef) -> None:
    """Crash the actor and return once that incarnation is gone."""
    with suppress(ActorDown):
        await ref.call("crash", timeout=2.0)


def run(args: argparse.Namespace, log: Logger) -> int:
    """Run the demo in real time; 0 on success."""
    trio.run(_bounded, log)
    return 0


async def _bounded(log: Logger) -> None:
    with trio.fail_after(DEMO_TIMEOUT):
        await run_demo(log)
