"""The memory backend: a ``Persistence`` for tests and ephemeral bots.

Nothing survives the process, by design. Values are copied on the way in and on
the way out, so no caller can change stored state by mutating an object it
handed over or got back.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar

import trio

from stores.errors import StoreClosedError
from stores.transactions import copy_value, sequenced_on_call, validate_writes
from stores.types import Batch, StoreSnapshot, Value, check_key_type

if TYPE_CHECKING:
    from stores.creds import AuthCreds

__all__ = ["MemoryBackend", "open_memory_backend"]


class MemoryBackend:
    """A ``Persistence`` held in a dict; each commit is atomic (applied at once). Since 0.1.0."""

    backend_name: ClassVar[str] = "memory"

    def __init__(self, name: str = "memory") -> None:
        self._name = name
        self._creds: AuthCreds | None = None
        self._keys: dict[str, dict[str, Value]] = {}
        self._seq = 0
        self._closed = False

    def __repr__(self) -> str:
        entries = sum(len(ids) for ids in self._keys.values())
        return f"MemoryBackend(name={self._name!r}, seq={self._seq}, entries={entries})"

    async def __aenter__(self) -> MemoryBackend:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def location(self) -> str:
        return f"memory:{self._name}"

    @property
    def seq(self) -> int:
        """The sequence number of the last commit (0 before the first)."""
        return self._seq

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{self.location} is closed")

    async def read_creds(self) -> AuthCreds | None:
        self._check_open()
        await trio.lowlevel.checkpoint()
        return copy.deepcopy(self._creds)

    async def read_keys(self, type: str, ids: Sequence[str]) -> dict[str, Value]:
        self._check_open()
        check_key_type(type)
        await trio.lowlevel.checkpoint()
        stored = self._keys.get(type, {})
        return {id_: copy_value(stored[id_]) for id_ in ids if id_ in stored}

    @sequenced_on_call  # applied before its first park: in call order
    async def commit(self, batch: Batch) -> int:
        """Apply ``batch`` atomically: validated and copied first, then applied in one step.

        A cancellation is taken only before anything is applied; once applied, the
        commit returns its sequence number (it still yields, as every commit does).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        writes = validate_writes(batch.keys)
        creds = batch.backend_creds()
        if creds is not None:
            creds = copy.deepcopy(creds)
        stored = self._keys
        for (type_, id_), value in writes.items():
            ids = stored.get(type_)
            if value is None:
                if ids is not None:
                    ids.pop(id_, None)
            elif ids is None:
                stored[type_] = {id_: value}
            else:
                ids[id_] = value
        if creds is not None:
            self._creds = creds
        self._seq += 1
        seq = self._seq
        await trio.lowlevel.cancel_shielded_checkpoint()
        return seq

    async def snapshot(self) -> StoreSnapshot:
        self._check_open()
        await trio.lowlevel.checkpoint()
        keys = {type_: copy_value(ids) for type_, ids in self._keys.items() if ids}
        return StoreSnapshot(creds=copy.deepcopy(self._creds), keys=keys)

    async def aclose(self) -> None:
        """Close the backend; its data is gone with it. Closing twice is harmless."""
        self._closed = True
        await trio.lowlevel.checkpoint()


async def open_memory_backend(name: str = "memory") -> MemoryBackend:
    """A fresh, empty memory backend (also usable as ``async with``)."""
    await trio.lowlevel.checkpoint()
    return MemoryBackend(name)
