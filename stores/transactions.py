"""Serializable transactions over any commit function: the one transaction layer.

A ``TransactionalStore`` turns two functions into a ``SignalStore``:

* ``read(type, ids)`` returns the *committed* values of the ids that are present
  (``Persistence.read_keys`` has this shape);
* ``commit(batch)`` makes a ``Batch`` durable and returns its sequence number
  (``Persistence.commit``, or a ``call`` to the persister actor).

Used as a library, both come straight from a backend; in the session tree the
signal-store actor hosts this class with ``commit`` calling the persister. There
is only this one implementation of locking, read-your-writes, conflict detection
and nesting.

How isolation is achieved (optimistic concurrency, validated at commit):

* The store keeps the committed view in a bounded LRU cache and a *tick* that
  advances each time a commit becomes visible. Every read inside a transaction
  records the tick at which its value (or its absence: phantoms count) was
  current.
* At commit the read set is validated: if a visible commit wrote a slot after it
  was read, the transaction raises ``TransactionConflict``. Then it waits for any
  *in-flight* commit that writes a slot it read or writes, so that every slot has
  at most one commit in flight and durable order equals serial order. A commit
  function that fixes each batch's place in durable order when it is called (the
  native and SQLite backends' ``commit``: ``sequenced_on_call``) makes the wait for
  slots only *written* unnecessary: blind writes then pipeline behind in-flight
  commits of the same slot, and durable order is still validation order.
* Commits become visible strictly in validation order, and only after the commit
  function returned (the durable ack). The serial order that explains any run is
  the order of validation.

Creds snapshots saved with ``commit_creds`` are coalesced: one commit at a time
writes the newest snapshot handed in so far, and every caller whose snapshot it
covers is acknowledged by it (a burst of N saves costs two or three commits, not
N). Rounds run strictly one after another, each with a newer snapshot than the
last, so an older snapshot never lands after a newer one.

A transaction changes creds with ``tx.patch_creds(patch)``: the fields it names
ride in its batch (``Batch.patch``, with ``Batch.rev`` for ``commit_batch``) and the
creds owner behind the commit function (the persister, or ``PersistedAuth``) merges
them in commit order; a creds pseudo-slot orders creds commits like key commits.

Per-key mutual exclusion (Baileys' ``transaction(key)`` mutex) is kept on top: two
transactions on one key never run at the same time. Locks are taken in sorted
order; a nested transaction on a key that sorts *before* a key already held tries
the lock without waiting and raises ``LockOrderConflict`` if it is busy (the
callback form retries it), so no set of transactions can deadlock.

``run_transaction`` always makes progress. Lock keys are the caller's choice, so
transactions under different keys may keep invalidating each other; a bounded
number of optimistic attempts is no guarantee. After ``optimistic_attempts``
conflicts the callback *escalates*:

* It waits for the store's escalation lock (FIFO): one escalated transaction at a
  time, which keeps it until its callback committed, across its own retries.
* Its attempts run *guarded*: every slot it reads joins the guard before the read,
  and the read waits for a commit in flight on that slot (even a cached value).
  While the guard holds a slot, no other commit that writes it is admitted: a
  transaction fails validation instead (``TransactionConflict``: it holds key locks
  and must not wait), a write outside any transaction (``set``, ``commit_batch``,
  ``commit_creds``) queues for the escalation lock and goes right after. Slots stay
  guarded across the escalated retries, so a retry sees what the failed attempt saw.
* Each attempt takes up front, in sorted order, every key a ``LockOrderConflict``
  of an earlier attempt named, so a callback that nests keys out of order stops
  hitting that conflict.

What can still invalidate a read: a commit already in flight when the slot was
read (the read waits for it), nothing else. So the escalated callback commits,
unless it raises, or waits for another task's write to data it read (that write
waits for it: a deadlock, as waiting on a key lock it holds would be).
"""

from __future__ import annotations

import collections
import copy
import enum
import itertools
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableSet, Sequence
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

import trio

from stores.errors import (
    DurabilityError,
    InvalidValueError,
    StoreClosedError,
    StoreError,
    TransactionConflict,
)
from stores.types import KEY_TYPES, Batch, KeyWrites, Value, check_key_type

if TYPE_CHECKING:
    from stores.creds import AuthCreds, CredsPatch

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_OPTIMISTIC_ATTEMPTS",
    "SEQUENCED_ATTRIBUTE",
    "CommitFn",
    "LockOrderConflict",
    "ReadFn",
    "StoreTransaction",
    "TransactionStatistics",
    "TransactionalStore",
    "copy_value",
    "sequenced_on_call",
    "validate_writes",
]

T = TypeVar("T")

ReadFn = Callable[[str, Sequence[str]], Awaitable[dict[str, Value]]]
"""``read(type, ids)``: the committed values of the present ids."""

CommitFn = Callable[[Batch], Awaitable[int]]
"""``commit(batch)``: durable and atomic, returns the durable sequence number."""

Slot = tuple[str, str]
"""``(type, id)``: the unit of versioning and conflict detection."""

DEFAULT_CACHE_SIZE = 16_384
"""Committed entries (present or known-absent) kept in memory by default."""

WRITE_CACHE_MAX_SLOTS = 64
"""A committed batch of more slots than this is not kept in the cache (see ``_drain``)."""

DEFAULT_OPTIMISTIC_ATTEMPTS = 3
"""Optimistic attempts of ``run_transaction`` before it escalates (see the module docstring)."""

SEQUENCED_ATTRIBUTE = "commits_sequenced_on_call"
"""Set (to ``True``) on a commit function by ``sequenced_on_call``."""

F = TypeVar("F", bound=Callable[..., object])


def sequenced_on_call(commit: F) -> F:
    """Mark a commit function that fixes each batch's place in durable order when called.

    Promise: before its first checkpoint, the function has queued the batch, so
    batches are durable in call order (a batch withdrawn by cancellation or refused
    is not durable at all), and a queued batch settles whatever happens to the
    caller (a cancellation it raises means the batch was withdrawn, not written). A
    ``TransactionalStore`` over a marked function lets blind writes pipeline and
    calls it without a shield. The mark is on the function: a subclass overriding the
    method is unmarked until it says so itself.
    """
    setattr(commit, SEQUENCED_ATTRIBUTE, True)  # a function attribute, by name
    return commit


