"""The PostgreSQL backend's writer: one connection, jobs and commits in queue order.

A backend owns one synchronous psycopg connection and one *driver*, a Trio system
task that alone uses it, taking work from a queue in the order it was queued:

* commits (``commit``) queued back to back are one group, handed to ``write_group``
  together (group commit). Their statement is driven from Trio itself through
  libpq's asynchronous calls (``query``: send, then wait until the connection's
  socket is readable): no thread hop, and the loop never blocks on the network. A
  commit's round trip costs one wake-up of Trio's loop, where handing it to a thread
  cost three (to the thread, the thread's wait on the socket, the outcome back),
  tens of microseconds of CPU each on a VM;
* jobs (``run``: a blocking function of the connection, for reads, renewals, rekey)
  go to a ``stores.writer_thread.WriterThread`` and the driver waits for them: psycopg
  3 has no Trio support, and these are rare.

A broken connection is re-made with backoff on the thread by the next job or commit
that needs it (up to ``reconnect_timeout``, then ``DurabilityError``); a read that
broke is run once more on the new connection (reads are idempotent); commits decide
for themselves. Waiting is not cancellable: a queued commit or job runs to the end,
like a shielded fsync (``run(..., cancellable=True)`` excepted).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

import outcome
import psycopg
import trio
from psycopg import pq

from stores.errors import DurabilityError, FencedError, StoreClosedError
from stores.group_commit import DEFAULT_MAX_GROUP_BYTES
from stores.writer_thread import WriterThread, runnable_tasks

__all__ = ["DEFAULT_MAX_GROUP_BYTES", "Connect", "Prepared", "Writer", "copy_error", "first_value"]

T = TypeVar("T")
G = TypeVar("G")

Connect = Callable[[], Any]
"""Blocking: a new autocommit ``psycopg.Connection`` (a seam for fault-injection tests)."""

_BINARY = 1

_SETTLE_TURNS = 8
"""Turns of Trio's loop the driver waits, at most, after answering a group (``_settle``)."""


@dataclass(frozen=True)
class Prepared:
    """A statement prepared once per connection; its parameters all go in binary."""

    name: bytes
    sql: bytes
    types: tuple[int, ...]


class _Entry:
    __slots__ = ("abandoned", "fn", "item", "task")

    def __init__(self, fn: Callable[[Any], Any] | None, item: Any) -> None:
        self.fn = fn
        self.item = item
        self.task = trio.lowlevel.current_task()
        self.abandoned = False


_STOP: Any = object()


