"""``ActorRef``: the address of an actor, valid across its restarts.

A ref holds only a registry and a name. Every operation looks the name up, so it
always reaches the current incarnation; while the actor is between incarnations,
``call`` and ``cast`` wait (``call`` within its deadline) instead of failing.

Since 0.1.0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from runtime.errors import ActorDown, CallTimeout, InvalidSpec, MailboxFull
from runtime.mailbox import Call, Cast, Reply, Slot

if TYPE_CHECKING:
    from runtime.registry import Registry

DEFAULT_CALL_TIMEOUT = 5.0
_DELIVERY_FAILED = trio.BrokenResourceError  # the incarnation closed its mailbox


@dataclass(frozen=True)
class RefStatistics:
    """A snapshot of what a ref points at."""

    name: str
    registered: bool
    running: bool
    incarnations: int
    mailbox_used: int
    mailbox_size: float
    pending_calls: int


class ActorRef:
    """Address of a registered actor. Cheap to copy; compare equal by registry and name."""

    __slots__ = ("_registry", "name")

    def __init__(self, registry: Registry, name: str) -> None:
        self._registry = registry
        self.name = name

    def __repr__(self) -> str:
        return f"ActorRef({self.name!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ActorRef):
            return NotImplemented
        return self._registry is other._registry and self.name == other.name

    def __hash__(self) -> int:
        return hash((id(self._registry), self.name))

    def _slot(self) -> Slot:
        slot = self._registry._slot(self.name)
        if slot is None:
            raise ActorDown(self.name)
        return slot

    # The issue fixes this signature: a per-call deadline is part of the call protocol.
    async def call(self, msg: Any, *, timeout: float = DEFAULT_CALL_TIMEOUT) -> Any:  # noqa: ASYNC109
        """Send ``msg`` to ``handle_call`` and return its reply.

        Raises ``CallTimeout`` when no reply comes within ``timeout`` seconds (waiting
        for a restart or for mailbox room counts against it), ``ActorDown`` when the
        actor is gone for good or dies before answering. Never hangs past the deadline.
        """
        if not timeout >= 0:  # also refuses NaN
            raise InvalidSpec(
                f"ActorRef({self.name!r}).call", "timeout", f"must be >= 0, got {timeout}"
            )
        with trio.move_on_after(timeout):
            while True:
                incarnation = await self._slot().incarnation()
                reply = Reply()
                incarnation.owe(reply)
                try:
                    await incarnation.mailbox.send(Call(msg, reply))
                except _DELIVERY_FAILED:
                    # The incarnation died before taking the message: wait for the next one.
                    incarnation.forget(reply)
                    continue
                try:
                    await reply.event.wait()
                finally:
                    incarnation.forget(reply)
                return reply.result()
        raise CallTimeout(self.name, timeout)

    async def cast(self, msg: Any) -> None:
        """Deliver ``msg`` to ``handle_cast``, waiting for mailbox room or a restart.

        Raises ``ActorDown`` if the actor is gone for good. Bound the wait with
        ``trio.move_on_after`` if you need to.
        """
        while True:
            incarnation = await self._slot().incarnation()
            try:
                await incarnation.mailbox.send(Cast(msg))
            except _DELIVERY_FAILED:
                continue
            return

    def cast_nowait(self, msg: Any) -> None:
        """Deliver ``msg`` now or raise ``MailboxFull`` (full, or between incarnations).

        Raises ``ActorDown`` if the actor is gone for good.
        """
        slot = self._slot()
        if slot.closed:
            raise ActorDown(self.name, slot.closed_reason)
        incarnation = slot.current
        if incarnation is None or not incarnation.alive:
            raise MailboxFull(self.name, "actor is restarting")
        try:
            incarnation.mailbox.send_nowait(Cast(msg))
        except trio.WouldBlock:
            raise MailboxFull(self.name, "mailbox is full") from None
        except _DELIVERY_FAILED:
            raise MailboxFull(self.name, "actor is restarting") from None

    def statistics(self) -> RefStatistics:
        """What the name currently resolves to (for introspection and tests)."""
        slot = self._registry._slot(self.name)
        incarnation = slot.current if slot is not None else None
        if incarnation is None or slot is None:
            return RefStatistics(
                self.name,
                slot is not None,
                False,
                slot.incarnations if slot is not None else 0,
                0,
                math.nan,
                0,
            )
        return RefStatistics(
            self.name,
            True,
            incarnation.alive,
            slot.incarnations,
            len(incarnation.mailbox),
            incarnation.mailbox.capacity,
            incarnation.pending_calls,
        )
