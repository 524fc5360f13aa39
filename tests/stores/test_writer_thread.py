"""The writer thread: blocking calls run on one thread, in order, outcomes back in Trio."""

from __future__ import annotations

import threading
from functools import partial

import pytest
import trio
import trio.testing

from stores.errors import StoreClosedError
from stores.writer_thread import WriterThread, runnable_tasks


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


async def test_a_cancellable_call_cancelled_before_it_began_is_skipped() -> None:
    """run(..., cancellable=True): the caller leaves at once and the call never runs."""
    writer = WriterThread("skip")
    gate = threading.Event()
    ran: list[str] = []

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run, partial(gate.wait, 10))  # holds the thread
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(0.05) as scope:
            await writer.run(lambda: ran.append("skipped call"), cancellable=True)
        assert scope.cancelled_caught
        gate.set()
    assert await writer.run(lambda: "next") == "next"
    writer.close()
    assert ran == []


async def test_close_runs_then_last_on_the_thread_and_join_waits_for_it() -> None:
    """close(then=...) runs ``then`` after the queued calls; join returns after it."""
    writer = WriterThread("then")
    seen: list[str] = []
    await writer.run(lambda: seen.append("call"))
    writer.close(then=lambda: seen.append(f"then on {threading.current_thread().name}"))
    await trio.to_thread.run_sync(writer.join, 10)
    assert seen == ["call", "then on then"]


# --- calls on the Trio thread itself (inline_below) ---------------------------------------


async def warmed(writer: WriterThread) -> None:
    """One quick call on the thread, so the writer has measured how long calls take."""
    await writer.run(lambda: None)
    await trio.testing.wait_all_tasks_blocked()


async def test_a_call_runs_here_only_after_calls_were_measured_fast() -> None:
    """Until one call was timed nothing runs here; then a quick call runs on Trio's thread."""
    writer = WriterThread("here", inline_below=1.0)
    assert not writer.may_run_here()  # nothing measured yet: the thread first
    await warmed(writer)
    assert writer.may_run_here()
    ran_on = writer.run_here(threading.get_ident)
    assert ran_on == threading.get_ident()
    assert (writer.calls, writer.calls_here) == (2, 1)
    writer.close()


async def test_inline_below_zero_never_runs_a_call_here() -> None:
    writer = WriterThread("never")
    await warmed(writer)
    assert not writer.may_run_here()
    writer.close()


async def test_no_call_runs_here_while_another_task_is_runnable() -> None:
    """A runnable task would wait behind the blocked loop (and its commit join no group)."""
    writer = WriterThread("busy loop", inline_below=1.0)
    await warmed(writer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep, 0)  # runnable until this task checkpoints
        assert not writer.may_run_here()
    assert writer.may_run_here()
    writer.close()


async def test_no_call_runs_here_while_the_thread_has_one_queued_or_running() -> None:
    """Calls never overlap: a call here waits until the thread's calls are all done."""
    writer = WriterThread("overlap", inline_below=1.0)
    await warmed(writer)
    gate = threading.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run, partial(gate.wait, 10))
        await trio.testing.wait_all_tasks_blocked()
        assert not writer.may_run_here()
        gate.set()
    await trio.testing.wait_all_tasks_blocked()
    assert writer.may_run_here()
    writer.close()


async def test_slow_calls_send_the_next_calls_to_the_thread_until_calls_are_quick_again() -> None:
    """The average of recent durations decides: one slow call counts at once, then decays."""
    writer = WriterThread("slow disk", inline_below=0.005)
    await warmed(writer)
    assert writer.may_run_here()
    writer.run_here(partial(threading.Event().wait, 0.1))  # a disk hiccup, here
    assert not writer.may_run_here()
    for _ in range(40):
        await writer.run(lambda: None)
        if writer.may_run_here():
            break
    assert writer.may_run_here()
    assert writer.calls_here == 1
    writer.close()


async def test_an_abandoned_call_the_thread_skips_counts_as_done() -> None:
    """A cancellable call dropped before it began no longer holds calls off the Trio thread."""
    writer = WriterThread("abandoned", inline_below=1.0)
    await warmed(writer)
    gate = threading.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run, partial(gate.wait, 10))
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(0.01):
            await writer.run(lambda: "never", cancellable=True)
        gate.set()
    for _ in range(100):  # the thread skips the abandoned call after the gated one
        if writer.may_run_here():
            break
        await trio.sleep(0.01)
    assert writer.may_run_here()
    writer.close()


async def test_a_call_here_is_protected_from_keyboard_interrupt() -> None:
    """Ctrl+C is held off while a call runs here (it must not split a write and its fsync)."""
    writer = WriterThread("ki", inline_below=1.0)
    await warmed(writer)
    assert writer.run_here(trio.lowlevel.currently_ki_protected)
    writer.close()


async def test_a_call_here_raises_in_its_caller_and_a_closed_writer_runs_nothing() -> None:
    writer = WriterThread("raises here", inline_below=1.0)
    await warmed(writer)

    def boom() -> None:
        raise OSError(5, "EIO")

    with pytest.raises(OSError):
        writer.run_here(boom)
    writer.close()
    assert not writer.may_run_here()
    with pytest.raises(StoreClosedError):
        writer.run_here(lambda: None)


async def test_the_count_of_runnable_tasks_is_trios_own() -> None:
    """may_run_here's count of runnable tasks agrees with Trio's statistics, with tasks
    ready to run and without, and is Trio's statistics where its run queue is unknown."""
    before = trio.lowlevel.current_statistics().tasks_runnable
    assert runnable_tasks() == before
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(trio.sleep, 0)
        assert runnable_tasks() == trio.lowlevel.current_statistics().tasks_runnable == before + 3
        assert runnable_tasks(object()) == before + 3
