"""The shapes every backend and signal store share: values, batches, protocols.

Key values are *plain data*, exactly the shapes Baileys keeps in its key store:
``bytes | str | int | float | bool | None | list[Value] | dict[str, Value]``.
A pre-key is ``{"private": bytes, "public": bytes}``, a sender key is ``bytes``,
a session is an opaque nested structure that must round-trip exactly.
Converting to richer types (``KeyPair``) is done at the edges, in ``stores.keys``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

from stores.errors import InvalidValueError

if TYPE_CHECKING:
    from stores.creds import AuthCreds, CredsPatch

Value = Any
"""Plain data: bytes, str, int, float, bool, None, list of values, dict of str to value."""

KeyWrites = Mapping[str, Mapping[str, Value | None]]
"""``{type: {id: value or None}}``; ``None`` deletes the id."""

BAILEYS_KEY_TYPES: tuple[str, ...] = (
    "pre-key",
    "session",
    "sender-key",
    "sender-key-memory",
    "app-state-sync-key",
    "app-state-sync-version",
    "lid-mapping",
    "device-list",
    "tctoken",
    "identity-key",
)
"""The key types of Baileys v7 (v6 has the first six)."""

KEY_TYPES: tuple[str, ...] = (*BAILEYS_KEY_TYPES, "received-message", "sent-message")
"""Every key type: Baileys' and our own two (the messages kept so a redelivered stanza
is answered without decrypting twice, and those kept to answer retry receipts).
Adding one here is the whole change:
every backend checks types with ``check_key_type`` and the multi-file layout derives
its file names from this tuple."""

KEY_FILE_PREFIXES: tuple[str, ...] = tuple(f"{type_}-" for type_ in KEY_TYPES)
"""How Baileys' multi-file key file names start (``<type>-<id>.json``)."""

_KEY_TYPE_SET = frozenset(KEY_TYPES)


def check_key_type(type_: str) -> str:
    """``type_`` itself when it is one of ``KEY_TYPES``; else ``InvalidValueError`` naming it."""
    if type_ not in _KEY_TYPE_SET:
        raise InvalidValueError("key type", f"{type_!r} is not one of {list(KEY_TYPES)}")
    return type_

T = TypeVar("T")


@dataclass(frozen=True)
class Batch:
    """One atomic unit of durable change: key writes and, optionally, a creds change.

    ``creds`` is a whole snapshot: what a backend writes. ``patch`` is the creds
    fields a component changed; the creds owner (the persister in a session,
    ``PersistedAuth`` as a library) merges it into its creds in arrival order and
    hands the backend a snapshot, so a backend never sees a patch. ``rev`` is the
    sender's revision of the change (the connection numbers its changes; a Signal
    transaction's patch carries none): the owner refuses a change older than one it
    already accepted from that sender's line. Since 0.1.0 (``patch``,
    ``rev``: 0.2.0).
    """

    keys: KeyWrites = field(default_factory=dict)
    creds: AuthCreds | None = None
    patch: CredsPatch | None = None
    rev: int | None = None

    def is_empty(self) -> bool:
        return self.creds is None and not self.patch and not any(self.keys.values())

    def backend_creds(self) -> AuthCreds | None:
        """The snapshot a backend writes; an unmerged patch is refused, never dropped."""
        if self.patch:
            raise InvalidValueError(
                "batch", "a creds patch reached a backend unmerged (the creds owner merges it)"
            )
        return self.creds

    def resolved(self, current: AuthCreds) -> Batch:
        """For a backend: ``patch`` merged onto ``creds`` (or ``current``) as one snapshot."""
        if self.patch is None:
            return self
        base = self.creds if self.creds is not None else current
        return Batch(keys=self.keys, creds=self.patch.apply(base), rev=self.rev)


@dataclass(frozen=True)
class StoreSnapshot:
    """Everything a backend holds, as read back (for migration, inspect and tests)."""

    creds: AuthCreds | None
    keys: dict[str, dict[str, Value]]


@runtime_checkable
class Persistence(Protocol):
    """A durable backend: the one thing that writes an auth location.

    ``commit`` returns only after the batch is durable (or raises
    ``DurabilityError``); concurrent commits may be grouped into one fsync.
    """

    backend_name: ClassVar[str]

    @property
    def location(self) -> str: ...

    async def read_creds(self) -> AuthCreds | None: ...

    async def read_keys(self, type: str, ids: Sequence[str]) -> dict[str, Value]: ...

    async def commit(self, batch: Batch) -> int:
        """Make ``batch`` durable atomically; return the durable sequence number."""
        ...

    async def snapshot(self) -> StoreSnapshot: ...

    async def aclose(self) -> None: ...


class Transaction(Protocol):
    """The handle inside ``store.transaction(key)``: reads see its own writes."""

    async def get(self, type: str, ids: Sequence[str]) -> dict[str, Value]: ...

    async def set(self, data: KeyWrites) -> None: ...


@runtime_checkable
class SignalStore(Protocol):
    """The key store the Signal layer talks to (Baileys' SignalKeyStoreWithTransaction)."""

    async def get(self, type: str, ids: Sequence[str]) -> dict[str, Value]: ...

    async def set(self, data: KeyWrites) -> None: ...

    def transaction(self, key: str) -> AbstractAsyncContextManager[Transaction]: ...

    def in_transaction(self) -> bool: ...

    async def run_transaction(self, key: str, fn: Callable[[Transaction], Awaitable[T]]) -> T: ...
