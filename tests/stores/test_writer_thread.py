"""The writer thread: blocking calls run on one thread, in order, outcomes back in Trio."""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing

from stores.errors import StoreClosedError
from stores.writer_thread import WriterThread


async def test_calls_run_in_submission_order_on_one_other_thread() -> None:
    """Concurrent callers' calls run one at a time, in the order they were queued."""
    writer = WriterThread("order")
    ran: list[tuple[int, str]] = []

    async def call(n: int) -> int:
        def fn() -> int:
            ran.append((n, threading.current_thread().name))
            return n * 10

        return await writer.run(fn)

    results: dict[int, int] = {}

    async def one(n: int) -> None:
        results[n] = await call(n)

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(one, n)
            await trio.testing.wait_all_tasks_blocked()  # queue them in this order
    writer.close()
    assert [n for n, _ in ran] == list(range(20))
    assert {name for _, name in ran} == {"order"}
    assert results == {n: n * 10 for n in range(20)}
    assert writer.calls == 20 and writer.threads_started == 1


async def test_an_exception_reaches_the_caller_and_the_thread_goes_on() -> None:
    """A call that raises raises in its caller; the next call still runs."""
    writer = WriterThread("raises")

    def boom() -> None:
        raise OSError(5, "EIO")

    with pytest.raises(OSError):
        await writer.run(boom)
    assert await writer.run(lambda: "after") == "after"
    writer.close()


async def test_a_cancelled_caller_waits_for_its_call_to_end() -> None:
    """Cancelling a queued call does not abandon it: it runs, then Cancelled is raised."""
    writer = WriterThread("cancel")
    gate = threading.Event()
    done: list[str] = []

    def slow() -> None:
        gate.wait(10)
        done.append("ran")

    returned: list[str] = []
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:

            async def release_soon() -> None:
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
                gate.set()  # only now may the call end

            nursery.start_soon(release_soon)
            await writer.run(slow)
            returned.append("returned")
            await trio.lowlevel.checkpoint()  # the cancellation arrives here
            returned.append("not reached")
    assert scope.cancelled_caught
    assert done == ["ran"] and returned == ["returned"]
    writer.close()


async def test_a_closed_writer_refuses_new_calls() -> None:
    """After close, run raises StoreClosedError naming the writer."""
    writer = WriterThread("closed")
    writer.close()
    with pytest.raises(StoreClosedError, match="closed"):
        await writer.run(lambda: None)
