"""The persister: the one durable writer of a session's auth location.

It owns the backend (a ``stores.Persistence``) for as long as it runs. Nothing
else in the session writes files:

- ``SaveCreds`` (cast) hands it a creds snapshot. Bursts are *coalesced*: only
  the newest pending snapshot is written, and a creds-only write waits
  ``coalesce_delay`` seconds first so a burst collapses into few commits. The
  newest snapshot is durable at most two commits after the burst ends (the one
  in flight, then one holding it).
- ``CommitBatch`` (call → ``Receipt``) commits key writes and an optional creds
  snapshot atomically. Every batch pending when the writer is free goes into
  *one* backend commit (group commit: many callers, one fsync), together with the
  newest creds snapshot; there is no coalescing delay when a batch waits.
- Snapshots are ordered by the sender's revision (``SaveCreds.rev``,
  ``CommitBatch.rev``): creds older than ones already accepted are never
  written (a batch carrying them still commits its keys).
- A receipt resolves with the backend's durable sequence number only after the
  backend's ``commit`` returned: nothing is acknowledged before it is durable.
- After each durable commit holding creds it emits ``creds_update`` (version =
  durable sequence number) on the session's event sink.
- A ``DurabilityError`` (or any failure of the backend) fails the receipts of
  that commit with the error and crashes the persister loudly; the batch is
  never retried silently. The supervisor restarts the persister, which acquires
  the backend again (reopening it, and so running its recovery, when the
  session opened it from a path) and re-reads the durable creds.
- Asked to stop, it writes what is pending before it exits.

Since 0.1.0.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import trio

from actors.messages import (
    CommitBatch,
    CredsState,
    LoadCreds,
    PersisterStatistics,
    PersisterStats,
    ReadKeys,
    Receipt,
    ReceiptBook,
    SaveCreds,
)
from runtime.actor import Actor
from runtime.child import ChildControl
from runtime.exit import ExitReason
from stores.creds import AuthCreds
from stores.errors import CorruptStateError
from stores.types import Batch, Persistence, Value

DEFAULT_COALESCE_DELAY = 0.005
"""Seconds a creds-only write waits for newer snapshots (a burst becomes one commit)."""

EventSink = Callable[[dict[str, Any]], None]


class BackendSource(Protocol):
    """Where a persister incarnation gets its backend from (lives outside the actor)."""

    @property
    def backend_name(self) -> str: ...

    @property
    def location(self) -> str: ...

    async def acquire(self) -> Persistence:
        """The backend for a new incarnation (reopened after a crash, if the source can)."""
        ...

    async def release(self, backend: Persistence) -> None:
        """The incarnation that acquired ``backend`` ended."""
        ...


class _Group:
    """What one backend commit carries, and who waits for it."""

    def __init__(self) -> None:
        self.keys: dict[str, dict[str, Value | None]] = {}
        self.creds: AuthCreds | None = None
        self.rev = 0
        self.receipts: list[Receipt[Any]] = []
        self.snapshots = 0

    def batch(self) -> Batch:
        return Batch(keys=self.keys, creds=self.creds)


def changed_fields(old: AuthCreds | None, new: AuthCreds) -> dict[str, Any]:
    """The creds fields that differ between ``old`` and ``new`` (snake_case names → new values)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(new):
        value = getattr(new, f.name)
        if old is None or getattr(old, f.name) != value:
            out[f.name] = value
    return out


