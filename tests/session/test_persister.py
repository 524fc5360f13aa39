"""The persister: coalescing, group commit, durable acks, loud failures, recovery on restart."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from actors.mail import CommitBatch, LoadCreds, PersisterStatistics, PersisterStats, SaveCreds
from actors.persister import Persister
from actors.session import ReopeningBackend, SharedBackend
from runtime.app import AuthLocation
from runtime.ref import ActorRef
from runtime.reply import call_durable
from runtime.spec import ChildSpec
from runtime.supervisor import Supervisor, open_supervisor
from stores.auth import use_native_file_auth_state
from stores.creds import AuthCreds, CredsPatch, init_auth_creds
from stores.errors import DurabilityError
from stores.memory import MemoryBackend
from stores.types import Batch
from tests.session.backends import InstrumentedBackend
from tests.session.helpers import crash_and_wait_restart


async def new_backend(fsync_time: float = 0.0) -> tuple[InstrumentedBackend, AuthCreds]:
    inner = MemoryBackend()
    creds = init_auth_creds()
    await inner.commit(Batch(creds=creds))
    return InstrumentedBackend(inner, fsync_time=fsync_time), creds


@asynccontextmanager
async def running_persister(
    source: Any, events: list[dict[str, Any]], *, delay: float = 0.005, mailbox: int = 64
) -> AsyncIterator[tuple[Supervisor, ActorRef]]:
    spec = ChildSpec(
        "persister",
        lambda: Persister(source, emit=events.append, coalesce_delay=delay),
        name="persister",
        mailbox_size=mailbox,
    )
    try:
        async with open_supervisor([spec], max_restarts=10) as sup:
            yield sup, sup.ref("persister")
    finally:
        await source.aclose()


def with_counter(creds: AuthCreds, n: int) -> CredsPatch:
    """The patch that sets ``account_sync_counter`` to ``n``."""
    return CredsPatch.between(creds, dataclasses.replace(creds, account_sync_counter=n))


async def stats(ref: ActorRef) -> PersisterStatistics:
    result: PersisterStatistics = await ref.call(PersisterStats())
    return result


async def test_burst_of_10000_snapshots_is_at_most_100_commits_newest_within_2_after(
    autojump_clock,
):
    """10,000 snapshots cast back to back (10 µs apart, 2 ms fsyncs) → ≤ 100 commits;
    the newest is durable at most 2 commits after the burst."""
    backend, creds = await new_backend(fsync_time=0.002)
    events: list[dict[str, Any]] = []
    async with running_persister(SharedBackend(backend), events) as (_sup, ref):
        for n in range(1, 10_001):
            await ref.cast(SaveCreds(with_counter(creds, n), n))
            await trio.sleep(0.00001)
        at_burst_end = backend.commits
        state = await call_durable(ref, LoadCreds(), timeout=10)
        assert state.creds.account_sync_counter == 10_000 and state.rev == 10_000
        durable = await backend.read_creds()
        assert durable is not None and durable.account_sync_counter == 10_000
        assert backend.commits <= 100
        assert backend.commits - at_burst_end <= 2
        assert (await stats(ref)).snapshots_received == 10_000
    versions = [e["creds_update"]["version"] for e in events]
    assert versions == sorted(versions) and len(versions) == backend.commits


async def test_burst_on_the_native_backend_with_real_fsyncs_coalesces(tmp_path):
    """The same burst on a real native directory (real clock, real fsyncs) coalesces.

    On an idle machine it is under 100 commits; the bound here is ten times that, so
    a loaded machine (slower casts, more commit windows) cannot fail it, while a
    persister that wrote every snapshot (10,000 commits) still does.
    """
    location = AuthLocation(tmp_path / "auth")
    first = await location.open()
    creds = first.state.creds
    source = ReopeningBackend(first, location.open)
    async with running_persister(source, []) as (_sup, ref):
        for n in range(1, 10_001):
            await ref.cast(SaveCreds(with_counter(creds, n), n))
        state = await call_durable(ref, LoadCreds(), timeout=30)
        commits = (await stats(ref)).commits
    await source.aclose()
    assert state.creds.account_sync_counter == 10_000
    assert 1 <= commits <= 1_000
    async with await use_native_file_auth_state(tmp_path / "auth") as again:
        assert again.state.creds.account_sync_counter == 10_000


async def test_pending_batches_are_group_committed_in_one_backend_commit(autojump_clock):
    """While one commit is in flight, 63 more batches queue and then share ONE commit."""
    backend, _creds = await new_backend()
    backend.gate = trio.Event()
    async with (
        running_persister(SharedBackend(backend), []) as (_sup, ref),
        trio.open_nursery() as n,
    ):
        seqs: dict[int, int] = {}

        async def commit(i: int) -> None:
            batch = Batch(keys={"session": {f"s{i}": {"n": i}}})
            seqs[i] = await call_durable(ref, CommitBatch(batch), timeout=60)

        n.start_soon(commit, 0)
        await backend.entered.wait()
        for i in range(1, 64):
            n.start_soon(commit, i)
        await trio.testing.wait_all_tasks_blocked()
        backend.gate.set()
    assert backend.commits == 2
    assert seqs[0] < seqs[1] and len({seqs[i] for i in range(1, 64)}) == 1
    stored = await backend.read_keys("session", [f"s{i}" for i in range(64)])
    assert len(stored) == 64


async def test_nothing_is_acknowledged_before_the_backend_commit_returns(autojump_clock):
    """A commit receipt stays unresolved while the backend's commit has not returned."""
    backend, _creds = await new_backend()
    backend.gate = trio.Event()
    async with running_persister(SharedBackend(backend), []) as (_sup, ref):
        receipt = await ref.call(CommitBatch(Batch(keys={"session": {"a": {"x": 1}}})))
        await backend.entered.wait()
        await trio.sleep(3600)
        assert not receipt.done
        assert await backend.read_keys("session", ["a"]) == {}
        backend.gate.set()
        seq = await receipt.wait(5)
        assert seq >= 1 and await backend.read_keys("session", ["a"]) == {"a": {"x": 1}}


