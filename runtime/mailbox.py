"""Mailbox plumbing shared by actors and refs: envelopes, replies, incarnations, slots.

A *slot* is the stable home of one registered actor: it outlives incarnations, so a
restart swaps the incarnation inside it while every ``ActorRef`` keeps working.
An *incarnation* is one run of the actor with its own bounded mailbox; when it ends
its mailbox is closed and every caller still waiting on it gets ``ActorDown``.

Since 0.1.0.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Generic, TypeVar

import outcome
import trio
from trio.lowlevel import Abort, RaiseCancelT, Task

from runtime.errors import ActorDown
from runtime.exit import ExitReason
from runtime.flag import Flag

T = TypeVar("T")


class Mailbox(Generic[T]):
    """A bounded FIFO queue with one receiver: what an actor's mailbox needs, and no more.

    It keeps trio's memory-channel semantics for one receiving task at a fraction of
    the memory (an idle mailbox is one small object; its queue exists only while
    messages wait):

    - ``send`` waits while ``capacity`` messages wait (backpressure); senders blocked
      on a full mailbox get in, in the order they blocked, before any later sender.
    - A message reaches the receiver in the order it got in, exactly once: a send
      cancelled while it waits did not get in; a receive cancelled while it waits
      took nothing.
    - ``clear`` drops what waits; senders blocked for room then get in, in order.
    - ``close`` (the receiver is done) drops what still waits and fails every
      waiting and future send with ``trio.BrokenResourceError``.
    - ``wake`` makes a waiting ``receive`` return ``None`` without a message, so the
      receiver can notice a request (a stop) made while it was idle.

    Since 0.2.0.
    """

    __slots__ = ("_closed", "_queue", "_receiver", "_senders", "capacity")

    def __init__(self, capacity: float) -> None:
        if not capacity >= 1:
            raise ValueError(f"a mailbox holds at least one message, got capacity {capacity}")
        self.capacity = capacity
        self._queue: deque[T] | None = None
        self._senders: dict[Task, T] | None = None  # blocked senders, in arrival order
        self._receiver: Task | None = None
        self._closed = False

    def __len__(self) -> int:
        """Messages waiting to be received."""
        return len(self._queue) if self._queue is not None else 0

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def blocked_senders(self) -> int:
        return len(self._senders) if self._senders is not None else 0

    def send_nowait(self, msg: T) -> None:
        """Put ``msg`` in now; ``trio.WouldBlock`` when full or others already wait for room."""
        if self._closed:
            raise trio.BrokenResourceError("the mailbox is closed")
        if self._receiver is not None:
            receiver, self._receiver = self._receiver, None
            trio.lowlevel.reschedule(receiver, outcome.Value(msg))
            return
        if self._senders or len(self) >= self.capacity:
            raise trio.WouldBlock
        if self._queue is None:
            self._queue = deque()
        self._queue.append(msg)

    async def send(self, msg: T) -> None:
        """Put ``msg`` in, waiting for room; ``trio.BrokenResourceError`` once closed."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self.send_nowait(msg)
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        task = trio.lowlevel.current_task()
        if self._senders is None:
            self._senders = {}
        senders = self._senders
        senders[task] = msg

        def abort(_: RaiseCancelT) -> Abort:
            del senders[task]  # cancelled before getting in: the message was not sent
            return Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def receive_nowait(self) -> T:
        """The oldest message; ``trio.WouldBlock`` when none waits."""
        if self._closed:
            raise trio.ClosedResourceError("the mailbox is closed")
        queue = self._queue
        if not queue:
            raise trio.WouldBlock
        msg = queue.popleft()
        if self._senders:
            self._admit_blocked(queue)
        if not queue:
            self._queue = None  # an idle mailbox keeps no buffer
        return msg

    def _admit_blocked(self, queue: deque[T]) -> None:
        """Room was freed: the longest-blocked senders' messages get in, ahead of newcomers."""
        senders = self._senders
        while senders and len(queue) < self.capacity:
            task = next(iter(senders))
            queue.append(senders.pop(task))
            trio.lowlevel.reschedule(task)
        if not senders:
            self._senders = None

    async def receive(self) -> T | None:
        """The oldest message, waiting for one; ``None`` if woken by ``wake``."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            msg = self.receive_nowait()
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return msg
        if self._receiver is not None:
            raise trio.BusyResourceError("a mailbox has one receiver")
        self._receiver = trio.lowlevel.current_task()
        # A bound method, not a closure: an idle receiver holds one small object less.
        woken: T | None = await trio.lowlevel.wait_task_rescheduled(self._abort_receive)
        return woken

    def _abort_receive(self, _: RaiseCancelT) -> Abort:
        self._receiver = None  # cancelled while waiting: nothing was taken
        return Abort.SUCCEEDED

    def wake(self) -> None:
        """Make a waiting ``receive`` return ``None``; nothing happens if none waits."""
        if self._receiver is not None:
            receiver, self._receiver = self._receiver, None
            trio.lowlevel.reschedule(receiver, outcome.Value(None))

    def clear(self) -> int:
        """Drop the waiting messages; how many. Blocked senders then get in, oldest first.

        A blocked send was not in yet, so it is not dropped: it gets the freed room as
        receives would have given it, and the sends still blocked after that keep waiting.
        """
        dropped = len(self)
        self._queue = None
        if self._senders:
            queue: deque[T] = deque()
            self._admit_blocked(queue)
            self._queue = queue
        return dropped

    def close(self) -> None:
        """The receiver is done: drop waiting messages, fail every waiting and later send."""
        self._closed = True
        self._queue = None
        senders, self._senders = self._senders, None
        for task in senders or ():
            # One outcome per task: an outcome can be unwrapped only once.
            trio.lowlevel.reschedule(
                task, outcome.Error(trio.BrokenResourceError("the mailbox is closed"))
            )
        if self._receiver is not None:
            receiver, self._receiver = self._receiver, None
            trio.lowlevel.reschedule(receiver, outcome.Error(trio.ClosedResourceError("closed")))


class Reply:
    """A one-shot answer slot for a single call."""

    __slots__ = ("error", "event", "value")

    def __init__(self) -> None:
        self.event = Flag()
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

    __slots__ = ("_pending", "alive", "mailbox", "name", "number")

    def __init__(self, name: str, number: int, mailbox: Mailbox[Envelope]) -> None:
        self.name = name
        self.number = number
        self.mailbox = mailbox
        self._pending: set[Reply] | None = None  # made only while a call waits
        self.alive = True

    def end(self, reason: ExitReason) -> None:
        """Mark dead, close the mailbox and fail every call still waiting on this incarnation."""
        self.alive = False
        self.mailbox.close()
        pending, self._pending = self._pending, None
        for reply in pending or ():
            reply.fail(ActorDown(self.name, reason))

    def owe(self, reply: Reply) -> None:
        """A call is waiting on this incarnation for ``reply``."""
        if self._pending is None:
            self._pending = set()
        self._pending.add(reply)

    def forget(self, reply: Reply) -> None:
        """That call is no longer waiting (answered, undeliverable or cancelled)."""
        if self._pending is not None:
            self._pending.discard(reply)
            if not self._pending:
                self._pending = None

    @property
    def pending_calls(self) -> int:
        return len(self._pending) if self._pending is not None else 0


class Slot:
    """The registry entry of one actor, valid across its restarts until it exits for good."""

    __slots__ = ("_changed", "closed", "closed_reason", "current", "incarnations", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.current: Incarnation | None = None
        self.closed = False
        self.closed_reason: ExitReason | None = None
        self.incarnations = 0
        self._changed: trio.Event | None = None  # made only while someone waits

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
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def incarnation(self) -> Incarnation:
        """The live incarnation, waiting through a restart; ``ActorDown`` once closed."""
        while True:
            if self.closed:
                raise ActorDown(self.name, self.closed_reason)
            current = self.current
            if current is not None and current.alive:
                return current
            if self._changed is None:
                self._changed = trio.Event()
            await self._changed.wait()
