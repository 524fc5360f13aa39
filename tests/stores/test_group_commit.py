"""Group commit: many concurrent commits share one durable write, failures are final."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import pytest
import trio
import trio.testing

from stores.errors import DurabilityError, StoreClosedError, StoreReadOnlyError
from stores.group_commit import GroupCommitter


class FakeLog:
    """A write_group that records groups and can be told to fail or to block."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.applied: list[str] = []
        self.fail_next = False
        self.gate: threading.Event | None = None
        self.writing = threading.Event()
        self.seq = 0

    def write(self, items: Sequence[str]) -> list[int]:
        self.writing.set()
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


async def wait_writing(log: FakeLog) -> None:
    """Until the writer thread is inside ``write`` (held there by the closed gate)."""
    await trio.to_thread.run_sync(log.writing.wait, 10)
    await trio.testing.wait_all_tasks_blocked()


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
        await wait_writing(log)
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
        await wait_writing(log)
        nursery.cancel_scope.cancel()
        log.gate.set()
    assert log.groups == [["in-flight"]]
    assert await c.commit("next") == 2


async def test_commits_queued_during_a_write_form_the_next_group() -> None:
    """Commits queued while a write is in flight are written together right after it."""
    log = FakeLog()
    log.gate = threading.Event()
    c = committer(log)
    done: list[str] = []

    async def one(name: str) -> None:
        await c.commit(name)
        done.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, "first")
        await wait_writing(log)
        for i in range(3):
            nursery.start_soon(one, f"q{i}")
        await trio.testing.wait_all_tasks_blocked()
        log.gate.set()
    # Trio may start the three in any order; they form one group either way.
    assert [sorted(g) for g in log.groups] == [["first"], ["q0", "q1", "q2"]]
    assert sorted(done) == ["first", "q0", "q1", "q2"]


def creds_only(item: str) -> bool:
    """Test items: ``c…`` carries creds only, ``kc…`` keys and creds, ``k…`` keys only."""
    return item.startswith("c")


def carries_creds(item: str) -> bool:
    return item.startswith(("c", "kc"))


def coalescing(log: FakeLog, **kwargs: object) -> GroupCommitter[str]:
    return GroupCommitter(
        log.write,
        location="fake",
        apply=log.apply,
        replaceable=creds_only,
        supersedes=carries_creds,
        **kwargs,  # type: ignore[arg-type]  # test-only passthrough of size bounds
    )


async def queue_behind_gate(
    c: GroupCommitter[str], log: FakeLog, names: list[str]
) -> dict[str, int]:
    """Commit ``first`` alone behind a closed gate, queue ``names``, then open the gate."""
    log.gate = threading.Event()
    seqs: dict[str, int] = {}

    async def one(name: str) -> None:
        seqs[name] = await c.commit(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, "first")
        await wait_writing(log)
        for name in names:
            # One at a time, so the queue holds them in this order.
            nursery.start_soon(one, name)
            await trio.testing.wait_all_tasks_blocked()
        log.gate.set()
    return seqs


async def test_superseded_creds_only_items_are_not_written() -> None:
    """In one group only the last creds item is written; earlier creds-only ones ack with it."""
    log = FakeLog()
    c = coalescing(log)
    seqs = await queue_behind_gate(c, log, ["c1", "k1", "c2", "kc1", "c3", "k2"])
    assert log.groups == [["first"], ["k1", "kc1", "c3", "k2"]]
    assert log.applied == ["first", "k1", "kc1", "c3", "k2"]
    assert seqs == {"first": 1, "k1": 2, "kc1": 3, "c3": 4, "k2": 5, "c1": 4, "c2": 4}
    stats = c.statistics()
    assert stats.commits == 7 and stats.coalesced == 2 and stats.groups == 2


async def test_creds_only_item_after_the_last_creds_item_is_written() -> None:
    """A group whose newest creds come from a keys+creds item drops only older creds-only items."""
    log = FakeLog()
    c = coalescing(log)
    seqs = await queue_behind_gate(c, log, ["c1", "kc1", "k1"])
    assert log.groups == [["first"], ["kc1", "k1"]]
    assert seqs["c1"] == seqs["kc1"] == 2