_KNOWN_TYPES = frozenset(KEY_TYPES)
# ``check_key_type``'s test, made here without a call for the types that pass it.

_CREDS_SLOT: Slot = ("creds", "")
# Creds are write-only for this layer; the pseudo-slot orders creds commits.

_MAX_READ_ROUNDS = 1_000
# A read retries while commits race with it; each round waits for one of them.


class _Absent(enum.Enum):
    """Marks a slot known to hold nothing (cached or read), so phantoms are versioned too."""

    ABSENT = enum.auto()


_ABSENT = _Absent.ABSENT
_UNCACHED: object = object()


class _Outcome(enum.Enum):
    PENDING = enum.auto()
    ACKED = enum.auto()
    FAILED = enum.auto()


class _Admission(enum.Enum):
    NOW = enum.auto()
    READ_ONLY = enum.auto()
    AFTER_ESCALATED = enum.auto()


class _Phase(enum.Enum):
    OPEN = enum.auto()
    COMMITTING = enum.auto()
    COMMITTED = enum.auto()
    DISCARDED = enum.auto()


class LockOrderConflict(TransactionConflict):
    """A nested transaction wanted a key that sorts before one it holds, and it was busy.

    Waiting could deadlock, so the transaction is aborted instead. The callback form
    (``run_transaction``) retries it like any conflict; with the context-manager form,
    open the keys up front: ``store.transaction(key_a, key_b)``.
    """

    def __init__(self, key: str, held: tuple[str, ...]) -> None:
        self.key = key
        self.held = held
        self.conflicts: list[tuple[str, str]] = []
        StoreError.__init__(
            self,
            f"transaction on {key!r} nested inside {list(held)!r}: {key!r} sorts before a held "
            "key and is locked by another task; waiting could deadlock",
        )


@dataclass(frozen=True)
class TransactionStatistics:
    """A snapshot of a ``TransactionalStore``'s counters (trio's ``statistics()`` idiom)."""

    commits: int
    """Commits acknowledged durable and made visible."""
    failed_commits: int
    """Commits whose commit function raised (their slots were marked uncertain)."""
    conflicts: int
    """Transactions that failed validation (each retry counts)."""
    retries: int
    """Extra attempts made by ``run_transaction``."""
    active_transactions: int
    pending_commits: int
    cached_entries: int
    cache_hits: int
    cache_misses: int
    uncertain_slots: int
    creds_saves: int = 0
    """``commit_creds`` calls acknowledged."""
    creds_commits: int = 0
    """Commits made for them (one per round: the newest snapshot of the round)."""
    escalations: int = 0
    """``run_transaction`` calls that escalated after their optimistic attempts."""


def copy_value(value: Value, where: str = "value") -> Value:
    """Copy plain data, refusing anything else: stored state never aliases a caller's object.

    Plain data is ``bytes | str | int | float | bool | None | list | dict[str, ...]``.
    Raises ``InvalidValueError`` naming the path of the first offending part.
    """
    try:
        return _copy_exact(value)
    except _NotExactlyPlain:
        # A subclass (an IntEnum, an OrderedDict) or something that is not plain data:
        # the checking copy accepts the former and names where the latter is.
        return _copy_checked(value, where)


class _NotExactlyPlain(Exception):
    """``_copy_exact`` met a part whose type is not exactly one of the plain types."""


_IMMUTABLE_TYPES = frozenset({bytes, str, int, float, bool, type(None)})


def _copy_exact(value: Value) -> Value:
    # The hot path (a Signal session is ~30 parts, copied on every get and set): exact
    # type tests, no path strings; anything unusual goes to ``_copy_checked``.
    kind = type(value)
    if kind is dict:
        copied: dict[str, Value] = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _NotExactlyPlain
            copied[key] = item if type(item) in _IMMUTABLE_TYPES else _copy_exact(item)
        return copied
    if kind is list:
        return [
            item if type(item) in _IMMUTABLE_TYPES else _copy_exact(item)
            for item in value
        ]
    if kind in _IMMUTABLE_TYPES:
        return value
    raise _NotExactlyPlain