async def test_durability_error_fails_the_commit_crashes_loudly_and_is_never_retried(
    autojump_clock,
):
    """DurabilityError → the caller gets it, a store_error event, a restart; no silent retry."""
    backend, _creds = await new_backend()
    events: list[dict[str, Any]] = []
    async with running_persister(SharedBackend(backend), events) as (sup, ref):
        error = DurabilityError(backend.location, "fsync", OSError(5, "EIO"))
        backend.fail_next = error
        with pytest.raises(DurabilityError) as caught:
            await call_durable(ref, CommitBatch(Batch(keys={"session": {"a": 1}})), timeout=5)
        assert caught.value is error
        await trio.testing.wait_all_tasks_blocked()
        assert backend.attempts == 1 and backend.commits == 0
        assert (await stats(ref)).incarnation == 2
        assert sup.statistics().total_restarts == 1
        assert await backend.read_keys("session", ["a"]) == {}
        seq = await call_durable(ref, CommitBatch(Batch(keys={"session": {"b": 2}})), timeout=5)
        assert seq >= 1 and backend.attempts == 2
    reported = [e["store_error"] for e in events if "store_error" in e]
    assert [(r["error"], r["location"]) for r in reported] == [
        ("DurabilityError", backend.location)
    ]


async def test_restarted_persister_reopens_the_location_and_rereads_durable_creds(tmp_path):
    """A crashed persister's next incarnation reopens the directory (recovery) and its creds."""
    location = AuthLocation(tmp_path / "auth")
    first = await location.open()
    source = ReopeningBackend(first, location.open)
    async with running_persister(source, [], delay=0.0) as (_sup, ref):
        creds = (await call_durable(ref, LoadCreds(), timeout=10)).creds
        await call_durable(ref, CommitBatch(Batch(patch=with_counter(creds, 7), rev=1)), timeout=10)
        await crash_and_wait_restart(ref)
        state = await call_durable(ref, LoadCreds(), timeout=10)
        assert (await stats(ref)).incarnation == 2
        assert source.opens == 2
        assert state.creds.account_sync_counter == 7
    await source.aclose()


