"""EventBus: ordered, isolated delivery that outlives restarting actors."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from runtime import (
    Actor,
    BusClosed,
    ChildSpec,
    EventBus,
    ExitKind,
    InvalidSpec,
    open_event_bus,
    open_supervisor,
)
from tests.runtime.helpers import Boom, capture_logger, events


async def test_sync_and_async_handlers_receive_events_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each subscriber sees every event, in emit order, sync or async."""
    seen_sync: list[dict[str, Any]] = []
    seen_async: list[dict[str, Any]] = []

    async def slow(event: dict[str, Any]) -> None:
        await trio.sleep(0.1)
        seen_async.append(event)

    async with open_event_bus() as bus:
        bus.subscribe_raw(seen_sync.append)
        bus.subscribe_raw(slow)
        for n in range(20):
            bus.emit({"creds_update": {"n": n}})
        await bus.wait_idle()
    expected = [{"creds_update": {"n": n}} for n in range(20)]
    assert seen_sync == expected
    assert seen_async == expected


async def test_failing_handler_is_logged_and_isolated(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A raising handler neither reaches the emitter nor stops itself or others."""
    log, entries = capture_logger()
    good: list[int] = []
    flaky: list[int] = []

    def fails_on_odd(event: dict[str, Any]) -> None:
        if event["n"] % 2:
            raise Boom("handler bug")
        flaky.append(event["n"])

    async with open_event_bus(log=log) as bus:
        bus.subscribe_raw(fails_on_odd)
        bus.subscribe_raw(lambda e: good.append(e["n"]))
        for n in range(6):
            bus.emit({"n": n})
        await bus.wait_idle()
        assert bus.statistics().failed == 3
    assert good == [0, 1, 2, 3, 4, 5]
    assert flaky == [0, 2, 4]
    failures = events(entries, "event_handler_failed")
    assert len(failures) == 3 and isinstance(failures[0]["exc_info"], Boom)


async def test_unsubscribe_stops_later_deliveries(autojump_clock: trio.testing.MockClock) -> None:
    """After unsubscribe the handler gets no further events."""
    seen: list[int] = []
    async with open_event_bus() as bus:
        unsubscribe = bus.subscribe_raw(lambda e: seen.append(e["n"]))
        bus.emit({"n": 1})
        await bus.wait_idle()
        unsubscribe()
        unsubscribe()  # idempotent
        bus.emit({"n": 2})
        await bus.wait_idle()
    assert seen == [1]


async def test_subscriptions_survive_actor_restarts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Events emitted by successive incarnations reach the same subscriber."""
    seen: list[int] = []

    class Emitter(Actor):
        def __init__(self, bus: EventBus) -> None:
            self.bus = bus

        async def init(self) -> None:
            self.bus.emit({"started": {"incarnation": self.ctx.incarnation}})

        async def handle_cast(self, msg: Any) -> None:
            raise Boom("crash on purpose")

    async with open_event_bus() as bus:
        bus.subscribe_raw(lambda e: seen.append(e["started"]["incarnation"]))
        async with open_supervisor([ChildSpec("e", lambda: Emitter(bus))]) as sup:
            for _ in range(3):
                sup.ref("e").cast_nowait(("exit", ExitKind.CRASH))
                await trio.testing.wait_all_tasks_blocked()
        await bus.wait_idle()
    assert seen == [1, 2, 3, 4]


async def test_lagging_subscriber_loses_events_loudly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A full backlog drops events for that subscriber only, logging each drop."""
    log, entries = capture_logger()
    fast: list[int] = []
    slow_seen: list[int] = []

    async def stuck(event: dict[str, Any]) -> None:
        await trio.sleep(10)
        slow_seen.append(event["n"])

    async with open_event_bus(log=log, max_backlog=2) as bus:
        bus.subscribe_raw(stuck)
        bus.subscribe_raw(lambda e: fast.append(e["n"]))
        bus.emit({"n": 0})
        await trio.testing.wait_all_tasks_blocked()  # "stuck" holds event 0
        for n in range(1, 5):
            bus.emit({"n": n})
            await trio.testing.wait_all_tasks_blocked()  # "fast" keeps up
        await bus.wait_idle()
    assert fast == [0, 1, 2, 3, 4]
    assert slow_seen == [0, 1, 2]
    assert len(events(entries, "event_dropped")) == 2


async def test_closed_bus_refuses_use(autojump_clock: trio.testing.MockClock) -> None:
    """Once its block exits the bus raises BusClosed."""
    async with open_event_bus() as bus:
        pass
    with pytest.raises(BusClosed):
        bus.emit({"x": 1})
    with pytest.raises(BusClosed):
        bus.subscribe_raw(print)


async def test_exception_in_the_block_propagates_unchanged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """open_event_bus re-raises the body's exception itself, not wrapped in a group."""
    with pytest.raises(Boom):
        async with open_event_bus():
            raise Boom("user code failed")


def test_bad_backlog_is_a_typed_error() -> None:
    """max_backlog must be a positive int."""
    with pytest.raises(InvalidSpec, match="max_backlog"):
        EventBus(max_backlog=0)
