"""Why an actor or supervisor stopped: the exit reason that drives restart decisions.

OTP distinguishes ``normal``, ``shutdown`` and everything else (abnormal). We keep
the same three cases plus ``killed`` (the child overran its shutdown timeout and was
cancelled), which counts as abnormal, as in OTP.

Since 0.1.0.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ExitKind(enum.Enum):
    """The class of an exit; only CRASH and KILLED are abnormal."""

    NORMAL = "normal"
    SHUTDOWN = "shutdown"
    CRASH = "crash"
    KILLED = "killed"


@dataclass(frozen=True, slots=True)
class ExitReason:
    """An exit: its kind and, for a crash, the exception that caused it."""

    kind: ExitKind
    error: BaseException | None = None

    @property
    def abnormal(self) -> bool:
        """True for crashes and kills: transient children restart only on these."""
        return self.kind in (ExitKind.CRASH, ExitKind.KILLED)

    def describe(self) -> str:
        """A short human description, e.g. ``crash: ValueError('boom')``."""
        if self.error is None:
            return self.kind.value
        return f"{self.kind.value}: {self.error!r}"

    # The reasons without an error are immutable values: one shared instance each.
    @classmethod
    def normal(cls) -> ExitReason:
        return _NORMAL

    @classmethod
    def shutdown(cls) -> ExitReason:
        return _SHUTDOWN

    @classmethod
    def crash(cls, error: BaseException) -> ExitReason:
        return cls(ExitKind.CRASH, error)

    @classmethod
    def killed(cls) -> ExitReason:
        return _KILLED


_NORMAL = ExitReason(ExitKind.NORMAL)
_SHUTDOWN = ExitReason(ExitKind.SHUTDOWN)
_KILLED = ExitReason(ExitKind.KILLED)


def unwrap_group(exc: BaseException) -> BaseException:
    """The single leaf of nested one-member exception groups, else ``exc`` itself.

    Nurseries wrap even a lone failure in an ExceptionGroup; restart logic and logs
    want the exception the user's code actually raised.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