async def test_orderly_stop_writes_the_pending_snapshot_first(autojump_clock):
    """Stopping the persister while a snapshot waits out its coalescing delay writes it."""
    backend, creds = await new_backend()
    async with running_persister(SharedBackend(backend), [], delay=60.0) as (_sup, ref):
        await ref.cast(SaveCreds(with_counter(creds, 42), 1))
        await trio.testing.wait_all_tasks_blocked()
        assert backend.commits == 0
    durable = await backend.read_creds()
    assert durable is not None and durable.account_sync_counter == 42


async def test_older_revisions_never_overwrite_newer_ones(autojump_clock):
    """A snapshot with a lower revision than one already accepted is ignored."""
    backend, creds = await new_backend()
    async with running_persister(SharedBackend(backend), [], delay=0.0) as (_sup, ref):
        await ref.cast(SaveCreds(with_counter(creds, 2), 2))
        await ref.cast(SaveCreds(with_counter(creds, 1), 1))
        state = await call_durable(ref, LoadCreds(), timeout=5)
    assert state.creds.account_sync_counter == 2


async def test_creds_update_events_carry_the_durable_version_and_the_changed_fields(
    autojump_clock,
):
    """creds_update is emitted after the commit with version = durable seq and the delta."""
    backend, creds = await new_backend()
    events: list[dict[str, Any]] = []
    async with running_persister(SharedBackend(backend), events, delay=0.0) as (_sup, ref):
        changed = with_counter(creds, 5)
        seq = await call_durable(ref, CommitBatch(Batch(patch=changed, rev=1)), timeout=5)
    update = events[-1]["creds_update"]
    assert update["version"] == seq
    assert update["changed"] == ["account_sync_counter"]
    assert update["delta"] == {"account_sync_counter": 5}


def task_names() -> list[str]:
    """The names of every task of this trio run."""
    names: list[str] = []
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        names.append(task.name)
        pending += [t for nursery in task.child_nurseries for t in nursery.child_tasks]
    return names


async def test_the_writer_task_runs_only_while_something_is_pending(autojump_clock):
    """Idle, no writer task waits; a change starts one, which ends once the change is durable."""
    backend, creds = await new_backend(fsync_time=0.002)
    async with running_persister(SharedBackend(backend), []) as (_sup, ref):
        await trio.testing.wait_all_tasks_blocked()
        idle = [name for name in task_names() if "Persister._writer" in name]
        await ref.cast(SaveCreds(with_counter(creds, 1), 1))
        await trio.sleep(0.001)  # inside the coalescing wait
        busy = [name for name in task_names() if "Persister._writer" in name]
        state = await call_durable(ref, LoadCreds(), timeout=10)
        await trio.testing.wait_all_tasks_blocked()
        after = [name for name in task_names() if "Persister._writer" in name]
    assert idle == [] and len(busy) == 1 and after == []
    assert state.creds.account_sync_counter == 1 and backend.commits == 1


async def test_the_senders_creds_are_kept_only_when_they_equal_the_merge(autojump_clock):
    """SaveCreds.result equal to the merged creds is kept (one object); unequal, the merge is."""
    backend, _creds = await new_backend()
    async with running_persister(SharedBackend(backend), []) as (_sup, ref):
        base = (await call_durable(ref, LoadCreds(), timeout=10)).creds
        mine = dataclasses.replace(base, account_sync_counter=1)
        await ref.cast(SaveCreds(CredsPatch.between(base, mine), 1, result=mine))
        kept = (await call_durable(ref, LoadCreds(), timeout=10)).creds
        # Another component's change lands first: the sender's result does not hold it.
        other = Batch(patch=CredsPatch.of(platform="smba"))
        await call_durable(ref, CommitBatch(other), timeout=10)
        stale = dataclasses.replace(mine, account_sync_counter=2)
        await ref.cast(SaveCreds(CredsPatch.between(mine, stale), 2, result=stale))
        merged = (await call_durable(ref, LoadCreds(), timeout=10)).creds
    assert kept is mine
    assert merged is not stale and merged.platform == "smba" and merged.account_sync_counter == 2
