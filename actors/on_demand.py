"""``OnDemandQueue``: a bounded FIFO whose one worker task exists only while items wait.

A session is idle nearly all of its life, yet a worker that waits on a memory channel
holds the channel's state, a task, its coroutine frame and a parked receive for as
long as it waits: about 4 KiB a queue, several queues a session, a thousand
sessions a process. This queue holds nothing but a few slots while empty:

- ``put(item)`` waits while ``capacity`` items wait (backpressure, as a memory
  channel's buffer gives), then queues ``item``; puts blocked on a full queue get
  in in the order they blocked, before any later put; a ``put`` cancelled before
  it queued its item queued nothing, one that queued it is never undone;
- the first item put into an idle queue starts the worker through ``spawn`` (the
  owner's nursery, so the worker's failure is the owner's failure); the worker
  hands the items to ``handle`` one after another, in ``put`` order, and ends
  when none is left; so there is never more than one worker, and order is kept;
- ``clear()`` drops every queued item (what a dead connection left behind); puts
  still blocked for room then get in, in order, as if the worker had taken items;
- ``close()`` (the owner is done: nothing will make room again) drops every queued
  item and fails every blocked and later put with ``trio.BrokenResourceError``; a
  worker handling an item finishes that one (or is cancelled with its owner).

The queueing itself is ``runtime.mailbox.Mailbox``'s (bounded, FIFO admission of
blocked senders, exact under cancellation), with the worker as its one receiver;
the queue makes one only while items wait, so an idle queue holds no mailbox.

Since 0.2.0.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import trio

from runtime.mailbox import Mailbox

T = TypeVar("T")

Spawn = Callable[[Callable[[], Awaitable[None]]], None]
"""Starts a task running the given async function (``nursery.start_soon``)."""


class OnDemandQueue(Generic[T]):
    """A bounded FIFO served by a worker that runs only while items wait; see the module."""

    __slots__ = ("_capacity", "_handle", "_mailbox", "_running", "_spawn")

    def __init__(self, handle: Callable[[T], Awaitable[None]], spawn: Spawn, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._handle = handle
        self._spawn = spawn
        self._capacity = capacity
        # Made when a worker starts, dropped when it leaves nothing behind.
        self._mailbox: Mailbox[T] | None = None
        self._running = False

    def __repr__(self) -> str:
        return f"OnDemandQueue(waiting={len(self)}, running={self._running})"

    def __len__(self) -> int:
        return len(self._mailbox) if self._mailbox is not None else 0

    @property
    def running(self) -> bool:
        """Whether the worker task exists now."""
        return self._running

    async def put(self, item: T) -> None:
        """Queue ``item`` once fewer than ``capacity`` items wait; start the worker if idle."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._running:
            if self._mailbox is not None and self._mailbox.closed:
                raise trio.BrokenResourceError("the queue is closed")
            # Started before the item goes in: a spawn that fails (the owner's nursery
            # is closing) has queued nothing. The worker first runs after this put.
            self._spawn(self._work)
            self._running = True
            if self._mailbox is None:
                self._mailbox = Mailbox(self._capacity)
        mailbox = self._mailbox
        assert mailbox is not None  # kept while a worker runs
        try:
            mailbox.send_nowait(item)
        except trio.WouldBlock:
            await mailbox.send(item)  # full: wait for room behind the puts already waiting
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()

    def clear(self) -> None:
        """Drop every queued item (a worker handling one finishes that one)."""
        mailbox = self._mailbox
        if mailbox is not None:
            mailbox.clear()
            self._drop_if_idle(mailbox)

    def close(self) -> None:
        """Drop every queued item; every blocked and later put raises ``BrokenResourceError``."""
        if self._mailbox is None:
            self._mailbox = Mailbox(self._capacity)  # kept closed: it refuses later puts
        self._mailbox.close()

    async def _work(self) -> None:
        mailbox = self._mailbox
        assert mailbox is not None  # made by the put that started this worker
        try:
            while len(mailbox):
                await self._handle(mailbox.receive_nowait())
        finally:
            self._running = False
            self._drop_if_idle(mailbox)

    def _drop_if_idle(self, mailbox: Mailbox[T]) -> None:
        # A worker that failed or was cancelled may leave items (or blocked puts):
        # they stay for the next put's worker.
        idle = not len(mailbox) and not mailbox.blocked_senders
        if idle and not self._running and not mailbox.closed:
            self._mailbox = None


__all__ = ["OnDemandQueue", "Spawn"]
