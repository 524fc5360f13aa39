"""The session tree of one account: persister → signal_store → connection, rest_for_one.

::

    SessionSupervisor[account] (rest_for_one)
    ├── persister     permanent  the one durable writer (owns the backend)
    ├── signal_store  permanent  the SignalStore view; commits through the persister
    └── connection    transient  transport + protocol core; ends normally for good
                                 (logged out, replaced), restarted after a crash

rest_for_one: a persister crash restarts all three (the others' views depend on
it), a signal-store crash restarts it and the connection, a connection crash
restarts only the connection. Every restarted actor rebuilds its state from
the durable store. Events go to a sink owned by the runtime (its EventBus), so
subscribers survive every restart. The session's ``SessionStatus`` also lives
outside: the runtime reads the connection state and the end reason from it.

Backends: ``SharedBackend`` serves a backend the caller opened (a
``PersistedAuth``); a restarted persister reuses it and re-reads its creds.
``ReopeningBackend`` owns the location: a restarted persister closes the old
backend and opens it again, which runs the backend's recovery.

Since 0.1.0.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import trio

from actors.connection.actor import ConnectionActor, ConnectionSettings
from actors.events import EventSink
from actors.persister import DEFAULT_COALESCE_DELAY, BackendSource, Persister
from actors.recorder import NO_METRICS, SessionMetrics
from actors.signal_store import DEFAULT_STORE_TIMEOUT, SignalStoreActor, SignalStoreFactory
from actors.status import EndReason, SessionStatus
from runtime.child import ChildControl
from runtime.core import DEFAULT_MAX_RESTARTS, DEFAULT_MAX_SECONDS
from runtime.exit import ExitReason, unwrap_group
from runtime.log import Logger
from runtime.ref import ActorRef
from runtime.registry import Registry
from runtime.spec import Backoff, ChildSpec, Restart, Strategy
from runtime.supervisor import Supervisor
from stores.auth import PersistedAuth
from stores.errors import StoreLockedError
from stores.transactions import DEFAULT_CACHE_SIZE
from stores.types import Persistence

PERSISTER_SHUTDOWN = 30.0
"""Seconds the persister gets to write what is pending when asked to stop."""


class SharedBackend:
    """A backend opened by the caller; the session never closes or reopens it.

    One session per backend object: a second ``SharedBackend`` on a backend that a
    live one holds raises ``StoreLockedError`` (the file lock cannot see this case:
    it is the same open backend).
    """

    # id → the backend itself: holding it keeps the id from being reused while held.
    _in_use: ClassVar[dict[int, Persistence]] = {}

    def __init__(self, backend: Persistence) -> None:
        if SharedBackend._in_use.get(id(backend)) is backend:
            raise StoreLockedError(backend.location, "another session in this process")
        SharedBackend._in_use[id(backend)] = backend
        self._backend = backend
        self._released = False

    def __repr__(self) -> str:
        return f"SharedBackend({self.backend_name}:{self.location!r})"

    @property
    def backend_name(self) -> str:
        return self._backend.backend_name

    @property
    def location(self) -> str:
        return self._backend.location

    async def acquire(self) -> Persistence:
        await trio.lowlevel.checkpoint()
        return self._backend

    async def release(self, backend: Persistence) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """The session is over: the backend may serve another session."""
        if not self._released:
            self._released = True
            SharedBackend._in_use.pop(id(self._backend), None)
        await trio.lowlevel.checkpoint()


class ReopeningBackend:
    """A location the session owns: ``open()`` gives a fresh ``PersistedAuth`` on it.

    The first persister incarnation takes ``first`` (opened up front, so a locked
    location fails the start at once); every later one closes what the previous
    incarnation held, even if it was killed, and opens the location again.
    """

    def __init__(self, first: PersistedAuth, reopen: Callable[[], Awaitable[PersistedAuth]]):
        self._current: PersistedAuth | None = first
        self._fresh = True
        self._reopen = reopen
        self._name = first.backend.backend_name
        self._location = first.backend.location
        self.opens = 1

    def __repr__(self) -> str:
        return f"ReopeningBackend({self._name}:{self._location!r}, opens={self.opens})"

    @property
    def backend_name(self) -> str:
        return self._name

    @property
    def location(self) -> str:
        return self._location

    async def acquire(self) -> Persistence:
        if self._fresh and self._current is not None:
            self._fresh = False
            return self._current.backend
        await self._close_current()
        self._current = await self._reopen()
        self.opens += 1
        return self._current.backend

    async def release(self, backend: Persistence) -> None:
        if self._current is not None and self._current.backend is backend:
            await self._close_current()

    async def aclose(self) -> None:
        await self._close_current()

    async def _close_current(self) -> None:
        current, self._current = self._current, None
        self._fresh = False
        if current is not None:
            with trio.CancelScope(shield=True):
                await current.aclose()


@dataclass(frozen=True)
class SessionPlan:
    """Everything the session tree of one account is built from (immutable)."""

    account: str
    source: BackendSource
    connection: ConnectionSettings
    status: SessionStatus
    emit: EventSink
    signal_store: SignalStoreFactory | None = None
    signal_store_options: Mapping[str, Any] = field(default_factory=dict)
    cache_size: int | None = DEFAULT_CACHE_SIZE
    coalesce_delay: float = DEFAULT_COALESCE_DELAY
    store_timeout: float = DEFAULT_STORE_TIMEOUT
    max_restarts: int = DEFAULT_MAX_RESTARTS
    max_seconds: float = DEFAULT_MAX_SECONDS
    restart_backoff: Backoff | None = None
    metrics: SessionMetrics = NO_METRICS

    def name(self, child: str) -> str:
        """The registry name of one of this session's actors."""
        return f"session:{self.account}/{child}"


