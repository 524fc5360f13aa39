"""Machinery shared by ``Supervisor`` and ``DynamicSupervisor``.

Starting children in order with readiness, stopping them in reverse within their
shutdown timeouts, deciding restarts, counting restart intensity, applying backoff,
and failing upward. The rules are tabled in ``runtime.supervisor``'s docstring.

A supervisor handles one exit at a time (like an OTP supervisor process): exits
arrive in an inbox and are processed under a lock that run-time operations
(``start_child``, ``terminate_child``) also take.

Since 0.1.0.
"""

from __future__ import annotations

import enum
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import trio

from runtime.actor import Actor, exit_reason_of
from runtime.child import ChildControl, ReadyTracker, Supervisable
from runtime.errors import (
    ActorRuntimeError,
    ChildStartError,
    InvalidSpec,
    NoSuchChild,
    SupervisorGaveUp,
    SupervisorNotRunning,
)
from runtime.exit import ExitKind, ExitReason, unwrap_group
from runtime.flag import Flag
from runtime.log import Logger, default_logger
from runtime.mailbox import Mailbox, Slot
from runtime.ref import ActorRef
from runtime.registry import Registry
from runtime.spec import Backoff, ChildKind, ChildSpec, Restart

DEFAULT_MAX_RESTARTS = 3
DEFAULT_MAX_SECONDS = 5.0


class SupervisorState(enum.Enum):
    """Lifecycle of one supervisor object (each object runs once)."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True)
class ChildInfo:
    """A snapshot of one child, as ``which_children`` reports it."""

    id: str
    kind: ChildKind | None  # None until the child has been started once
    restart: Restart
    running: bool
    name: str | None  # registry name of a worker
    restarts: int  # times this child was restarted by this supervisor
    supervisor: SupervisorBase | None  # the running incarnation, for supervisor children


@dataclass(frozen=True)
class SupervisorStatistics:
    """A snapshot of a supervisor for introspection and tests."""

    path: str
    state: SupervisorState
    children: int
    running: int
    restarts_in_window: int
    total_restarts: int


class _Running:
    """One running incarnation of a child, as its supervisor tracks it."""

    __slots__ = ("control", "done", "epoch", "obj", "reason", "stopping")

    def __init__(self, obj: Supervisable, control: ChildControl, epoch: int) -> None:
        self.obj = obj
        self.control = control
        self.epoch = epoch
        self.done = Flag()
        self.reason = ExitReason.killed()
        self.stopping = False


class _Child:
    """A child spec plus its current state under this supervisor."""

    __slots__ = ("epoch", "kind", "restarts", "running", "slot", "spec")

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.kind: ChildKind | None = None
        self.slot: Slot | None = None
        self.running: _Running | None = None
        self.restarts = 0
        # Bumped whenever the supervisor starts or stops the child, so an exit report
        # from an incarnation the supervisor already dealt with is recognised as stale.
        self.epoch = 0


@dataclass(frozen=True)
class _Exit:
    child: _Child
    epoch: int
    reason: ExitReason
    start_failed: bool = False  # already logged as child_start_failed


class _Outcome(enum.Enum):
    STARTED = "started"
    FAILED = "failed"


def should_restart(restart: Restart, reason: ExitReason) -> bool:
    """OTP's rule: permanent always, transient only after an abnormal exit, temporary never."""
    if restart is Restart.PERMANENT:
        return True
    if restart is Restart.TRANSIENT:
        return reason.abnormal
    return False


def _kind_of(obj: object, where: str) -> ChildKind:
    if isinstance(obj, Actor):
        return ChildKind.WORKER
    if isinstance(obj, SupervisorBase):
        return ChildKind.SUPERVISOR
    raise InvalidSpec(where, "start", f"returned {type(obj).__name__}, not an Actor or supervisor")


