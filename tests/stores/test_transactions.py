"""The transaction layer: semantics of ``TransactionalStore`` over a recording commit function."""

from __future__ import annotations

import collections
import enum
from collections.abc import Sequence

import pytest
import trio
import trio.testing

from stores.creds import AuthCreds, CredsPatch
from stores.errors import (
    DurabilityError,
    InvalidValueError,
    StoreClosedError,
    StoreError,
    TransactionConflict,
)
from stores.memory import MemoryBackend
from stores.transactions import (
    DEFAULT_CACHE_SIZE,
    LockOrderConflict,
    StoreTransaction,
    TransactionalStore,
    copy_value,
    sequenced_on_call,
)
from stores.types import Batch, SignalStore, Value
from tests.stores.contract import make_creds, outside_writer


class Recorder:
    """A memory backend behind read/commit functions that record calls and can be gated."""

    def __init__(self) -> None:
        self.backend = MemoryBackend()
        self.batches: list[Batch] = []
        self.reads: list[tuple[str, list[str]]] = []
        self.gate: trio.Event | None = None
        self.land_before_gate = False
        self.fail_with: BaseException | None = None

    async def read(self, type: str, ids: Sequence[str]) -> dict[str, Value]:
        self.reads.append((type, list(ids)))
        return await self.backend.read_keys(type, ids)

    async def commit(self, batch: Batch) -> int:
        self.batches.append(batch)
        if batch.patch is not None:
            # The recorder is the creds owner here: it merges the patch as a persister would.
            batch = batch.resolved(await self.backend.read_creds() or make_creds())
        seq = 0
        if self.land_before_gate:
            seq = await self.backend.commit(batch)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        if not self.land_before_gate:
            seq = await self.backend.commit(batch)
        return seq

    def store(
        self, *, cache_size: int | None = DEFAULT_CACHE_SIZE, optimistic_attempts: int = 3
    ) -> TransactionalStore:
        return TransactionalStore(
            self.read, self.commit, cache_size=cache_size, optimistic_attempts=optimistic_attempts
        )


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def store(rec: Recorder) -> TransactionalStore:
    return rec.store()


async def test_store_is_a_signal_store(store: TransactionalStore) -> None:
    """TransactionalStore satisfies the SignalStore protocol."""
    assert isinstance(store, SignalStore)


async def test_get_returns_only_present_ids(store: TransactionalStore) -> None:
    """get leaves absent ids out of the result instead of mapping them to None."""
    await store.set({"pre-key": {"1": {"private": b"a" * 32, "public": b"b" * 32}}})
    assert await store.get("pre-key", ["1", "2"]) == {
        "1": {"private": b"a" * 32, "public": b"b" * 32}
    }


async def test_none_deletes_and_deleting_absent_pre_key_is_noop(
    store: TransactionalStore, rec: Recorder
) -> None:
    """set with None deletes an id; deleting a pre-key that does not exist changes nothing."""
    await store.set({"pre-key": {"1": {"private": b"a" * 32, "public": b"b" * 32}}})
    await store.set({"pre-key": {"1": None, "9": None}})
    assert await store.get("pre-key", ["1", "9"]) == {}
    assert (await rec.backend.snapshot()).keys == {}


async def test_plain_set_is_a_one_shot_commit(store: TransactionalStore, rec: Recorder) -> None:
    """A set outside any transaction is committed atomically as one batch."""
    await store.set({"session": {"a": b"1", "b": b"2"}, "sender-key": {"g": b"3"}})
    assert len(rec.batches) == 1
    assert rec.batches[0].keys == {"session": {"a": b"1", "b": b"2"}, "sender-key": {"g": b"3"}}


async def test_read_your_writes_inside_a_transaction(store: TransactionalStore) -> None:
    """Reads through the handle see the transaction's own writes and deletes."""
    await store.set({"session": {"a": b"old", "b": b"keep"}})
    async with store.transaction("k") as tx:
        await tx.set({"session": {"a": b"new", "b": None}})
        assert await tx.get("session", ["a", "b"]) == {"a": b"new"}


async def test_nothing_is_visible_before_commit(store: TransactionalStore) -> None:
    """Another task reads the committed value while a transaction is open, the new one after."""
    await store.set({"session": {"a": b"old"}})
    opened = trio.Event()
    release = trio.Event()
    seen: list[dict[str, Value]] = []

    async def writer() -> None:
        async with store.transaction("k") as tx:
            await tx.set({"session": {"a": b"new"}})
            opened.set()
            await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        await opened.wait()
        seen.append(await store.get("session", ["a"]))
        release.set()
    seen.append(await store.get("session", ["a"]))
    assert seen == [{"a": b"old"}, {"a": b"new"}]


async def test_exception_discards_every_write(store: TransactionalStore, rec: Recorder) -> None:
    """An exception leaving the block discards the writes and reaches the caller."""
    with pytest.raises(RuntimeError, match="boom"):
        async with store.transaction("k") as tx:
            await tx.set({"session": {"a": b"x"}})
            raise RuntimeError("boom")
    assert await store.get("session", ["a"]) == {}
    assert rec.batches == []


async def test_transaction_commits_once_atomically(
    store: TransactionalStore, rec: Recorder
) -> None:
    """All writes of a transaction reach the commit function as one batch, on exit only."""
    async with store.transaction("k") as tx:
        await tx.set({"session": {"a": b"1"}})
        await tx.set({"pre-key": {"5": {"private": b"p" * 32, "public": b"q" * 32}}})
        assert rec.batches == []
    assert len(rec.batches) == 1
    assert set(rec.batches[0].keys) == {"session", "pre-key"}
    assert tx.commit_seq == rec.backend.seq