class SessionSupervisor(Supervisor):
    """The rest_for_one supervisor of one account; records a failure in the status."""

    def __init__(self, plan: SessionPlan, registry: Registry, log: Logger | None = None) -> None:
        self.plan = plan
        persister = registry.ref(plan.name("persister"))
        signal_store = registry.ref(plan.name("signal_store"))
        children = [
            ChildSpec(
                "persister",
                lambda: Persister(
                    plan.source,
                    emit=plan.emit,
                    coalesce_delay=plan.coalesce_delay,
                    metrics=plan.metrics,
                ),
                name=plan.name("persister"),
                shutdown=PERSISTER_SHUTDOWN,
                mailbox_size=1024,
            ),
            ChildSpec(
                "signal_store",
                lambda: SignalStoreActor(
                    persister,
                    factory=plan.signal_store,
                    options=plan.signal_store_options,
                    cache_size=plan.cache_size,
                    timeout=plan.store_timeout,
                ),
                name=plan.name("signal_store"),
            ),
            ChildSpec(
                "connection",
                lambda: ConnectionActor(
                    plan.connection,
                    persister=persister,
                    signal_store=signal_store,
                    status=plan.status,
                    emit=plan.emit,
                    metrics=plan.metrics,
                ),
                restart=Restart.TRANSIENT,
                name=plan.name("connection"),
            ),
        ]
        super().__init__(
            children,
            strategy=Strategy.REST_FOR_ONE,
            max_restarts=plan.max_restarts,
            max_seconds=plan.max_seconds,
            backoff=plan.restart_backoff,
            name=plan.account,
            registry=registry,
            log=log,
        )

    async def run_child(
        self, control: ChildControl, task_status: trio.TaskStatus[None]
    ) -> ExitReason:
        try:
            reason = await super().run_child(control, task_status)
        except BaseException as exc:
            leaf = unwrap_group(exc)
            if isinstance(leaf, Exception):
                self.plan.status.end(EndReason.FAILED, leaf)
            raise
        if reason.abnormal:
            self.plan.status.end(EndReason.FAILED, reason.error)
        return reason


def session_refs(plan: SessionPlan, registry: Registry) -> dict[str, ActorRef]:
    """Refs to the three actors of a session (valid across restarts)."""
    return {
        child: registry.ref(plan.name(child))
        for child in ("persister", "signal_store", "connection")
    }


def session_spec(plan: SessionPlan, registry: Registry, log: Logger | None = None) -> ChildSpec:
    """The ChildSpec of a session tree for a DynamicSupervisor (temporary: one run)."""
    return ChildSpec(
        plan.account,
        lambda: SessionSupervisor(plan, registry, log),
        restart=Restart.TEMPORARY,
    )


__all__ = [
    "PERSISTER_SHUTDOWN",
    "ReopeningBackend",
    "SessionPlan",
    "SessionSupervisor",
    "SharedBackend",
    "session_refs",
    "session_spec",
]