class SupervisorBase:
    """Common core; use ``Supervisor`` or ``DynamicSupervisor``."""

    def __init__(
        self,
        *,
        max_restarts: int,
        max_seconds: float,
        backoff: Backoff | None,
        name: str,
        registry: Registry | None,
        log: Logger | None,
    ) -> None:
        where = f"{type(self).__name__}({name!r})"
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise InvalidSpec(where, "max_restarts", f"must be an int >= 0, got {max_restarts!r}")
        if not (max_seconds > 0 and math.isfinite(max_seconds)):
            raise InvalidSpec(where, "max_seconds", f"must be finite and > 0, got {max_seconds!r}")
        if backoff is not None and not isinstance(backoff, Backoff):
            raise InvalidSpec(where, "backoff", f"must be a Backoff or None, got {backoff!r}")
        if not name or "/" in name:
            raise InvalidSpec(where, "name", "must be a non-empty string without '/'")
        self._max_restarts = max_restarts
        self._max_seconds = float(max_seconds)
        self._backoff = backoff
        self._path = name
        self._given_registry = registry
        self._given_log = log
        self._registry = registry if registry is not None else Registry()
        self._log: Logger = (log if log is not None else default_logger()).bind(supervisor=name)
        self._children: dict[str, _Child] = {}
        # Lists, not deques: both stay tiny, and an empty deque costs ~600 B per supervisor.
        self._window: list[float] = []
        self._total_restarts = 0
        self._state = SupervisorState.NEW
        self._inbox: Mailbox[_Exit] = Mailbox(math.inf)
        self._retry: list[_Exit] = []
        self._lock = trio.Lock()
        self._control: ChildControl | None = None
        self._stop_event = Flag()
        self._done = Flag()
        self._nursery: trio.Nursery | None = None
        self._stop_before_start = False
        self._top_level = False

    # ----------------------------------------------------------------- public API

    @property
    def path(self) -> str:
        """Where this supervisor sits in the tree, e.g. ``root/sessions/alice``."""
        return self._path

    @property
    def registry(self) -> Registry:
        """The registry its workers' names live in."""
        return self._registry

    @property
    def state(self) -> SupervisorState:
        return self._state

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run as the top of a tree: ``await nursery.start(sup.run)``.

        Ready once every child is ready. Returns after ``request_stop``/``aclose`` has
        stopped every child in reverse order. Raises ``ChildStartError`` if a child
        fails to start, ``SupervisorGaveUp`` when restart intensity is exceeded.
        """
        self._top_level = True
        control = ChildControl(path=self._path, registry=self._registry, log=self._log)
        if self._stop_before_start:
            control.stop_requested = True
        reason = await self.run_child(control, task_status)
        self._log.info("supervisor_stopped", path=self._path, reason=reason.describe())

    def request_stop(self) -> None:
        """Ask for an orderly stop (children in reverse order); returns at once."""
        if self._control is not None:
            self._control.request_stop()
        else:
            self._stop_before_start = True

    async def aclose(self) -> None:
        """Stop in order and wait until every child has stopped. Idempotent."""
        self.request_stop()
        if self._state is not SupervisorState.NEW:
            await self._done.wait()
        else:
            await trio.lowlevel.checkpoint()

    async def wait_stopped(self) -> None:
        """Wait until this supervisor has stopped or failed (returns at once if it has)."""
        await self._done.wait()

    def ref(self, child_id: str) -> ActorRef:
        """A ref to the worker child ``child_id`` (its name: spec.name or its path)."""
        child = self._children.get(child_id)
        if child is None:
            raise NoSuchChild(self._path, child_id)
        return self._registry.ref(self._name_of(child))

    def which_children(self) -> list[ChildInfo]:
        """Every child in start order, with whether it runs now."""
        return [self._info(child) for child in self._children.values()]

    def statistics(self) -> SupervisorStatistics:
        """Counts, including restarts inside the current intensity window."""
        now = trio.current_time()
        in_window = sum(1 for t in self._window if now - t < self._max_seconds)
        running = sum(1 for c in self._children.values() if c.running is not None)
        return SupervisorStatistics(
            self._path,
            self._state,
            len(self._children),
            running,
            in_window,
            self._total_restarts,
        )

    async def terminate_child(self, child_id: str) -> None:
        """Stop one child within its shutdown timeout; it is not restarted."""
        self._require_running()
        async with self._lock:
            child = self._children.get(child_id)
            if child is None:
                raise NoSuchChild(self._path, child_id)
            await self._stop_child(child)
            self._retire(child, ExitReason.shutdown())

    # ------------------------------------------------------- the child contract

    async def run_child(
        self, control: ChildControl, task_status: trio.TaskStatus[None]
    ) -> ExitReason:
        """Run this supervisor as a child (or, via ``run``, as the root)."""
        if self._state is not SupervisorState.NEW:
            raise ActorRuntimeError(
                f"supervisor {self._path!r} already ran; a ChildSpec must build a fresh one"
            )
        self._adopt(control)
        self._state = SupervisorState.STARTING
        outcome: ExitReason | ActorRuntimeError = ExitReason.killed()
        try:
            async with trio.open_nursery() as nursery:
                control.adopt_kill_scope(nursery.cancel_scope)
                self._nursery = nursery
                control.on_stop(self._wake_for_stop)
                outcome = await self._start_initial()
                if isinstance(outcome, ExitReason):
                    self._state = SupervisorState.RUNNING
                    if self._top_level:
                        self._log.info(
                            "supervisor_started", path=self._path, children=len(self._children)
                        )
                    task_status.started()
                    outcome = await self._serve(control)
        finally:
            # Cancelled from outside: children died with the nursery, no order possible;
            # still, no caller may keep waiting on a name that will not come back.
            for child in list(self._children.values()):
                self._close_slot(child, ExitReason.shutdown())
            failed = not isinstance(outcome, ExitReason) or outcome.kind is ExitKind.KILLED
            self._state = SupervisorState.FAILED if failed else SupervisorState.STOPPED
            self._done.set()
        if isinstance(outcome, ActorRuntimeError):
            raise outcome
        return outcome

    def _adopt(self, control: ChildControl) -> None:
        self._control = control
        self._path = control.path
        if self._given_registry is None:
            self._registry = control.registry
        else:
            control.registry = self._registry
        base = self._given_log if self._given_log is not None else control.log
        self._log = base.bind(supervisor=control.path)

    def _wake_for_stop(self) -> None:
        self._stop_event.set()
        self._inbox.wake()

    # ----------------------------------------------------------------- the loop

    async def _start_initial(self) -> ExitReason | ActorRuntimeError:
        async with self._lock:
            for child in list(self._children.values()):
                failure = await self._start_child(child)
                if failure is not None:
                    await self._stop_all()
                    return ChildStartError(self._child_path(child), failure)
        return ExitReason.normal()

    async def _serve(self, control: ChildControl) -> ExitReason | ActorRuntimeError:
        while True:
            if control.stop_requested:
                self._state = SupervisorState.STOPPING
                async with self._lock:
                    await self._stop_all()
                return ExitReason.shutdown()
            exit_ = self._retry.pop(0) if self._retry else await self._inbox.receive()
            if exit_ is None:
                continue
            async with self._lock:
                gave_up = await self._handle_exit(exit_)
            if gave_up is not None:
                return gave_up

    async def _handle_exit(self, exit_: _Exit) -> SupervisorGaveUp | None:
        child = exit_.child
        if self._children.get(child.spec.id) is not child or child.epoch != exit_.epoch:
            return None  # the supervisor already stopped or replaced that incarnation
        child.running = None
        reason = exit_.reason
        log = self._child_log(child)
        if exit_.start_failed:
            pass
        elif reason.abnormal:
            log.error("child_crashed", reason=reason.describe(), exc_info=reason.error)
        else:
            log.info("child_exited", reason=reason.describe())
        if not should_restart(child.spec.restart, reason):
            self._retire(child, reason)
            return None
        now = trio.current_time()
        while self._window and now - self._window[0] >= self._max_seconds:
            del self._window[0]
        self._window.append(now)
        if len(self._window) > self._max_restarts:
            return await self._give_up(child, reason)
        nth = len(self._window)
        self._total_restarts += 1
        child.restarts += 1
        group = self._restart_group(child)
        for other in reversed(group):
            if other is not child:
                await self._stop_child(other)
        for other in group:
            if other is not child and other.spec.restart is Restart.TEMPORARY:
                self._retire(other, ExitReason.shutdown())
        delay = self._backoff.delay(nth) if self._backoff is not None else 0.0
        log.warning(
            "child_restarting",
            restart_count=nth,
            max_restarts=self._max_restarts,
            max_seconds=self._max_seconds,
            delay=round(delay, 6),
            child_restarts=child.restarts,
        )
        if delay > 0:
            with trio.move_on_after(delay):
                await self._stop_event.wait()
            if self._stop_event.is_set():
                return None
        for other in group:
            if self._children.get(other.spec.id) is not other:
                continue
            failure = await self._start_child(other)
            if failure is not None:
                # A failed restart counts as another exit of that child (as in OTP).
                self._retry.append(_Exit(other, other.epoch, failure, start_failed=True))
                break
        return None

    async def _give_up(self, child: _Child, reason: ExitReason) -> SupervisorGaveUp:
        self._log.error(
            "supervisor_gave_up",
            path=self._path,
            child=child.spec.id,
            max_restarts=self._max_restarts,
            max_seconds=self._max_seconds,
            reason=reason.describe(),
        )
        self._state = SupervisorState.STOPPING
        await self._stop_all()
        return SupervisorGaveUp(
            self._path, child.spec.id, self._max_restarts, self._max_seconds, reason
        )

    # ------------------------------------------------------- start / stop a child

    async def _start_child(self, child: _Child) -> ExitReason | None:
        """Start one incarnation and wait until it is ready; the failure reason if not."""
        path = self._child_path(child)
        log = self._child_log(child)
        child.epoch += 1
        try:
            obj = child.spec.start()
            kind = _kind_of(obj, f"ChildSpec({child.spec.id!r}) at {path!r}")
            if kind is ChildKind.WORKER and child.slot is None:
                slot = Slot(self._name_of(child))
                self._registry._register(slot)
                child.slot = slot
        except Exception as exc:
            reason = ExitReason.crash(exc)
            log.error("child_start_failed", reason=reason.describe(), exc_info=exc)
            return reason
        child.kind = kind
        control = ChildControl(
            path=path,
            registry=self._registry,
            log=log,
            slot=child.slot if kind is ChildKind.WORKER else None,
            mailbox_size=child.spec.mailbox_size,
        )
        running = _Running(obj, control, child.epoch)
        child.running = running
        assert self._nursery is not None
        outcome = await self._nursery.start(self._child_task, child, running)
        if outcome is _Outcome.FAILED:
            child.running = None
            reason = running.reason
            log.error(
                "child_start_failed",
                kind=kind.value,
                reason=reason.describe(),
                exc_info=reason.error,
            )
            return reason
        incarnation = child.slot.incarnations if child.slot is not None else None
        log.info("child_started", kind=kind.value, incarnation=incarnation, restarts=child.restarts)
        return None

    async def _child_task(
        self,
        child: _Child,
        running: _Running,
        *,
        task_status: trio.TaskStatus[_Outcome] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        ready = ReadyTracker(task_status, _Outcome.STARTED)
        del task_status  # ready reports to it once and lets go (see ReadyTracker)
        # A kill cancels the child's own outermost scope (ChildControl.adopt_kill_scope):
        # one scope per child fewer than wrapping the call in a scope of ours.
        try:
            reason = await running.obj.run_child(running.control, ready)
        except Exception as exc:
            reason = exit_reason_of(exc)
        if running.control.killed:
            reason = ExitReason.killed()
        running.reason = reason
        running.done.set()
        if not ready.is_started:
            ready.report(_Outcome.FAILED)
        elif not running.stopping:
            self._inbox.send_nowait(_Exit(child, running.epoch, reason))

    async def _stop_child(self, child: _Child) -> None:
        """Ask a child to stop, wait its shutdown timeout, then cancel it."""
        child.epoch += 1
        running = child.running
        if running is None:
            return
        child.running = None
        running.stopping = True
        if not running.done.is_set():
            kind = child.kind if child.kind is not None else ChildKind.WORKER
            timeout = child.spec.shutdown_for(kind)
            if timeout > 0:  # 0 is OTP's brutal_kill: no request, no terminate
                running.control.request_stop()
                with trio.move_on_after(timeout):
                    await running.done.wait()
            if not running.done.is_set():
                running.control.kill()
                await running.done.wait()
        reason = running.reason
        self._child_log(child).info(
            "child_stopped", reason=reason.describe(), killed=reason.kind is ExitKind.KILLED
        )

    async def _stop_all(self) -> None:
        """Stop every child, last started first; close every name."""
        for child in reversed(list(self._children.values())):
            await self._stop_child(child)
        for child in list(self._children.values()):
            self._retire(child, ExitReason.shutdown())

    # ------------------------------------------------------------------ helpers

    def _restart_group(self, child: _Child) -> list[_Child]:
        """Children to restart, in start order, when ``child`` must restart."""
        return [child]

    def _forget_on_exit(self, child: _Child) -> bool:
        """Whether a child that exited for good leaves the child list."""
        return child.spec.restart is Restart.TEMPORARY

    def _retire(self, child: _Child, reason: ExitReason) -> None:
        """The child will not run again (unless restarted explicitly or by a group)."""
        self._close_slot(child, reason)
        if self._forget_on_exit(child) and self._children.get(child.spec.id) is child:
            del self._children[child.spec.id]

    def _close_slot(self, child: _Child, reason: ExitReason) -> None:
        if child.slot is not None:
            child.slot.close(reason)
            self._registry._unregister(child.slot)
            child.slot = None

    def _require_running(self) -> None:
        if self._state is not SupervisorState.RUNNING:
            raise SupervisorNotRunning(self._path)

    def _child_path(self, child: _Child) -> str:
        return f"{self._path}/{child.spec.id}"

    def _name_of(self, child: _Child) -> str:
        return child.spec.name if child.spec.name is not None else self._child_path(child)

    def _child_log(self, child: _Child) -> Logger:
        return self._log.bind(child=child.spec.id, path=self._child_path(child))

    def _info(self, child: _Child) -> ChildInfo:
        running = child.running
        sup = running.obj if running is not None else None
        return ChildInfo(
            id=child.spec.id,
            kind=child.kind,
            restart=child.spec.restart,
            running=running is not None,
            name=self._name_of(child) if child.kind is not ChildKind.SUPERVISOR else None,
            restarts=child.restarts,
            supervisor=sup if isinstance(sup, SupervisorBase) else None,
        )


S = TypeVar("S", bound=SupervisorBase)


@asynccontextmanager
async def supervise(sup: S) -> AsyncIterator[S]:
    """Run ``sup`` for the duration of the block, then stop it in order.

    The tree is ready when the block starts. Leaving the block (normally, by an
    exception or by cancellation) stops every child in reverse order within its
    shutdown timeout, shielded from the cancellation so the order holds. If the
    supervisor gives up meanwhile, the block is cancelled and ``SupervisorGaveUp``
    is raised from the ``async with``.

    Embedding with ``nursery.start(sup.run)`` instead gives no such guarantee:
    cancelling that nursery cancels the whole tree at once; call ``aclose()`` first.
    """
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(_run_shielded_once_ready, sup)
            try:
                yield sup
            finally:
                with trio.CancelScope(shield=True):
                    await sup.aclose()
    except BaseExceptionGroup as group:
        leaf = unwrap_group(group)
        if leaf is group:
            raise
        raise leaf from None


async def _run_shielded_once_ready(
    sup: SupervisorBase, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run ``sup``; once ready, outside cancellation no longer reaches it.

    Stopping is then ``supervise``'s job (an ordered ``aclose``), bounded by the
    children's shutdown timeouts. Before ready it stays cancellable, so a start that
    hangs can still be abandoned.
    """
    with trio.CancelScope() as scope:
        ready = ReadyTracker(task_status)
        del task_status  # ready reports to it once and lets go (see ReadyTracker)

        def on_ready() -> None:
            scope.shield = True

        ready.on_started = on_ready
        await sup.run(task_status=ready)
