"""OnDemandQueue: a bounded FIFO whose worker task exists only while items wait."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from actors.on_demand import OnDemandQueue


async def ignore(_item: int) -> None:
    await trio.lowlevel.checkpoint()


class Workers:
    """A spawn function that counts the workers it starts."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.started: list[Callable[[], Awaitable[None]]] = []

    def __call__(self, work: Callable[[], Awaitable[None]]) -> None:
        self.started.append(work)
        self.nursery.start_soon(work)


class Gate:
    """A handler that records each item once the test opens the gate."""

    def __init__(self) -> None:
        self.open = trio.Event()
        self.done: list[int] = []

    async def handle(self, item: int) -> None:
        await self.open.wait()
        self.done.append(item)


async def test_items_are_handled_in_put_order_and_the_worker_ends_when_none_is_left() -> None:
    """One worker handles every item in order, then ends; the idle queue holds no buffer."""
    gate = Gate()
    async with trio.open_nursery() as nursery:
        spawn = Workers(nursery)

        queue = OnDemandQueue[int](gate.handle, spawn, capacity=8)
        for item in range(5):
            await queue.put(item)
        assert queue.running and len(spawn.started) == 1 and len(queue) == 4
        gate.open.set()
        await trio.testing.wait_all_tasks_blocked()
    assert gate.done == [0, 1, 2, 3, 4] and len(spawn.started) == 1
    assert not queue.running and len(queue) == 0 and queue._items is None


async def test_a_new_item_after_the_worker_ended_starts_a_new_one() -> None:
    """Idle, then busy again: a second worker starts, and there is never more than one."""
    gate = Gate()
    gate.open.set()
    async with trio.open_nursery() as nursery:
        spawn = Workers(nursery)

        queue = OnDemandQueue[int](gate.handle, spawn, capacity=2)
        await queue.put(1)
        await trio.testing.wait_all_tasks_blocked()
        assert not queue.running and len(spawn.started) == 1
        await queue.put(2)
        await queue.put(3)
        await trio.testing.wait_all_tasks_blocked()
    assert gate.done == [1, 2, 3] and len(spawn.started) == 2 and not queue.running


async def test_put_waits_while_the_queue_is_full(autojump_clock: trio.testing.MockClock) -> None:
    """capacity items waiting: the next put waits until the worker takes one (backpressure)."""
    gate = Gate()
    async with trio.open_nursery() as nursery:
        queue = OnDemandQueue[int](gate.handle, nursery.start_soon, capacity=2)
        await queue.put(1)
        await trio.testing.wait_all_tasks_blocked()  # the worker holds 1 and waits
        await queue.put(2)
        await queue.put(3)
        with trio.move_on_after(5) as waited:
            await queue.put(4)
        assert waited.cancelled_caught and len(queue) == 2  # 4 was not queued
        gate.open.set()
        await queue.put(5)
    assert gate.done == [1, 2, 3, 5]


async def test_a_put_cancelled_before_it_starts_queues_nothing() -> None:
    """A cancelled put leaves the queue as it was and starts no worker."""
    started: list[object] = []
    queue = OnDemandQueue[int](ignore, started.append, capacity=4)
    with trio.CancelScope() as scope:
        scope.cancel()
        await queue.put(1)
    assert len(queue) == 0 and not started and not queue.running


async def test_clear_drops_the_waiting_items() -> None:
    """Items queued behind the one being handled are dropped by clear()."""
    gate = Gate()
    async with trio.open_nursery() as nursery:
        queue = OnDemandQueue[int](gate.handle, nursery.start_soon, capacity=4)
        for item in (1, 2, 3):
            await queue.put(item)
        await trio.testing.wait_all_tasks_blocked()
        queue.clear()
        gate.open.set()
    assert gate.done == [1] and len(queue) == 0


async def test_a_failing_handler_fails_the_owner() -> None:
    """The worker runs in the owner's nursery: an error in a handler reaches the owner."""

    async def handle(item: int) -> None:
        raise ValueError(f"bad item {item}")

    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="bad item 7")):
        async with trio.open_nursery() as nursery:
            queue = OnDemandQueue[int](handle, nursery.start_soon, capacity=4)
            await queue.put(7)
    assert not queue.running


async def test_a_worker_that_cannot_start_leaves_the_item_unqueued() -> None:
    """spawn fails (the owner is closing): put raises, nothing is queued, the next put retries."""

    def closed(_work: object) -> None:
        raise RuntimeError("nursery is closed")

    queue = OnDemandQueue[int](ignore, closed, capacity=4)
    with pytest.raises(RuntimeError):
        await queue.put(1)
    assert len(queue) == 0 and not queue.running


def test_capacity_must_be_positive() -> None:
    """A queue that could never take an item is refused at construction."""
    with pytest.raises(ValueError, match="capacity"):
        OnDemandQueue[int](ignore, lambda _work: None, capacity=0)