class Writer(Generic[G]):
    """One connection, one driver task: jobs and commits in queue order, commits grouped.

    ``write_group(items)`` (async, run by the driver) writes a group of commit items
    in one transaction, through ``query`` and ``blocking``, and returns each item's
    sequence number; ``size(item)`` bounds a group to about ``max_group_bytes``.
    """

    def __init__(
        self,
        connect: Connect,
        location: str,
        write_group: Callable[[Sequence[G]], Awaitable[list[int]]],
        size: Callable[[G], int],
        reconnect_timeout: float,
        max_group_bytes: int = DEFAULT_MAX_GROUP_BYTES,
    ) -> None:
        self._connect = connect
        self._location = location
        self._write_group = write_group
        self._size = size
        self._max_group_bytes = max_group_bytes
        self._reconnect_timeout = reconnect_timeout
        self._thread = WriterThread(f"baileys-trio postgres writer {location}")
        self._queue: collections.deque[Any] = collections.deque()
        self._parked: trio.lowlevel.Task | None = None
        self._current: list[_Entry] = []
        """What the driver has taken and not answered yet (answered if the run ends)."""
        self._stopped = False
        self._started = False
        self._finished = threading.Event()
        self._prepared_on: Any = None
        self._prepared: set[bytes] = set()
        self.conn: Any = None
        self.reconnects = 0
        self.transactions = 0

    def start(self, conn: Any) -> None:
        """Take ``conn`` and start the driver (in Trio)."""
        self.conn = conn
        self._started = True
        trio.lowlevel.spawn_system_task(self._drive, name=f"postgres writer {self._location}")

    async def run(self, fn: Callable[[Any], T], *, cancellable: bool = False) -> T:
        """Run ``fn(conn)`` on the writer thread, in queue order; wait for it to end.

        Not cancellable once queued, unless ``cancellable``: then a cancelled waiter
        leaves at once and the job is skipped if it has not begun (or its result is
        dropped if it has). For jobs whose outcome nobody needs after a deadline
        (lease renewal, release), so a hung connection cannot hang them.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        entry = self._enqueue(fn, None)
        if not cancellable:
            result: T = await trio.lowlevel.wait_task_rescheduled(_run_to_the_end)
            return result

        def abort(_: Any) -> trio.lowlevel.Abort:
            entry.abandoned = True
            return trio.lowlevel.Abort.SUCCEEDED

        abandonable: T = await trio.lowlevel.wait_task_rescheduled(abort)
        return abandonable

    async def commit(self, item: G) -> Any:
        """Queue a commit at once (no checkpoint before it); its seq once written."""
        self._enqueue(None, item)
        return await trio.lowlevel.wait_task_rescheduled(_run_to_the_end)

    def stop(self) -> None:
        """End the driver after the queued work, closing the connection last."""
        if self._stopped:
            return
        if not self._started:
            self._stopped = True
            self._thread.close(then=self._close_connection)
            self._finished.set()
            return
        self._enqueue(_STOP, None)
        self._stopped = True

    def join(self) -> None:
        """Blocking: wait until the driver ended and the connection is closed."""
        self._finished.wait()
        self._thread.join()

    # -- for write_group (on the driver) ------------------------------------------------

    async def blocking(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(conn)`` on the thread now, as a job would (a read retried once)."""
        return await self._thread.run(partial(self._call, fn), cancellable=True)

    async def query(self, statement: Prepared, params: Sequence[bytes]) -> bytes | None:
        """Run ``statement`` from Trio; the first column of its first row (None: no row)."""
        conn = self.conn
        if conn is None or conn.closed or conn.broken:
            conn = await self._thread.run(self.connection, cancellable=True)
        if self._prepared_on is not conn:
            self._prepared_on, self._prepared = conn, set()
        try:
            return await self._query_prepared(conn, statement, params)
        except psycopg.errors.InvalidSqlStatementName:
            # The server forgot it (DISCARD ALL, DEALLOCATE): nothing ran, so prepare
            # it again and send once more.
            self._prepared.discard(statement.name)
            return await self._query_prepared(conn, statement, params)

    async def _query_prepared(
        self, conn: Any, statement: Prepared, params: Sequence[bytes]
    ) -> bytes | None:
        pgconn = conn.pgconn
        if statement.name not in self._prepared:
            prepare = partial(pgconn.send_prepare, statement.name, statement.sql, statement.types)
            _check(conn, await _exchange(conn, prepare), pq.ExecStatus.COMMAND_OK)
            self._prepared.add(statement.name)
        formats = [_BINARY] * len(params)
        send = partial(pgconn.send_query_prepared, statement.name, params, formats, _BINARY)
        return first_value(conn, await _exchange(conn, send))

    def lost(self) -> bool:
        """Whether the connection broke (a statement on it may have had no answer)."""
        conn = self.conn
        return conn is None or conn.closed or conn.broken

    # -- the driver ---------------------------------------------------------------------

    def _enqueue(self, fn: Callable[[Any], Any] | None, item: Any) -> _Entry:
        if self._stopped:
            raise StoreClosedError(f"{self._location}: the writer is stopped")
        entry = fn if fn is _STOP else _Entry(fn, item)
        self._queue.append(entry)
        task, self._parked = self._parked, None
        if task is not None:
            trio.lowlevel.reschedule(task)
        return entry

    async def _drive(self) -> None:
        try:
            while (taken := await self._take()) is not None:
                self._current = taken
                if taken[0].fn is not None:
                    await self._run_job(taken[0])
                else:
                    await self._commit_group(taken)
                self._current = []
        finally:
            self._end()

    async def _take(self) -> list[_Entry] | None:
        """The next job, or the next commits queued back to back; None: stop."""
        while True:
            while not self._queue:
                self._parked = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._unpark)
            first = self._queue.popleft()
            if first is _STOP:
                return None
            if not first.abandoned:
                break
        if first.fn is not None:
            return [first]
        group, total = [first], self._size(first.item)
        queue = self._queue
        while queue and total < self._max_group_bytes and queue[0] is not _STOP:
            if queue[0].fn is not None:
                break  # a job ends the group: it runs after it
            group.append(queue.popleft())
            total += self._size(group[-1].item)
        return group

    def _unpark(self, _: Any) -> trio.lowlevel.Abort:
        self._parked = None
        return trio.lowlevel.Abort.SUCCEEDED  # only when the run ends

    async def _run_job(self, entry: _Entry) -> None:
        assert entry.fn is not None
        result = await outcome.acapture(self.blocking, entry.fn)
        if not entry.abandoned:
            trio.lowlevel.reschedule(entry.task, result)

    async def _commit_group(self, group: list[_Entry]) -> None:
        results: list[outcome.Outcome[Any]]
        try:
            seqs = await self._write_group([entry.item for entry in group])
        except Exception as exc:
            results = [outcome.Error(copy_error(exc)) for _ in group]
        else:
            self.transactions += 1
            results = [outcome.Value(seq) for seq in seqs]
        for entry, result in zip(group, results, strict=True):
            trio.lowlevel.reschedule(entry.task, result)
        await self._settle()

    async def _settle(self) -> None:
        """Let the tasks just answered run before the next group is taken.

        What they commit next joins the commits queued meanwhile: one statement for
        about every writer, where taking the queue at once sent two half groups in turn
        (16 commits a statement instead of 27 with 32 writers).
        """
        for _ in range(_SETTLE_TURNS):
            if not runnable_tasks():
                return
            await trio.lowlevel.cancel_shielded_checkpoint()

    def _end(self) -> None:
        """The driver ends: at ``stop``, or cancelled because the Trio run ends."""
        self._stopped = True
        left = self._current + [e for e in self._queue if e is not _STOP]
        self._current = []
        self._queue.clear()
        for entry in left:
            if not entry.abandoned:
                unknown = DurabilityError(self._location, "postgres writer (outcome unknown)")
                trio.lowlevel.reschedule(entry.task, outcome.Error(unknown))
        self._thread.close(then=self._close_connection)
        self._finished.set()

    # -- thread side ------------------------------------------------------------------

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