class FailSecondGroup(FakeLog):
    """Writes the first group, fails the second."""

    def write(self, items: Sequence[str]) -> list[int]:
        self.fail_next = len(self.groups) == 1
        return super().write(items)


async def test_failed_write_fails_coalesced_waiters_too() -> None:
    """Items acked by a failing write (coalesced ones included) all get DurabilityError."""
    log = FailSecondGroup()
    c = coalescing(log)
    with pytest.raises(BaseExceptionGroup) as info:
        await queue_behind_gate(c, log, ["c1", "c2"])
    errors = info.value.exceptions
    assert len(errors) == 2  # c1 (coalesced, never written) and c2
    assert all(isinstance(e, DurabilityError) for e in errors)
    assert log.groups == [["first"]]
    assert c.read_only and c.statistics().coalesced == 0


async def test_groups_of_small_items_are_bound_by_bytes_not_count() -> None:
    """5,000 small queued items form one group; a byte bound splits bigger ones."""
    log = FakeLog()
    c = GroupCommitter(log.write, location="fake", item_size=len, max_group_bytes=1 << 20)
    names = [f"s{i:05d}" for i in range(5000)]
    await queue_behind_gate_plain(c, log, names)
    assert [len(g) for g in log.groups] == [1, 5000]

    log = FakeLog()
    c = GroupCommitter(log.write, location="fake", item_size=len, max_group_bytes=60)
    big = [f"b{i}" + "x" * 18 for i in range(7)]  # 20 bytes each: three fit in 60
    await queue_behind_gate_plain(c, log, big)
    assert [len(g) for g in log.groups] == [1, 3, 3, 1]
    assert c.statistics().largest_group == 3


async def test_an_item_larger_than_the_byte_bound_is_written_alone() -> None:
    """An oversized item still gets written, in a group of its own."""
    log = FakeLog()
    c = GroupCommitter(log.write, location="fake", item_size=len, max_group_bytes=4)
    await queue_behind_gate_plain(c, log, ["huge-item", "tiny"])
    assert log.groups == [["first"], ["huge-item"], ["tiny"]]


async def queue_behind_gate_plain(c: GroupCommitter[str], log: FakeLog, names: list[str]) -> None:
    """Like ``queue_behind_gate`` for committers without coalescing."""
    await queue_behind_gate(c, log, names)


async def test_superseded_items_do_not_count_toward_the_byte_bound() -> None:
    """A burst of creds-only items is one group however many bytes they add up to."""
    log = FakeLog()
    c = coalescing(log, item_size=len, max_group_bytes=10)
    seqs = await queue_behind_gate(c, log, [f"c{i:03d}" for i in range(100)])
    assert log.groups == [["first"], ["c099"]]
    assert set(seqs.values()) == {1, 2}


def writer_threads(location: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"baileys-trio writer {location}"]


async def test_one_long_lived_writer_thread_serves_every_commit() -> None:
    """Sequential commits reuse one writer thread; it ends when the committer closes."""
    log = FakeLog()
    c = GroupCommitter(log.write, location="long-lived")
    for name in ("a", "b", "c"):
        await c.commit(name)
        assert len(writer_threads("long-lived")) == 1
    (thread,) = writer_threads("long-lived")
    await c.aclose()
    await trio.to_thread.run_sync(thread.join, 10)
    assert not thread.is_alive()
    with pytest.raises(StoreClosedError):
        await c.commit("after close")


async def test_an_idle_writer_thread_ends_and_the_next_commit_restarts_it() -> None:
    """A committer nobody closes leaves no thread behind after ``idle_exit``."""
    log = FakeLog()
    c = GroupCommitter(log.write, location="idle", idle_exit=0.01)
    await c.commit("a")
    for thread in writer_threads("idle"):
        await trio.to_thread.run_sync(thread.join, 10)
    assert writer_threads("idle") == []
    assert await c.commit("b") == 2
    assert log.groups == [["a"], ["b"]]