async def test_in_transaction_reports_the_current_task(store: TransactionalStore) -> None:
    """in_transaction is true inside the block only, and false in unrelated tasks."""
    assert not store.in_transaction()
    elsewhere: list[bool] = []
    inside = trio.Event()
    done = trio.Event()

    async def other() -> None:
        await inside.wait()
        elsewhere.append(store.in_transaction())
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        async with store.transaction("k"):
            assert store.in_transaction()
            inside.set()
            await done.wait()
    assert not store.in_transaction()
    assert elsewhere == [False]


async def test_store_get_and_set_inside_transaction_go_through_it(
    store: TransactionalStore, rec: Recorder
) -> None:
    """Inside a transaction, store.get/set act on the transaction, as in Baileys."""
    async with store.transaction("k"):
        await store.set({"session": {"a": b"1"}})
        assert await store.get("session", ["a"]) == {"a": b"1"}
        assert rec.batches == []
    assert len(rec.batches) == 1


async def test_run_transaction_returns_the_callback_result(store: TransactionalStore) -> None:
    """run_transaction commits the callback's writes and returns its value."""

    async def work(tx: StoreTransaction) -> str:
        await tx.set({"session": {"a": b"1"}})
        return "done"

    assert await store.run_transaction("k", work) == "done"
    assert await store.get("session", ["a"]) == {"a": b"1"}


async def _increment(tx: StoreTransaction, slot: str) -> int:
    current = (await tx.get("sender-key-memory", [slot])).get(slot, {"n": 0})["n"]
    await trio.lowlevel.checkpoint()
    await tx.set({"sender-key-memory": {slot: {"n": current + 1}}})
    return int(current)


async def test_lost_update_raises_conflict_in_context_form(store: TransactionalStore) -> None:
    """A transaction whose read a concurrent commit overwrote raises TransactionConflict."""
    results: list[str] = []
    first_read = trio.Event()
    second_done = trio.Event()

    async def slow() -> None:
        try:
            async with store.transaction("a") as tx:
                await _increment(tx, "c")
                first_read.set()
                await second_done.wait()
            results.append("slow committed")
        except TransactionConflict as conflict:
            results.append(f"slow conflict {conflict.conflicts}")

    async def fast() -> None:
        await first_read.wait()
        async with store.transaction("b") as tx:
            await _increment(tx, "c")
        second_done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow)
        nursery.start_soon(fast)
    assert results == ["slow conflict [('sender-key-memory', 'c')]"]
    assert await store.get("sender-key-memory", ["c"]) == {"c": {"n": 1}}
    assert store.statistics().conflicts == 1


async def test_run_transaction_retries_conflicts(store: TransactionalStore) -> None:
    """Concurrent read-modify-write callbacks on different keys all land (no lost update)."""

    async def bump(tx: StoreTransaction) -> int:
        return await _increment(tx, "c")

    async with trio.open_nursery() as nursery:
        for i in range(8):
            nursery.start_soon(store.run_transaction, f"key{i}", bump)
    assert await store.get("sender-key-memory", ["c"]) == {"c": {"n": 8}}
    assert store.statistics().retries >= 1


async def test_phantom_read_conflicts(store: TransactionalStore) -> None:
    """Reading an absent id, then seeing it created by another commit, is a conflict."""
    read_done = trio.Event()
    created = trio.Event()
    outcome: list[str] = []

    async def reader() -> None:
        try:
            async with store.transaction("a") as tx:
                assert await tx.get("pre-key", ["7"]) == {}
                read_done.set()
                await created.wait()
                await tx.set({"session": {"saw-no-prekey": b"1"}})
            outcome.append("committed")
        except TransactionConflict:
            outcome.append("conflict")

    async def creator() -> None:
        await read_done.wait()
        await store.set({"pre-key": {"7": {"private": b"a" * 32, "public": b"b" * 32}}})
        created.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        nursery.start_soon(creator)
    assert outcome == ["conflict"]
    assert await store.get("session", ["saw-no-prekey"]) == {}


async def test_write_skew_is_prevented(store: TransactionalStore) -> None:
    """Two transactions reading both slots and writing one each cannot both commit."""
    await store.set({"session": {"x": b"0", "y": b"0"}})
    both_read = trio.Semaphore(0)
    outcomes: list[str] = []

    async def one(mine: str) -> None:
        try:
            async with store.transaction(mine) as tx:
                await tx.get("session", ["x", "y"])
                both_read.release()
                await trio.testing.wait_all_tasks_blocked()
                await tx.set({"session": {mine: b"1"}})
            outcomes.append("committed")
        except TransactionConflict:
            outcomes.append("conflict")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, "x")
        nursery.start_soon(one, "y")
    assert sorted(outcomes) == ["committed", "conflict"]


