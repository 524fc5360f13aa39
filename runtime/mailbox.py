"""Mailbox plumbing shared by actors and refs: envelopes, replies, incarnations, slots.

A *slot* is the stable home of one registered actor: it outlives incarnations, so a
restart swaps the incarnation inside it while every ``ActorRef`` keeps working.
An *incarnation* is one run of the actor with its own bounded mailbox; when it ends
its mailbox is closed and every caller still waiting on it gets ``ActorDown``.

Since 0.1.0.
"""

from __future__ import annotations

from typing import Any

import trio

from runtime.errors import ActorDown
from runtime.exit import ExitReason


class Reply:
    """A one-shot answer slot for a single call."""

    __slots__ = ("error", "event", "value")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def resolve(self, value: Any) -> None:
        if not self.event.is_set():
            self.value = value
            self.event.set()

    def fail(self, error: BaseException) -> None:
        if not self.event.is_set():
            self.error = error
            self.event.set()

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class Call:
    """A request waiting for a reply."""

    __slots__ = ("msg", "reply")

    def __init__(self, msg: Any, reply: Reply) -> None:
        self.msg = msg
        self.reply = reply


class Cast:
    """A fire-and-forget message."""

    __slots__ = ("msg",)

    def __init__(self, msg: Any) -> None:
        self.msg = msg


Envelope = Call | Cast


class Incarnation:
    """One run of an actor: its mailbox and the calls it owes answers to."""

    __slots__ = ("alive", "name", "number", "pending", "send")

    def __init__(self, name: str, number: int, send: trio.MemorySendChannel[Envelope]) -> None:
        self.name = name
        self.number = number
        self.send = send
        self.pending: set[Reply] = set()
        self.alive = True

    def end(self, reason: ExitReason) -> None:
        """Mark dead and fail every call still waiting on this incarnation."""
        self.alive = False
        pending, self.pending = self.pending, set()
        for reply in pending:
            reply.fail(ActorDown(self.name, reason))


class Slot:
    """The registry entry of one actor, valid across its restarts until it exits for good."""

    __slots__ = ("_changed", "closed", "closed_reason", "current", "incarnations", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.current: Incarnation | None = None
        self.closed = False
        self.closed_reason: ExitReason | None = None
        self.incarnations = 0
        self._changed = trio.Event()

    def publish(self, incarnation: Incarnation) -> None:
        """Make a ready incarnation the one refs deliver to; wakes waiting callers."""
        self.current = incarnation
        self._wake()

    def vacate(self, incarnation: Incarnation) -> None:
        """The incarnation ended; callers wait for the next one (or for ``close``)."""
        if self.current is incarnation:
            self.current = None

    def close(self, reason: ExitReason | None) -> None:
        """The actor exited for good: waiting and future callers get ``ActorDown``."""
        self.closed = True
        self.closed_reason = reason
        self.current = None
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def incarnation(self) -> Incarnation:
        """The live incarnation, waiting through a restart; ``ActorDown`` once closed."""
        while True:
            if self.closed:
                raise ActorDown(self.name, self.closed_reason)
            current = self.current
            if current is not None and current.alive:
                return current
            await self._changed.wait()
