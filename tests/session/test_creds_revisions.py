"""Creds revisions: every distinct creds snapshot the connection makes durable has its own rev.

The connection bumps its revision on every creds change; the pre-key top-up commits
its counters through the signal store (keys + creds atomically), and that revision
must reach the persister too, or it would stamp the snapshot with the previous one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from actors.errors import CredsSnapshotRefused, StaleCredsChange
from actors.mail import (
    CommitBatch,
    CommitKeysAndCreds,
    LoadCreds,
    ReadKeys,
    RunTransaction,
    SaveCreds,
)
from actors.persister import Persister
from actors.session import SharedBackend
from actors.signal_store import SignalStoreActor
from runtime.app import open_runtime
from runtime.ref import ActorRef
from runtime.registry import Registry
from runtime.reply import call_durable
from runtime.spec import ChildSpec, Strategy
from runtime.supervisor import open_supervisor
from stores.auth import use_memory_auth_state
from stores.creds import AuthCreds, CredsPatch, init_auth_creds
from stores.memory import MemoryBackend
from stores.transactions import StoreTransaction
from stores.types import Batch
from tests.session.helpers import Recorder, sandbox_config, scanning_phone
from tests.session.memory_sandbox import open_memory_sandbox


def store_children(
    source: SharedBackend, registry: Registry, events: list[dict[str, Any]]
) -> list[ChildSpec]:
    """The persister (no coalescing delay) and the signal store of a session, in start order."""
    return [
        ChildSpec(
            "persister",
            lambda: Persister(source, emit=events.append, coalesce_delay=0.0),
            name="persister",
        ),
        ChildSpec(
            "signal_store", lambda: SignalStoreActor(registry.ref("persister")), name="signal_store"
        ),
    ]


@asynccontextmanager
async def store_tree(
    events: list[dict[str, Any]],
) -> AsyncIterator[tuple[ActorRef, ActorRef, AuthCreds]]:
    """A persister (no coalescing delay) and a signal store on a fresh memory backend."""
    backend = MemoryBackend()
    creds = init_auth_creds()
    await backend.commit(Batch(creds=creds))
    source = SharedBackend(backend)
    registry = Registry()
    children = store_children(source, registry, events)
    async with open_supervisor(children, strategy=Strategy.REST_FOR_ONE, registry=registry) as sup:
        yield sup.ref("persister"), sup.ref("signal_store"), creds
    await source.aclose()


def counters(creds: AuthCreds, next_id: int) -> CredsPatch:
    """The patch that moves both pre-key counters to ``next_id``."""
    return CredsPatch.of(next_pre_key_id=next_id, first_unuploaded_pre_key_id=next_id)


async def test_keys_and_creds_committed_through_the_signal_store_keep_their_revision(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """CommitKeysAndCreds(rev=5) via the signal store is durable and reported at rev 5."""
    events: list[dict[str, Any]] = []
    async with store_tree(events) as (persister, store, creds):
        keys = {"pre-key": {"1": {"public": b"p" * 32, "private": b"s" * 32}}}
        await call_durable(store, CommitKeysAndCreds(keys, counters(creds, 2), 5), timeout=10)
        state = await call_durable(persister, LoadCreds(), timeout=10)
    assert state.rev == 5 and state.creds.next_pre_key_id == 2
    assert [e["creds_update"]["rev"] for e in events if "creds_update" in e] == [5]


async def test_an_older_snapshot_never_overwrites_counters_committed_through_the_signal_store(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A snapshot older than the signal-store commit (rev 4 < 5) is ignored, counters kept."""
    events: list[dict[str, Any]] = []
    async with store_tree(events) as (persister, store, creds):
        keys = {"pre-key": {"1": {"public": b"p" * 32, "private": b"s" * 32}}}
        await call_durable(store, CommitKeysAndCreds(keys, counters(creds, 2), 5), timeout=10)
        await persister.cast(SaveCreds(CredsPatch.of(routing_info=b"stale"), 4))
        state = await call_durable(persister, LoadCreds(), timeout=10)
    assert state.creds.next_pre_key_id == 2 and state.creds.routing_info is None


