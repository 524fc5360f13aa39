"""One long-lived thread that runs blocking calls for Trio, in the order they came.

``await writer.run(fn)`` queues ``fn`` and parks the calling task; the thread runs
queued calls one after another and hands each outcome back with one
``run_sync_soon``. That is one queue handoff per call, where ``trio.to_thread``
would hire a worker, copy the context and pass a capacity limiter every time: the
difference is most of a commit's CPU cost when the commit itself is small.

The thread starts with the first call and ends after ``idle_exit`` seconds without
work, or at ``close()``; an owner that never closes leaves no thread behind for long.
A queued call is not cancellable: it runs to the end (a half-finished fsync cannot
be abandoned) and a cancelled caller sees its cancellation at its next checkpoint.

Since 0.2.0.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

from stores.errors import StoreClosedError

__all__ = ["DEFAULT_IDLE_EXIT", "WriterThread"]

T = TypeVar("T")

DEFAULT_IDLE_EXIT = 5.0
"""Seconds the thread waits for work before it ends (the next call starts a new one)."""

_Call = tuple[Callable[[], Any], trio.lowlevel.Task, trio.lowlevel.TrioToken]


class WriterThread:
    """Runs blocking calls on one thread, in submission order (see the module docstring)."""

    def __init__(self, name: str, *, idle_exit: float = DEFAULT_IDLE_EXIT) -> None:
        self.name = name
        self._idle_exit = idle_exit
        self._cond = threading.Condition(threading.Lock())
        self._calls: deque[_Call] = deque()
        self._running = False
        self._closed = False
        self.calls = 0
        """Calls run since the thread was made (for statistics and tests)."""
        self.threads_started = 0

    @property
    def closed(self) -> bool:
        return self._closed

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the thread; return its result or raise its exception."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self.submit(fn)
        result: T = await trio.lowlevel.wait_task_rescheduled(_wait_for_the_end)
        return result

    def submit(self, fn: Callable[[], Any]) -> None:
        """Queue ``fn`` for the current task, which must then park until rescheduled.

        The half of ``run`` that does not wait: for callers that queue before their
        first checkpoint and park in their own way.
        """
        call = (fn, trio.lowlevel.current_task(), trio.lowlevel.current_trio_token())
        with self._cond:
            if self._closed:
                raise StoreClosedError(f"{self.name}: the writer thread is closed")
            self._calls.append(call)
            if self._running:
                self._cond.notify()
            else:
                self._running = True
                self.threads_started += 1
                threading.Thread(target=self._main, name=self.name, daemon=True).start()

    def close(self) -> None:
        """End the thread once the queued calls ran; later calls raise ``StoreClosedError``."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _main(self) -> None:
        while (call := self._next()) is not None:
            fn, task, token = call
            result = outcome.capture(fn)
            self.calls += 1
            try:
                token.run_sync_soon(trio.lowlevel.reschedule, task, result)
            except trio.RunFinishedError:
                pass  # the Trio run is gone, and with it whoever waited

    def _next(self) -> _Call | None:
        with self._cond:
            while not self._calls:
                timed_out = not self._closed and not self._cond.wait(self._idle_exit)
                if self._closed or (timed_out and not self._calls):
                    self._running = False
                    return None
            return self._calls.popleft()


def _wait_for_the_end(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED  # the call runs to the end; cancellation comes after
