"""The actors' mail: every request the session's actors exchange, and what they answer.

Every request is a frozen dataclass. A call whose answer must wait (a durable
commit, a transaction, an iq) is answered at once with a ``runtime.reply.Reply``
that settles later; ``call_durable`` waits for both with one deadline.

Since 0.1.0 (in ``actors.messages``; here since 0.2.0).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from actors.connection.binary import BinaryNode
from stores.creds import AuthCreds, CredsPatch
from stores.types import Batch, KeyWrites, StoreSnapshot, Transaction

# --- persister -------------------------------------------------------------------


@dataclass(frozen=True)
class SaveCreds:
    """Cast: merge these creds fields and make them durable (coalesced, not awaited).

    ``rev`` is the sender's monotonic revision; a change older than one already
    accepted is ignored, one at or below the sender's fence is refused.
    ``result``, when given, is the sender's own creds with the patch applied: when the
    merge gives equal creds the persister keeps that object, so sender and persister
    share one object instead of holding two equal ones (neither changes it in place).
    """

    patch: CredsPatch
    rev: int
    result: AuthCreds | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class CommitBatch:
    """Call → ``Reply[int]``: commit keys (+ a creds patch) atomically; resolves with the seq.

    Resolved only once durable, failed with the store's error (``DurabilityError``...)
    otherwise. The batch's ``rev`` orders its patch with ``SaveCreds`` ones; a batch
    whose ``rev`` is at or below the writer's fence fails whole with
    ``StaleCredsChange``; a whole snapshot (``batch.creds``) fails with
    ``CredsSnapshotRefused``.
    """

    batch: Batch = field(repr=False)


@dataclass(frozen=True)
class LoadCreds:
    """Call → ``Reply[CredsState]``: the durable creds, after pending changes settle.

    With ``writer`` the caller becomes the line of numbered creds changes (the
    connection actor on init): every change numbered at or below the answer's
    ``fence`` that arrives later (queued by a dead incarnation) is refused, and the
    caller numbers its own above it.
    """

    writer: bool = False


@dataclass(frozen=True)
class CredsState:
    """Durable creds, their revision and sequence, and the writer's fence.

    ``creds`` is the persister's own object, shared: read it, or copy it before changing.
    """

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
class TakeSnapshot:
    """Call → ``DurableSnapshot``: the committed state at a point in durable order.

    Taken while no commit is in flight, so it holds exactly the commits up to its
    ``seq``. Changes handed over but not yet committed (unacknowledged) are not in it.
    Since 0.2.0.
    """


@dataclass(frozen=True)
class DurableSnapshot:
    """Everything committed up to ``seq`` (the point), and where it was read."""

    seq: int
    snapshot: StoreSnapshot = field(repr=False)
    backend: str
    location: str
    key_id: str | None = None
    """The id of the key the store is encrypted under (``None``: a plain store)."""


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
    """Call → ``Reply[dict]``: ``store.get(type, ids)``."""

    type: str
    ids: tuple[str, ...]


@dataclass(frozen=True)
class KeysSet:
    """Call → ``Reply[None]``: ``store.set(data)`` (durable when the reply resolves)."""

    data: KeyWrites = field(repr=False)


@dataclass(frozen=True)
class CommitKeysAndCreds:
    """Call → ``Reply[int | None]``: keys and a creds patch in ONE atomic commit."""

    keys: KeyWrites = field(repr=False)
    patch: CredsPatch
    rev: int


@dataclass(frozen=True)
class RunTransaction:
    """Call → ``Reply[T]``: ``store.run_transaction(key, fn)`` inside the signal-store actor."""

    key: str
    fn: Callable[[Transaction], Awaitable[Any]]


# --- connection ----------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionInfo:
    """Call → ``ConnectionSnapshot``."""


@dataclass(frozen=True)
class Query:
    """Call → ``Reply[BinaryNode]``: send an iq on the open connection, its answer.

    The reply fails with ``NotConnected`` when no connection is open,
    ``QueryTimeout`` after ``timeout`` seconds (``None``: the configured query
    timeout), ``ConnectionLost`` if the connection ends first. Since 0.2.0.
    """

    node: BinaryNode
    timeout: float | None = None


@dataclass(frozen=True)
class SendNode:
    """Call → ``Reply[None]``: send a stanza on the open connection (``NotConnected``
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
    "DurableSnapshot",
    "KeysGet",
    "KeysSet",
    "LoadCreds",
    "PersisterStatistics",
    "PersisterStats",
    "Query",
    "ReadKeys",
    "RunTransaction",
    "SaveCreds",
    "SendNode",
    "TakeSnapshot",
]
