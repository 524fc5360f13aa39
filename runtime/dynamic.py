"""``DynamicSupervisor``: children added and removed at run time (one per account).

Same restart rules as ``Supervisor`` with the one_for_one strategy (see the table in
``runtime.supervisor``), plus:

- ``children`` given to the constructor start first, in order, like a static
  supervisor's. A restarted DynamicSupervisor is a fresh object from its spec's
  factory, so children added at run time are gone after a restart (as in OTP);
  a factory that lists the wanted children (e.g. every configured account) brings
  them back.
- ``start_child(spec)`` starts a child now and returns once it is ready (or raises
  ``ChildStartError``, ``DuplicateChild``, ``MaxChildren``); a failed start is not
  retried and leaves nothing behind.
- A child that exits for good (not restarted, or ``terminate_child``) leaves the
  list whatever its restart type, so its id can be used again.
- On stop, children are asked to stop all at once (as OTP does for dynamic
  children; there is no meaningful order among accounts), each within its own
  shutdown timeout.

Since 0.1.0.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from runtime.core import (
    DEFAULT_MAX_RESTARTS,
    DEFAULT_MAX_SECONDS,
    ChildInfo,
    SupervisorBase,
    _Child,
    supervise,
)
from runtime.errors import ChildStartError, DuplicateChild, InvalidSpec, MaxChildren
from runtime.exit import ExitReason
from runtime.log import Logger
from runtime.registry import Registry
from runtime.spec import Backoff, ChildSpec


class DynamicSupervisor(SupervisorBase):
    """A one_for_one supervisor whose children come and go while it runs."""

    def __init__(
        self,
        children: Sequence[ChildSpec] = (),
        *,
        max_children: int | None = None,
        max_restarts: int = DEFAULT_MAX_RESTARTS,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        backoff: Backoff | None = None,
        name: str = "dynamic",
        registry: Registry | None = None,
        log: Logger | None = None,
    ) -> None:
        super().__init__(
            max_restarts=max_restarts,
            max_seconds=max_seconds,
            backoff=backoff,
            name=name,
            registry=registry,
            log=log,
        )
        if max_children is not None and (
            isinstance(max_children, bool) or not isinstance(max_children, int) or max_children < 0
        ):
            raise InvalidSpec(
                f"DynamicSupervisor({name!r})",
                "max_children",
                f"must be an int >= 0 or None, got {max_children!r}",
            )
        self._max_children = max_children
        where = f"DynamicSupervisor({name!r})"
        for spec in children:
            if not isinstance(spec, ChildSpec):
                raise InvalidSpec(where, "children", f"expected ChildSpec, got {spec!r}")
            if spec.id in self._children:
                raise InvalidSpec(where, "children", f"duplicate child id {spec.id!r}")
            self._children[spec.id] = _Child(spec)
        if max_children is not None and len(self._children) > max_children:
            raise InvalidSpec(where, "children", f"more than max_children={max_children}")

    @property
    def max_children(self) -> int | None:
        return self._max_children

    async def start_child(self, spec: ChildSpec) -> ChildInfo:
        """Start ``spec`` as a new child; returns once it is ready."""
        if not isinstance(spec, ChildSpec):
            raise InvalidSpec(
                f"DynamicSupervisor({self._path!r})", "spec", f"expected ChildSpec, got {spec!r}"
            )
        self._require_running()
        async with self._lock:
            self._require_running()
            if spec.id in self._children:
                raise DuplicateChild(self._path, spec.id)
            if self._max_children is not None and len(self._children) >= self._max_children:
                raise MaxChildren(self._path, self._max_children)
            child = _Child(spec)
            self._children[spec.id] = child
            failure = await self._start_child(child)
            if failure is not None:
                self._retire(child, failure)
                raise ChildStartError(self._child_path(child), failure)
            return self._info(child)

    def _forget_on_exit(self, child: _Child) -> bool:
        return True

    async def _stop_all(self) -> None:
        async with trio.open_nursery() as nursery:
            for child in reversed(list(self._children.values())):
                nursery.start_soon(self._stop_child, child)
        for child in list(self._children.values()):
            self._retire(child, ExitReason.shutdown())


@asynccontextmanager
async def open_dynamic_supervisor(
    children: Sequence[ChildSpec] = (),
    *,
    max_children: int | None = None,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    backoff: Backoff | None = None,
    name: str = "dynamic",
    registry: Registry | None = None,
    log: Logger | None = None,
) -> AsyncIterator[DynamicSupervisor]:
    """Run a ``DynamicSupervisor`` for the block; stops its children on exit."""
    sup = DynamicSupervisor(
        children,
        max_children=max_children,
        max_restarts=max_restarts,
        max_seconds=max_seconds,
        backoff=backoff,
        name=name,
        registry=registry,
        log=log,
    )
    async with supervise(sup) as running:
        yield running