class Persister(Actor):
    """The single durable writer; see the module docstring."""

    def __init__(
        self,
        source: BackendSource,
        *,
        emit: EventSink,
        coalesce_delay: float = DEFAULT_COALESCE_DELAY,
    ) -> None:
        self._source = source
        self._emit = emit
        self._delay = coalesce_delay
        self._backend: Persistence | None = None
        self._durable: AuthCreds | None = None
        self._durable_rev = 0
        self._accepted_rev = 0
        self._seq: int | None = None
        self._next = _Group()
        self._has_batches = False
        self._wake = trio.Event()
        self._urgent = trio.Event()
        self._writing = False
        self._flush_waiters: list[Receipt[Any]] = []
        self._book = ReceiptBook("persister")
        self._commits = 0
        self._snapshots_received = 0
        self._snapshots_written = 0
        self._batches = 0

    # --- lifecycle -----------------------------------------------------------------

    async def run_child(
        self, control: ChildControl, task_status: trio.TaskStatus[None]
    ) -> ExitReason:
        try:
            return await super().run_child(control, task_status)
        finally:
            # Even when killed: no caller may wait for an answer that will not come.
            self._book.abandon_all()

    async def init(self) -> None:
        backend = await self._source.acquire()
        self._backend = backend
        creds = await backend.read_creds()
        if creds is None:
            # open_runtime made sure creds exist before the tree started: their
            # absence now is damage, never a reason to start a new device.
            raise CorruptStateError(backend.location, "creds vanished while the session ran")
        self._durable = creds
        self._book = ReceiptBook(f"{self.ctx.name}#{self.ctx.incarnation}")
        self.ctx.nursery.start_soon(self._writer)
        self.ctx.log.info(
            "persister_ready", backend=backend.backend_name, location=backend.location
        )

    async def terminate(self, reason: ExitReason) -> None:
        backend = self._backend
        if backend is None:
            return
        try:
            if not reason.abnormal and self._pending():
                # An orderly stop writes what was handed over (the writer is gone).
                group = self._take()
                await self._commit(group)
        finally:
            self._book.abandon_all()
            await self._source.release(backend)

    # --- messages ----------------------------------------------------------------

    async def handle_cast(self, msg: Any) -> None:
        if isinstance(msg, SaveCreds):
            self._snapshots_received += 1
            if msg.rev < self._accepted_rev:
                return  # an older revision than one already handed over
            self._accepted_rev = msg.rev
            self._next.creds = msg.creds
            self._next.rev = msg.rev
            self._next.snapshots += 1
            self._wake.set()
            return
        await super().handle_cast(msg)

    async def handle_call(self, msg: Any) -> Any:
        if isinstance(msg, CommitBatch):
            return self._on_commit(msg)
        if isinstance(msg, LoadCreds):
            return self._on_load()
        if isinstance(msg, ReadKeys):
            return await self._backend_now().read_keys(msg.type, list(msg.ids))
        if isinstance(msg, PersisterStats):
            return self.statistics()
        return await super().handle_call(msg)

    def statistics(self) -> PersisterStatistics:
        backend = self._backend_now()
        return PersisterStatistics(
            incarnation=self.ctx.incarnation,
            backend=backend.backend_name,
            location=backend.location,
            commits=self._commits,
            snapshots_received=self._snapshots_received,
            snapshots_written=self._snapshots_written,
            batches=self._batches,
            durable_seq=self._seq,
            durable_rev=self._durable_rev,
            pending=self._pending() or self._writing,
        )

    def _on_commit(self, msg: CommitBatch) -> Receipt[Any]:
        receipt: Receipt[Any] = self._book.issue("commit")
        if msg.batch.is_empty():
            receipt.resolve(self._seq)
            return receipt
        self._batches += 1
        group = self._next
        for type_, writes in msg.batch.keys.items():
            group.keys.setdefault(type_, {}).update(writes)
        rev = msg.rev if msg.rev is not None else self._accepted_rev
        if msg.batch.creds is not None and rev >= self._accepted_rev:
            # Creds older than a snapshot already handed over would undo it (the
            # newer one holds every older change); the batch's keys still commit.
            self._accepted_rev = rev
            group.creds = msg.batch.creds
            group.rev = rev
        group.receipts.append(receipt)
        self._has_batches = True
        self._wake.set()
        self._urgent.set()
        return receipt

    def _on_load(self) -> Receipt[Any]:
        receipt: Receipt[Any] = self._book.issue("load creds")
        if self._pending() or self._writing:
            self._flush_waiters.append(receipt)
            self._urgent.set()
        else:
            receipt.resolve(self._creds_state())
        return receipt

    # --- the writer --------------------------------------------------------------

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            if not self._has_batches and self._delay > 0:
                with trio.move_on_after(self._delay):
                    await self._urgent.wait()
            group = self._take()
            if group.receipts or group.creds is not None:
                await self._commit(group)
            if not self._pending():
                waiters, self._flush_waiters = self._flush_waiters, []
                for waiter in waiters:
                    waiter.resolve(self._creds_state())

    def _pending(self) -> bool:
        return self._has_batches or self._next.creds is not None

    def _take(self) -> _Group:
        group, self._next = self._next, _Group()
        self._has_batches = False
        self._wake = trio.Event()
        self._urgent = trio.Event()
        return group

    async def _commit(self, group: _Group) -> None:
        backend = self._backend_now()
        self._writing = True
        try:
            # Shielded: a stop request must not tear a commit in half; the backend
            # bounds its own duration.
            with trio.CancelScope(shield=True):
                seq = await backend.commit(group.batch())
        except BaseException as exc:
            for receipt in group.receipts:
                receipt.fail(exc)
            self._report_failure(backend, exc)
            raise
        finally:
            self._writing = False
        self._commits += 1
        self._seq = seq
        for receipt in group.receipts:
            receipt.resolve(seq)
        if group.creds is not None:
            self._snapshots_written += 1
            delta = changed_fields(self._durable, group.creds)
            self._durable = group.creds
            self._durable_rev = max(self._durable_rev, group.rev)
            if delta:
                self._emit_creds_update(seq, group.rev, delta)

    def _emit_creds_update(self, seq: int, rev: int, delta: Mapping[str, Any]) -> None:
        self._emit(
            {
                "creds_update": {
                    "version": seq,
                    "rev": rev,
                    "changed": sorted(delta),
                    "delta": {name: _copy(value) for name, value in delta.items()},
                }
            }
        )

    def _report_failure(self, backend: Persistence, exc: BaseException) -> None:
        if isinstance(exc, Exception):
            self.ctx.log.error(
                "persister_commit_failed",
                backend=backend.backend_name,
                location=backend.location,
                error=repr(exc),
            )
            self._emit(
                {
                    "store_error": {
                        "location": backend.location,
                        "backend": backend.backend_name,
                        "error": type(exc).__name__,
                        "message": str(exc),
                    }
                }
            )

    def _creds_state(self) -> CredsState:
        assert self._durable is not None  # set by init
        return CredsState(creds=self._durable.copy(), rev=self._durable_rev, seq=self._seq)

    def _backend_now(self) -> Persistence:
        if self._backend is None:
            raise RuntimeError("persister used before init")
        return self._backend


def _copy(value: Any) -> Any:
    return copy.deepcopy(value)


__all__ = [
    "DEFAULT_COALESCE_DELAY",
    "BackendSource",
    "EventSink",
    "Persister",
    "changed_fields",
]
