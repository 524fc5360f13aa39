"""Every error the runtime raises, one class per thing that can go wrong.

All of them derive from :class:`ActorRuntimeError`, so ``except ActorRuntimeError``
catches exactly the runtime's own failures. Each error names what failed and where
(the actor name or supervisor path) in its message and in attributes.

Since 0.1.0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from runtime.exit import ExitReason


class ActorRuntimeError(Exception):
    """Base class of every error raised by the runtime package."""


class InvalidSpec(ActorRuntimeError, ValueError):
    """A child spec, supervisor option or backoff setting is malformed; ``field`` names it."""

    def __init__(self, where: str, field: str, problem: str) -> None:
        super().__init__(f"{where}: {field}: {problem}")
        self.where = where
        self.field = field
        self.problem = problem


class CallTimeout(ActorRuntimeError, TimeoutError):
    """``ActorRef.call`` got no reply before its deadline."""

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(f"call to actor {name!r} got no reply within {timeout:g} s")
        self.name = name
        self.timeout = timeout


class ActorDown(ActorRuntimeError):
    """The actor is gone for good, or died while handling (or holding) this message."""

    def __init__(self, name: str, reason: ExitReason | None = None) -> None:
        detail = "is not running" if reason is None else f"exited ({reason.describe()})"
        super().__init__(f"actor {name!r} {detail}")
        self.name = name
        self.reason = reason


class MailboxFull(ActorRuntimeError, trio.WouldBlock):
    """``cast_nowait`` could not deliver without waiting (mailbox full or actor restarting)."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"actor {name!r}: {why}")
        self.name = name


class ReplyAbandoned(ActorRuntimeError):
    """The actor that owed this reply ended before giving it.

    The request may or may not have taken effect (a commit may be durable): treat
    the outcome as unknown and re-read the durable state. Since 0.2.0 (was
    ``actors.errors.ReceiptAbandoned``).
    """

    def __init__(self, actor: str, what: str) -> None:
        super().__init__(f"{actor} ended before answering {what}; the outcome is unknown")
        self.actor = actor
        self.what = what


class ReplyTimeout(ActorRuntimeError, TimeoutError):
    """No reply within its deadline (the outcome is unknown). Since 0.2.0 (was
    ``actors.errors.ReceiptTimeout``)."""

    def __init__(self, what: str, timeout: float) -> None:
        super().__init__(f"no answer to {what} within {timeout:g} s; the outcome is unknown")
        self.what = what
        self.timeout = timeout


class NameTaken(ActorRuntimeError):
    """A registry name is already held by a live actor."""

    def __init__(self, name: str) -> None:
        super().__init__(f"registry name {name!r} is already taken")
        self.name = name


class UnexpectedMessage(ActorRuntimeError):
    """An actor received a call or cast it has no handler for (the default hooks raise this)."""

    def __init__(self, name: str, kind: str, message: object) -> None:
        super().__init__(f"actor {name!r} has no {kind} handler for {type(message).__name__}")
        self.name = name
        self.kind = kind


class ChildStartError(ActorRuntimeError):
    """A child failed to start (its factory or ``init`` raised, or it exited before ready)."""

    def __init__(self, path: str, reason: ExitReason) -> None:
        super().__init__(f"child {path!r} failed to start: {reason.describe()}")
        self.path = path
        self.reason = reason


class SupervisorGaveUp(ActorRuntimeError):
    """Restart intensity was exceeded: all children were stopped and the supervisor failed."""

    def __init__(
        self, path: str, child_id: str, max_restarts: int, max_seconds: float, last: ExitReason
    ) -> None:
        super().__init__(
            f"supervisor {path!r} gave up: more than {max_restarts} restarts in "
            f"{max_seconds:g} s, last by child {child_id!r} ({last.describe()})"
        )
        self.path = path
        self.child_id = child_id
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self.last = last


class SupervisorNotRunning(ActorRuntimeError):
    """A run-time operation was asked of a supervisor that is not (or no longer) running."""

    def __init__(self, path: str) -> None:
        super().__init__(f"supervisor {path!r} is not running")
        self.path = path


class NoSuchChild(ActorRuntimeError):
    """A supervisor has no child with this id."""

    def __init__(self, path: str, child_id: str) -> None:
        super().__init__(f"supervisor {path!r} has no child {child_id!r}")
        self.path = path
        self.child_id = child_id


class DuplicateChild(ActorRuntimeError):
    """A child with this id already exists under the supervisor."""

    def __init__(self, path: str, child_id: str) -> None:
        super().__init__(f"supervisor {path!r} already has a child {child_id!r}")
        self.path = path
        self.child_id = child_id


class MaxChildren(ActorRuntimeError):
    """A DynamicSupervisor already holds ``max_children`` children."""

    def __init__(self, path: str, max_children: int) -> None:
        super().__init__(f"supervisor {path!r} is full ({max_children} children)")
        self.path = path
        self.max_children = max_children


class BusClosed(ActorRuntimeError):
    """The event bus is not running (its context has exited)."""

    def __init__(self) -> None:
        super().__init__("the event bus is closed")
