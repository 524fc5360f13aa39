"""Child specs and the enums a supervisor is configured with.

Since 0.1.0.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runtime.errors import InvalidSpec

if TYPE_CHECKING:
    from runtime.actor import Actor
    from runtime.core import SupervisorBase

DEFAULT_WORKER_SHUTDOWN = 5.0
DEFAULT_MAILBOX_SIZE = 64


class Strategy(enum.Enum):
    """Which siblings restart together with a child that must be restarted."""

    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class Restart(enum.Enum):
    """When a child that exited is restarted."""

    PERMANENT = "permanent"  # always
    TRANSIENT = "transient"  # only after an abnormal exit (crash or kill)
    TEMPORARY = "temporary"  # never; the child is forgotten once it exits


class ChildKind(enum.Enum):
    """What a child is; decides its default shutdown timeout."""

    WORKER = "worker"
    SUPERVISOR = "supervisor"


@dataclass(frozen=True)
class Backoff:
    """Capped exponential restart delay with jitter, beyond OTP.

    The n-th restart inside the current intensity window waits
    ``min(max_delay, initial * factor ** (n - 1))``, scaled by a random factor in
    ``[1 - jitter, 1]``. Restarts are counted when the exit is seen, so the delay
    never lets a flapping child escape the intensity limit; once the window is quiet,
    n falls back and so does the delay.
    """

    initial: float = 0.1
    factor: float = 2.0
    max_delay: float = 5.0
    jitter: float = 0.2
    random: Callable[[], float] = field(default=random.random, compare=False)

    def __post_init__(self) -> None:
        where = "Backoff"
        if not (self.initial >= 0 and math.isfinite(self.initial)):
            raise InvalidSpec(where, "initial", f"must be a finite number >= 0, got {self.initial}")
        if not self.factor >= 1:
            raise InvalidSpec(where, "factor", f"must be >= 1, got {self.factor}")
        if not self.max_delay >= self.initial:
            raise InvalidSpec(where, "max_delay", f"must be >= initial, got {self.max_delay}")
        if not 0 <= self.jitter <= 1:
            raise InvalidSpec(where, "jitter", f"must be in [0, 1], got {self.jitter}")

    def delay(self, nth: int) -> float:
        """Seconds to wait before the ``nth`` (1-based) restart in the window."""
        base = min(self.max_delay, self.initial * self.factor ** max(0, nth - 1))
        return base * (1.0 - self.jitter * self.random())


ChildFactory = Callable[[], "Actor | SupervisorBase"]


@dataclass(frozen=True)
class ChildSpec:
    """How to start, restart and stop one child.

    ``start`` is called for every incarnation, so a restarted child never sees a
    stale object: it rebuilds its state in ``init``. ``shutdown`` is the seconds a
    child gets to stop after being asked (``None``: 5 s for workers, unlimited for
    supervisors; ``0``: cancelled at once). ``name`` is the registry name of a worker
    (default: its path, e.g. ``root/session/persister``); ``mailbox_size`` bounds its
    mailbox.
    """

    id: str
    start: ChildFactory
    restart: Restart = Restart.PERMANENT
    shutdown: float | None = None
    name: str | None = None
    mailbox_size: int = DEFAULT_MAILBOX_SIZE

    def __post_init__(self) -> None:
        where = f"ChildSpec({self.id!r})"
        if not isinstance(self.id, str) or not self.id or "/" in self.id:
            raise InvalidSpec(where, "id", "must be a non-empty string without '/'")
        if not callable(self.start):
            raise InvalidSpec(where, "start", "must be a callable returning a fresh child")
        if not isinstance(self.restart, Restart):
            raise InvalidSpec(where, "restart", f"must be a Restart, got {self.restart!r}")
        if self.shutdown is not None and not self.shutdown >= 0:
            raise InvalidSpec(where, "shutdown", f"must be >= 0 or None, got {self.shutdown}")
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise InvalidSpec(where, "name", "must be a non-empty string or None")
        if isinstance(self.mailbox_size, bool) or not (
            isinstance(self.mailbox_size, int) and self.mailbox_size >= 1
        ):
            raise InvalidSpec(
                where, "mailbox_size", f"must be an int >= 1, got {self.mailbox_size}"
            )

    def shutdown_for(self, kind: ChildKind) -> float:
        """The effective shutdown timeout for a child of this kind."""
        if self.shutdown is not None:
            return self.shutdown
        return DEFAULT_WORKER_SHUTDOWN if kind is ChildKind.WORKER else math.inf
