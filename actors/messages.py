"""The messages the session's actors exchange, and ``Receipt``, the deferred answer.

Every request is a frozen dataclass. Calls that must wait for the disk (a durable
commit, a transaction) do not hold the actor's mailbox while they wait: the
actor's ``handle_call`` answers at once with a ``Receipt`` and settles it later
from a background task (OTP's ``{noreply, ...}`` + ``gen_server:reply``). That
is what lets the persister group many commits into one fsync. If the actor ends
before settling a receipt, the receipt fails with ``ReceiptAbandoned`` (outcome
unknown), never hangs. ``call_durable`` does both steps with one deadline.

Since 0.1.0.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import trio

from actors.connection.binary import BinaryNode
from actors.errors import ReceiptAbandoned, ReceiptTimeout
from runtime.actor import Actor
from runtime.child import ChildControl
from runtime.exit import ExitReason
from runtime.ref import ActorRef
from stores.creds import AuthCreds, CredsPatch
from stores.types import Batch, KeyWrites, Transaction

T = TypeVar("T")


class Receipt(Generic[T]):
    """A one-shot answer an actor owes: resolved with a value or failed with an error."""

    __slots__ = ("_error", "_event", "_value", "owner", "what")

    def __init__(self, owner: str, what: str) -> None:
        self.owner = owner
        self.what = what
        self._event = trio.Event()
        self._value: T | None = None
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        state = "pending" if not self._event.is_set() else ("failed" if self._error else "done")
        return f"Receipt({self.owner}: {self.what}, {state})"

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def resolve(self, value: T) -> None:
        """Settle with ``value`` (ignored once settled)."""
        if not self._event.is_set():
            self._value = value
            self._event.set()

    def fail(self, error: BaseException) -> None:
        """Settle with ``error`` (ignored once settled)."""
        if not self._event.is_set():
            self._error = error
            self._event.set()

    def abandon(self) -> None:
        """The owner ends without an answer: fail with ``ReceiptAbandoned``."""
        self.fail(ReceiptAbandoned(self.owner, self.what))

    async def wait(self, timeout: float = math.inf) -> T:  # noqa: ASYNC109 - a receipt's deadline is part of its protocol
        """The value, or the error raised; ``ReceiptTimeout`` after ``timeout`` seconds."""
        with trio.move_on_after(timeout):
            await self._event.wait()
        if not self._event.is_set():
            raise ReceiptTimeout(f"{self.owner}: {self.what}", timeout)
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set together with the event


class ReceiptBook:
    """The receipts one actor incarnation still owes; ``abandon_all`` on its way out."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._open: set[Receipt[Any]] = set()
        self._prune_at = 64

    def __len__(self) -> int:
        return sum(1 for r in self._open if not r.done)

    def issue(self, what: str) -> Receipt[Any]:
        receipt: Receipt[Any] = Receipt(self.owner, what)
        if len(self._open) >= self._prune_at:
            # Settled receipts are dropped in batches: amortised O(1) per issue.
            self._open = {r for r in self._open if not r.done}
            self._prune_at = max(64, 2 * len(self._open))
        self._open.add(receipt)
        return receipt

    def abandon_all(self) -> None:
        open_, self._open = self._open, set()
        for receipt in open_:
            receipt.abandon()