async def test_run_transaction_commits_against_a_writer_that_overwrites_every_read(
    rec: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    """A callback whose read is overwritten on every optimistic attempt escalates and commits."""
    store = rec.store(optimistic_attempts=3)
    attempts = 0
    read_in_last: list[bytes] = []

    async def meddler() -> None:
        n = 0
        while True:
            n += 1
            await store.set({"session": {"hot": str(n).encode()}})
            await trio.sleep(0.001)

    async def work(tx: StoreTransaction) -> None:
        nonlocal attempts
        attempts += 1
        hot = (await tx.get("session", ["hot"]))["hot"]
        await trio.sleep(0.01)  # long enough for the meddler to overwrite it
        read_in_last[:] = [hot]
        await tx.set({"session": {"cold": hot}})

    async with trio.open_nursery() as nursery:
        await store.set({"session": {"hot": b"0"}})
        nursery.start_soon(meddler)
        with trio.fail_after(60):  # virtual time: retrying until lucky never gets there
            await store.run_transaction("k", work)
        nursery.cancel_scope.cancel()
    assert attempts == 4 and store.statistics().escalations == 1
    assert await store.get("session", ["cold"]) == {"cold": read_in_last[0]}


async def test_a_transaction_writing_a_slot_the_escalated_one_read_conflicts(
    rec: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    """While an escalated callback holds a read, a context-form commit writing it conflicts."""
    store = rec.store(optimistic_attempts=1)
    read_done, may_finish = trio.Event(), trio.Event()
    attempts = 0

    async def other() -> None:
        await read_done.wait()
        with pytest.raises(TransactionConflict):
            async with store.transaction("unrelated") as tx:
                await tx.set({"session": {"x": b"late"}})
        may_finish.set()

    async with outside_writer(store) as write, trio.open_nursery() as nursery:
        nursery.start_soon(other)

        async def escalated(tx: StoreTransaction) -> None:
            nonlocal attempts
            attempts += 1
            await tx.get("session", ["x"])
            if attempts == 1:
                await write({"session": {"x": b"other"}})  # invalidates the optimistic try
                await tx.set({"session": {"y": b"0"}})
                return
            read_done.set()
            await may_finish.wait()
            await tx.set({"session": {"y": b"1"}})

        await store.run_transaction("k", escalated)
    assert attempts == 2 and store.statistics().escalations == 1
    assert await store.get("session", ["x", "y"]) == {"x": b"other", "y": b"1"}


async def test_a_plain_write_to_a_slot_the_escalated_one_read_goes_after_it(
    rec: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    """A set outside any transaction waits for the escalated callback, then lands over it."""
    store = rec.store(optimistic_attempts=1)
    read_done = trio.Event()
    seen: list[dict[str, Value]] = []

    async def plain() -> None:
        await read_done.wait()
        await store.set({"session": {"x": b"plain"}})
        seen.append(await store.get("session", ["x"]))

    async with outside_writer(store) as write, trio.open_nursery() as nursery:
        nursery.start_soon(plain)

        async def escalated(tx: StoreTransaction) -> None:
            found = await tx.get("session", ["x"])
            seen.append(found)
            if len(seen) == 1:
                await write({"session": {"x": b"first"}})  # invalidates the optimistic try
                return
            read_done.set()
            await trio.sleep(1)
            await tx.set({"session": {"x": found["x"] + b"+1"}})

        await store.run_transaction("k", escalated)
    assert seen == [{}, {"x": b"first"}, {"x": b"plain"}]
    assert [b.keys["session"]["x"] for b in rec.batches] == [b"first", b"first+1", b"plain"]


async def test_an_escalated_retry_takes_out_of_order_keys_up_front(
    rec: Recorder, autojump_clock: trio.testing.MockClock
) -> None:
    """A callback nesting a key that sorts first, held by another task, still commits."""
    store = rec.store(optimistic_attempts=1)
    holding = trio.Event()
    tries = 0

    async def holder() -> None:
        async with store.transaction("a"):
            holding.set()
            await trio.sleep(1)

    async def nests(tx: StoreTransaction) -> None:
        nonlocal tries
        tries += 1
        async with store.transaction("a") as inner:
            await _increment(inner, "c")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder)
        await holding.wait()
        await store.run_transaction("b", nests)
    assert tries == 2 and await store.get("sender-key-memory", ["c"]) == {"c": {"n": 1}}


async def test_same_key_mutual_exclusion(store: TransactionalStore) -> None:
    """Two transactions on one key never overlap."""
    trace: list[str] = []

    async def worker(name: str) -> None:
        async with store.transaction("k"):
            trace.append(f"{name} in")
            await trio.testing.wait_all_tasks_blocked()
            trace.append(f"{name} out")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker, "a")
        nursery.start_soon(worker, "b")
    assert trace in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])


async def test_key_lock_is_first_come_first_served_and_cancelled_waiters_leave(
    store: TransactionalStore,
) -> None:
    """Waiters on one key get it in arrival order; one cancelled while waiting drops out."""
    order: list[str] = []
    release = trio.Event()

    async def holder() -> None:
        async with store.transaction("k"):
            order.append("holder")
            await release.wait()

    async def waiter(name: str, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            async with store.transaction("k"):
                order.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder)
        await trio.testing.wait_all_tasks_blocked()
        scopes = {}
        for name in ("w1", "w2", "w3", "w4"):
            scopes[name] = await nursery.start(waiter, name)
            await trio.testing.wait_all_tasks_blocked()
        scopes["w2"].cancel()
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert order == ["holder", "w1", "w3", "w4"]
    assert store.statistics().active_transactions == 0
    async with store.transaction("k"):  # free again
        pass


async def test_nested_same_key_joins_the_outer_transaction(
    store: TransactionalStore, rec: Recorder
) -> None:
    """A nested transaction on the held key joins: one commit, at the outer exit."""
    async with store.transaction("k") as outer:
        async with store.transaction("k") as inner:
            assert inner is outer
            await inner.set({"session": {"a": b"1"}})
        assert rec.batches == []
        assert await outer.get("session", ["a"]) == {"a": b"1"}
    assert len(rec.batches) == 1


