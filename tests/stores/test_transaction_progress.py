"""run_transaction always makes progress: a hot slot under unrelated lock keys, every backend.

The lock key is the caller's choice, so callbacks under different keys may keep
invalidating one another; no caller of the callback form may ever see
``TransactionConflict`` for it. The context-manager form still raises it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from stores.errors import TransactionConflict
from stores.postgres import open_postgres_backend
from stores.transactions import StoreTransaction, TransactionalStore
from stores.types import Persistence
from tests.stores.contract import BackendKit, kit_from_opener
from tests.stores.postgres_server import (  # noqa: F401 (fixtures, used by name)
    postgres_dsn_fixture,
    postgres_server_fixture,
)
from tests.stores.test_contract import _kit

BACKENDS = ["memory", "native", "multi_file", "sqlite", "postgres"]
TASKS = 16
LOCK_KEYS = 8


@pytest.fixture(params=BACKENDS)
def backend_kit(request: pytest.FixtureRequest) -> BackendKit:
    if request.param != "postgres":
        return _kit(request.param)
    dsn: str = request.getfixturevalue("postgres_dsn")
    return kit_from_opener(
        "postgres", True, lambda loc: open_postgres_backend(dsn, account=Path(loc).name)
    )


@asynccontextmanager
async def hot_store(kit: BackendKit, location: Path) -> AsyncIterator[Persistence]:
    async with kit.open(location) as backend:
        yield backend


async def increment(tx: StoreTransaction) -> None:
    found = await tx.get("sender-key-memory", ["hot"])
    n = int(found.get("hot", {"n": 0})["n"])
    await trio.testing.wait_all_tasks_blocked()  # every other task reads the same value
    await tx.set({"sender-key-memory": {"hot": {"n": n + 1}}})


async def test_sixteen_tasks_under_eight_keys_increment_one_slot_exactly(
    backend_kit: BackendKit, tmp_path: Path
) -> None:
    """16 tasks incrementing one slot under 8 lock keys all return; the count is exact."""
    async with hot_store(backend_kit, tmp_path / "hot") as backend:
        store = TransactionalStore(backend.read_keys, backend.commit)
        async with trio.open_nursery() as nursery:
            for i in range(TASKS):
                nursery.start_soon(store.run_transaction, f"key-{i % LOCK_KEYS}", increment)
        stats = store.statistics()
        durable = await backend.read_keys("sender-key-memory", ["hot"])
    assert durable == {"hot": {"n": TASKS}}
    assert stats.commits == TASKS and stats.conflicts > 0


async def test_the_context_form_still_raises_conflicts(
    backend_kit: BackendKit, tmp_path: Path
) -> None:
    """Under the same contention, ``async with store.transaction`` raises TransactionConflict."""
    outcomes: list[str] = []

    async def once(store: TransactionalStore, key: str) -> None:
        try:
            async with store.transaction(key) as tx:
                await increment(tx)
            outcomes.append("committed")
        except TransactionConflict:
            outcomes.append("conflict")

    async with hot_store(backend_kit, tmp_path / "hot") as backend:
        store = TransactionalStore(backend.read_keys, backend.commit)
        async with trio.open_nursery() as nursery:
            for i in range(TASKS):
                nursery.start_soon(once, store, f"key-{i % LOCK_KEYS}")
        durable = await backend.read_keys("sender-key-memory", ["hot"])
    assert "conflict" in outcomes
    assert durable == {"hot": {"n": outcomes.count("committed")}}
