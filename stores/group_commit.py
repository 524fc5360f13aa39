"""Group commit: many concurrent commits, one durable write.

Every ``await committer.commit(item)`` joins a queue. The first caller to find no
write in flight becomes the *leader*: it takes every queued item and hands them to
the backend's ``write_group`` (one write, one fsync) on the committer's long-lived
writer thread (``stores.writer_thread``: one queue handoff, no thread hired per
group), then runs ``apply`` in the Trio thread (the backend makes the items visible)
and wakes every waiter of the group with its durable sequence number. A lone commit
is written at once: nothing waits for company. Items queued while a write is in
flight form the next group; its leader is the first of them, woken by the previous
leader, so no task is stuck leading forever under continuous load. A group is thus
everything queued while the previous write was in flight, however slowly the
callers produce it (a burst of 10,000 creds commits is two or three writes).

A group may be written on the Trio thread itself instead (``inline_below``, see
``stores.writer_thread``): when no other task is runnable and the writes of late were
short, handing the write to the thread and its outcome back would cost the committing
task two thread wake-ups, most of a one-writer commit's latency. Same write, same
order, same outcomes; the loop is blocked for that one short write. A backend whose
write is sometimes long (it grows or compacts its files first) says which groups are
ordinary short writes (``short_write``); the others always go to the thread.

Group size is bounded by bytes (``max_group_bytes``, measured by ``item_size``;
``replaceable`` items count nothing, as all but one per group are never written)
and, as a sanity bound only, by count (``max_group``): a burst of small items is
one write, not one per thousand items.

Coalescing (optional): when the backend says an item is ``replaceable`` (it writes
nothing but state that a later ``supersedes`` item rewrites whole: a creds-only
commit before another creds commit), such an item is not handed to ``write_group``
if a superseding item follows it in the same group. Its waiter is acknowledged with
the sequence number of the group's *last* superseding item, which is durable in the
same write: every waiter gets a durable sequence number at least as new as its own
item, and an older snapshot is never written after a newer one. A replaceable item
must also supersede (a creds-only item carries creds), so at most one replaceable
item per group is written: the byte bound counts replaceable items as nothing.

Failure: if ``write_group`` raises, every waiter of that group gets a
``DurabilityError`` (the same one), every queued waiter gets ``StoreReadOnlyError``,
and so does every later ``commit``: a failed fsync is never retried, because the page
cache may have dropped the data and a retry could report success for lost bytes.

Cancellation: a waiter cancelled *before* its item was taken into a group is removed
from the queue and its item is never written. Once taken, the write runs to the end
(a half-finished fsync cannot be abandoned) and the waiter waits for it, seeing its
cancellation at its next checkpoint, so **a cancelled ``commit`` may still have
committed its item**. The layer above must treat a cancelled commit as "outcome
unknown" (as after a crash), never as "rolled back".

Since 0.1.0; on a long-lived writer thread since 0.2.0.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

import trio

from stores.errors import DurabilityError, StoreClosedError, StoreReadOnlyError
from stores.writer_thread import DEFAULT_IDLE_EXIT, DEFAULT_INLINE_BELOW, WriterThread

T = TypeVar("T")

WriteGroup = Callable[[Sequence[T]], Sequence[int]]
"""Blocking, on the writer thread: make the items durable (one fsync), return their seqs."""

ApplyGroup = Callable[[Sequence[T], Sequence[int]], None]
"""Trio thread: make durable items visible (update the in-memory index)."""

ItemTest = Callable[[T], bool]
"""A predicate over items (``replaceable`` / ``supersedes``)."""

DEFAULT_MAX_GROUP_BYTES = 8 << 20
"""One write group holds at most about this many bytes (always at least one item)."""

DEFAULT_MAX_GROUP = 1 << 20
"""Items per group: a sanity bound only; ``max_group_bytes`` is the real one."""


class _State(enum.Enum):
    QUEUED = "queued"
    IN_FLIGHT = "in flight"
    DONE = "done"


@dataclass(frozen=True)
class GroupCommitStatistics:
    """Counters since the committer was made."""

    commits: int
    """Items acknowledged durable (coalesced ones included)."""
    groups: int
    """Durable writes (one ``write_group`` call, one fsync, each)."""
    largest_group: int
    queued: int
    read_only: bool
    coalesced: int = 0
    """Items acknowledged without being written: a later item of their group superseded them."""
    written_here: int = 0
    """Of ``groups``, those written on the Trio thread itself (``inline_below``)."""


class _Waiter(Generic[T]):
    __slots__ = ("error", "item", "lead", "seq", "state", "task")

    def __init__(self, item: T, task: trio.lowlevel.Task) -> None:
        self.item = item
        self.task = task
        self.state = _State.QUEUED
        self.lead = False
        self.seq = -1
        self.error: BaseException | None = None

    def wake(self) -> None:
        # A bare reschedule, not a trio.Event: one wake-up per waiter per group is
        # most of group commit's own cost when groups are small.
        trio.lowlevel.reschedule(self.task)


class GroupCommitter(Generic[T]):
    """Turns concurrent ``commit(item)`` calls into grouped durable writes."""

    def __init__(
        self,
        write_group: WriteGroup[T],
        *,
        location: str,
        apply: ApplyGroup[T] | None = None,
        max_group: int = DEFAULT_MAX_GROUP,
        max_group_bytes: int = DEFAULT_MAX_GROUP_BYTES,
        item_size: Callable[[T], int] | None = None,
        replaceable: ItemTest[T] | None = None,
        supersedes: ItemTest[T] | None = None,
        idle_exit: float = DEFAULT_IDLE_EXIT,
        inline_below: float = DEFAULT_INLINE_BELOW,
        short_write: Callable[[Sequence[T]], bool] | None = None,
    ) -> None:
        if max_group < 1 or max_group_bytes < 1:
            raise ValueError("max_group and max_group_bytes must be at least 1")
        if (replaceable is None) != (supersedes is None):
            raise ValueError("replaceable and supersedes go together")
        self._write_group = write_group
        self._thread = WriterThread(
            f"baileys-trio writer {location}", idle_exit=idle_exit, inline_below=inline_below
        )
        self._apply = apply
        self._short_write = short_write
        self._location = location
        self._max_group = max_group
        self._max_group_bytes = max_group_bytes
        self._item_size = item_size
        self._replaceable = replaceable
        self._supersedes = supersedes
        self._coalesced = 0
        self._queue: list[_Waiter[T]] = []
        self._leading = False
        self._failure: DurabilityError | None = None
        self._idle: trio.Event | None = None
        self._commits = 0
        self._groups = 0
        self._largest = 0

    @property
    def read_only(self) -> bool:
        return self._failure is not None

    def check_writable(self) -> None:
        """Raise ``StoreReadOnlyError`` if an earlier durable write failed."""
        if self._failure is not None:
            raise StoreReadOnlyError(self._location, f"an earlier {self._failure.operation} failed")

    def fail(self, error: DurabilityError) -> None:
        """Turn read-only because of a failure found outside ``write_group``."""
        if self._failure is None:
            self._failure = error

    @property
    def busy(self) -> bool:
        """True while a group is being written or commits are queued."""
        return self._leading or bool(self._queue)

    async def wait_idle(self) -> None:
        """Wait until no write is in flight and nothing is queued (for a clean close)."""
        while self.busy:
            if self._idle is None:
                self._idle = trio.Event()
            await self._idle.wait()
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """Wait for every queued commit, then end the writer thread (later commits fail)."""
        with trio.CancelScope(shield=True):
            await self.wait_idle()
        self._thread.close()

    def statistics(self) -> GroupCommitStatistics:
        return GroupCommitStatistics(
            commits=self._commits,
            groups=self._groups,
            largest_group=self._largest,
            queued=len(self._queue),
            read_only=self.read_only,
            coalesced=self._coalesced,
            written_here=self._thread.calls_here,
        )

    async def commit(self, item: T) -> int:
        """Make ``item`` durable (grouped with concurrent ones); return its sequence number."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self.check_writable()
        if self._thread.closed:
            raise StoreClosedError(f"{self._location}: the committer is closed")
        waiter = _Waiter(item, trio.lowlevel.current_task())
        self._queue.append(waiter)
        if not self._leading:
            self._leading = True
            waiter.lead = True
        if not waiter.lead:

            def abort(_: object) -> trio.lowlevel.Abort:
                if waiter.state is not _State.QUEUED:
                    return trio.lowlevel.Abort.FAILED  # taken: wait for its write to end
                # Not taken yet: withdraw it, it will never be written.
                self._queue.remove(waiter)
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        if waiter.lead and waiter.state is _State.QUEUED:
            # No checkpoint between here and the write's queueing: leadership cannot be lost.
            await self._lead()
        if waiter.error is not None:
            raise waiter.error
        return waiter.seq

    def _take_group(self) -> list[_Waiter[T]]:
        if len(self._queue) == 1:
            # A lone commit (every commit of one writer): the whole queue, bounds or not.
            group, self._queue = self._queue, []
            return group
        count = min(len(self._queue), self._max_group)
        if self._item_size is not None:
            size, replaceable = self._item_size, self._replaceable
            total = 0
            for index in range(count):
                item = self._queue[index].item
                if replaceable is not None and replaceable(item):
                    # Written only if no later item of the group supersedes it: at most
                    # one such item per group, so the bound overshoots by one item at most.
                    continue
                total += size(item)
                if total > self._max_group_bytes and index > 0:
                    count = index
                    break
        group = self._queue[:count]
        del self._queue[:count]
        return group

    async def _lead(self) -> None:
        group = self._take_group()
        for waiter in group:
            waiter.state = _State.IN_FLIGHT
        try:
            await self._write(group)
        finally:
            self._leading = False
            self._hand_over()

    def _coalesce(self, items: list[T]) -> tuple[list[T], list[int]]:
        """The items to write, and for every item the index of the written one acking it."""
        keep = list(range(len(items)))
        if self._replaceable is None or self._supersedes is None or len(items) == 1:
            return items, keep  # a lone item is never dropped: nothing follows it
        last = next((i for i in range(len(items) - 1, -1, -1) if self._supersedes(items[i])), None)
        if last is None:
            return items, keep
        replaceable = self._replaceable
        written: list[T] = []
        position: list[int] = []
        for index, item in enumerate(items):
            if index < last and replaceable(item):
                position.append(-1)
                continue
            position.append(len(written))
            written.append(item)
        acked_by = position[last]
        return written, [acked_by if p < 0 else p for p in position]

    async def _write(self, group: list[_Waiter[T]]) -> None:
        items, acked_by = self._coalesce([w.item for w in group])
        try:
            written: Sequence[int]
            if self._may_write_here(items):
                written = self._thread.run_here(partial(self._write_group, items))
                # The thread path's park, without its cancellation: the write is durable.
                await trio.lowlevel.cancel_shielded_checkpoint()
            else:
                # Queued before any checkpoint, and waited for without abort (a shield).
                self._thread.submit(partial(self._write_group, items))
                written = await trio.lowlevel.wait_task_rescheduled(_not_abortable)
            if len(written) != len(items):
                raise RuntimeError("write_group returned a wrong number of sequence numbers")
            if self._apply is not None:
                self._apply(items, written)
            seqs = [written[index] for index in acked_by]
        except BaseException as exc:
            error = (
                exc
                if isinstance(exc, DurabilityError)
                else DurabilityError(self._location, "commit", exc)
            )
            self.fail(error)
            for waiter in group:
                # One exception object per task: a shared one would collect every
                # waiter's traceback (and appear N times in one ExceptionGroup).
                waiter.error = DurabilityError(error.location, error.operation, error.cause)
            self._finish(group)
            self._reject_queue()
            if not isinstance(exc, Exception):
                raise
            return
        for waiter, seq in zip(group, seqs, strict=True):
            waiter.seq = seq
        self._commits += len(group)
        self._coalesced += len(group) - len(items)
        self._groups += 1
        self._largest = max(self._largest, len(group))
        self._finish(group)

    def _may_write_here(self, items: list[T]) -> bool:
        # The thread is idle once may_run_here holds: short_write reads a steady state.
        return self._thread.may_run_here() and (
            self._short_write is None or self._short_write(items)
        )

    def _finish(self, group: list[_Waiter[T]]) -> None:
        for waiter in group:
            waiter.state = _State.DONE
            if not waiter.lead:
                waiter.wake()  # a leader is running: it reads its outcome itself

    def _reject_queue(self) -> None:
        queued, self._queue = self._queue, []
        for waiter in queued:
            waiter.error = StoreReadOnlyError(self._location, "a group commit failed")
        self._finish(queued)

    def _hand_over(self) -> None:
        if self._queue and not self._leading:
            nxt = self._queue[0]
            self._leading = True
            nxt.lead = True
            nxt.wake()
        elif not self.busy and self._idle is not None:
            self._idle.set()
            self._idle = None


def _not_abortable(_: object) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED  # a write cannot be abandoned halfway