def _copy_checked(value: Value, where: str) -> Value:
    if value is None or isinstance(value, bytes | str | int | float):
        return value
    if isinstance(value, list):
        return [_copy_checked(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, dict):
        copied: dict[str, Value] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidValueError(where, f"dict key {key!r} is not a str")
            copied[key] = _copy_checked(item, f"{where}.{key}")
        return copied
    raise InvalidValueError(
        where,
        f"{type(value).__name__} is not plain data "
        "(bytes, str, int, float, bool, None, list, dict)",
    )


def _check_type_and_ids(type_: str, ids: Iterable[str]) -> list[str]:
    check_key_type(type_)
    if isinstance(ids, str):
        raise InvalidValueError(f"{type_} ids", "expected a sequence of ids, got one str")
    checked: list[str] = []
    for id_ in ids:
        if not isinstance(id_, str) or not id_:
            raise InvalidValueError(f"{type_} id", f"{id_!r} is not a non-empty str")
        checked.append(id_)
    return checked


def validate_writes(data: KeyWrites) -> dict[Slot, Value | None]:
    """Check and copy ``{type: {id: value | None}}`` into ``{(type, id): value | None}``."""
    writes: dict[Slot, Value | None] = {}
    for type_, entries in data.items():
        if type_ not in _KNOWN_TYPES:
            check_key_type(type_)  # raises, naming it
        for id_, value in entries.items():
            if type(id_) is not str or not id_:
                _check_type_and_ids(type_, [id_])  # raises, naming the id (or takes a str subclass)
            if value is None or type(value) is bytes:
                # bytes are immutable: nothing to copy (the common case: Signal records)
                writes[(type_, id_)] = value
                continue
            try:
                writes[(type_, id_)] = _copy_exact(value)
            except _NotExactlyPlain:
                writes[(type_, id_)] = _copy_checked(value, f"{type_}/{id_}")
    return writes


class _Pending:
    """A validated commit in flight; becomes visible in validation order.

    Most commits become visible with nobody waiting for them, so the wake-up means
    (an event for waits that may be cancelled, parked tasks for waits that may not)
    are made only by a waiter.
    """

    __slots__ = (
        "_event",
        "_parked",
        "applied",
        "issue",
        "outcome",
        "pin",
        "seq",
        "slots",
        "waited",
        "writes",
    )

    def __init__(
        self,
        issue: int,
        writes: dict[Slot, Value | None],
        slots: tuple[Slot, ...],
        pin: int | None,
    ) -> None:
        self.issue = issue
        self.writes = writes
        self.slots = slots
        self.pin = pin
        """The committing transaction's own pin (it validated already: no reader now)."""
        self.outcome = _Outcome.PENDING
        self.seq: int | None = None
        self.applied = False
        self.waited = False
        """Whether a waiter made a wake-up means (``wake`` has someone to wake)."""
        self._event: trio.Event | None = None
        self._parked: list[trio.lowlevel.Task] | None = None

    async def wait_applied(self) -> None:
        """Wait until it is visible (or failed and settled); cancellable."""
        if self.applied:
            await trio.lowlevel.checkpoint()
            return
        if self._event is None:
            self._event = trio.Event()
            self.waited = True
        await self._event.wait()

    async def wait_applied_to_the_end(self) -> None:
        """Wait until it is visible; a cancellation arrives at the next checkpoint after."""
        if not self.applied:
            if self._parked is None:
                self._parked = []
                self.waited = True
            self._parked.append(trio.lowlevel.current_task())
            await trio.lowlevel.wait_task_rescheduled(_not_abortable)

    def wake(self) -> None:
        """Wake its waiters once it is ``applied`` (the store sets that, then calls this)."""
        if self._event is not None:
            self._event.set()
        if self._parked is not None:
            for task in self._parked:
                trio.lowlevel.reschedule(task)


def _not_abortable(_: object) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED  # the task stays parked until the commit is visible


@dataclass(eq=False)
class _CredsWaiter:
    """One ``commit_creds`` caller: woken when its round settled or when it must lead."""

    woken: trio.Event = field(default_factory=trio.Event)
    lead: bool = False
    gone: bool = False


@dataclass(eq=False)
class _CredsRound:
    """The snapshots saved while the previous round was committing; the newest is written."""

    creds: AuthCreds | None = None
    waiters: list[_CredsWaiter] = field(default_factory=list)
    taken: bool = False
    seq: int | None = None
    error: BaseException | None = None


@dataclass(eq=False)
class _Read:
    """One committed read in progress: values fetched from the backend, and its log pin.

    Fetched values stay usable only while the log still shows every write since they
    were read, so the log is pinned from the first backend read until the read returns.
    """

    fetched: dict[Slot, tuple[Value | _Absent, int]] = field(default_factory=dict)
    pin: int | None = None


_Savepoint = tuple[dict[Slot, Value | None], "AuthCreds | None", "CredsPatch | None"]


@dataclass(eq=False)
class _Guard:
    """The slots an escalated ``run_transaction`` has read: others' commits keep off them."""

    slots: set[Slot] = field(default_factory=set)


class StoreTransaction:
    """The handle inside ``store.transaction(key)``; reads see its own writes. Since 0.1.0.

    Nothing written here is visible outside until the outermost block exits normally
    and the commit function acknowledged the batch. ``commit_seq`` then holds the
    durable sequence number (``None`` for a transaction that wrote nothing).
    """

    __slots__ = (
        "_creds",
        "_guard",
        "_held",
        "_patch",
        "_phase",
        "_pin",
        "_reads",
        "_seen",
        "_store",
        "_writes",
        "commit_seq",
        "key",
    )

    def __init__(self, store: TransactionalStore, key: str) -> None:
        self._store = store
        self.key = key
        self._pin: int | None = None
        """The tick of its first read, pinned: the log keeps every commit it may conflict with."""
        self._held: list[str] = []
        self._reads: dict[Slot, int] = {}
        self._seen: dict[Slot, Value | _Absent] = {}
        self._writes: dict[Slot, Value | None] = {}
        self._creds: AuthCreds | None = None
        self._patch: CredsPatch | None = None
        self._phase = _Phase.OPEN
        self._guard: _Guard | None = None
        self.commit_seq: int | None = None

    def __repr__(self) -> str:
        return (
            f"StoreTransaction(key={self.key!r}, phase={self._phase.name.lower()}, "
            f"reads={len(self._reads)}, writes={len(self._writes)})"
        )

    @property
    def is_open(self) -> bool:
        return self._phase is _Phase.OPEN

    @property
    def keys_held(self) -> tuple[str, ...]:
        """The transaction keys whose locks this transaction holds, in acquisition order."""
        return tuple(self._held)

    def _check_open(self) -> None:
        if self._phase is not _Phase.OPEN:
            raise StoreError(f"transaction {self.key!r} is {self._phase.name.lower()}; not usable")

    async def get(self, type: str, ids: Sequence[str]) -> dict[str, Value]:
        """Values of the present ids: this transaction's writes first, then committed state.

        Served from the transaction's own view or the store's cache, it does not park
        (a transaction yields once, at its commit); it is a cancellation point.
        """
        if self._phase is not _Phase.OPEN:
            self._check_open()  # raises
        wanted = list(dict.fromkeys(_check_type_and_ids(type, ids)))
        writes, seen = self._writes, self._seen
        missing = [
            id_ for id_ in wanted if (type, id_) not in writes and (type, id_) not in seen
        ]
        guarded = self._guard is not None
        found = None if not missing or guarded else self._store._read_cached(type, missing)
        if found is not None:
            # Served by the cache, current at this tick (no checkpoint since).
            self._saw(type, missing, found, self._store._tick)
            await trio.lowlevel.checkpoint_if_cancelled()
        elif missing:
            await self._read(type, missing)
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        result: dict[str, Value] = {}
        for id_ in wanted:
            slot = (type, id_)
            if slot in writes:
                value = writes[slot]
                if value is None:
                    continue
            else:
                value = seen[slot]
                if value is _ABSENT:
                    continue
            # bytes are immutable (the common case): nothing to copy
            result[id_] = value if isinstance(value, bytes) else copy_value(value)
        return result

    async def _read(self, type: str, missing: list[str]) -> None:
        guard = self._guard
        if guard is not None:
            # Guarded before the read: no commit writing them is admitted from here.
            guard.slots.update((type, id_) for id_ in missing)
        found, version = await self._store._read_committed(
            type, missing, settled=guard is not None
        )
        self._check_open()
        self._saw(type, missing, found, version)

    def _saw(self, type: str, missing: list[str], found: dict[str, Value], version: int) -> None:
        """Record committed values read at ``version`` as this transaction's view."""
        if self._pin is None:
            # Ticks only grow: its first read's is the oldest any of its reads holds.
            self._pin = self._store._add_pin(version)
        seen, reads = self._seen, self._reads
        for id_ in missing:
            slot = (type, id_)
            if slot not in seen:
                # Repeatable reads: the first observed value stays this transaction's view.
                seen[slot] = found.get(id_, _ABSENT)
                reads[slot] = version

    async def set(self, data: KeyWrites) -> None:
        """Stage writes (``None`` deletes); visible to this transaction only until commit.

        Does not park (a transaction yields once, at its commit); a cancellation point.
        """
        if self._phase is not _Phase.OPEN:
            self._check_open()  # raises
        writes = validate_writes(data)  # before anything is staged: a bad value stages nothing
        if self._writes:
            self._writes.update(writes)
        else:
            self._writes = writes  # a fresh dict: the first set (most often the only one) keeps it
        await trio.lowlevel.checkpoint_if_cancelled()

    def set_creds(self, creds: AuthCreds) -> None:
        """Commit this creds snapshot atomically with the transaction's key writes.

        A snapshot replaces every field; in a session, where other components change
        creds too, use ``patch_creds``.
        """
        self._check_open()
        self._creds = copy.deepcopy(creds)
        self._patch = None

    def patch_creds(self, patch: CredsPatch) -> None:
        """Commit these creds fields atomically with the key writes. Since 0.2.0.

        The creds owner merges the patch into its creds in commit order, so fields
        this transaction did not name keep whatever another component set.
        """
        self._check_open()
        if self._creds is not None:
            self._creds = patch.apply(self._creds)
        else:
            self._patch = patch if self._patch is None else self._patch.then(patch)

    def _batch_creds(self) -> Batch | None:
        if self._creds is None and self._patch is None:
            return None
        return Batch(creds=self._creds, patch=self._patch)

    def _savepoint(self) -> _Savepoint:
        return dict(self._writes), self._creds, self._patch

    def _rollback(self, saved: _Savepoint) -> None:
        self._writes, self._creds, self._patch = dict(saved[0]), saved[1], saved[2]


def _learn_keys(keys: MutableSet[str], conflict: TransactionConflict) -> None:
    """Keys a retry takes up front: those a nested transaction wanted out of order."""
    if isinstance(conflict, LockOrderConflict):
        keys.add(conflict.key)
        keys |= set(conflict.held)


class _KeyLocks:
    """One FIFO lock per transaction key, present only while held (Baileys' ref counts).

    A key is in the table while its lock is held; its deque holds the waiting tasks'
    events in arrival order, and ``release`` hands ownership straight to the first
    (no barging). No owner is recorded: a child task of the transaction may release.
    """

    def __init__(self) -> None:
        # The waiters' queue is made by the first waiter: most keys never see one.
        self._held: dict[str, collections.deque[trio.Event] | None] = {}

    def acquire_nowait(self, key: str) -> bool:
        if key in self._held:
            return False
        self._held[key] = None
        return True

    async def acquire(self, key: str) -> None:
        if self.acquire_nowait(key):
            await trio.lowlevel.checkpoint()
            return
        waiting = self._held[key]
        if waiting is None:
            waiting = self._held[key] = collections.deque()
        handed = trio.Event()
        waiting.append(handed)
        try:
            await handed.wait()
        except BaseException:
            if handed.is_set():
                # Ownership arrived while the cancellation was on its way: pass it on.
                self.release(key)
            else:
                waiting.remove(handed)
            raise

    def release(self, key: str) -> None:
        waiting = self._held[key]
        if waiting:
            waiting.popleft().set()
        else:
            del self._held[key]


class TransactionalStore:
    """A ``SignalStore`` with serializable transactions over a read and a commit function.

    Since 0.1.0.

    ``cache_size`` bounds the committed entries kept in memory (``None``: unbounded).
    ``optimistic_attempts`` is how many optimistic attempts ``run_transaction`` makes
    before it escalates (it never gives up).
    ``sequenced`` says the commit function fixes durable order at call time (see
    ``sequenced_on_call``; ``None``: whether ``commit`` is so marked).

    The commit function must be *ordered*: when it returns for a batch, every batch
    handed to it earlier has settled (succeeded or failed for good). Backends and a
    single persister actor are. A commit function that raises may still have made
    its batch durable (a timed-out call): the slots it wrote become *uncertain*,
    are never cached and always read through, until a later commit is acknowledged.
    Once a transaction has handed its batch to the commit function, cancellation
    waits (shielded) until the commit settled and, if acknowledged, became visible:
    a cancelled transaction never leaves the in-memory view disagreeing with
    durable state, and it commits or fails as a whole before the cancellation is
    delivered at the caller's next checkpoint. A sequenced commit function is not
    shielded: by its promise a batch it queued settles whatever happens to the
    caller, and a cancellation it raises withdrew the batch before queueing it.

    A transaction that waits for nothing (no contended key lock, reads served by
    its own writes or the cache, no conflicting commit in flight) parks once: in
    its commit function (or, read-only, at its end). ``tx.get`` and ``tx.set`` are
    cancellation points that do not park.
    """

    def __init__(
        self,
        read: ReadFn,
        commit: CommitFn,
        *,
        cache_size: int | None = DEFAULT_CACHE_SIZE,
        optimistic_attempts: int = DEFAULT_OPTIMISTIC_ATTEMPTS,
        sequenced: bool | None = None,
    ) -> None:
        if optimistic_attempts < 1:
            raise ValueError("optimistic_attempts must be at least 1")
        if cache_size is not None and cache_size < 0:
            raise ValueError("cache_size must be >= 0 or None")
        self._read_fn = read
        self._commit_fn = commit
        if sequenced is None:
            sequenced = getattr(commit, SEQUENCED_ATTRIBUTE, False) is True
        self._sequenced = sequenced
        self._cache_size = cache_size
        self._optimistic_attempts = optimistic_attempts
        self._escalation = trio.Lock()
        self._guard: _Guard | None = None
        self._escalations = 0
        self._current: ContextVar[StoreTransaction | None] = ContextVar(
            f"stores.transaction.{id(self):x}", default=None
        )
        self._locks = _KeyLocks()
        self._cache: collections.OrderedDict[Slot, Value | _Absent] = collections.OrderedDict()
        self._tick = 0
        self._log: collections.deque[tuple[int, tuple[Slot, ...]]] = collections.deque()
        self._last_write: dict[Slot, int] = {}
        self._pins: dict[int, int] = {}
        # Readers' ticks (how many at each): the log keeps every commit after the oldest.
        self._queue: collections.deque[_Pending] = collections.deque()
        self._writer_of: dict[Slot, _Pending] = {}
        self._uncertain: dict[Slot, int] = {}
        self._issues = itertools.count(1)
        self._active = 0
        self._closed = False
        self._commits = 0
        self._failed_commits = 0
        self._conflicts = 0
        self._retries = 0
        self._hits = 0
        self._misses = 0
        self._creds_round = _CredsRound()
        self._creds_leading = False
        self._creds_saves = 0
        self._creds_commits = 0

    def __repr__(self) -> str:
        return (
            f"TransactionalStore(active={self._active}, pending={len(self._queue)}, "
            f"cached={len(self._cache)}, closed={self._closed})"
        )

    # -- the SignalStore surface -------------------------------------------------

    async def get(self, type: str, ids: Sequence[str]) -> dict[str, Value]:
        """Committed values of the present ids (inside a transaction: the transaction's view)."""
        tx = self._open_transaction()
        if tx is not None:
            return await tx.get(type, ids)
        self._check_open()
        wanted = _check_type_and_ids(type, ids)
        found, _version = await self._read_committed(type, wanted)
        # One read is a transaction of its own: it yields once, as a commit does.
        await trio.lowlevel.checkpoint()
        return {id_: copy_value(found[id_]) for id_ in wanted if id_ in found}

    async def set(self, data: KeyWrites) -> None:
        """Write ``{type: {id: value | None}}``; outside a transaction a one-shot commit."""
        tx = self._open_transaction()
        if tx is not None:
            await tx.set(data)
            return
        self._check_open()
        writes = validate_writes(data)
        if not writes:
            await trio.lowlevel.checkpoint()
            return
        await self._commit("<set>", {}, writes, None)

    async def commit_batch(self, batch: Batch) -> int | None:
        """Commit keys and an optional creds change atomically, outside any transaction.

        Returns the durable sequence number (``None`` for an empty batch). This is
        how creds are saved so that they are ordered with key commits; the batch's
        ``patch`` and ``rev`` reach the commit function unchanged.
        """
        if self._open_transaction() is not None:
            raise StoreError("commit_batch inside a transaction: use tx.set and tx.patch_creds")
        self._check_open()
        writes = validate_writes(batch.keys)
        creds = None if batch.creds is None else copy.deepcopy(batch.creds)
        if not writes and creds is None and not batch.patch:
            await trio.lowlevel.checkpoint()
            return None
        change = Batch(creds=creds, patch=batch.patch or None, rev=batch.rev)
        return await self._commit("<batch>", {}, writes, change)

    async def commit_creds(self, creds: AuthCreds) -> int:
        """Make a creds snapshot durable, coalesced with concurrent saves. Since 0.1.0.

        Returns once a snapshot at least as new as this one is durable and visible:
        the durable sequence number of the commit that carried it (shared by every
        save it covered). Snapshots are ordered by call: a later call's snapshot is
        never overwritten by an earlier one's. If that commit fails, every caller it
        covered gets the error; saves made meanwhile go to the next commit.
        Cancelled while waiting, the snapshot may still be written (outcome unknown).
        """
        if self._open_transaction() is not None:
            raise StoreError("commit_creds inside a transaction: use tx.set_creds")
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        snapshot = copy.deepcopy(creds)
        round_ = self._creds_round
        round_.creds = snapshot
        me = _CredsWaiter()
        round_.waiters.append(me)
        if not self._creds_leading:
            self._creds_leading = True
            me.lead = True
        else:
            try:
                await me.woken.wait()
            except trio.Cancelled:
                me.gone = True
                if me.lead and not round_.taken:
                    # Leadership was handed to this task: the round must still be written.
                    with trio.CancelScope(shield=True):
                        await self._lead_creds()
                raise
        if me.lead and not round_.taken:
            await self._lead_creds()
        if round_.error is not None:
            error = round_.error
            if isinstance(error, DurabilityError):
                # One exception object per task (a shared one would pile up tracebacks).
                raise DurabilityError(error.location, error.operation, error.cause)
            raise error
        assert round_.seq is not None
        self._creds_saves += 1
        return round_.seq

    async def _lead_creds(self) -> None:
        """Commit the open round's newest snapshot, wake its callers, hand leadership on."""
        round_ = self._creds_round
        self._creds_round = _CredsRound()
        round_.taken = True
        assert round_.creds is not None
        try:
            # Shielded: one caller's cancellation must not fail everyone's snapshot.
            with trio.CancelScope(shield=True):
                round_.seq = await self._commit("<creds>", {}, {}, Batch(creds=round_.creds))
            self._creds_commits += 1
        except BaseException as exc:
            round_.error = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            for waiter in round_.waiters:
                waiter.woken.set()
            self._hand_over_creds()

    def _hand_over_creds(self) -> None:
        nxt = next((w for w in self._creds_round.waiters if not w.gone), None)
        if nxt is None:
            # Only cancelled callers (or none) wait: the next save leads, taking their
            # snapshot's round along (it is never older than that save's).
            self._creds_leading = False
            return
        nxt.lead = True
        nxt.woken.set()

    def in_transaction(self) -> bool:
        """Whether the current task runs inside an open transaction of this store."""
        return self._open_transaction() is not None

    def current_transaction(self) -> StoreTransaction | None:
        """The open transaction of the current task, if any."""
        return self._open_transaction()

    def transaction(
        self, key: str, *more_keys: str
    ) -> AbstractAsyncContextManager[StoreTransaction]:
        """A serializable transaction holding the locks of ``key`` (and ``more_keys``).

        Commits when the block exits normally; an exception discards every write.
        Raises ``TransactionConflict`` on exit if another commit invalidated a read.
        Nested inside an open transaction it joins it (one atomic commit at the
        outermost exit), also locking keys not yet held; an exception leaving the
        nested block rolls back only the writes made inside it.
        """
        return _TransactionBlock(self, key, more_keys)

    async def run_transaction(self, key: str, fn: Callable[[StoreTransaction], Awaitable[T]]) -> T:
        """Run ``fn(tx)`` in a transaction until it commits; never raises ``TransactionConflict``.

        ``fn`` may run more than once; only the run that commits has any effect. After
        ``optimistic_attempts`` conflicts it runs escalated (the module docstring says
        how), where nothing another task does can make it conflict again. Nested inside
        an open transaction it joins it and runs once: the outermost
        ``run_transaction`` owns the retries. Since 0.1.0; never gives up since 0.3.0.
        """
        if self._open_transaction() is not None:
            async with self.transaction(key) as tx:
                return await fn(tx)
        keys: set[str] = set()
        for attempt in range(self._optimistic_attempts):
            if attempt:
                self._retries += 1
            try:
                return await self._attempt(key, keys, fn, None)
            except TransactionConflict as conflict:
                _learn_keys(keys, conflict)
                await trio.lowlevel.checkpoint()
        return await self._run_escalated(key, keys, fn)

    async def _run_escalated(
        self, key: str, keys: MutableSet[str], fn: Callable[[StoreTransaction], Awaitable[T]]
    ) -> T:
        async with self._escalation:
            self._escalations += 1
            guard = _Guard()
            self._guard = guard
            try:
                while True:
                    self._retries += 1
                    try:
                        return await self._attempt(key, keys, fn, guard)
                    except TransactionConflict as conflict:
                        # Only a LockOrderConflict can get here; its keys go up front.
                        _learn_keys(keys, conflict)
            finally:
                self._guard = None

    async def _attempt(
        self,
        key: str,
        keys: MutableSet[str],
        fn: Callable[[StoreTransaction], Awaitable[T]],
        guard: _Guard | None,
    ) -> T:
        async with self.transaction(key, *keys) as tx:
            tx._guard = guard
            result = await fn(tx)
        return result

    def statistics(self) -> TransactionStatistics:
        return TransactionStatistics(
            commits=self._commits,
            failed_commits=self._failed_commits,
            conflicts=self._conflicts,
            retries=self._retries,
            active_transactions=self._active,
            pending_commits=len(self._queue),
            cached_entries=len(self._cache),
            cache_hits=self._hits,
            cache_misses=self._misses,
            uncertain_slots=len(self._uncertain),
            creds_saves=self._creds_saves,
            creds_commits=self._creds_commits,
            escalations=self._escalations,
        )

    async def aclose(self) -> None:
        """Refuse new work, then wait until every in-flight commit has settled."""
        self._closed = True
        while self._queue:
            await self._queue[-1].wait_applied()
        await trio.lowlevel.checkpoint()

    # -- internals ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the transactional store is closed")

    def _open_transaction(self) -> StoreTransaction | None:
        tx = self._current.get()
        return tx if tx is not None and tx.is_open else None

    def _add_pin(self, tick: int) -> int:
        pins = self._pins
        pins[tick] = pins.get(tick, 0) + 1
        return tick

    def _unpin(self, pin: int) -> None:
        pins = self._pins
        count = pins[pin] - 1
        if count:
            pins[pin] = count
            return  # the oldest pin is still there: nothing more to prune
        del pins[pin]
        if self._log:
            self._prune()

    def _prune(self) -> None:
        # Log entries older than every pinned reader can never cause a conflict again.
        if not self._log:
            return
        horizon = min(self._pins) if self._pins else self._tick
        while self._log and self._log[0][0] <= horizon:
            tick, slots = self._log.popleft()
            for slot in slots:
                if self._last_write.get(slot) == tick:
                    del self._last_write[slot]

    async def _lock_more(self, tx: StoreTransaction, keys: Sequence[str]) -> None:
        for key in sorted(set(keys) - set(tx._held)):
            if key > max(tx._held):
                await self._locks.acquire(key)
            elif not self._locks.acquire_nowait(key):
                raise LockOrderConflict(key, tuple(tx._held))
            tx._held.append(key)
        await trio.lowlevel.checkpoint()

    def _cache_put(self, slot: Slot, value: Value | _Absent) -> None:
        if self._cache_size == 0:
            return
        self._cache[slot] = value
        self._cache.move_to_end(slot)
        if self._cache_size is not None and len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _read_committed(
        self, type_: str, ids: Sequence[str], *, settled: bool = False
    ) -> tuple[dict[str, Value], int]:
        """Committed values of the present ids, all current at the returned tick.

        Slots with a commit in flight are read after it became visible, so a backend
        read never exposes a write before its turn. ``settled``: a cached value with a
        commit in flight waits for that commit too (a guarded read must not be
        invalidated by it).
        """
        found = self._read_cached(type_, ids, settled=settled)
        if found is not None:
            # Current at this tick; no park (the transaction yields at its commit).
            version = self._tick
            await trio.lowlevel.checkpoint_if_cancelled()
            return found, version
        read = _Read()
        try:
            return await self._read_rounds(type_, ids, read, settled)
        finally:
            if read.pin is not None:
                self._unpin(read.pin)

    def _read_cached(
        self, type_: str, ids: Sequence[str], *, settled: bool = False
    ) -> dict[str, Value] | None:
        """The present ids' values if every id is served by the cache, else ``None``."""
        cache, uncertain, writer_of = self._cache, self._uncertain, self._writer_of
        found: dict[str, Value] = {}
        for id_ in ids:
            slot = (type_, id_)
            value = cache.get(slot, _UNCACHED)
            if (
                value is _UNCACHED
                or (uncertain and slot in uncertain)
                or (settled and slot in writer_of)
            ):
                return None
            cache.move_to_end(slot)
            if value is not _ABSENT:
                found[id_] = value
        self._hits += len(ids)
        return found

    async def _read_rounds(
        self, type_: str, ids: Sequence[str], read: _Read, settled: bool
    ) -> tuple[dict[str, Value], int]:
        fetched = read.fetched
        for _round in range(_MAX_READ_ROUNDS):
            found: dict[str, Value] = {}
            needed: list[str] = []
            for id_ in ids:
                slot = (type_, id_)
                value: Value | _Absent
                if (
                    slot in self._cache
                    and slot not in self._uncertain
                    and not (settled and slot in self._writer_of)
                ):
                    self._cache.move_to_end(slot)
                    self._hits += 1
                    value = self._cache[slot]
                elif slot in fetched and self._still_current(slot, fetched[slot][1]):
                    value = fetched[slot][0]
                else:
                    needed.append(id_)
                    continue
                if value is not _ABSENT:
                    found[id_] = value
            if not needed:
                # Current at this tick (a later round comes after a wait: it has parked).
                return found, self._tick
            blocker = next(
                (p for id_ in needed if (p := self._writer_of.get((type_, id_))) is not None),
                None,
            )
            if blocker is not None:
                await blocker.wait_applied()
                continue
            self._misses += len(needed)
            start = self._tick
            if read.pin is None:
                read.pin = self._add_pin(start)
            values = await self._read_fn(type_, needed)
            for id_ in needed:
                slot = (type_, id_)
                value = values.get(id_, _ABSENT)
                fetched[slot] = (value, start)
                if self._still_current(slot, start) and slot not in self._uncertain:
                    self._cache_put(slot, value)
        raise TransactionConflict("<read>", [(type_, id_) for id_ in ids])

    def _still_current(self, slot: Slot, since: int) -> bool:
        return self._last_write.get(slot, 0) <= since and slot not in self._writer_of

    async def _commit(
        self,
        key: str,
        reads: Mapping[Slot, int],
        writes: dict[Slot, Value | None],
        creds: Batch | None,
        tx: StoreTransaction | None = None,
    ) -> int | None:
        """Validate, then commit ``writes`` with the creds change in ``creds`` (its keys unused).

        ``tx``: the transaction committing (``None`` for a write outside any).
        """
        if creds is not None and creds.creds is None and not creds.patch:
            creds = None
        slots = tuple(writes) if creds is None else (*writes, _CREDS_SLOT)
        if self._admission(key, reads, slots, tx) is not _Admission.NOW and not (
            await self._admit(key, reads, slots, tx)
        ):
            return None
        # No checkpoint since admission: the validation still holds.
        pending = _Pending(next(self._issues), writes, slots, None if tx is None else tx._pin)
        self._queue.append(pending)
        keys = self._register(pending)
        if creds is None:
            batch = Batch(keys=keys)
        else:
            self._writer_of[_CREDS_SLOT] = pending
            batch = Batch(keys=keys, creds=creds.creds, patch=creds.patch, rev=creds.rev)
        try:
            if self._sequenced:
                # A sequenced commit function queues the batch before its first checkpoint
                # and, once queued, settles it whatever happens to this task (a cancellation
                # it raises withdrew the batch): no shield needed, and a cancel scope per
                # commit costs more than the rest of a small transaction's bookkeeping.
                seq = await self._commit_fn(batch)
            else:
                with trio.CancelScope(shield=True):
                    seq = await self._commit_fn(batch)
        except BaseException:
            pending.outcome = _Outcome.FAILED
            self._drain()
            raise
        pending.outcome = _Outcome.ACKED
        pending.seq = seq
        self._drain()
        if not pending.applied:
            # Durable already; wait (not abortably, bounded by the earlier commits in
            # flight) until it is visible too, so a cancelled caller never sees "failed".
            await pending.wait_applied_to_the_end()
        return seq

    async def _admit(
        self,
        key: str,
        reads: Mapping[Slot, int],
        slots: tuple[Slot, ...],
        tx: StoreTransaction | None,
    ) -> bool:
        """Validate and wait until the commit may be queued; False for a read-only one.

        Returns without a checkpoint after the last check, so the caller queues the
        commit while every check still holds.
        """
        while True:
            verdict = self._admission(key, reads, slots, tx)
            if verdict is _Admission.NOW:
                return True
            if verdict is _Admission.READ_ONLY:
                # Its reads are all current now, so it serializes right here.
                await trio.lowlevel.checkpoint()
                return False
            if verdict is _Admission.AFTER_ESCALATED:
                # Holding no key lock, it can wait: after the escalated transaction
                # (the escalation lock is FIFO and no guard exists while it is held).
                async with self._escalation:
                    return await self._admit(key, reads, slots, tx)
            await verdict.wait_applied()

    def _admission(
        self,
        key: str,
        reads: Mapping[Slot, int],
        slots: tuple[Slot, ...],
        tx: StoreTransaction | None,
    ) -> _Admission | _Pending:
        """Validate now: raise ``TransactionConflict``, or say when it may be queued.

        A ``_Pending``: after that commit in flight became visible (then ask again).
        """
        if self._closed:
            self._check_open()  # raises
        last_write = self._last_write
        if reads and last_write:  # nothing logged (no other reader pinned): no conflict
            conflicts = [slot for slot, seen in reads.items() if last_write.get(slot, 0) > seen]
            if conflicts:
                self._conflicts += 1
                raise TransactionConflict(key, sorted(conflicts))
        if not slots:
            return _Admission.READ_ONLY
        guard = self._guard
        if guard is not None and not guard.slots.isdisjoint(slots):
            if tx is None:
                return _Admission.AFTER_ESCALATED
            if tx._guard is not guard:
                # It holds key locks the escalated one may wait for: it must yield.
                self._conflicts += 1
                raise TransactionConflict(key, sorted(guard.slots.intersection(slots)))
        if not self._writer_of:
            return _Admission.NOW  # nothing in flight to wait for
        blocker = self._blocker(reads, slots)
        return _Admission.NOW if blocker is None else blocker

    def _blocker(self, reads: Mapping[Slot, int], slots: tuple[Slot, ...]) -> _Pending | None:
        """An in-flight commit this one must wait for, if any."""
        writer_of = self._writer_of
        for slot in reads:
            pending = writer_of.get(slot)
            if pending is not None:
                return pending
        if self._sequenced:
            # Blind writes queue behind in-flight ones in durable order: no wait.
            return None
        for slot in slots:
            pending = writer_of.get(slot)
            if pending is not None:
                return pending
        return None

    def _register(self, pending: _Pending) -> dict[str, dict[str, Value | None]]:
        """Mark ``pending`` in flight on the slots it writes; its writes grouped for a batch.

        One pass over the writes does both (a transaction's per-slot work is most of
        its bookkeeping). The creds pseudo-slot is the caller's.
        """
        writer_of = self._writer_of
        grouped: dict[str, dict[str, Value | None]] = {}
        for slot, value in pending.writes.items():
            writer_of[slot] = pending
            ids = grouped.get(slot[0])
            if ids is None:
                ids = grouped[slot[0]] = {}
            ids[slot[1]] = value
        return grouped

    def _drain(self) -> None:
        """Make settled commits visible, strictly in validation order."""
        queue = self._queue
        while queue and queue[0].outcome is not _Outcome.PENDING:
            pending = queue.popleft()
            self._tick += 1
            if queue:
                self._leave(pending)
            else:
                self._writer_of.clear()  # nothing else in flight: every entry is this one's
            if self._pins:
                self._log_commit(pending)
            if pending.outcome is _Outcome.ACKED:
                self._apply(pending)
            else:
                self._discard(pending)
            pending.applied = True
            if pending.waited:
                pending.wake()
        if self._log:
            self._prune()

    def _leave(self, pending: _Pending) -> None:
        """``pending`` is no longer in flight on its slots; later commits' entries stay."""
        writer_of = self._writer_of
        for slot in pending.slots:
            if writer_of.get(slot) is pending:
                del writer_of[slot]

    def _log_commit(self, pending: _Pending) -> None:
        """Log a commit's slots at the current tick, if a reader may conflict with it."""
        pins = self._pins
        # An acknowledged commit's transaction is still open (it waits for this), so its
        # pin is its own; a failed one's may have been released already.
        own = pending.pin if pending.outcome is _Outcome.ACKED else None
        if len(pins) == 1 and own is not None and pins.get(own) == 1:
            # Only a pinned reader (a transaction that has read, a read under way) can
            # ever be invalidated by this commit: with none but the committing
            # transaction itself (validated already), nothing to log.
            return
        tick, last_write = self._tick, self._last_write
        for slot in pending.slots:
            last_write[slot] = tick
        self._log.append((tick, pending.slots))

    def _apply(self, pending: _Pending) -> None:
        """An acknowledged commit's values enter the cache."""
        self._commits += 1
        # An ordered commit function has settled every earlier batch by now.
        if self._uncertain:
            self._uncertain = {
                slot: issue for slot, issue in self._uncertain.items() if issue > pending.issue
            }
        cache, writes = self._cache, pending.writes
        # A bulk write (812 new pre-keys, a migration) is read back rarely: keeping it
        # would hold a second copy of the backend's data in every session and flush the
        # entries that are read. Later reads miss and go to the backend, which holds the
        # committed values.
        keep = len(writes) <= WRITE_CACHE_MAX_SLOTS and self._cache_size != 0
        if not keep:
            for slot in writes:
                cache.pop(slot, None)
            return
        for slot, value in writes.items():
            cache[slot] = _ABSENT if value is None else value
            cache.move_to_end(slot)
        size = self._cache_size
        if size is not None:
            while len(cache) > size:
                cache.popitem(last=False)

    def _discard(self, pending: _Pending) -> None:
        """A failed commit may still be durable: its slots are read through until settled."""
        self._failed_commits += 1
        for slot in pending.writes:
            self._cache.pop(slot, None)
            self._uncertain[slot] = pending.issue


class _TransactionBlock(AbstractAsyncContextManager[StoreTransaction]):
    """``async with store.transaction(key)``: a hand-written context manager (a hot path)."""

    __slots__ = ("_key", "_more_keys", "_outer", "_saved", "_store", "_token", "_tx")

    def __init__(self, store: TransactionalStore, key: str, more_keys: tuple[str, ...]) -> None:
        self._store = store
        self._key = key
        self._more_keys = more_keys
        self._outer: StoreTransaction | None = None
        self._saved: _Savepoint | None = None
        self._tx: StoreTransaction | None = None
        self._token: Token[StoreTransaction | None] | None = None

    async def __aenter__(self) -> StoreTransaction:
        store = self._store
        outer = store._current.get()  # ``_open_transaction``, spelled out on this hot path
        if outer is not None and outer._phase is _Phase.OPEN:
            await store._lock_more(outer, (self._key, *self._more_keys))
            self._outer = outer
            self._saved = outer._savepoint()
            return outer
        if store._closed:
            store._check_open()  # raises
        tx = StoreTransaction(store, self._key)
        self._tx = tx
        store._active += 1
        try:
            keys = sorted({self._key, *self._more_keys}) if self._more_keys else [self._key]
            locks = store._locks
            for lock_key in keys:
                if not locks.acquire_nowait(lock_key):
                    await locks.acquire(lock_key)
                tx._held.append(lock_key)
            self._token = store._current.set(tx)
        except BaseException:
            self._release()
            raise
        return tx

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._outer is not None:
            if exc_type is not None and self._saved is not None:
                self._outer._rollback(self._saved)
            return
        tx = self._tx
        assert tx is not None and self._token is not None
        store = self._store
        try:
            if exc_type is not None:
                tx._phase = _Phase.DISCARDED
                return
            tx._phase = _Phase.COMMITTING
            creds = None if tx._creds is None and tx._patch is None else tx._batch_creds()
            tx.commit_seq = await store._commit(tx.key, tx._reads, tx._writes, creds, tx)
            tx._phase = _Phase.COMMITTED
        finally:
            if tx._phase is not _Phase.COMMITTED:
                tx._phase = _Phase.DISCARDED
            store._current.reset(self._token)
            self._release()

    def _release(self) -> None:
        store, tx = self._store, self._tx
        assert tx is not None
        for lock_key in tx._held:
            store._locks.release(lock_key)
        store._active -= 1
        if tx._pin is not None:
            store._unpin(tx._pin)
