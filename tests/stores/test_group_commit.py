"""Group commit: many concurrent commits share one durable write, failures are final."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
import trio
import trio.testing

from stores.errors import DurabilityError, StoreReadOnlyError
from stores.group_commit import GroupCommitter


class FakeLog:
    """A write_group that records groups and can be told to fail or to block."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.applied: list[str] = []
        self.fail_next = False
        self.gate: threading.Event | None = None
        self.seq = 0

    def write(self, items: Sequence[str]) -> list[int]:
        if self.gate is not None:
            self.gate.wait(timeout=10)
        if self.fail_next:
            raise DurabilityError("fake", "fsync", OSError(5, "EIO"))
        self.groups.append(list(items))
        out = []
        for _ in items:
            self.seq += 1
            out.append(self.seq)
        return out

    def apply(self, items: Sequence[str], seqs: Sequence[int]) -> None:
        self.applied.extend(items)


def committer(log: FakeLog) -> GroupCommitter[str]:
    return GroupCommitter(log.write, location="fake", apply=log.apply)


async def test_single_commit_returns_its_sequence() -> None:
    """A lone commit is written alone and returns sequence 1, then 2."""
    log = FakeLog()
    c = committer(log)
    assert await c.commit("a") == 1
    assert await c.commit("b") == 2
    assert log.groups == [["a"], ["b"]]
    assert log.applied == ["a", "b"]


async def test_concurrent_commits_share_few_writes() -> None:
    """50 concurrent commits need far fewer durable writes than 50, each gets a distinct seq."""
    log = FakeLog()
    c = committer(log)
    results: dict[str, int] = {}

    async def one(name: str) -> None:
        results[name] = await c.commit(name)

    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(one, f"t{i}")
    assert sorted(results.values()) == list(range(1, 51))
    assert len(log.groups) <= 3
    assert c.statistics().commits == 50
    assert c.statistics().groups == len(log.groups)
    # Order on disk equals sequence order.
    flat = [item for group in log.groups for item in group]
    assert [results[name] for name in flat] == list(range(1, 51))


async def test_failure_fails_the_group_and_turns_read_only() -> None:
    """A failed write gives every waiter of the group DurabilityError; later commits are refused."""
    log = FakeLog()
    c = committer(log)
    await c.commit("ok")
    log.fail_next = True
    errors: list[BaseException] = []

    async def one(name: str) -> None:
        try:
            await c.commit(name)
        except (DurabilityError, StoreReadOnlyError) as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(one, f"t{i}")
    assert len(errors) == 5
    assert any(isinstance(e, DurabilityError) for e in errors)
    assert c.read_only
    log.fail_next = False
    with pytest.raises(StoreReadOnlyError):
        await c.commit("after")
    assert log.applied == ["ok"]


async def test_cancelled_queued_waiter_is_withdrawn() -> None:
    """A commit cancelled while still queued is never written; the others are."""
    log = FakeLog()
    log.gate = threading.Event()
    c = committer(log)
    seqs: list[int] = []

    async def one(name: str) -> None:
        seqs.append(await c.commit(name))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, "leader")
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            scope.cancel()
            # Queued behind the in-flight leader, then cancelled before being taken.
            with pytest.raises(trio.Cancelled):
                await c.commit("withdrawn")
        nursery.start_soon(one, "follower")
        await trio.testing.wait_all_tasks_blocked()
        log.gate.set()
    assert [i for g in log.groups for i in g] == ["leader", "follower"]
    assert sorted(seqs) == [1, 2]


async def test_cancelled_in_flight_commit_still_lands() -> None:
    """A commit cancelled during its write is still written (outcome unknown to the caller)."""
    log = FakeLog()
    log.gate = threading.Event()
    c = committer(log)
    async with trio.open_nursery() as nursery:

        async def victim() -> None:
            await c.commit("in-flight")

        nursery.start_soon(victim)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
        log.gate.set()
    assert log.groups == [["in-flight"]]
    assert await c.commit("next") == 2


async def test_leadership_passes_to_a_queued_waiter() -> None:
    """Commits queued during a write are written by the next leader, not left hanging."""
    log = FakeLog()
    log.gate = threading.Event()
    c = committer(log)
    done: list[str] = []

    async def one(name: str) -> None:
        await c.commit(name)
        done.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, "first")
        await trio.testing.wait_all_tasks_blocked()
        for i in range(3):
            nursery.start_soon(one, f"q{i}")
        await trio.testing.wait_all_tasks_blocked()
        log.gate.set()
    # Trio may start the three in any order; they form one group either way.
    assert [sorted(g) for g in log.groups] == [["first"], ["q0", "q1", "q2"]]
    assert sorted(done) == ["first", "q0", "q1", "q2"]
