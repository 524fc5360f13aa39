"""The signal-store actor: hosts the session's ``SignalStore`` and serves it by call.

The store is ``stores.TransactionalStore`` (the one transaction layer) whose
``read`` is a ``ReadKeys`` call and whose ``commit`` is a ``CommitBatch`` call to
the persister, so every key write goes through the one durable writer and
becomes visible only after its durable ack. A custom store factory given in the
config (``Config.signal_store``) is used instead; it receives the same read and
commit functions and the configured options.

Requests (``KeysGet``, ``KeysSet``, ``CommitKeysAndCreds``, ``RunTransaction``,
``WithStore``) are answered at once with a ``Reply`` and run as tasks of this
incarnation, so transactions proceed concurrently (the store isolates them) and
their commits group at the persister. A restarted incarnation builds a fresh store: its view
is re-read from the backend, never carried over.

Since 0.1.0.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from actors.mail import CommitBatch, CommitKeysAndCreds, KeysGet, KeysSet, ReadKeys, RunTransaction
from runtime.exit import ExitReason
from runtime.ref import ActorRef
from runtime.reply import RepliesLater, Reply, call_durable
from stores.transactions import DEFAULT_CACHE_SIZE, CommitFn, ReadFn, TransactionalStore
from stores.types import Batch, SignalStore, Value


@dataclass(frozen=True)
class WithStore:
    """Run ``fn(store)`` in this actor (the message layer's decrypts and encrypts).

    For work that needs the store itself rather than one transaction handle: a
    repository operation opens its own transactions, nested as it needs them.
    """

    fn: Callable[[SignalStore], Awaitable[Any]]


SignalStoreFactory = Callable[[ReadFn, CommitFn, Mapping[str, Any]], SignalStore]
"""``factory(read, commit, options) -> SignalStore``: a custom store for the session."""

DEFAULT_STORE_TIMEOUT = 30.0
"""Seconds a read or commit through the persister may take before it fails."""


class SignalStoreActor(RepliesLater):
    """Owns the session's SignalStore view; see the module docstring."""

    def __init__(
        self,
        persister: ActorRef,
        *,
        factory: SignalStoreFactory | None = None,
        options: Mapping[str, Any] | None = None,
        cache_size: int | None = DEFAULT_CACHE_SIZE,
        timeout: float = DEFAULT_STORE_TIMEOUT,
    ) -> None:
        self._persister = persister
        self._factory = factory
        self._options = dict(options or {})
        self._cache_size = cache_size
        self._timeout = timeout
        self._store: SignalStore | None = None

    async def init(self) -> None:
        if self._factory is not None:
            self._store = self._factory(self._read, self._commit, self._options)
        else:
            self._store = TransactionalStore(self._read, self._commit, cache_size=self._cache_size)
        self.ctx.log.info("signal_store_ready", custom=self._factory is not None)

    async def terminate(self, reason: ExitReason) -> None:
        store = self._store
        aclose = getattr(store, "aclose", None)
        if aclose is not None:
            with trio.move_on_after(self._timeout):
                await aclose()

    @property
    def store(self) -> SignalStore:
        if self._store is None:
            raise RuntimeError("signal store used before init")
        return self._store

    async def _read(self, type_: str, ids: Sequence[str]) -> dict[str, Value]:
        found: dict[str, Value] = await self._persister.call(
            ReadKeys(type_, tuple(ids)), timeout=self._timeout
        )
        return found

    async def _commit(self, batch: Batch) -> int:
        # The batch carries its creds patch and revision itself: the persister merges.
        seq: int = await call_durable(self._persister, CommitBatch(batch), timeout=self._timeout)
        return seq

    async def handle_call(self, msg: Any) -> Any:
        if isinstance(msg, KeysGet):
            return self._spawn("get", lambda: self.store.get(msg.type, list(msg.ids)))
        if isinstance(msg, KeysSet):
            return self._spawn("set", lambda: self.store.set(msg.data))
        if isinstance(msg, CommitKeysAndCreds):
            return self._spawn("commit keys and creds", lambda: self._commit_with_creds(msg))
        if isinstance(msg, WithStore):
            return self._spawn("with store", lambda: msg.fn(self.store))
        if isinstance(msg, RunTransaction):
            return self._spawn(
                f"transaction {msg.key!r}", lambda: self.store.run_transaction(msg.key, msg.fn)
            )
        return await super().handle_call(msg)

    def _spawn(self, what: str, work: Callable[[], Awaitable[Any]]) -> Reply[Any]:
        # The caller gets the store's error; the store itself stays consistent.
        return self.reply_later(what, work)

    async def _commit_with_creds(self, msg: CommitKeysAndCreds) -> int | None:
        store = self.store
        if isinstance(store, TransactionalStore):
            return await store.commit_batch(Batch(keys=msg.keys, patch=msg.patch, rev=msg.rev))
        # A custom store cannot join creds to its commit: keys first, then the creds.
        # A crash between them leaves keys without counters, which the next top-up
        # overwrites before anything was uploaded; never counters without keys.
        await store.set(msg.keys)
        batch = Batch(patch=msg.patch, rev=msg.rev)
        seq: int = await call_durable(self._persister, CommitBatch(batch), timeout=self._timeout)
        return seq


__all__ = ["DEFAULT_STORE_TIMEOUT", "SignalStoreActor", "SignalStoreFactory", "WithStore"]
