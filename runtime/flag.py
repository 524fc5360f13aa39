"""``Flag``: a one-way ``trio.Event`` that costs a few bytes until someone waits on it.

A supervisor keeps several per child ("this incarnation is done", "a stop was
asked", "the supervisor has stopped"); nearly all are set or dropped without anyone
ever waiting. A ``trio.Event`` carries a parking lot from birth (~280 B); a ``Flag``
builds one only for a waiter.

Since 0.2.0.
"""

from __future__ import annotations

import trio


class Flag:
    """Set once, never cleared; ``wait`` returns once it is set (at once if it is)."""

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: trio.Event | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        """Set the flag and wake every waiter; idempotent."""
        self._set = True
        event, self._event = self._event, None  # woken waiters hold it; nobody else needs it
        if event is not None:
            event.set()

    async def wait(self) -> None:
        """Wait until the flag is set; a checkpoint even when it already is."""
        if self._set:
            await trio.lowlevel.checkpoint()
            return
        if self._event is None:
            self._event = trio.Event()
        await self._event.wait()