async def test_nested_other_key_locks_it_until_outer_ends(store: TransactionalStore) -> None:
    """A nested transaction on another key holds that key's lock until the outer commit."""
    trace: list[str] = []
    inner_locked = trio.Event()

    async def outer() -> None:
        async with store.transaction("a") as tx:
            async with store.transaction("b"):
                assert tx.keys_held == ("a", "b")
                inner_locked.set()
            await trio.testing.wait_all_tasks_blocked()
            trace.append("outer done")

    async def contender() -> None:
        await inner_locked.wait()
        async with store.transaction("b"):
            trace.append("contender in b")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(outer)
        nursery.start_soon(contender)
    assert trace == ["outer done", "contender in b"]


async def test_out_of_order_nested_lock_raises_instead_of_deadlocking(
    store: TransactionalStore,
) -> None:
    """Nesting a busy key that sorts before a held one raises LockOrderConflict at once."""
    holder_in = trio.Event()
    release = trio.Event()

    async def holder() -> None:
        async with store.transaction("a"):
            holder_in.set()
            await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder)
        await holder_in.wait()
        with pytest.raises(LockOrderConflict, match="'a'"):
            async with store.transaction("b"), store.transaction("a"):
                pass  # pragma: no cover - never entered
        release.set()


async def test_run_transaction_retries_lock_order_conflicts(store: TransactionalStore) -> None:
    """Two tasks nesting keys in opposite orders both finish under run_transaction."""

    async def nest(first: str, second: str) -> None:
        async def inner(tx: StoreTransaction) -> None:
            await _increment(tx, "c")

        async def outer(tx: StoreTransaction) -> None:
            await trio.testing.wait_all_tasks_blocked()
            await store.run_transaction(second, inner)

        await store.run_transaction(first, outer)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(nest, "a", "b")
        nursery.start_soon(nest, "b", "a")
    assert await store.get("sender-key-memory", ["c"]) == {"c": {"n": 2}}


async def test_exception_in_nested_block_rolls_back_only_its_writes(
    store: TransactionalStore,
) -> None:
    """A nested block that raises loses its own writes; the outer block's writes commit."""
    async with store.transaction("k") as tx:
        await tx.set({"session": {"outer": b"1"}})
        with pytest.raises(ValueError):
            async with store.transaction("k"):
                await tx.set({"session": {"inner": b"2"}})
                raise ValueError("inner fails")
    assert await store.get("session", ["outer", "inner"]) == {"outer": b"1"}


async def test_writes_visible_only_after_commit_returns(
    store: TransactionalStore, rec: Recorder
) -> None:
    """Even once the backend holds the batch, readers see it only after the commit returned."""
    rec.gate = trio.Event()
    rec.land_before_gate = True
    store = rec.store(cache_size=0)
    seen: list[dict[str, Value]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.set, {"session": {"a": b"new"}})
        await trio.testing.wait_all_tasks_blocked()
        assert (await rec.backend.read_keys("session", ["a"])) == {"a": b"new"}

        async def reader() -> None:
            seen.append(await store.get("session", ["a"]))

        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert seen == []  # the reader waits for the in-flight commit to settle
        rec.gate.set()
    assert seen == [{"a": b"new"}]


async def test_commits_become_visible_in_validation_order(
    store: TransactionalStore, rec: Recorder
) -> None:
    """A later commit acknowledged first stays invisible until the earlier one settles."""
    gates = {"first": trio.Event(), "second": trio.Event()}

    async def gated_commit(batch: Batch) -> int:
        (name,) = batch.keys["session"]
        await gates[name].wait()
        return await rec.backend.commit(batch)

    ordered = TransactionalStore(rec.backend.read_keys, gated_commit)
    assert await ordered.get("session", ["first", "second"]) == {}  # cached: known absent
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ordered.set, {"session": {"first": b"1"}})
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(ordered.set, {"session": {"second": b"2"}})
        await trio.testing.wait_all_tasks_blocked()
        gates["second"].set()
        await trio.testing.wait_all_tasks_blocked()
        assert await ordered.get("session", ["first", "second"]) == {}
        gates["first"].set()
    assert await ordered.get("session", ["first", "second"]) == {"first": b"1", "second": b"2"}


async def test_failed_commit_shows_nothing_and_propagates(
    store: TransactionalStore, rec: Recorder
) -> None:
    """A commit function raising DurabilityError makes nothing visible and reaches the caller."""
    await store.set({"session": {"a": b"old"}})
    rec.fail_with = DurabilityError("memory:test", "fsync")
    with pytest.raises(DurabilityError):
        async with store.transaction("k") as tx:
            await tx.set({"session": {"a": b"new"}})
    assert await store.get("session", ["a"]) == {"a": b"old"}
    assert store.statistics().failed_commits == 1


async def test_commit_that_failed_but_landed_is_read_back_from_the_backend(
    store: TransactionalStore, rec: Recorder
) -> None:
    """A commit raising after its batch landed leaves its slots uncertain: read from the backend."""
    await store.set({"session": {"a": b"old"}})
    assert await store.get("session", ["a"]) == {"a": b"old"}
    rec.land_before_gate = True
    rec.fail_with = trio.TooSlowError()
    with pytest.raises(trio.TooSlowError):
        await store.set({"session": {"a": b"landed"}})
    assert await store.get("session", ["a"]) == {"a": b"landed"}
    assert store.statistics().uncertain_slots == 1
    rec.land_before_gate = False
    rec.fail_with = None
    await store.set({"session": {"b": b"later"}})
    assert store.statistics().uncertain_slots == 0


