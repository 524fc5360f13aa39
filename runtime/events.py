"""``EventBus``: events from the runtime to user code, outside the restarting actors.

Handlers receive event maps such as ``{"creds_update": {...}}``. Each subscriber has
its own queue and delivery task, so delivery is in emit order per subscriber, a slow
subscriber delays only itself, and a failing handler is logged and skipped (the
emitter and other subscribers never see the failure). Subscriptions belong to the
bus, not to any actor, so they survive every restart.

Since 0.1.0.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from runtime.errors import BusClosed, InvalidSpec
from runtime.exit import unwrap_group
from runtime.log import Logger, default_logger

Event = dict[str, Any]
Handler = Callable[[Event], Awaitable[None] | None]
Unsubscribe = Callable[[], None]

DEFAULT_MAX_BACKLOG = 10_000


@dataclass(frozen=True)
class BusStatistics:
    """Counts for introspection and tests."""

    subscribers: int
    emitted: int
    delivered: int
    failed: int
    dropped: int


class _Subscription:
    __slots__ = ("handler", "number", "receive", "send")

    def __init__(self, number: int, handler: Handler, backlog: int) -> None:
        self.number = number
        self.handler = handler
        self.send, self.receive = trio.open_memory_channel[Event](backlog)


class EventBus:
    """Fan-out of event maps to subscribers; run it with ``open_event_bus`` or ``run``."""

    def __init__(
        self, *, log: Logger | None = None, max_backlog: int = DEFAULT_MAX_BACKLOG
    ) -> None:
        if isinstance(max_backlog, bool) or not isinstance(max_backlog, int) or max_backlog < 1:
            raise InvalidSpec(
                "EventBus", "max_backlog", f"must be an int >= 1, got {max_backlog!r}"
            )
        self._log = (log if log is not None else default_logger()).bind(component="event_bus")
        self._max_backlog = max_backlog
        self._subs: dict[int, _Subscription] = {}
        self._next = 0
        self._nursery: trio.Nursery | None = None
        self._closed = False
        self._emitted = 0
        self._delivered = 0
        self._failed = 0
        self._dropped = 0
        self._in_flight = 0  # queued or being handled, summed over subscribers
        self._idle = trio.Event()

    def subscribe_raw(self, handler: Handler) -> Unsubscribe:
        """Deliver every later event to ``handler`` (sync or async); returns unsubscribe.

        Events emitted before ``unsubscribe()`` is called are still delivered.
        """
        if self._closed:
            raise BusClosed()
        self._next += 1
        sub = _Subscription(self._next, handler, self._max_backlog)
        self._subs[sub.number] = sub
        if self._nursery is not None:
            self._nursery.start_soon(self._deliver, sub)

        def unsubscribe() -> None:
            if self._subs.pop(sub.number, None) is not None:
                sub.send.close()

        return unsubscribe

    def emit(self, event: Event) -> None:
        """Queue ``event`` for every subscriber; never blocks, never raises for handlers.

        A subscriber whose backlog is full misses the event (logged as ``event_dropped``).
        """
        if self._closed:
            raise BusClosed()
        self._emitted += 1
        for sub in list(self._subs.values()):
            try:
                sub.send.send_nowait(event)
            except trio.WouldBlock:
                # Backpressure would stall the emitting actor; a lagging subscriber loses
                # events instead, loudly.
                self._dropped += 1
                self._log.error(
                    "event_dropped",
                    subscriber=sub.number,
                    backlog=self._max_backlog,
                    events=sorted(event),
                )
            except trio.ClosedResourceError:
                pass
            else:
                if self._in_flight == 0:
                    self._idle = trio.Event()
                self._in_flight += 1

    def statistics(self) -> BusStatistics:
        return BusStatistics(
            len(self._subs), self._emitted, self._delivered, self._failed, self._dropped
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver events until cancelled; ``await nursery.start(bus.run)``."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for sub in self._subs.values():
                    nursery.start_soon(self._deliver, sub)
                task_status.started()
                await trio.sleep(math.inf)
        finally:
            self._nursery = None
            self._closed = True

    async def _deliver(self, sub: _Subscription) -> None:
        async with sub.receive:
            async for event in sub.receive:
                try:
                    result = sub.handler(event)
                    if inspect.isawaitable(result):
                        await result
                except Exception as exc:
                    self._failed += 1
                    self._log.error(
                        "event_handler_failed",
                        subscriber=sub.number,
                        handler=getattr(sub.handler, "__qualname__", repr(sub.handler)),
                        events=sorted(event),
                        exc_info=exc,
                    )
                else:
                    self._delivered += 1
                finally:
                    self._settle()

    async def wait_idle(self) -> None:
        """Return once every event emitted so far has been handled by every subscriber."""
        while self._in_flight and not self._closed:
            await self._idle.wait()
        await trio.lowlevel.checkpoint()

    def _settle(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()


@asynccontextmanager
async def open_event_bus(
    *, log: Logger | None = None, max_backlog: int = DEFAULT_MAX_BACKLOG
) -> AsyncIterator[EventBus]:
    """An event bus delivering for the duration of the block.

    Leaving the block stops delivery at once; ``await bus.wait_idle()`` first to let
    every queued event through. An exception from the block propagates unchanged.
    """
    bus = EventBus(log=log, max_backlog=max_backlog)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(bus.run)
            try:
                yield bus
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        leaf = unwrap_group(group)
        if leaf is group:
            raise
        raise leaf from None