async def test_a_failing_apply_fails_its_group_and_turns_read_only() -> None:
    """``apply`` raising after the write is a durability failure like a failed fsync."""
    log = FakeLog()

    def apply(items: Sequence[str], seqs: Sequence[int]) -> None:
        raise OSError(5, "index update failed")

    c = GroupCommitter(log.write, location="fake", apply=apply)
    with pytest.raises(DurabilityError):
        await c.commit("a")
    assert c.read_only
    with pytest.raises(StoreReadOnlyError):
        await c.commit("b")


# --- writes on the Trio thread itself (inline_below) --------------------------------------


class StepCounter(trio.abc.Instrument):
    """Counts the times one task is scheduled to run again."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.count = 0

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.count += 1


class ThreadLog(FakeLog):
    """A FakeLog that also notes which thread wrote each group."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def write(self, items: Sequence[str]) -> list[int]:
        self.threads.append(threading.get_ident())
        return super().write(items)


async def test_a_lone_writer_commits_on_the_trio_thread_once_writes_are_quick() -> None:
    """The first write is timed on the writer thread; the next ones skip the two handoffs."""
    log = ThreadLog()
    c = GroupCommitter(log.write, location="fake", apply=log.apply, inline_below=1.0)
    seqs = [await c.commit(f"c{i}") for i in range(5)]
    here = threading.get_ident()
    assert seqs == [1, 2, 3, 4, 5]
    assert log.applied == ["c0", "c1", "c2", "c3", "c4"]
    assert log.threads[0] != here and log.threads[1:] == [here] * 4
    stats = c.statistics()
    assert (stats.commits, stats.groups, stats.written_here) == (5, 5, 4)
    await c.aclose()


async def test_concurrent_commits_still_form_groups_on_the_writer_thread() -> None:
    """With other committers runnable the leader hands off, and they join the next group."""
    log = ThreadLog()
    c = GroupCommitter(log.write, location="fake", apply=log.apply, inline_below=1.0)
    await c.commit("warm")
    await c.commit("warm again")  # written here
    async with trio.open_nursery() as nursery:
        for i in range(32):
            nursery.start_soon(c.commit, f"w{i}")
    stats = c.statistics()
    assert stats.commits == 34
    assert stats.groups <= 2 + 3, log.groups
    assert sorted(log.applied[2:]) == sorted(f"w{i}" for i in range(32))
    await c.aclose()


async def test_a_failed_write_here_fails_its_group_and_turns_read_only() -> None:
    log = ThreadLog()
    c = GroupCommitter(log.write, location="fake", apply=log.apply, inline_below=1.0)
    await c.commit("ok")
    log.fail_next = True
    with pytest.raises(DurabilityError):
        await c.commit("lost")
    assert log.threads[-1] == threading.get_ident()
    assert c.read_only and log.applied == ["ok"]
    with pytest.raises(StoreReadOnlyError):
        await c.commit("after")
    await c.aclose()


async def test_a_commit_written_here_is_a_schedule_point_that_cannot_be_cancelled() -> None:
    """The committer yields after a write here (others may run), and a cancel arriving
    during the write does not undo the acknowledgement: it is seen at the next checkpoint."""
    log = ThreadLog()
    hooks: list[Callable[[], None]] = []

    def write(items: Sequence[str]) -> list[int]:
        for hook in hooks:
            hook()
        return log.write(items)

    c = GroupCommitter(write, location="fake", apply=log.apply, inline_below=1.0)
    await c.commit("warm")
    steps = StepCounter(trio.lowlevel.current_task())
    acknowledged: list[int] = []
    with trio.CancelScope() as scope:
        hooks.append(scope.cancel)
        trio.lowlevel.add_instrument(steps)
        acknowledged.append(await c.commit("during"))
        trio.lowlevel.remove_instrument(steps)
        await trio.lowlevel.checkpoint()
    assert steps.count == 1  # it was rescheduled once: one schedule point
    assert scope.cancelled_caught
    assert acknowledged == [2] and log.applied == ["warm", "during"]
    assert log.threads[-1] == threading.get_ident()
    await c.aclose()