async def test_cancel_during_commit_keeps_view_and_durable_state_equal(
    store: TransactionalStore, rec: Recorder
) -> None:
    """Cancelling a transaction whose commit is in flight leaves the view equal to the backend."""
    gate = rec.gate = trio.Event()
    scope = trio.CancelScope()

    async def cancel_then_release() -> None:
        await trio.testing.wait_all_tasks_blocked()
        assert len(rec.batches) == 1  # the commit is in flight
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        gate.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_then_release)
        with scope:
            async with store.transaction("k") as tx:
                await tx.set({"session": {"a": b"1"}})
    durable = await rec.backend.read_keys("session", ["a"])
    assert durable == {"a": b"1"}  # the commit call is shielded: it finished durably
    assert await store.get("session", ["a"]) == durable


async def test_creds_and_keys_commit_in_one_batch(store: TransactionalStore, rec: Recorder) -> None:
    """tx.set_creds puts the creds snapshot in the same atomic batch as the key writes."""
    creds = make_creds()
    async with store.transaction("upload") as tx:
        await tx.set({"pre-key": {"1": {"private": b"a" * 32, "public": b"b" * 32}}})
        creds.next_pre_key_id = 2
        tx.set_creds(creds)
        creds.next_pre_key_id = 99  # the snapshot was taken at set_creds
    (batch,) = rec.batches
    assert batch.creds is not None and batch.creds.next_pre_key_id == 2
    assert "pre-key" in batch.keys
    assert (await rec.backend.read_creds()) == batch.creds


async def test_a_creds_patch_rides_in_the_transactions_batch_and_rolls_back_with_a_block(
    store: TransactionalStore, rec: Recorder
) -> None:
    """tx.patch_creds: merged patches in the batch; a failing nested block drops its own."""
    async with store.transaction("receipt") as tx:
        await tx.set({"pre-key": {"7": {"private": b"a" * 32, "public": b"b" * 32}}})
        tx.patch_creds(CredsPatch.of(next_pre_key_id=8))
        with pytest.raises(RuntimeError):
            async with store.transaction("receipt"):
                tx.patch_creds(CredsPatch.of(routing_info=b"undone"))
                raise RuntimeError("nested block fails")
        tx.patch_creds(CredsPatch.of(first_unuploaded_pre_key_id=8))
    (batch,) = rec.batches
    assert batch.creds is None and batch.patch is not None
    assert batch.patch.changes == {"next_pre_key_id": 8, "first_unuploaded_pre_key_id": 8}


async def test_commit_batch_hands_the_patch_and_revision_to_the_commit_function(
    store: TransactionalStore, rec: Recorder
) -> None:
    """commit_batch(Batch(patch=..., rev=5)): the commit function gets both, with the keys."""
    patch = CredsPatch.of(routing_info=b"r")
    await store.commit_batch(Batch(keys={"session": {"a": b"1"}}, patch=patch, rev=5))
    await store.commit_batch(Batch(patch=patch, rev=6))
    assert [(b.patch, b.rev, dict(b.keys)) for b in rec.batches] == [
        (patch, 5, {"session": {"a": b"1"}}),
        (patch, 6, {}),
    ]


async def test_commit_batch_outside_and_inside_transactions(
    store: TransactionalStore, rec: Recorder
) -> None:
    """commit_batch commits creds with keys; inside a transaction it is refused."""
    seq = await store.commit_batch(Batch(keys={"session": {"a": b"1"}}, creds=make_creds()))
    assert seq == rec.backend.seq
    assert await store.commit_batch(Batch()) is None
    async with store.transaction("k"):
        with pytest.raises(StoreError, match="inside a transaction"):
            await store.commit_batch(Batch(creds=make_creds()))


async def test_cache_serves_repeated_reads(store: TransactionalStore, rec: Recorder) -> None:
    """Committed values and known absences are served from memory after the first read."""
    await store.set({"session": {"a": b"1"}})
    await store.get("session", ["a", "missing"])
    await store.get("session", ["a", "missing"])
    assert rec.reads == [("session", ["missing"])]
    assert store.statistics().cache_hits >= 3


async def test_bounded_cache_stays_bounded_and_correct(rec: Recorder) -> None:
    """With a small cache, entries stay within the bound and reads still return the truth."""
    store = rec.store(cache_size=2)
    await store.set({"session": {str(i): str(i).encode() for i in range(10)}})
    got = await store.get("session", [str(i) for i in range(10)])
    assert got == {str(i): str(i).encode() for i in range(10)}
    assert store.statistics().cached_entries <= 2


async def test_values_do_not_alias_the_callers_objects(store: TransactionalStore) -> None:
    """Mutating a value after set, or a value returned by get, never changes stored state."""
    value: dict[str, Value] = {"nested": {"list": [1, 2]}}
    await store.set({"session": {"a": value}})
    value["nested"]["list"].append(3)
    got = await store.get("session", ["a"])
    got["a"]["nested"]["list"].append(4)
    assert await store.get("session", ["a"]) == {"a": {"nested": {"list": [1, 2]}}}