class RepliesLater(Actor):
    """An actor that answers calls with a ``Receipt`` settled later. Since 0.2.0.

    The receipts of an incarnation come from one book (``receipts``), and every way
    out of the incarnation abandons what is still open, even when it is killed: no
    caller waits for an answer that will not come. ``reply_later(what, work)`` runs
    ``work`` as a task of the incarnation and settles the receipt with its result,
    or with its error when that is one of ``answers``; another error crashes the
    actor, as an error in a handler would.
    """

    _receipts: ReceiptBook | None = None

    @property
    def receipts(self) -> ReceiptBook:
        if self._receipts is None:
            # One actor object serves one incarnation: a ChildSpec builds a fresh one.
            self._receipts = ReceiptBook(f"{self.ctx.name}#{self.ctx.incarnation}")
        return self._receipts

    async def run_child(
        self, control: ChildControl, task_status: trio.TaskStatus[None]
    ) -> ExitReason:
        try:
            return await super().run_child(control, task_status)
        finally:
            if self._receipts is not None:
                self._receipts.abandon_all()

    def reply_later(
        self,
        what: str,
        work: Callable[[], Awaitable[Any]],
        *,
        answers: tuple[type[Exception], ...] = (Exception,),
    ) -> Receipt[Any]:
        """A receipt for ``what``, settled by ``work`` running as a task of this incarnation."""
        receipt: Receipt[Any] = self.receipts.issue(what)

        async def run() -> None:
            try:
                value = await work()
            except answers as exc:
                receipt.fail(exc)
            else:
                receipt.resolve(value)

        self.ctx.nursery.start_soon(run)
        return receipt


async def call_durable(ref: ActorRef, msg: Any, *, timeout: float) -> Any:  # noqa: ASYNC109 - call deadline, as ActorRef.call
    """``call`` an actor that answers with a ``Receipt`` and wait for it, all within ``timeout``."""
    deadline = trio.current_time() + timeout
    receipt = await ref.call(msg, timeout=timeout)
    if not isinstance(receipt, Receipt):
        raise TypeError(f"{ref.name} answered {type(receipt).__name__}, expected a Receipt")
    return await receipt.wait(max(0.0, deadline - trio.current_time()))


# --- persister -------------------------------------------------------------------


@dataclass(frozen=True)
class SaveCreds:
    """Cast: merge these creds fields and make them durable (coalesced, not awaited).

    ``rev`` is the sender's monotonic revision; a change older than one already
    accepted is ignored, one at or below the sender's fence is refused.
    """

    patch: CredsPatch
    rev: int


@dataclass(frozen=True)
class CommitBatch:
    """Call → ``Receipt[int]``: commit keys (+ a creds patch) atomically; resolves with the seq.

    Resolved only once durable, failed with the store's error (``DurabilityError``...)
    otherwise. The batch's ``rev`` orders its patch with ``SaveCreds`` ones; a batch
    whose ``rev`` is at or below the writer's fence fails whole with
    ``StaleCredsChange``; a whole snapshot (``batch.creds``) fails with
    ``CredsSnapshotRefused``.
    """

    batch: Batch = field(repr=False)


@dataclass(frozen=True)
class LoadCreds:
    """Call → ``Receipt[CredsState]``: the durable creds, after pending changes settle.

    With ``writer`` the caller becomes the line of numbered creds changes (the
    connection actor on init): every change numbered at or below the answer's
    ``fence`` that arrives later (queued by a dead incarnation) is refused, and the
    caller numbers its own above it.
    """

    writer: bool = False


@dataclass(frozen=True)
class CredsState:
    """Durable creds (a private copy), their revision and sequence, and the writer's fence."""

    creds: AuthCreds = field(repr=False)
    rev: int
    seq: int | None
    fence: int = 0


@dataclass(frozen=True)
class ReadKeys:
    """Call → ``dict``: committed key values of the present ids, read from the backend."""

    type: str
    ids: tuple[str, ...]


@dataclass(frozen=True)
class PersisterStats:
    """Call → ``PersisterStatistics``."""


@dataclass(frozen=True)
class PersisterStatistics:
    """Counts of one persister incarnation (for tests and ``statistics()``)."""

    incarnation: int
    backend: str
    location: str
    commits: int
    snapshots_received: int
    snapshots_written: int
    batches: int
    durable_seq: int | None
    durable_rev: int
    pending: bool


# --- signal store ------------------------------------------------------------------


@dataclass(frozen=True)
class KeysGet:
    """Call → ``Receipt[dict]``: ``store.get(type, ids)``."""

    type: str
    ids: tuple[str, ...]


