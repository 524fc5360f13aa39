"""The WhatsApp-free actor runtime: actors, supervisors, registry, event bus, logging.

Public names are re-exported here; everything else is internal. See
docs/supervision.md for the guide and ``runtime.supervisor`` for the rules table.

Since 0.1.0.
"""

from typing import TYPE_CHECKING, Any

from runtime.actor import Actor, ActorContext, StopActor
from runtime.child import ChildControl
from runtime.core import ChildInfo, SupervisorBase, SupervisorState, SupervisorStatistics, supervise
from runtime.dynamic import DynamicSupervisor, open_dynamic_supervisor
from runtime.errors import (
    ActorDown,
    ActorRuntimeError,
    BusClosed,
    CallTimeout,
    ChildStartError,
    DuplicateChild,
    InvalidSpec,
    MailboxFull,
    MaxChildren,
    NameTaken,
    NoSuchChild,
    ReplyAbandoned,
    ReplyTimeout,
    SupervisorGaveUp,
    SupervisorNotRunning,
    UnexpectedMessage,
)
from runtime.events import BusStatistics, EventBus, open_event_bus
from runtime.exit import ExitKind, ExitReason
from runtime.log import Logger, make_logger
from runtime.ref import ActorRef, RefStatistics
from runtime.registry import Registry
from runtime.reply import RepliesLater, Reply, ReplyBook, call_durable
from runtime.spec import Backoff, ChildKind, ChildSpec, Restart, Strategy
from runtime.supervisor import Supervisor, open_supervisor

if TYPE_CHECKING:
    from runtime.app import (
        AuthLocation,
        Config,
        Fleet,
        Runtime,
        Session,
        SessionFailed,
        open_runtime,
        run,
    )

# runtime.app wires actors and stores into session trees: it is imported only when
# one of its names is used, so `import runtime` stays WhatsApp-free.
_APP_NAMES = frozenset(
    {
        "AuthLocation",
        "Config",
        "Fleet",
        "Runtime",
        "Session",
        "SessionFailed",
        "open_runtime",
        "run",
    }
)


def __getattr__(name: str) -> Any:
    if name in _APP_NAMES:
        from runtime import app

        return getattr(app, name)
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")


__all__ = [
    "Actor",
    "ActorContext",
    "ActorDown",
    "ActorRef",
    "ActorRuntimeError",
    "AuthLocation",
    "Backoff",
    "BusClosed",
    "BusStatistics",
    "CallTimeout",
    "ChildControl",
    "ChildInfo",
    "ChildKind",
    "ChildSpec",
    "ChildStartError",
    "Config",
    "DuplicateChild",
    "DynamicSupervisor",
    "EventBus",
    "ExitKind",
    "ExitReason",
    "Fleet",
    "InvalidSpec",
    "Logger",
    "MailboxFull",
    "MaxChildren",
    "NameTaken",
    "NoSuchChild",
    "RefStatistics",
    "Registry",
    "RepliesLater",
    "Reply",
    "ReplyAbandoned",
    "ReplyBook",
    "ReplyTimeout",
    "Restart",
    "Runtime",
    "Session",
    "SessionFailed",
    "StopActor",
    "Strategy",
    "Supervisor",
    "SupervisorBase",
    "SupervisorGaveUp",
    "SupervisorNotRunning",
    "SupervisorState",
    "SupervisorStatistics",
    "UnexpectedMessage",
    "call_durable",
    "make_logger",
    "open_dynamic_supervisor",
    "open_event_bus",
    "open_runtime",
    "open_supervisor",
    "run",
    "supervise",
]