async def test_bad_input_raises_typed_errors(store: TransactionalStore, rec: Recorder) -> None:
    """Unknown key types, bad ids and non-plain values raise InvalidValueError; nothing written."""
    with pytest.raises(InvalidValueError, match="no-such-type"):
        await store.set({"no-such-type": {"a": b"1"}})
    with pytest.raises(InvalidValueError, match=r"session/a\.x"):
        await store.set({"session": {"a": {"x": object()}}})
    with pytest.raises(InvalidValueError):
        await store.get("session", "abc")
    with pytest.raises(InvalidValueError):
        await store.set({"session": {"": b"1"}})
    assert rec.batches == []


class Colour(enum.IntEnum):
    RED = 1


class Name(str):
    pass


def test_copy_value_copies_every_container_and_keeps_the_plain_parts() -> None:
    """copy_value returns equal data sharing no list or dict with the original."""
    original: Value = {"a": [1, {"b": b"x", "c": None}], "d": True, "e": 1.5, "f": "s"}
    copied = copy_value(original)
    assert copied == original
    assert isinstance(copied, dict) and isinstance(original, dict)
    assert copied["a"] is not original["a"]
    assert copied["a"][1] is not original["a"][1]  # type: ignore[index]  # a list, above
    copied["a"][1]["b"] = b"changed"  # type: ignore[index]  # a list of a dict, above
    assert original["a"][1]["b"] == b"x"  # type: ignore[index]  # as above


def test_copy_value_accepts_subclasses_of_the_plain_types() -> None:
    """An IntEnum, a str subclass and an OrderedDict are plain data, copied as before."""
    original: Value = {"n": Colour.RED, "s": Name("x"), "o": collections.OrderedDict(k=[1])}
    copied = copy_value(original)
    assert copied == {"n": 1, "s": "x", "o": {"k": [1]}}
    assert isinstance(copied, dict) and copied["o"] is not original["o"]  # type: ignore[index]  # a dict, above


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"a": [1, {"b": object()}]}, r"v\.a\[1\]\.b"),
        ({"a": {1: "x"}}, r"v\.a"),
        ([{"k": collections.OrderedDict(z=set())}], r"v\[0\]\.k\.z"),
    ],
)
def test_copy_value_names_where_a_value_is_not_plain(value: Value, where: str) -> None:
    """A part that is not plain data raises InvalidValueError naming its path."""
    with pytest.raises(InvalidValueError, match=where):
        copy_value(value, "v")


async def test_closed_store_refuses_work(store: TransactionalStore) -> None:
    """After aclose, reads, writes and transactions raise StoreClosedError."""
    await store.aclose()
    with pytest.raises(StoreClosedError):
        await store.get("session", ["a"])
    with pytest.raises(StoreClosedError):
        await store.set({"session": {"a": b"1"}})
    with pytest.raises(StoreClosedError):
        async with store.transaction("k"):
            pass  # pragma: no cover - never entered


async def test_finished_transaction_handle_is_unusable(store: TransactionalStore) -> None:
    """A handle kept past its block refuses reads and writes."""
    async with store.transaction("k") as tx:
        pass
    with pytest.raises(StoreError, match="committed"):
        await tx.set({"session": {"a": b"1"}})


async def test_cached_read_racing_a_commit_still_conflicts() -> None:
    """A read served from cache while a commit becomes visible is versioned before that commit."""

    async def first(store: TransactionalStore) -> None:
        await store.run_transaction("a", lambda tx: _increment(tx, "c"))

    async def second(store: TransactionalStore, gate: trio.Event) -> None:
        async def body(tx: StoreTransaction) -> int:
            gate.set()  # the first commit returns while this read yields
            return await _increment(tx, "c")

        await store.run_transaction("b", body)

    lost_updates = 0
    # Trio orders tasks woken together at random; 32 runs miss a 50% race with p = 2**-32.
    for _ in range(32):
        rec = Recorder()
        store = rec.store()
        assert await store.get("sender-key-memory", ["c"]) == {}  # cached: known absent
        rec.gate = trio.Event()
        rec.land_before_gate = True
        async with trio.open_nursery() as nursery:
            nursery.start_soon(first, store)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(second, store, rec.gate)
        found = await store.get("sender-key-memory", ["c"])
        lost_updates += found != {"c": {"n": 2}}
    assert lost_updates == 0


