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

if TYPE_CHECKING:
    from stores.creds import AuthCreds

Value = Any
"""Plain data: bytes, str, int, float, bool, None, list of values, dict of str to value."""

KeyWrites = Mapping[str, Mapping[str, Value | None]]
"""``{type: {id: value or None}}``; ``None`` deletes the id."""

KEY_TYPES: tuple[str, ...] = (
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

T = TypeVar("T")


@dataclass(frozen=True)
class Batch:
    """One atomic unit of durable change: key writes and, optionally, a creds snapshot."""

    keys: KeyWrites = field(default_factory=dict)
    creds: AuthCreds | None = None

    def is_empty(self) -> bool:
        return self.creds is None and not any(self.keys.values())


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
