"""User-facing entry points: open an auth location and get creds plus a signal store.

``await use_native_file_auth_state(path)`` (and the multi-file, SQLite and memory
variants) opens a backend, reads the creds, and returns a ``PersistedAuth``:

* ``.state``: an ``AuthState`` (``.creds``, ``.keys``) for library use;
* ``await .save_creds(creds)``: a durable, acknowledged commit of a creds snapshot;
* ``.config``: an ``AuthConfig`` the runtime reads to wire its persister and
  signal-store actors to the same backend;
* ``.backend``, ``await .aclose()`` and ``async with`` support.

Only an empty or absent location starts a new device: the backend's ``read_creds``
returns ``None`` then, and fresh creds are committed durably before returning.
Backends raise typed errors for anything else; as a last guard, creds are never
created over a location that already holds keys.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import trio

from stores.creds import AuthCreds, init_auth_creds
from stores.encryption import KeySource, refuse_multi_file_key
from stores.errors import CorruptStateError, StoreError
from stores.memory import open_memory_backend
from stores.transactions import (
    DEFAULT_CACHE_SIZE,
    SEQUENCED_ATTRIBUTE,
    CommitFn,
    TransactionalStore,
    sequenced_on_call,
)
from stores.types import Batch, Persistence, SignalStore

__all__ = [
    "AuthConfig",
    "AuthState",
    "PersistedAuth",
    "enter_backend",
    "open_auth_state",
    "use_memory_auth_state",
    "use_multi_file_auth_state",
    "use_native_file_auth_state",
    "use_postgres_auth_state",
    "use_sqlite_auth_state",
]

PathLike = str | os.PathLike[str]


@dataclass
class AuthState:
    """What a session needs: creds and the Signal key store (Baileys' ``AuthenticationState``).

    Since 0.1.0.
    """

    creds: AuthCreds
    keys: SignalStore


@dataclass(frozen=True)
class AuthConfig:
    """The runtime overrides that wire a session to this auth location. Since 0.1.0.

    The runtime reads exactly these:

    * ``backend``: the ``Persistence`` the persister actor owns; it is the only
      writer of the location while the session runs;
    * ``creds``: the creds the connection actor starts from;
    * ``make_signal_store(commit)``: builds the signal-store actor's
      ``TransactionalStore`` reading from ``backend`` and committing through
      ``commit`` (a call to the persister).

    Once a runtime runs on it, do not also write through ``PersistedAuth.state.keys``:
    two transaction layers on one backend would not see each other's commits.
    """

    backend: Persistence
    creds: AuthCreds
    cache_size: int | None = DEFAULT_CACHE_SIZE

    @property
    def backend_name(self) -> str:
        return self.backend.backend_name

    @property
    def location(self) -> str:
        return self.backend.location

    def make_signal_store(self, commit: CommitFn) -> TransactionalStore:
        """A transaction layer over this backend's reads and the given commit function."""
        return TransactionalStore(self.backend.read_keys, commit, cache_size=self.cache_size)


class PersistedAuth:
    """An open auth location: creds, a transactional key store, and its backend. Since 0.1.0.

    Close it with ``await aclose()`` or use it as ``async with``; closing waits for
    in-flight commits, then closes (and unlocks) the backend.

    ``state`` and its key store are made on first use: a runtime session uses only
    ``backend`` (its actors run their own transaction layer on it), so an auth
    location opened for one holds no second transaction layer.
    """

    def __init__(
        self,
        backend: Persistence,
        creds: AuthCreds,
        exit_stack: AsyncExitStack,
        *,
        cache_size: int | None = DEFAULT_CACHE_SIZE,
    ) -> None:
        self.backend = backend
        self._latest = creds
        self._state: AuthState | None = None
        self._store: TransactionalStore | None = None
        self._cache_size = cache_size
        self._exit_stack = exit_stack
        self._closed = False
        self._saves = 0
        self._state_ticket = 0

    def __repr__(self) -> str:
        return f"PersistedAuth({self.backend.backend_name}:{self.backend.location!r})"

    @property
    def state(self) -> AuthState:
        """The creds (newest acknowledged) and the transactional key store."""
        if self._state is None:
            self._state = AuthState(creds=self._latest, keys=self.keys)
        return self._state

    @property
    def config(self) -> AuthConfig:
        """The runtime overrides for this location, with the current ``state.creds``."""
        creds = self._state.creds if self._state is not None else self._latest
        return AuthConfig(backend=self.backend, creds=creds, cache_size=self._cache_size)

    @property
    def keys(self) -> TransactionalStore:
        """``state.keys`` with its full type (statistics, ``commit_batch``)."""
        if self._store is None:
            self._store = TransactionalStore(
                self.backend.read_keys, self._owner_commit(), cache_size=self._cache_size
            )
        return self._store

    async def save_creds(self, creds: AuthCreds) -> int:
        """Make ``creds`` durable (ordered with key commits); returns the durable sequence.

        Concurrent saves are coalesced (``TransactionalStore.commit_creds``): a burst
        costs a few commits, each call returns once a snapshot at least as new as its
        own is durable, and ``state.creds`` becomes the newest acknowledged one.
        """
        self._saves += 1
        ticket = self._saves
        seq = await self.keys.commit_creds(creds)
        if ticket > self._state_ticket:
            # Calls of one round wake in any order: only a newer snapshot replaces state.
            self._state_ticket = ticket
            self.state.creds = creds
        return seq

    def _owner_commit(self) -> CommitFn:
        """The backend's commit with this object as the creds owner: patches merged in order.

        A patch is merged onto the newest creds handed in (before the first checkpoint,
        so a backend that sequences commits on call keeps them in merge order), and the
        backend gets a snapshot. A commit that fails may still be durable, so its change
        stays in the merged view, as it does in the store's uncertain slots.
        """
        backend = self.backend

        async def commit_creds(batch: Batch) -> int:
            resolved = batch.resolved(self._latest)
            assert resolved.creds is not None  # a creds change resolves to a snapshot
            self._latest = resolved.creds
            seq = await backend.commit(resolved)
            if batch.patch is not None:
                self.state.creds = resolved.creds.copy()
            return seq

        def commit(batch: Batch) -> Awaitable[int]:
            if batch.creds is None and batch.patch is None:
                # The backend's own coroutine, awaited by the caller: no frame of this
                # wrapper on the path of every key commit.
                return backend.commit(batch)
            return commit_creds(batch)

        if getattr(backend.commit, SEQUENCED_ATTRIBUTE, False) is True:
            return sequenced_on_call(commit)
        return commit

    async def aclose(self) -> None:
        """Wait for in-flight commits, then close the backend. Closing twice is harmless."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            # Made now if never used, so that ``keys`` refuses work after close as before.
            await self.keys.aclose()
        finally:
            await self._exit_stack.aclose()

    async def __aenter__(self) -> PersistedAuth:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def enter_backend(stack: AsyncExitStack, opened: Any) -> Persistence:
    """Enter what a backend opener returned: an async context manager or an awaitable.

    Openers differ (``async def open_x() -> Backend`` or an ``asynccontextmanager``);
    either way the backend is closed when ``stack`` closes.
    """
    if hasattr(opened, "__aenter__"):
        backend = await stack.enter_async_context(opened)
    else:
        backend = await opened
        if isinstance(backend, Persistence):
            stack.push_async_callback(backend.aclose)
    if not isinstance(backend, Persistence):
        raise StoreError(f"{backend!r} does not implement stores.Persistence")
    return backend


async def open_auth_state(
    backend: Persistence,
    *,
    close_backend: bool = True,
    cache_size: int | None = DEFAULT_CACHE_SIZE,
) -> PersistedAuth:
    """Open auth state on any backend (custom ones included).

    Reads the creds; when the backend reports none (an empty or absent location),
    commits fresh ones from ``init_auth_creds()`` durably before returning. With
    ``close_backend`` (the default) the ``PersistedAuth`` closes the backend.
    """
    stack = AsyncExitStack()
    if close_backend:
        stack.push_async_callback(backend.aclose)
    try:
        return await _open_on(backend, stack, cache_size)
    except BaseException:
        await stack.aclose()
        raise


async def _open_on(
    backend: Persistence, stack: AsyncExitStack, cache_size: int | None
) -> PersistedAuth:
    creds = await backend.read_creds()
    if creds is None:
        creds = await _start_new_device(backend)
    return PersistedAuth(backend, creds, stack, cache_size=cache_size)


async def _start_new_device(backend: Persistence) -> AuthCreds:
    # A backend says "no creds" only for an empty location; refuse anyway if keys exist,
    # because fresh creds over a live device's keys would orphan it for good.
    held = await backend.snapshot()
    if held.creds is not None or any(held.keys.values()):
        raise CorruptStateError(
            backend.location, "holds Signal keys but no creds; refusing to start a new device"
        )
    creds = init_auth_creds()
    await backend.commit(Batch(creds=creds))
    return creds


async def _open_with(opener: Callable[[], Any], cache_size: int | None) -> PersistedAuth:
    stack = AsyncExitStack()
    try:
        backend = await enter_backend(stack, opener())
        return await _open_on(backend, stack, cache_size)
    except BaseException:
        await stack.aclose()
        raise


def _backend_module(name: str) -> Any:
    # Imported on use: each backend is optional to this module, and importing them all
    # would make every entry point pay for every backend.
    return importlib.import_module(f"stores.{name}")


async def use_native_file_auth_state(
    path: PathLike,
    *,
    cache_size: int | None = DEFAULT_CACHE_SIZE,
    encryption_key: KeySource | None = None,
) -> PersistedAuth:
    """Auth state in the native crash-safe directory format at ``path`` (the default).

    ``encryption_key`` (since 0.2.0; 32 bytes, a key file path or a callback) encrypts
    every record; see docs/encryption.md.
    """
    module = _backend_module("native")
    return await _open_with(
        lambda: module.open_native_backend(path, encryption_key=encryption_key), cache_size
    )


async def use_multi_file_auth_state(
    path: PathLike,
    *,
    cache_size: int | None = DEFAULT_CACHE_SIZE,
    encryption_key: KeySource | None = None,
) -> PersistedAuth:
    """Auth state in a Baileys-compatible multi-file JSON directory at ``path``.

    The folder is a bridge Baileys itself must read, so it is never encrypted: an
    ``encryption_key`` is refused (``EncryptionKeyError``) before anything is opened.
    """
    refuse_multi_file_key(encryption_key)
    module = _backend_module("multi_file")
    return await _open_with(lambda: module.open_multi_file_backend(path), cache_size)


async def use_sqlite_auth_state(
    db_path: PathLike,
    account: str = "default",
    *,
    cache_size: int | None = DEFAULT_CACHE_SIZE,
    encryption_key: KeySource | None = None,
) -> PersistedAuth:
    """Auth state of one ``account`` in the SQLite database at ``db_path``.

    ``encryption_key`` (since 0.2.0) encrypts the account's rows; see docs/encryption.md.
    """
    module = _backend_module("sqlite")
    return await _open_with(
        lambda: module.open_sqlite_backend(db_path, account=account, encryption_key=encryption_key),
        cache_size,
    )


async def use_postgres_auth_state(
    dsn: str,
    account: str = "default",
    *,
    lease_ttl: float = 15.0,
    cache_size: int | None = DEFAULT_CACHE_SIZE,
    lease_epoch: int | None = None,
    encryption_key: KeySource | None = None,
) -> PersistedAuth:
    """Auth state of one ``account`` in the PostgreSQL database at ``dsn``. Since 0.2.0.

    Takes the account's lease (``StoreLockedError`` names a live owner) and renews it
    every ``lease_ttl / 3`` seconds; a commit after the lease was lost raises
    ``FencedError``. ``lease_epoch``: take up the lease this process claimed for a
    fleet at that epoch (``stores.postgres_fleet``) instead of taking one.
    ``encryption_key`` (since 0.2.0) encrypts the account's rows.
    """
    module = _backend_module("postgres")
    return await _open_with(
        lambda: module.open_postgres_backend(
            dsn,
            account=account,
            lease_ttl=lease_ttl,
            lease_epoch=lease_epoch,
            encryption_key=encryption_key,
        ),
        cache_size,
    )


async def use_memory_auth_state(
    name: str = "memory", *, cache_size: int | None = DEFAULT_CACHE_SIZE
) -> PersistedAuth:
    """Auth state held in memory only: a new device every time (tests, ephemeral bots)."""
    return await _open_with(lambda: open_memory_backend(name), cache_size)