async def _exchange(conn: Any, send: Callable[[], None]) -> pq.abc.PGresult:
    """Send one query with libpq's asynchronous calls; its last result, from Trio."""
    pgconn = conn.pgconn
    send()
    while pgconn.flush():
        await trio.lowlevel.wait_writable(pgconn.socket)
    last: pq.abc.PGresult | None = None
    while True:
        pgconn.consume_input()
        if pgconn.is_busy():
            await trio.lowlevel.wait_readable(pgconn.socket)
            continue
        result: pq.abc.PGresult | None = pgconn.get_result()
        if result is None:
            break
        if last is None or last.status != pq.ExecStatus.FATAL_ERROR:
            last = result  # the first error is the one to report
    if last is None:
        raise psycopg.OperationalError(f"no result: {pgconn.get_error_message()}")
    return last


def first_value(conn: Any, result: pq.abc.PGresult) -> bytes | None:
    """The first column of ``result``'s first row (None: no row); its error raised."""
    _check(conn, result, pq.ExecStatus.TUPLES_OK)
    if result.ntuples == 0:
        return None
    return result.get_value(0, 0)


def _check(conn: Any, result: pq.abc.PGresult, expected: pq.ExecStatus) -> None:
    """Raise what psycopg would for ``result``: OperationalError once the link broke."""
    if result.status == expected:
        return
    if result.status == pq.ExecStatus.FATAL_ERROR:
        if conn.pgconn.status == pq.ConnStatus.BAD:
            raise psycopg.OperationalError(result.get_error_message())
        raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
    status = pq.ExecStatus(result.status).name
    raise psycopg.OperationalError(f"unexpected result status {status}")


def copy_error(exc: BaseException) -> BaseException:
    """One exception object per waiting task (a shared one collects every traceback)."""
    if isinstance(exc, FencedError):
        return FencedError(exc.location, exc.reason, exc.epoch)
    if isinstance(exc, DurabilityError):
        return DurabilityError(exc.location, exc.operation, exc.cause)
    return exc


def _run_to_the_end(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED  # the work runs to the end; cancellation comes after
