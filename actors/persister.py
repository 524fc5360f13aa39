"""The persister: the one durable writer of a session's auth location.

It owns the backend (a ``stores.Persistence``) for as long as it runs. Nothing
else in the session writes files:

- It is the one owner of the session's creds. Components send *patches* (the
  fields they changed, ``stores.CredsPatch``), never snapshots; it merges each
  into its creds in arrival order, so no change undoes a field another component
  changed after it read the creds. A whole snapshot in a batch is refused
  (``CredsSnapshotRefused``).
- ``SaveCreds`` (cast) hands it a patch. Bursts are *coalesced*: one commit
  writes every patch merged so far, and a creds-only write waits
  ``coalesce_delay`` seconds first so a burst collapses into few commits. The
  newest change is durable at most two commits after the burst ends (the one in
  flight, then one holding it).
- ``CommitBatch`` (call → ``Reply``) commits key writes and an optional creds
  patch atomically. Every batch pending when the writer is free goes into *one*
  backend commit (group commit: many callers, one fsync), together with the
  merged creds; there is no coalescing delay when a batch waits.
- Numbered changes (``SaveCreds.rev``, ``Batch.rev``: the connection's line) are
  ordered by revision: a change older than one already accepted is ignored (a
  batch carrying it still commits its keys). Signal transactions' patches carry
  no revision and are always merged.
- ``LoadCreds(writer=True)`` (the connection actor's init) *fences* the line:
  numbered changes at or below the answer's ``fence`` are from an incarnation
  that died before this load (every cast it made is already merged, mailboxes
  being FIFO; at most a few calls can still be on their way through the signal
  store) and are refused: a cast is dropped, a batch fails whole with
  ``StaleCredsChange``, keys included, so a dead incarnation's pre-keys never land
  over the ones the live one uploads.
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
- Its creds objects are values: a change makes a new object (``CredsPatch.apply``),
  none is changed in place, so ``LoadCreds`` answers with the durable object itself
  and its reader (the connection actor) shares it instead of holding a copy; a
  reader that wants to change creds copies them first.
- ``TakeSnapshot`` (call → ``DurableSnapshot``) provides a point in durable order
  for a backup: between two commits it reads the backend's committed state and
  answers it with its sequence number, so the state holds exactly the commits up
  to that point (since 0.2.0).

Since 0.1.0.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

import trio

from actors.errors import CredsSnapshotRefused, StaleCredsChange
from actors.events import EventSink, creds_update, store_error
from actors.mail import (
    CommitBatch,
    CredsState,
    DurableSnapshot,
    LoadCreds,
    PersisterStatistics,
    PersisterStats,
    ReadKeys,
    SaveCreds,
    TakeSnapshot,
)
from actors.recorder import NO_METRICS, SessionMetrics
from runtime.exit import ExitReason
from runtime.reply import RepliesLater, Reply
from stores.creds import AuthCreds, CredsPatch
from stores.errors import CorruptStateError
from stores.types import Batch, Persistence, Value

DEFAULT_COALESCE_DELAY = 0.005
"""Seconds a creds-only write waits for newer changes (a burst becomes one commit)."""

REV_FENCE_GAP = 1 << 16
"""How far a writer's fence lies above the newest accepted revision (or the last fence).

