"""A transaction that waits for nothing parks once; a sequenced commit runs unshielded.

A park (a trip through Trio's scheduler) costs more than the rest of a small
transaction's bookkeeping, so the layer parks only where it must wait: in the
commit function (a read-only transaction at its end) and in backend reads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
import trio.testing

from stores.auth import PersistedAuth, use_memory_auth_state
from stores.memory import MemoryBackend
from stores.transactions import TransactionalStore, sequenced_on_call
from stores.types import Batch


class _Steps(trio.abc.Instrument):
    """Counts the steps one task starts: one after each time it parked."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def parks_of(op: Callable[[], Awaitable[object]]) -> int:
    steps = _Steps(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(steps)
    try:
        await op()
    finally:
        trio.lowlevel.remove_instrument(steps)
    return steps.steps


async def filled() -> PersistedAuth:
    auth = await use_memory_auth_state()
    await auth.keys.set({"session": {"a": b"1", "b": b"2"}})
    return auth


async def test_a_blind_transaction_parks_once_in_its_commit() -> None:
    auth = await filled()

    async def blind() -> None:
        async with auth.keys.transaction("k") as tx:
            await tx.set({"session": {"a": b"3"}})
            await tx.set({"session": {"c": b"4"}})

    assert await parks_of(blind) == 1
    assert await auth.backend.read_keys("session", ["a", "c"]) == {"a": b"3", "c": b"4"}


async def test_a_read_modify_write_of_cached_values_parks_once() -> None:
    auth = await filled()

    async def increment() -> None:
        async with auth.keys.transaction("k") as tx:
            found = await tx.get("session", ["a", "b"])
            await tx.set({"session": {"a": found["a"] + found["b"]}})
            assert await tx.get("session", ["a"]) == {"a": b"12"}  # its own write

    assert await parks_of(increment) == 1
    assert await auth.backend.read_keys("session", ["a"]) == {"a": b"12"}


async def test_a_read_only_transaction_parks_once_at_its_end() -> None:
    auth = await filled()

    async def read_only() -> None:
        async with auth.keys.transaction("k") as tx:
            assert await tx.get("session", ["a", "b"]) == {"a": b"1", "b": b"2"}

    assert await parks_of(read_only) == 1


async def test_a_read_that_misses_the_cache_parks_in_the_backend_too() -> None:
    auth = await use_memory_auth_state(cache_size=0)
    await auth.keys.set({"session": {"a": b"1"}})

    async def read_then_write() -> None:
        async with auth.keys.transaction("k") as tx:
            await tx.get("session", ["a"])
            await tx.set({"session": {"a": b"2"}})

    assert await parks_of(read_then_write) == 2


async def test_cancelled_before_a_sequenced_commit_queued_it_the_batch_is_withdrawn() -> None:
    """The memory backend's commit is sequenced: cancelled first, it writes nothing."""
    backend = MemoryBackend()
    store = TransactionalStore(backend.read_keys, backend.commit)
    with trio.CancelScope() as scope:
        async with store.transaction("k") as tx:
            await tx.set({"session": {"a": b"1"}})
            scope.cancel()
    assert scope.cancelled_caught
    assert await backend.read_keys("session", ["a"]) == {}
    assert await store.get("session", ["a"]) == {}
    assert store.statistics().failed_commits == 1


async def test_a_sequenced_commit_queued_before_the_cancellation_lands_and_is_visible() -> None:
    """Once queued, a sequenced batch settles whatever happens to the caller; no shield."""
    backend = MemoryBackend()
    waiting: list[trio.lowlevel.Task] = []

    @sequenced_on_call
    async def commit(batch: Batch) -> int:
        seq = await backend.commit(batch)  # queued (here: applied) before any cancellation
        waiting.append(trio.lowlevel.current_task())
        # Like a group commit's fsync: not abortable, the caller waits for it to end.
        await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        return seq

    store = TransactionalStore(backend.read_keys, commit)
    scope = trio.CancelScope()

    async def cancel_then_finish() -> None:
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        trio.lowlevel.reschedule(waiting.pop())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_then_finish)
        with scope:
            async with store.transaction("k") as tx:
                await tx.set({"session": {"a": b"1"}})
    assert tx.commit_seq == 1
    assert await store.get("session", ["a"]) == {"a": b"1"}
    assert await backend.read_keys("session", ["a"]) == {"a": b"1"}
    assert store.statistics().failed_commits == 0