async def test_plain_multi_id_read_is_never_torn_by_commits_racing_it() -> None:
    """A get of several ids that needs several backend reads still returns one committed state."""
    backend = MemoryBackend()
    gates: list[trio.Event] = []

    async def slow_read(type: str, ids: Sequence[str]) -> dict[str, Value]:
        gate = trio.Event()
        gates.append(gate)
        await gate.wait()
        return await backend.read_keys(type, ids)

    store = TransactionalStore(slow_read, backend.commit, cache_size=0)
    seen: list[dict[str, Value]] = []

    async def reader() -> None:
        seen.append(await store.get("session", ["x", "y"]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        await store.set({"session": {"x": b"1"}})  # x changes under the first read
        gates[0].set()
        await trio.testing.wait_all_tasks_blocked()
        assert len(gates) == 2  # the reader reads x again
        await store.set({"session": {"x": b"2", "y": b"2"}})  # one atomic commit
        for gate in gates[1:]:
            gate.set()
            await trio.testing.wait_all_tasks_blocked()
        while len(seen) == 0:
            gates[-1].set()
            await trio.testing.wait_all_tasks_blocked()
    assert seen == [{"x": b"2", "y": b"2"}]


async def test_creds_commits_are_issued_one_at_a_time_in_order(rec: Recorder) -> None:
    """A second creds commit waits for the first to settle, so durable order is call order."""
    store = rec.store()
    rec.gate = trio.Event()
    older, newer = make_creds(), make_creds()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.commit_batch, Batch(creds=older))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(store.commit_batch, Batch(keys={"session": {"a": b"1"}}, creds=newer))
        await trio.testing.wait_all_tasks_blocked()
        assert len(rec.batches) == 1  # the newer snapshot is not handed over yet
        rec.gate.set()
    assert [batch.creds for batch in rec.batches] == [older, newer]
    assert await rec.backend.read_creds() == newer


# -- coalesced creds saves (commit_creds) ---------------------------------------------


_BASE_CREDS: list[AuthCreds] = []


def numbered_creds(n: int) -> AuthCreds:
    """Creds whose ``account_sync_counter`` tells snapshots apart (n: call order)."""
    if not _BASE_CREDS:
        _BASE_CREDS.append(make_creds())  # key generation is slow: copy one device's creds
    creds = _BASE_CREDS[0].copy()
    creds.account_sync_counter = n
    return creds


class CredsLog:
    """A commit function that records each creds snapshot it was handed, gated per call."""

    def __init__(self) -> None:
        self.backend = MemoryBackend()
        self.written: list[int] = []
        self.gates: list[trio.Event] = []
        self.gated = False
        self.fail_calls: set[int] = set()

    async def commit(self, batch: Batch) -> int:
        assert batch.creds is not None
        call = len(self.written)
        self.written.append(batch.creds.account_sync_counter)
        if self.gated:
            gate = trio.Event()
            self.gates.append(gate)
            await gate.wait()
        if call in self.fail_calls:
            raise DurabilityError("creds-log", "injected fsync", OSError(5, "EIO"))
        return await self.backend.commit(batch)

    async def durable_counter(self) -> int | None:
        creds = await self.backend.read_creds()
        return None if creds is None else creds.account_sync_counter

    def store(self) -> TransactionalStore:
        return TransactionalStore(self.backend.read_keys, self.commit)


async def test_creds_burst_is_coalesced_into_few_commits() -> None:
    """10,000 concurrent creds saves cost at most 3 commits; the newest is durable, in order."""
    log = CredsLog()
    store = log.store()
    acked: dict[int, int] = {}
    commits_when_last_issued: list[int] = []
    issued = 0

    async def save() -> None:
        nonlocal issued
        issued += 1  # trio starts tasks in any order: number snapshots by call
        n = issued
        if n == 10_000:
            commits_when_last_issued.append(len(log.written))
        acked[n] = await store.commit_creds(numbered_creds(n))

    async with trio.open_nursery() as nursery:
        for _ in range(10_000):
            nursery.start_soon(save)
    assert len(log.written) <= 3
    assert len(log.written) - commits_when_last_issued[0] <= 2
    assert log.written == sorted(log.written)  # never an older snapshot after a newer one
    assert log.written[-1] == 10_000
    assert await log.durable_counter() == 10_000
    stats = store.statistics()
    assert stats.creds_saves == 10_000
    assert stats.creds_commits == len(log.written)
    assert len(acked) == 10_000


async def test_creds_save_is_acked_only_once_a_newer_or_equal_snapshot_is_durable() -> None:
    """No save returns before the durable creds are at least as new as its own snapshot."""
    log = CredsLog()
    log.gated = True
    store = log.store()
    returned: dict[int, tuple[int, int | None]] = {}

    async def save(n: int) -> None:
        seq = await store.commit_creds(numbered_creds(n))
        returned[n] = (seq, await log.durable_counter())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(save, 1)
        await trio.testing.wait_all_tasks_blocked()
        for n in (2, 3, 4):
            nursery.start_soon(save, n)
            await trio.testing.wait_all_tasks_blocked()
        assert log.written == [1]  # 2..4 wait for the round in flight
        assert returned == {}
        log.gates[0].set()
        await trio.testing.wait_all_tasks_blocked()
        assert set(returned) == {1}  # 2..4 are covered by the second commit, still gated
        assert log.written == [1, 4]  # one commit carries the newest of 2..4
        log.gates[1].set()
    for n, (_seq, durable_then) in returned.items():
        assert durable_then is not None and durable_then >= n
    assert returned[2][0] == returned[3][0] == returned[4][0] > returned[1][0]


async def test_creds_saves_made_during_a_commit_go_to_the_next_one_in_call_order() -> None:
    """Waves of saves: each commit writes the newest snapshot so far, strictly increasing."""
    log = CredsLog()
    log.gated = True
    store = log.store()
    async with trio.open_nursery() as nursery:
        n = 0
        for wave in range(5):
            for _ in range(wave + 1):
                n += 1
                nursery.start_soon(store.commit_creds, numbered_creds(n))
                await trio.testing.wait_all_tasks_blocked()
            if log.gates:
                log.gates[-1].set()
                await trio.testing.wait_all_tasks_blocked()
        while len(log.gates) and not all(g.is_set() for g in log.gates):
            log.gates[-1].set()
            await trio.testing.wait_all_tasks_blocked()
    assert log.written == sorted(set(log.written))
    assert log.written[-1] == n
    assert await log.durable_counter() == n


async def test_failed_creds_commit_reaches_every_save_it_covered() -> None:
    """A commit failing mid-burst fails each save whose snapshot was not durable, none other."""
    log = CredsLog()
    log.gated = True
    log.fail_calls = {1}
    store = log.store()
    results: dict[int, int | BaseException] = {}

    async def save(n: int) -> None:
        try:
            results[n] = await store.commit_creds(numbered_creds(n))
        except DurabilityError as exc:
            results[n] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(save, 1)
        await trio.testing.wait_all_tasks_blocked()
        for n in (2, 3):
            nursery.start_soon(save, n)
            await trio.testing.wait_all_tasks_blocked()
        log.gates[0].set()  # 1 lands; the round of 2 and 3 starts and will fail
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(save, 4)  # arrives while the failing round is in flight
        await trio.testing.wait_all_tasks_blocked()
        assert log.written == [1, 3]
        log.gates[1].set()
        await trio.testing.wait_all_tasks_blocked()
        assert log.written == [1, 3, 4]
        log.gates[2].set()
    assert isinstance(results[1], int)
    assert isinstance(results[2], DurabilityError) and isinstance(results[3], DurabilityError)
    assert results[2] is not results[3]  # one exception object per task
    assert isinstance(results[4], int)  # covered by a later commit that succeeded
    assert await log.durable_counter() == 4
    assert store.statistics().creds_saves == 2


async def test_cancelled_creds_save_does_not_strand_the_others() -> None:
    """Saves cancelled while queued leave leadership to a live caller, or to the next one."""
    log = CredsLog()
    log.gated = True
    store = log.store()
    done: list[int] = []

    async def save(n: int) -> None:
        await store.commit_creds(numbered_creds(n))
        done.append(n)

    async def doomed(n: int, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await save(n)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(save, 1)
        await trio.testing.wait_all_tasks_blocked()
        cancel_2 = await nursery.start(doomed, 2)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(save, 3)
        await trio.testing.wait_all_tasks_blocked()
        cancel_2.cancel()  # queued, not yet leading: withdrawn from leadership
        await trio.testing.wait_all_tasks_blocked()
        log.gates[0].set()
        await trio.testing.wait_all_tasks_blocked()
        assert log.written == [1, 3]  # 3 leads the round (its snapshot is the newest)
        log.gates[1].set()
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(save, 4)
        await trio.testing.wait_all_tasks_blocked()
        cancel_5 = await nursery.start(doomed, 5)
        await trio.testing.wait_all_tasks_blocked()
        cancel_5.cancel()  # the only caller queued behind 4
        await trio.testing.wait_all_tasks_blocked()
        log.gates[2].set()
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(save, 6)  # nobody leads now: 6 does
        await trio.testing.wait_all_tasks_blocked()
        log.gates[3].set()
    assert sorted(done) == [1, 3, 4, 6]
    assert log.written == [1, 3, 4, 6]
    assert await log.durable_counter() == 6


async def test_creds_saves_are_ordered_with_transaction_creds() -> None:
    """commit_creds inside a transaction is refused; outside it is one creds commit."""
    log = CredsLog()
    store = log.store()
    async with store.transaction("k"):
        with pytest.raises(StoreError):
            await store.commit_creds(numbered_creds(1))
    assert await store.commit_creds(numbered_creds(2)) == 1
    assert log.written == [2]


async def test_blind_writes_pipeline_only_over_a_sequenced_commit(rec: Recorder) -> None:
    """Over a commit marked sequenced_on_call a blind write to a slot in flight is handed over
    at once; a read-modify-write of it, and any write over an unmarked commit, waits."""

    @sequenced_on_call
    async def marked(batch: Batch) -> int:
        return await rec.commit(batch)

    for commit, sequenced in ((marked, True), (rec.commit, False)):
        rec.batches.clear()
        rec.gate = trio.Event()
        store = TransactionalStore(rec.read, commit)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.set, {"session": {"a": b"1"}})
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(store.set, {"session": {"a": b"2"}})
            await trio.testing.wait_all_tasks_blocked()
            assert len(rec.batches) == (2 if sequenced else 1)

            async def increment(tx: StoreTransaction) -> None:
                await tx.get("session", ["a"])
                await tx.set({"session": {"a": b"3"}})

            # The callback form: it may conflict with the second write and retry.
            nursery.start_soon(store.run_transaction, "t", increment)
            await trio.testing.wait_all_tasks_blocked()
            assert len(rec.batches) == (2 if sequenced else 1)  # its read waits either way
            rec.gate.set()
        final = await store.get("session", ["a"])
        assert final == await rec.backend.read_keys("session", ["a"])
        # Sequenced, the write of 2 was in flight before the increment read: 1, 2, 3.
        # Unmarked, it still waited for its slot and may be admitted after the increment
        # (1, increment, 2): either is a serial order.
        assert final == {"a": b"3"} if sequenced else final in ({"a": b"2"}, {"a": b"3"})


async def test_a_bulk_write_is_not_kept_in_the_cache_but_reads_back_from_the_backend() -> None:
    """812 pre-keys in one commit leave the cache alone; reading them goes to the backend."""
    from stores.keys import generate_pre_keys
    from stores.memory import MemoryBackend
    from stores.transactions import WRITE_CACHE_MAX_SLOTS, TransactionalStore

    backend = MemoryBackend()
    store = TransactionalStore(backend.read_keys, backend.commit)
    await store.set({"session": {"a": b"small"}})
    assert store.statistics().cached_entries == 1
    keys = generate_pre_keys(1, 812)
    assert len(keys) > WRITE_CACHE_MAX_SLOTS
    await store.set({"pre-key": keys})
    assert store.statistics().cached_entries == 1
    got = await store.get("pre-key", ["1", "812", "813"])
    assert set(got) == {"1", "812"} and got["812"] == keys["812"]
    await store.set({"pre-key": {"1": None}})
    assert await store.get("pre-key", ["1"]) == {}
