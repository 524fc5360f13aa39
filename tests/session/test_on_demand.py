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


async def _fill_behind_the_worker(queue: OnDemandQueue[int], held: int, *queued: int) -> None:
    """Put ``held`` and let the worker take it (and wait), then queue ``queued`` behind it."""
    await queue.put(held)
    await trio.testing.wait_all_tasks_blocked()
    for item in queued:
        await queue.put(item)


async def _block_in_order(nursery: trio.Nursery, queue: OnDemandQueue[int], items: range) -> None:
    """Start one put per item, each blocked on the full queue before the next starts."""
    for item in items:
        nursery.start_soon(queue.put, item)
        await trio.testing.wait_all_tasks_blocked()


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
    assert not queue.running and len(queue) == 0 and queue._mailbox is None


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
        await _fill_behind_the_worker(queue, 1, 2, 3)
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


async def test_blocked_putters_get_in_in_the_order_they_blocked() -> None:
    """Room freed goes to the longest-blocked put: a later putter never overtakes an earlier one."""
    for _round in range(3):
        gate = Gate()
        async with trio.open_nursery() as nursery:
            queue = OnDemandQueue[int](gate.handle, nursery.start_soon, capacity=1)
            await _fill_behind_the_worker(queue, 0, 1)
            await _block_in_order(nursery, queue, range(2, 10))
            gate.open.set()
        assert gate.done == list(range(10))


async def test_a_put_cancelled_while_blocked_queues_nothing_and_the_others_keep_their_place(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A blocked put that is cancelled leaves no item behind; the putters after it keep order."""
    gate = Gate()
    doomed = trio.CancelScope()

    async def put_doomed() -> None:
        with doomed:
            await queue.put(99)

    async with trio.open_nursery() as nursery:
        queue = OnDemandQueue[int](gate.handle, nursery.start_soon, capacity=1)
        await _fill_behind_the_worker(queue, 0, 1)
        await _block_in_order(nursery, queue, range(2, 3))
        nursery.start_soon(put_doomed)
        await trio.testing.wait_all_tasks_blocked()
        await _block_in_order(nursery, queue, range(3, 5))
        doomed.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert len(queue) == 1
        gate.open.set()
    assert gate.done == [0, 1, 2, 3, 4]


async def test_clear_drops_queued_items_and_lets_blocked_putters_in_in_order() -> None:
    """clear() drops what was queued; puts still blocked for room then get in, oldest first."""
    gate = Gate()
    async with trio.open_nursery() as nursery:
        queue = OnDemandQueue[int](gate.handle, nursery.start_soon, capacity=2)
        await _fill_behind_the_worker(queue, 0, 1, 2)
        await _block_in_order(nursery, queue, range(3, 6))
        queue.clear()
        await trio.testing.wait_all_tasks_blocked()
        assert len(queue) == 2  # 3 and 4 got in; 5 still waits for room
        gate.open.set()
    assert gate.done == [0, 3, 4, 5]
    assert not queue.running and len(queue) == 0


async def test_many_putters_under_random_cancellation_lose_and_duplicate_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every put that returned is handled exactly once, in each putter's order; none other is."""
    handled: list[tuple[int, int]] = []
    returned: list[tuple[int, int]] = []

    async def handle(item: tuple[int, int]) -> None:
        await trio.sleep(0.004)
        handled.append(item)

    async def putter(queue: OnDemandQueue[tuple[int, int]], who: int) -> None:
        for i in range(40):
            with trio.move_on_after(0.01 * ((who * 7 + i) % 5)):
                await queue.put((who, i))
                returned.append((who, i))

    async with trio.open_nursery() as nursery:
        queue = OnDemandQueue[tuple[int, int]](handle, nursery.start_soon, capacity=3)
        for who in range(6):
            nursery.start_soon(putter, queue, who)
    assert sorted(handled) == sorted(returned)
    assert len(handled) == len(set(handled))
    for who in range(6):
        mine = [i for w, i in handled if w == who]
        assert mine == sorted(mine)


async def test_items_left_by_a_cancelled_worker_go_first_to_the_next_worker() -> None:
    """A worker cancelled mid-queue leaves the rest; the next put's worker handles them first."""
    gate = Gate()
    nurseries: list[trio.Nursery] = []  # the owner's current nursery is the last

    def spawn(work: Callable[[], Awaitable[None]]) -> None:
        nurseries[-1].start_soon(work)

    queue = OnDemandQueue[int](gate.handle, spawn, capacity=4)
    async with trio.open_nursery() as first:
        nurseries.append(first)
        for item in (1, 2, 3):
            await queue.put(item)
        await trio.testing.wait_all_tasks_blocked()
        first.cancel_scope.cancel()
    assert not queue.running and len(queue) == 2
    gate.open.set()
    async with trio.open_nursery() as second:
        nurseries.append(second)
        await queue.put(4)
    assert gate.done == [2, 3, 4] and not queue.running and queue._mailbox is None


async def test_close_drops_queued_items_and_fails_blocked_and_later_puts() -> None:
    """close(): queued items are dropped, blocked and later puts raise BrokenResourceError."""
    gate = Gate()
    failed: list[int] = []

    async def put_or_fail(item: int) -> None:
        try:
            await queue.put(item)
        except trio.BrokenResourceError:
            failed.append(item)

    async with trio.open_nursery() as nursery:
        queue = OnDemandQueue[int](gate.handle, nursery.start_soon, capacity=1)
        await _fill_behind_the_worker(queue, 0, 1)
        for item in (2, 3):
            nursery.start_soon(put_or_fail, item)
            await trio.testing.wait_all_tasks_blocked()
        queue.close()
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(failed) == [2, 3] and len(queue) == 0
        gate.open.set()
    assert gate.done == [0] and not queue.running
    with pytest.raises(trio.BrokenResourceError):
        await queue.put(4)
    assert gate.done == [0] and not queue.running


async def test_an_idle_queue_once_closed_refuses_puts_and_starts_no_worker() -> None:
    """close() on a queue with no worker: a later put raises and spawns nothing."""
    started: list[object] = []
    queue = OnDemandQueue[int](ignore, started.append, capacity=4)
    queue.close()
    with pytest.raises(trio.BrokenResourceError):
        await queue.put(1)
    assert started == [] and len(queue) == 0
