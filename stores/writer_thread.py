"""One long-lived thread that runs blocking calls for Trio, in the order they came.

``await writer.run(fn)`` queues ``fn`` and parks the calling task; the thread runs
queued calls one after another and hands each outcome back with one
``run_sync_soon``. That is one queue handoff per call, where ``trio.to_thread``
would hire a worker, copy the context and pass a capacity limiter every time: the
difference is most of a commit's CPU cost when the commit itself is small.

The thread starts with the first call and ends after ``idle_exit`` seconds without
work, or at ``close()`` (after the calls already queued, and after the ``then``
given to it); an owner that never closes leaves no thread behind for long.

Calls on the Trio thread itself (optional, ``inline_below`` seconds): handing a call to
the thread and its outcome back costs two thread wake-ups, tens of microseconds each on
a VM, which is most of a small commit's latency when one writer waits for each of its
commits in turn. ``may_run_here()`` says when a call may run on the calling Trio thread
instead (``run_here``): nothing is queued on or running on the thread, no other Trio
task is runnable (so nobody waits behind the blocked loop, and concurrent commits still
reach the thread and form groups there), and the calls of late took less than
``inline_below`` (a moving average of the measured durations, calls here and on the
thread alike; until one call was measured, none runs here). The loop is then blocked
for one short call when it had nothing else to run: on a disk whose fsync is slow the
average is high and every call goes to the thread.

Cancellation: a queued call runs to the end by default (a half-finished fsync cannot
be abandoned) and a cancelled caller sees its cancellation at its next checkpoint.
``run(fn, cancellable=True)`` is for calls whose outcome nobody needs after a
deadline: a cancelled caller leaves at once, and the call is skipped if the thread
has not begun it (its result dropped if it has).

Since 0.2.0.
"""

from __future__ import annotations

import collections
import importlib
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

from stores.errors import StoreClosedError


def _trio_run_context() -> object:
    """Trio's private run context (see ``runnable_tasks``), or a stand-in if it moved."""
    try:
        module = importlib.import_module("trio._core._run_context")
    except ImportError:
        return object()
    return getattr(module, "GLOBAL_RUN_CONTEXT", object())


_RUN_CONTEXT = _trio_run_context()

__all__ = [
    "DEFAULT_IDLE_EXIT",
    "DEFAULT_INLINE_BELOW",
    "WriterThread",
    "runnable_tasks",
]

T = TypeVar("T")

DEFAULT_IDLE_EXIT = 5.0
"""Seconds the thread waits for work before it ends (the next call starts a new one)."""

DEFAULT_INLINE_BELOW = 0.001
"""Seconds: calls whose recent average took less may run on the Trio thread (see above).

A millisecond: about what the loop spends anyway on the Python side of a few commits,
and far below anything a peer or a timer of ours would notice.
"""

_RECENT_WEIGHT = 0.25
"""Weight of the newest duration in the moving average (one slow call counts at once)."""

_STOP: Any = object()
"""Queued by ``close``: the thread ends when it reaches it."""


class _Call:
    __slots__ = ("abandoned", "fn", "task", "token")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.task = trio.lowlevel.current_task()
        self.token = trio.lowlevel.current_trio_token()
        self.abandoned = False


