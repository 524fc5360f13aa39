"""``OnDemandQueue``: a bounded FIFO whose one worker task exists only while items wait.

A session is idle nearly all of its life, yet a worker that waits on a memory channel
holds the channel's state, a task, its coroutine frame and a parked receive for as
long as it waits: about 4 KiB a queue, several queues a session, a thousand
sessions a process. This queue holds nothing but a few slots while empty:

- ``put(item)`` waits while ``capacity`` items wait (backpressure, as a memory
  channel's buffer gives), then queues ``item``; a ``put`` cancelled before it
  queued its item queued nothing, one that queued it is never undone;
- the first item put into an idle queue starts the worker through ``spawn`` (the
  owner's nursery, so the worker's failure is the owner's failure); the worker
  hands the items to ``handle`` one after another, in ``put`` order, and ends
  when none is left; so there is never more than one worker, and order is kept;
- ``clear()`` drops every waiting item (what a dead connection left behind).

Since 0.2.0.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import trio

T = TypeVar("T")

Spawn = Callable[[Callable[[], Awaitable[None]]], None]
"""Starts a task running the given async function (``nursery.start_soon``)."""


class OnDemandQueue(Generic[T]):
    """A bounded FIFO served by a worker that runs only while items wait; see the module."""

    __slots__ = ("_capacity", "_handle", "_items", "_room", "_running", "_spawn")

    def __init__(self, handle: Callable[[T], Awaitable[None]], spawn: Spawn, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._handle = handle
        self._spawn = spawn
        self._capacity = capacity
        # Both made on first use and dropped when idle: an idle queue holds neither.
        self._items: deque[T] | None = None
        self._room: trio.Event | None = None
        self._running = False

    def __repr__(self) -> str:
        return f"OnDemandQueue(waiting={len(self)}, running={self._running})"

    def __len__(self) -> int:
        return len(self._items) if self._items is not None else 0

    @property
    def running(self) -> bool:
        """Whether the worker task exists now."""
        return self._running

    async def put(self, item: T) -> None:
        """Queue ``item`` once fewer than ``capacity`` items wait; start the worker if idle."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while len(self) >= self._capacity:
            if self._room is None:
                self._room = trio.Event()
            await self._room.wait()
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        if not self._running:
            self._running = True
            try:
                self._spawn(self._work)
            except BaseException:
                # No worker (the owner's nursery is closing): the item was not queued.
                self._running = False
                self._items.pop()
                raise
        await trio.lowlevel.cancel_shielded_checkpoint()

    def clear(self) -> None:
        """Drop every waiting item (a worker handling one finishes that one)."""
        if self._items is not None:
            self._items.clear()
        self._wake_putters()

    async def _work(self) -> None:
        try:
            while self._items:
                item = self._items.popleft()
                self._wake_putters()
                await self._handle(item)
        finally:
            self._running = False
            if not self._items:
                self._items = None

    def _wake_putters(self) -> None:
        if self._room is not None:
            self._room.set()
            self._room = None


__all__ = ["OnDemandQueue", "Spawn"]
