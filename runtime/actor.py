"""``Actor``: a unit of state with a bounded mailbox, run by a supervisor.

Subclass and override the hooks (all optional):

- ``init()``: build state (from the durable store, never from a stale copy); the
  actor is ready, and its mailbox open to refs, only after it returns.
- ``handle_call(msg) -> reply`` and ``handle_cast(msg)``: one message at a time, in
  arrival order. Raising crashes the incarnation (callers waiting get ``ActorDown``);
  raising ``StopActor`` ends it with a normal or shutdown exit instead.
- ``terminate(reason)``: last words, called once the mailbox loop has ended and the
  actor's background tasks are cancelled, within the child's shutdown timeout. Not
  called when ``init`` failed or the actor was killed.

``self.ctx`` (set before ``init``) gives the actor's ref, name, path, registry, bound
logger and a nursery for background tasks that live as long as the incarnation; an
exception escaping such a task crashes the actor.

Since 0.1.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import trio

from runtime.child import ChildControl
from runtime.errors import ActorRuntimeError, UnexpectedMessage
from runtime.exit import ExitKind, ExitReason, unwrap_group
from runtime.log import Logger
from runtime.mailbox import Call, Envelope, Incarnation, Mailbox
from runtime.ref import ActorRef
from runtime.registry import Registry


class StopActor(Exception):
    """Raise from a handler (or a background task) to end the actor without crashing.

    ``kind`` is ``ExitKind.NORMAL`` (default) or ``ExitKind.SHUTDOWN``; a transient
    child is restarted after neither.
    """

    def __init__(self, kind: ExitKind = ExitKind.NORMAL) -> None:
        if kind not in (ExitKind.NORMAL, ExitKind.SHUTDOWN):
            raise ValueError(f"StopActor kind must be NORMAL or SHUTDOWN, got {kind}")
        super().__init__(kind.value)
        self.kind = kind


def exit_reason_of(exc: BaseException) -> ExitReason:
    """The exit reason an exception escaping a child stands for."""
    leaf = unwrap_group(exc)
    if isinstance(leaf, StopActor):
        return ExitReason(leaf.kind)
    return ExitReason.crash(leaf)


@dataclass(frozen=True, slots=True)
class ActorContext:
    """What one incarnation of an actor knows about its place in the tree."""

    ref: ActorRef
    name: str
    path: str
    incarnation: int
    registry: Registry
    log: Logger
    nursery: trio.Nursery


class Actor:
    """Base class of every actor. See the module docstring for the hooks."""

    _ctx: ActorContext | None = None

    @property
    def ctx(self) -> ActorContext:
        """This incarnation's context; available from ``init`` on."""
        if self._ctx is None:
            raise ActorRuntimeError(f"{type(self).__name__} is not running under a supervisor")
        return self._ctx

    async def init(self) -> None:
        """Build the actor's state. The actor receives messages only after this returns."""

    async def handle_call(self, msg: Any) -> Any:
        """Answer a call. The default crashes: an actor must opt in to calls."""
        raise UnexpectedMessage(self.ctx.name, "call", msg)

    async def handle_cast(self, msg: Any) -> None:
        """Handle a cast. The default crashes: an actor must opt in to casts."""
        raise UnexpectedMessage(self.ctx.name, "cast", msg)

    async def terminate(self, reason: ExitReason) -> None:
        """Clean up after the mailbox loop ended with ``reason``."""

    async def run_child(
        self, control: ChildControl, task_status: trio.TaskStatus[None]
    ) -> ExitReason:
        """Run one incarnation under a supervisor (the ``Supervisable`` contract)."""
        slot = control.slot
        if slot is None:
            raise ActorRuntimeError(f"actor at {control.path!r} was started without a slot")
        if self._ctx is not None:
            # State from a previous incarnation must never leak into the next one.
            raise ActorRuntimeError(
                f"actor at {control.path!r} already ran; a ChildSpec must build a fresh one"
            )
        slot.incarnations += 1
        mailbox: Mailbox[Envelope] = Mailbox(control.mailbox_size)
        incarnation = Incarnation(slot.name, slot.incarnations, mailbox)
        ready = False
        reason = ExitReason.killed()  # stays so only if cancelled from outside
        try:
            async with trio.open_nursery() as nursery:
                control.adopt_kill_scope(nursery.cancel_scope)
                self._ctx = ActorContext(
                    ref=ActorRef(control.registry, slot.name),
                    name=slot.name,
                    path=control.path,
                    incarnation=incarnation.number,
                    registry=control.registry,
                    log=control.log,
                    nursery=nursery,
                )
                await self.init()
                slot.publish(incarnation)
                ready = True
                task_status.started()
                reason = await self._serve(mailbox, control)
                nursery.cancel_scope.cancel()
        except Exception as exc:
            reason = exit_reason_of(exc)
        finally:
            # Runs on every exit, even when killed: no caller may wait on a dead mailbox.
            incarnation.end(reason)
            slot.vacate(incarnation)
        if ready and not control.killed:
            with trio.CancelScope() as terminating:
                control.adopt_kill_scope(terminating)  # a kill may still cut terminate short
                try:
                    await self.terminate(reason)
                except Exception as exc:
                    reason = ExitReason.crash(exc)
        return reason

    async def _serve(self, mailbox: Mailbox[Envelope], control: ChildControl) -> ExitReason:
        """The mailbox loop; returns SHUTDOWN once asked to stop (after the message in hand)."""
        # A stop wakes an idle wait; a busy handler finishes and the loop sees the flag.
        control.on_stop(mailbox.wake)
        while not control.stop_requested:
            envelope = await mailbox.receive()
            if envelope is None:
                continue
            if isinstance(envelope, Call):
                envelope.reply.resolve(await self.handle_call(envelope.msg))
            else:
                await self.handle_cast(envelope.msg)
        return ExitReason.shutdown()
