"""The PostgreSQL backend's writer thread: one connection, jobs handed over a queue.

psycopg 3 has no Trio support, so a backend runs its synchronous connection on one
long-lived thread. A Trio task queues a job (a function of the connection, or a
commit item) and parks; the thread runs jobs in queue order and reschedules the task
with the outcome: one queue handoff per job, no thread hop per statement. Commit
items queued back to back are handed to ``write_group`` together (group commit).
Waiting is not cancellable: a queued job runs to the end, like a shielded fsync.

A broken connection is re-made with backoff by the next job that needs it (up to
``reconnect_timeout``, then ``DurabilityError``); a read that broke is run once more
on the new connection (reads are idempotent); commits decide for themselves.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import outcome
import psycopg
import trio

from stores.errors import DurabilityError, FencedError

__all__ = ["DEFAULT_MAX_GROUP_BYTES", "Connect", "Writer", "copy_error"]

T = TypeVar("T")
G = TypeVar("G")

Connect = Callable[[], Any]
"""Blocking: a new autocommit ``psycopg.Connection`` (a seam for fault-injection tests)."""

DEFAULT_MAX_GROUP_BYTES = 8 << 20
"""One commit group holds at most about this many bytes (always at least one item)."""


class _Job(Generic[G]):
    __slots__ = ("abandoned", "fn", "group", "reply")

    def __init__(self, fn: Callable[[Any], Any] | None, group: G | None) -> None:
        self.fn = fn
        self.group = group
        self.reply: Callable[[outcome.Outcome[Any]], None] = _nobody
        self.abandoned = False
        """Set (in the Trio thread) when its waiter was cancelled: not run if not begun."""


def _nobody(_: outcome.Outcome[Any]) -> None:
    pass


class Writer(Generic[G]):
    """One thread, one connection: runs jobs in queue order; groups adjacent commits.

    ``write_group(conn, items)`` (blocking, on the thread) writes a group of commit
    items in one transaction and returns each item's sequence number; ``size(item)``
    bounds a group to about ``max_group_bytes``.
    """

    def __init__(
        self,
        connect: Connect,
        location: str,
        write_group: Callable[[Any, Sequence[G]], list[int]],
        size: Callable[[G], int],
        reconnect_timeout: float,
        max_group_bytes: int = DEFAULT_MAX_GROUP_BYTES,
    ) -> None:
        self._connect = connect
        self._size = size
        self._max_group_bytes = max_group_bytes
        self._location = location
        self._write_group = write_group
        self._reconnect_timeout = reconnect_timeout
        self._queue: queue.SimpleQueue[_Job[G] | None] = queue.SimpleQueue()
        self._held: list[_Job[G] | None] = []
        self.conn: Any = None
        self.reconnects = 0
        self.transactions = 0
        self._thread = threading.Thread(
            target=self._main, name=f"baileys-trio postgres writer {location}", daemon=True
        )

    def start(self, conn: Any) -> None:
        self.conn = conn
        self._thread.start()

    async def run(self, fn: Callable[[Any], T], *, cancellable: bool = False) -> T:
        """Run ``fn(conn)`` on the writer thread; wait for it to end.

        Not cancellable once queued, unless ``cancellable``: then a cancelled waiter
        leaves at once and the job is skipped if the thread has not begun it (or its
        result is dropped if it has). For jobs whose outcome nobody needs after a
        deadline (lease renewal, release), so a hung connection cannot hang them.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        return await self._submit(fn, None, cancellable)  # type: ignore[no-any-return]

    def submit_commit(self, item: G) -> Any:
        """Queue a commit now (no checkpoint before it); await the result to get its seq."""
        return self._submit(None, item, False)

    async def _submit(
        self, fn: Callable[[Any], Any] | None, group: G | None, cancellable: bool
    ) -> Any:
        token = trio.lowlevel.current_trio_token()
        task = trio.lowlevel.current_task()
        job: _Job[G] = _Job(fn, group)

        def deliver(result: outcome.Outcome[Any]) -> None:
            if not job.abandoned:
                trio.lowlevel.reschedule(task, result)

        def reply(result: outcome.Outcome[Any]) -> None:
            try:
                token.run_sync_soon(deliver, result)
            except trio.RunFinishedError:
                pass  # nobody is waiting any more

        job.reply = reply
        self._queue.put(job)

        def abort(_: Any) -> trio.lowlevel.Abort:
            if cancellable:
                job.abandoned = True
                return trio.lowlevel.Abort.SUCCEEDED
            return trio.lowlevel.Abort.FAILED  # the job runs to the end

        return await trio.lowlevel.wait_task_rescheduled(abort)

    def stop(self) -> None:
        self._queue.put(None)

    def join(self) -> None:
        self._thread.join()

    # -- thread side ------------------------------------------------------------------

    def _next(self) -> _Job[G] | None:
        if self._held:
            return self._held.pop()
        return self._queue.get()

    def _main(self) -> None:
        while True:
            job = self._next()
            if job is None:
                self._close_connection()
                return
            if job.group is None:
                assert job.fn is not None
                if not job.abandoned:
                    job.reply(outcome.capture(self._call, job.fn))
                continue
            jobs = [job]
            size = self._size(job.group)
            while size < self._max_group_bytes:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None or more.group is None:
                    self._held.append(more)  # runs right after this group
                    break
                jobs.append(more)
                size += self._size(more.group)
            self._commit_jobs(jobs)

    def _commit_jobs(self, jobs: list[_Job[G]]) -> None:
        groups = [j.group for j in jobs if j.group is not None]
        try:
            seqs = self._write_group(self.connection(), groups)
        except BaseException as exc:
            for job in jobs:
                job.reply(outcome.Error(copy_error(exc)))
            if not isinstance(exc, Exception):
                raise
            return
        self.transactions += 1
        for job, seq in zip(jobs, seqs, strict=True):
            job.reply(outcome.Value(seq))

    def _call(self, fn: Callable[[Any], T]) -> T:
        try:
            return fn(self.connection())
        except psycopg.OperationalError:
            if self.conn is not None and not self.conn.broken:
                raise
            # Reads are idempotent: one retry on a fresh connection.
            return fn(self.connection())

    def connection(self) -> Any:
        """The live connection, re-made with backoff when broken (blocking)."""
        conn = self.conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._close_connection()
        deadline = time.monotonic() + self._reconnect_timeout
        delay = 0.05
        while True:
            try:
                self.conn = self._connect()
            except psycopg.OperationalError as exc:
                if time.monotonic() + delay > deadline:
                    raise DurabilityError(self._location, "reconnecting", exc) from exc
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self.reconnects += 1
            return self.conn

    def _close_connection(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass  # a broken connection is gone either way


def copy_error(exc: BaseException) -> BaseException:
    """One exception object per waiting task (a shared one collects every traceback)."""
    if isinstance(exc, FencedError):
        return FencedError(exc.location, exc.reason, exc.epoch)
    if isinstance(exc, DurabilityError):
        return DurabilityError(exc.location, exc.operation, exc.cause)
    return exc