@dataclass(frozen=True)
class KeysSet:
    """Call → ``Receipt[None]``: ``store.set(data)`` (durable when the receipt resolves)."""

    data: KeyWrites = field(repr=False)


@dataclass(frozen=True)
class CommitKeysAndCreds:
    """Call → ``Receipt[int | None]``: keys and a creds patch in ONE atomic commit."""

    keys: KeyWrites = field(repr=False)
    patch: CredsPatch
    rev: int


@dataclass(frozen=True)
class RunTransaction:
    """Call → ``Receipt[T]``: ``store.run_transaction(key, fn)`` inside the signal-store actor."""

    key: str
    fn: Callable[[Transaction], Awaitable[Any]]


# --- connection ----------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionInfo:
    """Call → ``ConnectionSnapshot``."""


@dataclass(frozen=True)
class Query:
    """Call → ``Receipt[BinaryNode]``: send an iq on the open connection, its answer.

    The receipt fails with ``NotConnected`` when no connection is open,
    ``QueryTimeout`` after ``timeout`` seconds (``None``: the configured query
    timeout), ``ConnectionLost`` if the connection ends first. Since 0.2.0.
    """

    node: BinaryNode
    timeout: float | None = None


@dataclass(frozen=True)
class SendNode:
    """Call → ``Receipt[None]``: send a stanza on the open connection (``NotConnected``
    when none is open); resolved once handed to the connection's writer. Since 0.2.0.
    """

    node: BinaryNode


@dataclass(frozen=True)
class ConnectionSnapshot:
    """Where the connection actor is."""

    state: str
    attempts: int
    me: str | None


__all__ = [
    "CommitBatch",
    "CommitKeysAndCreds",
    "ConnectionInfo",
    "ConnectionSnapshot",
    "CredsState",
    "EndReason",
    "KeysGet",
    "KeysSet",
    "LoadCreds",
    "PersisterStatistics",
    "PersisterStats",
    "Query",
    "ReadKeys",
    "Receipt",
    "ReceiptBook",
    "RepliesLater",
    "RunTransaction",
    "SaveCreds",
    "SendNode",
    "SessionStatus",
    "call_durable",
]


# --- session status (the runtime's view, outside the restarting actors) ---------------


class EndReason(enum.Enum):
    """Why a session ended for good."""

    STOPPED = "stopped"  # asked to stop (rt.stop(), Ctrl-C)
    LOGGED_OUT = "logged_out"  # 401: the phone removed the device
    REPLACED = "replaced"  # 440: another client took over the session
    REFUSED = "refused"  # 403/411: the server refuses this device
    FAILED = "failed"  # the session tree gave up (restart intensity) or failed to start
    FENCED = "fenced"  # the store's lease was lost: another process may own the account


class SessionStatus:
    """What a session's connection reports to the runtime: its state and how it ended.

    Owned by the runtime (it outlives every actor restart); the connection actor
    is its only writer. ``wait_state`` and ``ended`` let the runtime wait.
    """

    def __init__(self, account: str, initial: str = "connecting") -> None:
        self.account = account
        self.state = initial
        self.me: str | None = None
        self.end_reason: EndReason | None = None
        self.error: BaseException | None = None
        self.ended = trio.Event()
        self._changed = trio.Event()

    def __repr__(self) -> str:
        return f"SessionStatus({self.account!r}, state={self.state}, end={self.end_reason})"

    def set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._changed.set()
            self._changed = trio.Event()

    def end(self, reason: EndReason, error: BaseException | None = None) -> None:
        """Record the end (the first reason wins) and wake waiters."""
        if self.end_reason is None:
            self.end_reason = reason
            self.error = error
        self.set_state("closed")
        self.ended.set()
        self._changed.set()

    async def wait_changed(self) -> None:
        """Return at the next state change or end."""
        if self.ended.is_set():
            await trio.lowlevel.checkpoint()
            return
        await self._changed.wait()
