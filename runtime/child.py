"""The contract between a supervisor and one running incarnation of a child.

Both actors and supervisors implement ``run_child(control, task_status)``: report
ready through ``task_status.started()``, run until done or asked to stop (via
``control.on_stop``), and return the ``ExitReason`` (or raise, which is a crash).
Before its first checkpoint a child hands its outermost cancel scope to
``control.adopt_kill_scope``: that is the scope a kill (shutdown timeout expired)
cancels, so the parent needs no scope of its own per child.

Since 0.1.0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import trio

from runtime.exit import ExitReason
from runtime.log import Logger
from runtime.mailbox import Slot

if TYPE_CHECKING:
    from runtime.registry import Registry


@dataclass(slots=True)
class ChildControl:
    """What a parent hands to one incarnation of a child, and how it asks it to stop."""

    path: str
    registry: Registry
    log: Logger
    slot: Slot | None = None
    mailbox_size: int = 64
    stop_requested: bool = False
    killed: bool = False
    _on_stop: Callable[[], None] | None = field(default=None, repr=False)
    _kill_scope: trio.CancelScope | None = field(default=None, repr=False)

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when a stop is requested (at once if it already was)."""
        self._on_stop = callback
        if self.stop_requested:
            callback()

    def adopt_kill_scope(self, scope: trio.CancelScope) -> None:
        """The scope a kill cancels: the child's own outermost one, entered before it
        first checkpoints (so a supervisor needs no extra scope per child).

        A child replaces it when it leaves it while still able to run (an actor's
        ``terminate``); a kill that came before is applied at once.
        """
        self._kill_scope = scope
        if self.killed:
            scope.cancel()

    def kill(self) -> None:
        """Cancel the child where it stands (its exit is then ``killed``); idempotent."""
        self.killed = True
        if self._kill_scope is not None:
            self._kill_scope.cancel()

    def request_stop(self) -> None:
        """Ask the child to stop gracefully; idempotent."""
        if self.stop_requested:
            return
        self.stop_requested = True
        if self._on_stop is not None:
            self._on_stop()


class Supervisable(Protocol):
    """Anything a supervisor can run as a child."""

    async def run_child(
        self, control: ChildControl, task_status: trio.TaskStatus[None]
    ) -> ExitReason: ...


class ReadyTracker:
    """A ``TaskStatus`` that remembers whether ``started`` was called.

    Given the parent's ``TaskStatus``, it reports ``ready_value`` to it on ``started``
    (or another value through ``report``) once, then lets go of it: trio's
    ``TaskStatus`` keeps the temporary nursery of ``nursery.start`` (a nursery and its
    cancel scope, ~1.3 KiB) alive as long as anything holds it, here a child's life.
    """

    __slots__ = ("_parent", "is_started", "on_started", "ready_value")

    def __init__(self, parent: trio.TaskStatus[Any] | None = None, ready_value: Any = None) -> None:
        self.is_started = False
        self.on_started: Callable[[], None] | None = None
        self._parent = parent
        self.ready_value = ready_value

    def started(self, value: Any = None) -> None:
        if self.is_started:
            raise RuntimeError("started() called twice on the same task status")
        self.is_started = True
        if self.on_started is not None:
            self.on_started()
        self.report(self.ready_value)

    def report(self, value: Any) -> None:
        """Tell the parent ``value`` now; only the first report reaches it."""
        parent, self._parent = self._parent, None
        if parent is not None:
            parent.started(value)