async def test_pairing_emits_creds_updates_with_strictly_increasing_revisions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Fresh pairing → login → pre-key top-up: each creds_update has a new, higher rev."""
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        auth = await use_memory_auth_state()
        events = Recorder()
        on_qr = scanning_phone(sb, nursery)
        async with open_runtime(sandbox_config(sb, auth, on_qr=on_qr), subscribe=events) as rt:
            await rt.wait_connected(timeout=120)
            creds = await rt.auth_state()
        nursery.cancel_scope.cancel()
    updates = events.of("creds_update")
    revs = [u["rev"] for u in updates]
    versions = [u["version"] for u in updates]
    assert len(updates) >= 2 and creds.next_pre_key_id == 813
    assert revs == sorted(set(revs)), f"revs {revs} at versions {versions}"
    assert versions == sorted(set(versions))


async def test_a_batch_with_older_creds_commits_its_keys_but_keeps_the_newer_creds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """CommitBatch(keys + creds at rev 3) after rev 4 was accepted: keys durable, creds of rev 4."""
    events: list[dict[str, Any]] = []
    async with store_tree(events) as (persister, _store, creds):
        newer = counters(creds, 9)
        await persister.cast(SaveCreds(newer, 4))
        older = CredsPatch.of(routing_info=b"older")
        batch = Batch(keys={"session": {"a": {"n": 1}}}, patch=older, rev=3)
        await call_durable(persister, CommitBatch(batch), timeout=10)
        state = await call_durable(persister, LoadCreds(), timeout=10)
        found = await persister.call(ReadKeys("session", ("a",)), timeout=10)
    assert state.rev == 4 and state.creds.next_pre_key_id == 9
    assert state.creds.routing_info is None and found == {"a": {"n": 1}}


async def test_a_transaction_patch_survives_the_connections_next_change(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A Signal transaction advances next_pre_key_id; the connection's later cast keeps it."""
    events: list[dict[str, Any]] = []
    async with store_tree(events) as (persister, store, _creds):

        async def retry_receipt(tx: StoreTransaction) -> None:
            await tx.set({"pre-key": {"7": {"public": b"p" * 32, "private": b"s" * 32}}})
            tx.patch_creds(CredsPatch.of(next_pre_key_id=8))

        await call_durable(store, RunTransaction("pre-key", retry_receipt), timeout=10)
        await persister.cast(SaveCreds(CredsPatch.of(routing_info=b"r"), 1))
        state = await call_durable(persister, LoadCreds(), timeout=10)
    assert state.creds.next_pre_key_id == 8 and state.creds.routing_info == b"r"


async def test_a_top_up_queued_by_a_dead_incarnation_is_refused_whole(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After the next writer's load, a change numbered below its fence fails, keys and all."""
    events: list[dict[str, Any]] = []
    async with store_tree(events) as (persister, store, creds):
        dead = await call_durable(persister, LoadCreds(writer=True), timeout=10)
        live = await call_durable(persister, LoadCreds(writer=True), timeout=10)
        keys = {"pre-key": {"1": {"public": b"p" * 32, "private": b"s" * 32}}}
        late = CommitKeysAndCreds(keys, counters(creds, 2), dead.fence + 1)
        with pytest.raises(StaleCredsChange):
            await call_durable(store, late, timeout=10)
        await persister.cast(SaveCreds(CredsPatch.of(routing_info=b"stale"), dead.fence + 2))
        state = await call_durable(persister, LoadCreds(), timeout=10)
        found = await persister.call(ReadKeys("pre-key", ("1",)), timeout=10)
    assert live.fence > dead.fence + 2 and found == {}
    assert state.creds.next_pre_key_id == 1 and state.creds.routing_info is None


async def test_a_whole_snapshot_sent_to_the_persister_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """CommitBatch carrying a creds snapshot fails with CredsSnapshotRefused; nothing is written."""
    events: list[dict[str, Any]] = []
    async with store_tree(events) as (persister, _store, creds):
        changed = creds.copy()
        changed.routing_info = b"whole"
        with pytest.raises(CredsSnapshotRefused):
            await call_durable(persister, CommitBatch(Batch(creds=changed)), timeout=10)
        state = await call_durable(persister, LoadCreds(), timeout=10)
    assert state.creds.routing_info is None and not events