class WriterThread:
    """Runs blocking calls on one thread, in submission order (see the module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        idle_exit: float = DEFAULT_IDLE_EXIT,
        inline_below: float = 0.0,
    ) -> None:
        if inline_below < 0:
            raise ValueError("inline_below must not be negative")
        self.name = name
        self._inline_below = inline_below
        self._recent = float("inf")
        """Moving average of call durations (seconds); infinite until one was measured."""
        self._pending = 0
        """Calls queued for the thread and not yet run or skipped by it (under ``_lock``)."""
        self._idle_exit = idle_exit
        # A C queue, not a deque under a Condition: a handoff costs one put and one
        # get, where a Condition allocates a lock per wait and notifies in Python.
        self._lock = threading.Lock()
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._running: threading.Thread | None = None
        self._last: threading.Thread | None = None
        """The thread most recently started (it may still run ``then`` after ``_running``)."""
        self._closed = False
        self._then: Callable[[], None] | None = None
        self.calls = 0
        """Calls run since the writer was made (for statistics and tests)."""
        self.calls_here = 0
        """Of ``calls``, those run on the Trio thread itself (``run_here``)."""
        self.threads_started = 0

    @property
    def closed(self) -> bool:
        return self._closed

    async def run(self, fn: Callable[[], T], *, cancellable: bool = False) -> T:
        """Run ``fn()`` on the thread; return its result or raise its exception."""
        await trio.lowlevel.checkpoint_if_cancelled()
        call = self._queue(fn)
        if not cancellable:
            result: T = await trio.lowlevel.wait_task_rescheduled(_run_to_the_end)
            return result

        def abort(_: Any) -> trio.lowlevel.Abort:
            call.abandoned = True  # skipped if not begun; its result dropped otherwise
            return trio.lowlevel.Abort.SUCCEEDED

        abandonable: T = await trio.lowlevel.wait_task_rescheduled(abort)
        return abandonable

    def submit(self, fn: Callable[[], Any]) -> None:
        """Queue ``fn`` for the current task, which must then park until rescheduled.

        The half of ``run`` that does not wait: for callers that queue before their
        first checkpoint and park in their own way (the outcome arrives as the value of
        ``wait_task_rescheduled``).
        """
        self._queue(fn)

    def may_run_here(self) -> bool:
        """Whether a call may run on this Trio thread now (see the module docstring)."""
        return (
            self._recent < self._inline_below
            and self._pending == 0
            and not self._closed
            and runnable_tasks() == 0
        )

    @trio.lowlevel.enable_ki_protection  # a Ctrl+C must not land between write and fsync
    def run_here(self, fn: Callable[[], T]) -> T:
        """Blocking, on the Trio thread: run ``fn()`` now, timed like a thread call.

        Only when ``may_run_here()`` said so, with no checkpoint since: the thread is
        then idle and stays so, as only the Trio thread queues calls.
        """
        if self._closed:
            raise StoreClosedError(f"{self.name}: the writer thread is closed")
        self.calls += 1
        self.calls_here += 1
        started = time.perf_counter()
        try:
            return fn()
        finally:
            self._observe(time.perf_counter() - started)

    def close(self, then: Callable[[], None] | None = None) -> None:
        """End the thread once the queued calls ran, running ``then`` last on it.

        Later calls raise ``StoreClosedError``.
        """
        with self._lock:
            self._closed = True
            self._then = then
            self._calls.put(_STOP)
            if self._running is None and then is not None:
                self._start()

    def join(self, timeout: float | None = None) -> None:
        """Blocking: wait for the thread (if one runs) to end."""
        thread = self._last
        if thread is not None:
            thread.join(timeout)

    # --- the Trio side -------------------------------------------------------------------

    def _queue(self, fn: Callable[[], Any]) -> _Call:
        call = _Call(fn)
        with self._lock:
            if self._closed:
                raise StoreClosedError(f"{self.name}: the writer thread is closed")
            self._calls.put(call)
            self._pending += 1
            if self._running is None:
                self._start()
        return call

    def _observe(self, seconds: float) -> None:
        recent = self._recent
        self._recent = (
            seconds if recent == float("inf") else recent + _RECENT_WEIGHT * (seconds - recent)
        )

    def _settled(self) -> None:
        """The thread is done with a call (before its outcome is handed back)."""
        with self._lock:
            self._pending -= 1

    def _start(self) -> None:
        self.threads_started += 1
        thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._running = self._last = thread
        thread.start()

    # --- the thread ----------------------------------------------------------------------

    def _main(self) -> None:
        while (call := self._take()) is not None:
            self.calls += 1
            started = time.perf_counter()
            result = outcome.capture(call.fn)
            self._observe(time.perf_counter() - started)
            self._settled()
            _reply(call.token, _deliver, call, result)
        then, self._then = self._then, None
        if then is not None:
            then()

    def _take(self) -> _Call | None:
        """The next call not abandoned; ``None``: the thread ends."""
        while True:
            try:
                call = self._calls.get(timeout=self._idle_exit)
            except queue.Empty:
                with self._lock:  # a call queued from now on starts a new thread
                    if self._calls.empty():
                        self._running = None
                        return None
                continue
            if call is _STOP:
                with self._lock:
                    self._running = None
                return None
            if not call.abandoned:
                return call  # type: ignore[no-any-return]
            self._settled()


def runnable_tasks(context: object = _RUN_CONTEXT) -> int:
    """``trio.lowlevel.current_statistics().tasks_runnable``, without what the rest costs.

    ``current_statistics`` also counts the tasks waiting on every file descriptor the
    loop watches: with a thousand sessions' sockets in one process, that loop would
    run on every commit that asks. Trio's run queue is read where this version of Trio
    keeps it (a private attribute: ``tests/stores/test_writer_thread.py`` checks the
    two agree), and the public call answers if it is not there.
    """
    runq = getattr(getattr(context, "runner", None), "runq", None)
    if isinstance(runq, collections.deque):
        return len(runq)
    return trio.lowlevel.current_statistics().tasks_runnable


def _reply(token: trio.lowlevel.TrioToken, deliver: Callable[..., None], *args: Any) -> bool:
    try:
        token.run_sync_soon(deliver, *args)
    except trio.RunFinishedError:
        return False  # the Trio run is gone, and with it whoever waited
    return True


def _deliver(call: _Call, result: outcome.Outcome[Any]) -> None:
    if not call.abandoned:
        trio.lowlevel.reschedule(call.task, result)


def _run_to_the_end(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED  # the call runs to the end; cancellation comes after
