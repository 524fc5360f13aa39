"""Hypothesis: creds have one owner; random interleavings never lose an acknowledged change.

The session's persister owns the creds and merges patches in arrival order. Drawn
schedules interleave, under ``MockClock``:

* connection-side changes, one after another as the connection actor makes them:
  casts (``SaveCreds``), awaited commits (``CommitBatch``) and pre-key top-ups
  through the signal store (``CommitKeysAndCreds``: keys and counters at once),
  each numbered by the connection's revision;
* Signal transactions, concurrent with everything, each writing a key and a creds
  patch (``tx.patch_creds``) through the signal store;
* restarts: a connection incarnation that dies with a top-up still on its way (the
  next one loads as the writer, fencing the dead one's changes out), and persister
  crashes (rest_for_one restarts the signal store; the connection reloads).

The rule checked, from the issue rather than the code: every acknowledged change is
present at the end. For each creds field, the durable value is the value of an
acknowledged change to it or of a change that was not yet acknowledged when that
change was made (it may have been merged later); a change acknowledged before
another was even made never shows over it. Every acknowledged key is durable.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.errors import StaleCredsChange
from actors.mail import CommitBatch, CommitKeysAndCreds, LoadCreds, RunTransaction, SaveCreds
from actors.persister import Persister
from actors.session import SharedBackend
from actors.signal_store import SignalStoreActor
from runtime.errors import ActorDown, ReplyAbandoned
from runtime.ref import ActorRef
from runtime.registry import Registry
from runtime.reply import call_durable
from runtime.spec import ChildSpec, Strategy
from runtime.supervisor import open_supervisor
from stores.creds import AuthCreds, CredsPatch, init_auth_creds
from stores.memory import MemoryBackend
from stores.transactions import StoreTransaction
from stores.types import Batch, Transaction
from tests.session.helpers import crash_and_wait_restart

CONNECTION_FIELDS = ("routing_info", "platform", "next_pre_key_id")
TRANSACTION_FIELDS = ("my_app_state_key_id", "last_account_sync_timestamp", "next_pre_key_id")
# next_pre_key_id is written by both sides, as a top-up and a retry receipt both do.
UNKNOWN = (ReplyAbandoned, ActorDown, StaleCredsChange)
# Outcomes that acknowledge nothing: the change may or may not be in.

CONNECTION_OPS = st.one_of(
    st.tuples(st.sampled_from(["cast", "commit", "prekeys"]), st.sampled_from(CONNECTION_FIELDS)),
    st.tuples(st.sampled_from(["die_during_prekeys", "crash_persister"]), st.just("")),
    st.tuples(st.just("sleep"), st.sampled_from(["0", "1", "3"])),
)
TRANSACTION_OPS = st.tuples(st.integers(0, 6), st.sampled_from(TRANSACTION_FIELDS))


@dataclass
class Change:
    """One creds change: the field, its unique value, and when it was made and acked."""

    field: str
    value: Any
    made: int
    acked: int | None = None


class Harness:
    """The persister and signal store of one session, and the record of every change."""

    def __init__(self, persister: ActorRef, store: ActorRef) -> None:
        self.persister = persister
        self.store = store
        self.clock = itertools.count(1)
        self.values = itertools.count(1000)
        self.changes: list[Change] = []
        self.keys: dict[str, int] = {}
        self.rev = 0

    def change(self, field: str) -> tuple[Change, CredsPatch]:
        n = next(self.values)
        value: Any = str(n).encode() if field == "routing_info" else n
        if field in ("platform", "my_app_state_key_id"):
            value = f"v{n}"
        made = Change(field, value, next(self.clock))
        self.changes.append(made)
        return made, CredsPatch({field: value})

    def ack(self, change: Change) -> None:
        change.acked = next(self.clock)

    async def reload(self) -> None:
        """A new connection incarnation: load as the writer, number changes above the fence."""
        for _ in range(20):
            try:
                state = await call_durable(self.persister, LoadCreds(writer=True), timeout=60)
            except UNKNOWN:
                await trio.testing.wait_all_tasks_blocked()
                continue
            self.rev = state.fence
            return
        raise AssertionError("the persister never answered a load")

    def next_rev(self) -> int:
        self.rev += 1
        return self.rev


async def connection_op(h: Harness, nursery: trio.Nursery, op: str, arg: str) -> None:
    if op == "sleep":
        await trio.sleep(int(arg) / 1000)
    elif op == "cast":
        _change, patch = h.change(arg)
        await h.persister.cast(SaveCreds(patch, h.next_rev()))
    elif op == "commit":
        change, patch = h.change(arg)
        await settle(h, change, CommitBatch(Batch(patch=patch, rev=h.next_rev())), h.persister)
    elif op == "prekeys":
        await top_up(h, arg)
    elif op == "die_during_prekeys":
        nursery.start_soon(top_up, h, "next_pre_key_id")
        await trio.lowlevel.checkpoint()  # the top-up is on its way; this incarnation ends
        await h.reload()
    else:
        await trio.testing.wait_all_tasks_blocked()
        await crash_and_wait_restart(h.persister)
        await h.reload()


async def top_up(h: Harness, field: str) -> None:
    change, patch = h.change(field)
    key = f"pk{change.made}"
    msg = CommitKeysAndCreds({"pre-key": {key: {"n": change.made}}}, patch, h.next_rev())
    if await settle(h, change, msg, h.store):
        h.keys[key] = change.made


async def transaction(h: Harness, delay: int, field: str) -> None:
    await trio.sleep(delay / 1000)
    change, patch = h.change(field)
    key = f"tx{change.made}"

    async def work(tx: Transaction) -> None:
        assert isinstance(tx, StoreTransaction)  # the session's store: patches ride along
        await tx.set({"session": {key: {"n": change.made}}})
        tx.patch_creds(patch)

    if await settle(h, change, RunTransaction(key, work), h.store):
        h.keys[key] = change.made


async def settle(h: Harness, change: Change, msg: Any, ref: ActorRef) -> bool:
    try:
        await call_durable(ref, msg, timeout=60)
    except UNKNOWN:
        return False
    h.ack(change)
    return True


def allowed(changes: list[Change], field: str, initial: Any) -> set[Any]:
    """The values ``field`` may hold at the end, given which changes were acknowledged when."""
    mine = [c for c in changes if c.field == field]
    acked = [c for c in mine if c.acked is not None]
    if not acked:
        return {initial} | {c.value for c in mine}
    out: set[Any] = set()
    for candidate in mine:
        # A candidate acknowledged before an acknowledged change was made was merged
        # before it, so it can never be the final value over it.
        if all(
            c is candidate or candidate.acked is None or candidate.acked > c.made for c in acked
        ):
            out.add(candidate.value)
    return out


async def run_schedule(
    conn_ops: list[tuple[str, str]], tx_ops: list[tuple[int, str]], delay_ms: int
) -> None:
    backend = MemoryBackend()
    creds = init_auth_creds()
    await backend.commit(Batch(creds=creds))
    source = SharedBackend(backend)
    registry = Registry()
    children = tree(source, registry, delay_ms / 1000)
    async with open_supervisor(
        children, strategy=Strategy.REST_FOR_ONE, registry=registry, max_restarts=1000
    ) as sup:
        h = Harness(sup.ref("persister"), sup.ref("signal_store"))
        await h.reload()
        async with trio.open_nursery() as nursery:
            for delay, field in tx_ops:
                nursery.start_soon(transaction, h, delay, field)
            for op, arg in conn_ops:
                await connection_op(h, nursery, op, arg)
        await h.reload()  # waits until every change handed over has settled
    await source.aclose()
    await check(backend, creds, h)


def tree(source: SharedBackend, registry: Registry, delay: float) -> list[ChildSpec]:
    make_persister: Callable[[], Persister] = lambda: Persister(  # noqa: E731 - a spec factory
        source, emit=lambda _event: None, coalesce_delay=delay
    )
    return [
        ChildSpec("persister", make_persister, name="persister"),
        ChildSpec(
            "signal_store", lambda: SignalStoreActor(registry.ref("persister")), name="signal_store"
        ),
    ]


async def check(backend: MemoryBackend, initial: AuthCreds, h: Harness) -> None:
    durable = await backend.read_creds()
    assert durable is not None
    for field in {*CONNECTION_FIELDS, *TRANSACTION_FIELDS}:
        value = getattr(durable, field)
        assert value in allowed(h.changes, field, getattr(initial, field)), (
            f"{field}={value!r} lost an acknowledged change: {h.changes}"
        )
    for key, n in h.keys.items():
        type_ = "pre-key" if key.startswith("pk") else "session"
        assert await backend.read_keys(type_, [key]) == {key: {"n": n}}, f"acked key {key} lost"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    conn_ops=st.lists(CONNECTION_OPS, max_size=14),
    tx_ops=st.lists(TRANSACTION_OPS, max_size=8),
    delay_ms=st.integers(0, 3),
)
def test_interleaved_connection_changes_and_transaction_patches_keep_every_acked_change(
    conn_ops: list[tuple[str, str]], tx_ops: list[tuple[int, str]], delay_ms: int
) -> None:
    """Any interleaving of both sides' creds changes, with restarts, keeps every acked change."""
    trio.run(
        run_schedule, conn_ops, tx_ops, delay_ms, clock=trio.testing.MockClock(autojump_threshold=0)
    )


def test_the_rule_rejects_a_change_that_undoes_an_acknowledged_one() -> None:
    """The check itself: a value acked before a later acked change was made is not allowed."""
    older = Change("platform", "old", made=1, acked=2)
    newer = Change("platform", "new", made=3, acked=4)
    racing = Change("platform", "racing", made=1, acked=5)
    assert allowed([older, newer], "platform", None) == {"new"}
    assert allowed([older, newer, racing], "platform", None) == {"new", "racing"}
