"""The signal-store actor: the SignalStore served by call, committing through the persister."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from actors.mail import KeysGet, KeysSet, RunTransaction
from actors.persister import Persister
from actors.session import SharedBackend
from actors.signal_store import SignalStoreActor
from runtime.ref import ActorRef
from runtime.registry import Registry
from runtime.reply import call_durable
from runtime.spec import ChildSpec, Strategy
from runtime.supervisor import Supervisor, open_supervisor
from stores.creds import init_auth_creds
from stores.memory import MemoryBackend
from stores.types import Batch
from tests.session.backends import InstrumentedBackend
from tests.session.helpers import crash_and_wait_restart


@asynccontextmanager
async def store_tree(backend: InstrumentedBackend) -> AsyncIterator[tuple[Supervisor, ActorRef]]:
    source = SharedBackend(backend)
    registry = Registry()
    children = [
        ChildSpec("persister", lambda: Persister(source, emit=lambda e: None), name="persister"),
        ChildSpec(
            "signal_store",
            lambda: SignalStoreActor(registry.ref("persister")),
            name="signal_store",
        ),
    ]
    async with open_supervisor(children, strategy=Strategy.REST_FOR_ONE, registry=registry) as sup:
        yield sup, sup.ref("signal_store")
    await source.aclose()


async def fresh_backend() -> InstrumentedBackend:
    inner = MemoryBackend()
    await inner.commit(Batch(creds=init_auth_creds()))
    return InstrumentedBackend(inner)


async def test_concurrent_writes_through_the_actor_group_into_few_durable_commits(autojump_clock):
    """50 concurrent sets while a commit is in flight → 2 backend commits, all durable."""
    backend = await fresh_backend()
    backend.gate = trio.Event()
    async with store_tree(backend) as (_sup, store), trio.open_nursery() as nursery:

        async def write(i: int) -> None:
            await call_durable(store, KeysSet({"session": {f"s{i}": {"n": i}}}), timeout=60)

        nursery.start_soon(write, 0)
        await backend.entered.wait()
        for i in range(1, 50):
            nursery.start_soon(write, i)
        await trio.testing.wait_all_tasks_blocked()
        backend.gate.set()
    assert backend.commits == 2
    assert len(await backend.read_keys("session", [f"s{i}" for i in range(50)])) == 50


async def test_a_write_is_invisible_until_the_persister_acknowledged_it(autojump_clock):
    """While the commit waits for the disk, readers see the old value; after the ack, the new."""
    backend = await fresh_backend()
    async with store_tree(backend) as (_sup, store):
        await call_durable(store, KeysSet({"session": {"a": {"v": 1}}}), timeout=5)
        backend.gate = trio.Event()
        pending = await store.call(KeysSet({"session": {"a": {"v": 2}}}))
        await backend.entered.wait()
        assert await call_durable(store, KeysGet("session", ("a",)), timeout=5) == {"a": {"v": 1}}
        backend.gate.set()
        await pending.wait(5)
        assert await call_durable(store, KeysGet("session", ("a",)), timeout=5) == {"a": {"v": 2}}


async def test_a_restarted_signal_store_rebuilds_its_view_from_the_backend(autojump_clock):
    """After a crash the new incarnation reads what is durable, not a stale cache."""
    backend = await fresh_backend()
    async with store_tree(backend) as (_sup, store):
        await call_durable(store, KeysSet({"session": {"a": {"v": 1}}}), timeout=5)
        assert await call_durable(store, KeysGet("session", ("a",)), timeout=5) == {"a": {"v": 1}}
        await crash_and_wait_restart(store)
        await backend.inner.commit(Batch(keys={"session": {"a": {"v": 9}}}))  # behind its back
        assert await call_durable(store, KeysGet("session", ("a",)), timeout=5) == {"a": {"v": 9}}


async def test_transactions_run_inside_the_actor_with_read_your_writes(autojump_clock):
    """RunTransaction: reads see the transaction's writes; the result comes back durable."""
    backend = await fresh_backend()
    async with store_tree(backend) as (_sup, store):

        async def move(tx: Any) -> int:
            await tx.set({"pre-key": {"1": {"private": b"p" * 32, "public": b"q" * 32}}})
            seen = await tx.get("pre-key", ["1"])
            return len(seen)

        assert await call_durable(store, RunTransaction("pre-key", move), timeout=5) == 1
        assert set(await backend.read_keys("pre-key", ["1"])) == {"1"}
