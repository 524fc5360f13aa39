"""The WhatsApp-free actor runtime: actors, supervisors, registry, event bus, logging.

Public names are re-exported here; everything else is internal. See
docs/supervision.md for the guide and ``runtime.supervisor`` for the rules table.

Since 0.1.0.
"""

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
    SupervisorGaveUp,
    SupervisorNotRunning,
    UnexpectedMessage,
)
from runtime.events import BusStatistics, EventBus, open_event_bus
from runtime.exit import ExitKind, ExitReason
from runtime.log import Logger, make_logger
from runtime.ref import ActorRef, RefStatistics
from runtime.registry import Registry
from runtime.spec import Backoff, ChildKind, ChildSpec, Restart, Strategy
from runtime.supervisor import Supervisor, open_supervisor

__all__ = [
    "Actor",
    "ActorContext",
    "ActorDown",
    "ActorRef",
    "ActorRuntimeError",
    "Backoff",
    "BusClosed",
    "BusStatistics",
    "CallTimeout",
    "ChildControl",
    "ChildInfo",
    "ChildKind",
    "ChildSpec",
    "ChildStartError",
    "DuplicateChild",
    "DynamicSupervisor",
    "EventBus",
    "ExitKind",
    "ExitReason",
    "InvalidSpec",
    "Logger",
    "MailboxFull",
    "MaxChildren",
    "NameTaken",
    "NoSuchChild",
    "RefStatistics",
    "Registry",
    "Restart",
    "StopActor",
    "Strategy",
    "Supervisor",
    "SupervisorBase",
    "SupervisorGaveUp",
    "SupervisorNotRunning",
    "SupervisorState",
    "SupervisorStatistics",
    "UnexpectedMessage",
    "make_logger",
    "open_dynamic_supervisor",
    "open_event_bus",
    "open_supervisor",
    "supervise",
]
