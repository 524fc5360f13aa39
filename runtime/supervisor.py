"""``Supervisor``: a static list of children run with OTP semantics.

The rules (the property test's model is written from this table, not from the code)
==================================================================================

Start and stop
--------------
========================= ==========================================================
situation                 what happens
========================= ==========================================================
supervisor starts         children start in list order; each must report ready
                          (``init`` returned / sub-tree started) before the next
                          starts; then the supervisor reports ready
a child fails to start    the children already started stop in reverse order; the
during the initial start  supervisor fails with ``ChildStartError`` (no restarts)
supervisor asked to stop  children stop in reverse list order; each is asked to
                          stop and gets ``shutdown`` seconds (default 5 s for
                          workers, unlimited for supervisors, 0 = at once) before
                          it is cancelled (exit ``killed``); exit ``shutdown``
========================= ==========================================================

Exits of a child
----------------
============ ================= ===========================================
restart type exit reason       restarted?
============ ================= ===========================================
permanent    any               yes
transient    normal, shutdown  no (stays in the list, not running)
transient    crash, killed     yes
temporary    any               no, and removed from the list
============ ================= ===========================================

Restarting child C (only when the table above says yes)
-------------------------------------------------------
1. Intensity: the restart is stamped with the current time. Stamps older than
   ``max_seconds`` (``now - t >= max_seconds``) are dropped. If more than
   ``max_restarts`` stamps remain, the supervisor **gives up**: it stops all its
   children in reverse order and exits abnormally with ``SupervisorGaveUp``; its
   own parent then treats that as a crash of the supervisor child (so intensity
   failures travel up the tree until a supervisor can absorb them).
   Defaults: 3 restarts in 5 s.
2. Strategy picks the restart group:

   ============= =====================================================
   strategy      group (in list order)
   ============= =====================================================
   one_for_one   C alone
   one_for_all   every child in the list
   rest_for_one  C and every child after it in the list
   ============= =====================================================

3. Group members other than C that run are stopped in reverse list order (as on
   shutdown). Temporary members other than C are removed for good.
4. Optional backoff: wait ``Backoff.delay(n)`` where n is the number of stamps in
   the window (so restarts count inside the intensity window however long the
   delay). A stop request during the wait stops the supervisor at once.
5. Every group member still in the list starts again in list order (including a
   transient member that had exited normally, as OTP does). If one fails to start,
   the rest of the group is not started and that failure is handled as a new crash
   of that child (back to step 1).

Names and refs
--------------
A worker's registry name (``ChildSpec.name`` or its path) is held from its first
start until it exits for good (not restarted, terminated, or its supervisor stops).
While it restarts the name stays, and calls through an ``ActorRef`` wait.

Exits are handled one at a time in arrival order. An exit report from an
incarnation the supervisor has already stopped (a sibling that crashed while being
stopped for a group restart) is ignored.

Since 0.1.0.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from runtime.core import (
    DEFAULT_MAX_RESTARTS,
    DEFAULT_MAX_SECONDS,
    SupervisorBase,
    _Child,
    supervise,
)
from runtime.errors import InvalidSpec
from runtime.log import Logger
from runtime.registry import Registry
from runtime.spec import Backoff, ChildSpec, Strategy


class Supervisor(SupervisorBase):
    """A supervisor over a fixed, ordered list of children.

    Run it with ``await nursery.start(sup.run)`` or ``async with open_supervisor(...)``,
    or make it a child: ``ChildSpec("session", lambda: Supervisor([...]))`` (the factory
    builds a fresh supervisor for every incarnation).
    """

    def __init__(
        self,
        children: Sequence[ChildSpec],
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        max_restarts: int = DEFAULT_MAX_RESTARTS,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        backoff: Backoff | None = None,
        name: str = "root",
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
        where = f"Supervisor({name!r})"
        if not isinstance(strategy, Strategy):
            raise InvalidSpec(where, "strategy", f"must be a Strategy, got {strategy!r}")
        self._strategy = strategy
        for spec in children:
            if not isinstance(spec, ChildSpec):
                raise InvalidSpec(where, "children", f"expected ChildSpec, got {spec!r}")
            if spec.id in self._children:
                raise InvalidSpec(where, "children", f"duplicate child id {spec.id!r}")
            self._children[spec.id] = _Child(spec)

    @property
    def strategy(self) -> Strategy:
        return self._strategy

    def _restart_group(self, child: _Child) -> list[_Child]:
        if self._strategy is Strategy.ONE_FOR_ONE:
            return [child]
        children = list(self._children.values())
        if self._strategy is Strategy.ONE_FOR_ALL:
            return children
        return children[children.index(child) :]


@asynccontextmanager
async def open_supervisor(
    children: Sequence[ChildSpec],
    *,
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    backoff: Backoff | None = None,
    name: str = "root",
    registry: Registry | None = None,
    log: Logger | None = None,
) -> AsyncIterator[Supervisor]:
    """Run a ``Supervisor`` for the block; every child is ready inside it.

    Leaving the block stops the tree in reverse order (see ``runtime.core.supervise``).
    """
    sup = Supervisor(
        children,
        strategy=strategy,
        max_restarts=max_restarts,
        max_seconds=max_seconds,
        backoff=backoff,
        name=name,
        registry=registry,
        log=log,
    )
    async with supervise(sup) as running:
        yield running
