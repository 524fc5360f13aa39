"""The PostgreSQL backend's writer thread: one connection, jobs handed over a queue.

psycopg 3 has no Trio support, so a backend runs its synchronous connection on one
long-lived thread: a ``stores.writer_thread.WriterThread``, shared with the file
backends' group commit. A Trio task queues a job (a function of the connection, or a
commit item) and parks; the thread runs jobs in queue order and reschedules the task
with the outcome: one queue handoff per job, no thread hop per statement. Commit
items queued back to back are handed to ``write_group`` together (group commit).
Waiting is not cancellable: a queued job runs to the end, like a shielded fsync.

A broken connection is re-made with backoff by the next job that needs it (up to
``reconnect_timeout``, then ``DurabilityError``); a read that broke is run once more
on the new connection (reads are idempotent); commits decide for themselves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Generic, TypeVar

import outcome
import psycopg

from stores.errors import DurabilityError, FencedError
from stores.writer_thread import DEFAULT_MAX_GROUP_BYTES, WriterThread

__all__ = ["DEFAULT_MAX_GROUP_BYTES", "Connect", "Writer", "copy_error"]

T = TypeVar("T")
G = TypeVar("G")

Connect = Callable[[], Any]
"""Blocking: a new autocommit ``psycopg.Connection`` (a seam for fault-injection tests)."""


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
        self._location = location
        self._write_group = write_group
        self._reconnect_timeout = reconnect_timeout
        self._thread: WriterThread[G] = WriterThread(
            f"baileys-trio postgres writer {location}",
            write_group=self._commit_items,
            size=size,
            max_group_bytes=max_group_bytes,
        )
        self.conn: Any = None
        self.reconnects = 0
        self.transactions = 0

    def start(self, conn: Any) -> None:
        self.conn = conn

    async def run(self, fn: Callable[[Any], T], *, cancellable: bool = False) -> T:
        """Run ``fn(conn)`` on the writer thread; wait for it to end.

        Not cancellable once queued, unless ``cancellable``: then a cancelled waiter
        leaves at once and the job is skipped if the thread has not begun it (or its
        result is dropped if it has). For jobs whose outcome nobody needs after a
        deadline (lease renewal, release), so a hung connection cannot hang them.
        """
        return await self._thread.run(partial(self._call, fn), cancellable=cancellable)

    def submit_commit(self, item: G) -> Any:
        """Queue a commit now (no checkpoint before it); await the result to get its seq."""
        return self._thread.run_item(item)

    def stop(self) -> None:
        """End the thread after the queued jobs, closing the connection on it last."""
        self._thread.close(then=self._close_connection)

    def join(self) -> None:
        self._thread.join()

    # -- thread side ------------------------------------------------------------------

    def _commit_items(self, items: Sequence[G]) -> list[outcome.Outcome[Any]]:
        try:
            seqs = self._write_group(self.connection(), items)
        except Exception as exc:
            return [outcome.Error(copy_error(exc)) for _ in items]
        self.transactions += 1
        return [outcome.Value(seq) for seq in seqs]

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