A dead incarnation awaits every creds change that does not go straight into the
persister's mailbox, so at most a few of its numbered changes can still arrive
after the next incarnation loaded; the gap is far above that."""


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
        self.replies: list[Reply[Any]] = []
        self.snapshots = 0

    def batch(self) -> Batch:
        return Batch(keys=self.keys, creds=self.creds)


def changed_fields(old: AuthCreds | None, new: AuthCreds) -> dict[str, Any]:
    """The creds fields that differ between ``old`` and ``new`` (snake_case names → new values)."""
    return dict(CredsPatch.between(old, new).changes)


class Persister(RepliesLater):
    """The single durable writer; see the module docstring."""

    def __init__(
        self,
        source: BackendSource,
        *,
        emit: EventSink,
        coalesce_delay: float = DEFAULT_COALESCE_DELAY,
        metrics: SessionMetrics = NO_METRICS,
    ) -> None:
        self._source = source
        self._metrics = metrics
        self._emit = emit
        self._delay = coalesce_delay
        self._backend: Persistence | None = None
        self._durable: AuthCreds | None = None
        self._current: AuthCreds | None = None
        self._durable_rev = 0
        self._accepted_rev = 0
        self._fence = 0
        self._seq: int | None = None
        self._next = _Group()
        self._has_batches = False
        # The writer task runs only while something is pending (an idle session's
        # persister waits on nothing); its coalescing wait ends early on this event.
        self._writer_running = False
        self._urgent: trio.Event | None = None
        self._writing = False
        # Held by each commit and by a durable snapshot: never both at once.
        self._commit_lock = trio.Lock()
        self._flush_waiters: list[Reply[Any]] = []
        self._commits = 0
        self._snapshots_received = 0
        self._snapshots_written = 0
        self._batches = 0

    # --- lifecycle -----------------------------------------------------------------

    async def init(self) -> None:
        backend = await self._source.acquire()
        self._backend = backend
        creds = await backend.read_creds()
        if creds is None:
            # open_runtime made sure creds exist before the tree started: their
            # absence now is damage, never a reason to start a new device.
            raise CorruptStateError(backend.location, "creds vanished while the session ran")
        self._durable = self._current = creds
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
            self.replies.abandon_all()
            await self._source.release(backend)

    # --- messages ----------------------------------------------------------------

    async def handle_cast(self, msg: Any) -> None:
        if isinstance(msg, SaveCreds):
            self._snapshots_received += 1
            if msg.rev <= self._fence:
                self.ctx.log.warning("stale_creds_change", rev=msg.rev, fence=self._fence)
                return
            if self._merge(msg.patch, msg.rev, msg.result):
                self._next.snapshots += 1
                self._start_writer()
            return
        await super().handle_cast(msg)

    def _merge(
        self, patch: CredsPatch | None, rev: int | None, result: AuthCreds | None = None
    ) -> bool:
        """Merge one creds change into the next commit; False for an older numbered one.

        ``result``: the sender's creds after the change; kept instead of an equal merge.
        """
        if rev is not None:
            if rev < self._accepted_rev:
                return False
            self._accepted_rev = rev
        if patch:
            assert self._current is not None  # set by init
            merged = patch.apply(self._current)
            self._current = result if result is not None and result == merged else merged
            self._next.creds = self._current
            self._next.rev = self._accepted_rev
        return True

    async def handle_call(self, msg: Any) -> Any:
        if isinstance(msg, CommitBatch):
            return self._on_commit(msg)
        if isinstance(msg, LoadCreds):
            if msg.writer:
                # Above every revision the line may have used, accepted or not.
                self._fence = max(self._accepted_rev, self._fence) + REV_FENCE_GAP
            return self._on_load()
        if isinstance(msg, ReadKeys):
            return await self._backend_now().read_keys(msg.type, list(msg.ids))
        if isinstance(msg, PersisterStats):
            return self.statistics()
        if isinstance(msg, TakeSnapshot):
            return await self._durable_snapshot()
        return await super().handle_call(msg)

    async def _durable_snapshot(self) -> DurableSnapshot:
        backend = self._backend_now()
        # Between two commits: the state read is exactly the commits up to seq. Commits
        # handed over meanwhile wait for the lock (and their callers for their ack).
        async with self._commit_lock:
            seq = self._seq
            if seq is None:
                # Nothing committed by this incarnation yet: an empty commit names the
                # backend's durable seq (native, SQLite and PostgreSQL write nothing).
                seq = await backend.commit(Batch())
            snapshot = await backend.snapshot()
        key_id = getattr(backend, "key_id", None)  # set by backends encrypted at rest
        return DurableSnapshot(
            seq,
            snapshot,
            backend.backend_name,
            backend.location,
            key_id if isinstance(key_id, str) else None,
        )

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

    def _on_commit(self, msg: CommitBatch) -> Reply[Any]:
        receipt: Reply[Any] = self.replies.issue("commit")
        batch = msg.batch
        if batch.creds is not None:
            receipt.fail(CredsSnapshotRefused(receipt.owner))
            return receipt
        if batch.rev is not None and batch.rev <= self._fence:
            receipt.fail(StaleCredsChange(batch.rev, self._fence))
            return receipt
        if batch.is_empty():
            receipt.resolve(self._seq)
            return receipt
        self._batches += 1
        group = self._next
        for type_, writes in batch.keys.items():
            group.keys.setdefault(type_, {}).update(writes)
        # A numbered patch older than one already accepted came out of its sender's
        # order; it is dropped, and the batch's keys still commit.
        self._merge(batch.patch, batch.rev)
        group.replies.append(receipt)
        self._has_batches = True
        self._start_writer()
        self._hurry()
        return receipt

    def _on_load(self) -> Reply[Any]:
        receipt: Reply[Any] = self.replies.issue("load creds")
        if self._pending() or self._writing:
            self._flush_waiters.append(receipt)
            self._hurry()
        else:
            receipt.resolve(self._creds_state())
        return receipt

    # --- the writer --------------------------------------------------------------

    def _start_writer(self) -> None:
        """Something is pending: make sure the writer runs (it ends once nothing is)."""
        if not self._writer_running:
            self._writer_running = True
            self.ctx.nursery.start_soon(self._writer)

    def _hurry(self) -> None:
        """A caller waits: end the writer's coalescing wait now."""
        if self._urgent is not None:
            self._urgent.set()

    async def _writer(self) -> None:
        try:
            while self._pending():
                if not self._has_batches and self._delay > 0:
                    self._urgent = trio.Event()
                    with trio.move_on_after(self._delay):
                        await self._urgent.wait()
                    self._urgent = None
                group = self._take()
                if group.replies or group.creds is not None:
                    await self._commit(group)
            waiters, self._flush_waiters = self._flush_waiters, []
            for waiter in waiters:
                waiter.resolve(self._creds_state())
        finally:
            self._writer_running = False

    def _pending(self) -> bool:
        return self._has_batches or self._next.creds is not None

    def _take(self) -> _Group:
        group, self._next = self._next, _Group()
        self._has_batches = False
        return group

    async def _commit(self, group: _Group) -> None:
        backend = self._backend_now()
        self._writing = True
        started = time.perf_counter()
        try:
            # Shielded: a stop request must not tear a commit in half (nor drop a
            # group taken but not yet written); the backend bounds its own duration.
            with trio.CancelScope(shield=True):
                async with self._commit_lock:
                    seq = await backend.commit(group.batch())
        except BaseException as exc:
            for receipt in group.replies:
                receipt.fail(exc)
            self._report_failure(backend, exc)
            raise
        finally:
            self._writing = False
        self._metrics.commit(time.perf_counter() - started, max(1, len(group.replies)))
        self._commits += 1
        self._seq = seq
        for receipt in group.replies:
            receipt.resolve(seq)
        if group.creds is not None:
            self._snapshots_written += 1
            delta = changed_fields(self._durable, group.creds)
            self._durable = group.creds
            self._durable_rev = max(self._durable_rev, group.rev)
            if delta:
                self._emit_creds_update(seq, group.rev, delta)

    def _emit_creds_update(self, seq: int, rev: int, delta: Mapping[str, Any]) -> None:
        self._emit(creds_update(seq, rev, delta))

    def _report_failure(self, backend: Persistence, exc: BaseException) -> None:
        if isinstance(exc, Exception):
            self.ctx.log.error(
                "persister_commit_failed",
                backend=backend.backend_name,
                location=backend.location,
                error=repr(exc),
            )
            self._emit(
                store_error(backend.location, backend.backend_name, type(exc).__name__, str(exc))
            )

    def _creds_state(self) -> CredsState:
        assert self._durable is not None  # set by init
        # Shared, not copied: the persister replaces its creds on every change and never
        # changes one in place, and so must the reader (one object per session, not three).
        return CredsState(
            creds=self._durable, rev=self._durable_rev, seq=self._seq, fence=self._fence
        )

    def _backend_now(self) -> Persistence:
        if self._backend is None:
            raise RuntimeError("persister used before init")
        return self._backend


__all__ = [
    "DEFAULT_COALESCE_DELAY",
    "BackendSource",
    "Persister",
    "changed_fields",
]
