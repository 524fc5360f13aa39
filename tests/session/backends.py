"""Test backends: a memory backend that counts, delays, gates and fails commits on demand."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import trio

from stores.creds import AuthCreds
from stores.errors import DurabilityError
from stores.memory import MemoryBackend
from stores.types import Batch, StoreSnapshot, Value


class InstrumentedBackend:
    """Wraps a MemoryBackend; ``commit`` takes ``fsync_time`` seconds and can block or fail."""

    backend_name: ClassVar[str] = "instrumented"

    def __init__(self, inner: MemoryBackend, *, fsync_time: float = 0.0) -> None:
        self.inner = inner
        self.fsync_time = fsync_time
        self.commits = 0
        self.attempts = 0
        self.batches: list[Batch] = []
        self.gate: trio.Event | None = None
        self.fail_next: DurabilityError | None = None
        self.entered = trio.Event()
        #: Called with each batch after it is durable (e.g. to cut the network then).
        self.after_commit: Callable[[Batch], None] | None = None
        #: Fail (once) the first batch this predicate accepts, with ``fail_with``.
        self.fail_when: Callable[[Batch], bool] | None = None
        self.fail_with: DurabilityError | None = None
        #: Fail every commit with this error (a disk that stays broken).
        self.always_fail: DurabilityError | None = None

    @property
    def location(self) -> str:
        return "instrumented:" + self.inner.location

    async def read_creds(self) -> AuthCreds | None:
        return await self.inner.read_creds()

    async def read_keys(self, type: str, ids: Sequence[str]) -> dict[str, Value]:
        return await self.inner.read_keys(type, ids)

    async def commit(self, batch: Batch) -> int:
        self.attempts += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fsync_time:
            await trio.sleep(self.fsync_time)
        if self.always_fail is not None:
            raise self.always_fail
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        if self.fail_when is not None and self.fail_with is not None and self.fail_when(batch):
            error, self.fail_with = self.fail_with, None
            raise error
        seq = await self.inner.commit(batch)
        self.commits += 1
        self.batches.append(batch)
        if self.after_commit is not None:
            self.after_commit(batch)
        return seq

    async def snapshot(self) -> StoreSnapshot:
        return await self.inner.snapshot()

    async def aclose(self) -> None:
        await self.inner.aclose()
