"""Progress under contention: every run_transaction call commits, and the run stays serial.

Many tasks hammer few slots under lock keys that have nothing to do with the slots
(the lock key is the caller's choice): callback programs (``run_transaction``),
context-form programs and plain writes, drawn as in
``property_tests/test_transaction_isolation.py`` (its programs, its serial model).
The rules checked:

* every callback program returns: ``TransactionConflict`` never escapes
  ``run_transaction``, however the others interleave, and it runs its callback a
  bounded number of times (the optimistic attempts, one escalated run, one more
  per key it nests out of order): retrying until lucky would not pass;
* the committed programs (all the callback ones, the context-form ones that did not
  conflict, the plain ones) equal some serial order, ending in the durable state.

On the memory backend the schedule is drawn in virtual time (``MockClock``), over
a commit function that fixes durable order at call time and over one that does
not. On the durable backends (native, multi-file, SQLite, PostgreSQL) the store
runs on the backend's own read and commit, on the real clock.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from property_tests.test_transaction_isolation import (
    SLOTS,
    TYPE,
    Form,
    Kind,
    Observation,
    Op,
    Outcome,
    Program,
    ScheduledBackend,
    SequencedBackend,
    find_serial_order,
    run_ops,
    run_program,
    running_program,
)
from stores.multi_file import open_multi_file_backend
from stores.native import open_native_backend
from stores.postgres import open_postgres_backend
from stores.sqlite import open_sqlite_backend
from stores.transactions import StoreTransaction, TransactionalStore
from stores.types import Batch, Persistence, Value
from tests.stores.postgres_server import (  # noqa: F401 (fixtures, used by name)
    PostgresServer,
    postgres_server_fixture,
)
from tests.stores.test_postgres_isolation import shared_database

OPTIMISTIC_ATTEMPTS = 2
HOT = SLOTS[:2]  # few slots: every program touches one of two
LOCK_KEYS = tuple(f"k{i}" for i in range(8))

hot_ops = st.one_of(
    st.builds(Op, st.just(Kind.INC), st.sampled_from(HOT)),
    st.builds(Op, st.just(Kind.INC), st.sampled_from(HOT)),
    st.builds(Op, st.just(Kind.READ), st.sampled_from(HOT)),
    st.builds(Op, st.just(Kind.COPY), st.sampled_from(HOT), st.sampled_from(HOT)),
    st.builds(Op, st.just(Kind.PUT), st.sampled_from(HOT), n=st.integers(0, 9)),
    st.builds(Op, st.just(Kind.PAUSE), n=st.integers(0, 2)),
    st.builds(Op, st.just(Kind.NEST), st.sampled_from(HOT), st.sampled_from(LOCK_KEYS)),
)

plain_writes = st.lists(
    st.one_of(
        st.builds(Op, st.just(Kind.PUT), st.sampled_from(HOT), n=st.integers(0, 9)),
        st.builds(Op, st.just(Kind.DELETE), st.sampled_from(HOT)),
    ),
    min_size=1,
    max_size=2,
).map(tuple)

hot_programs = st.builds(
    lambda form_ops, **kwargs: Program(form=form_ops[0], ops=form_ops[1], **kwargs),
    st.one_of(
        # Mostly callbacks (the form under test); the others are contention.
        st.tuples(st.just(Form.CALLBACK), st.lists(hot_ops, min_size=1, max_size=4).map(tuple)),
        st.tuples(st.just(Form.CALLBACK), st.lists(hot_ops, min_size=1, max_size=4).map(tuple)),
        st.tuples(st.just(Form.CONTEXT), st.lists(hot_ops, min_size=1, max_size=4).map(tuple)),
        st.tuples(st.just(Form.PLAIN), plain_writes),
    ),
    key=st.sampled_from(LOCK_KEYS),
    start_delay=st.integers(0, 2),
    read_delay=st.integers(0, 1),
    commit_delay=st.integers(0, 2),
    fail_commit=st.just(False),
)

initial_states = st.fixed_dictionaries({}, optional={s: st.integers(0, 9) for s in HOT})


@dataclass
class Tried(Outcome):
    attempts: int = 0


def attempt_bound(program: Program) -> int:
    """The most runs a callback may take: the optimistic ones, then one escalated run
    plus one more per key it nests out of order (each such conflict happens once)."""
    nested = {op.b for op in program.ops if op.kind is Kind.NEST}
    return OPTIMISTIC_ATTEMPTS + 1 + len(nested)


async def run_callback(store: TransactionalStore, program: Program, outcome: Tried) -> None:
    """``run_transaction`` with nothing caught: a conflict escaping it fails the example."""
    running_program.set(program)
    await trio.sleep(program.start_delay * 0.001)

    async def body(tx: StoreTransaction) -> None:
        outcome.attempts += 1
        outcome.observed = await run_ops(store, tx, program)

    await store.run_transaction(program.key, body)
    outcome.committed = True


async def hammer(
    store: TransactionalStore, progs: Sequence[Program], deadline: float
) -> list[Tried]:
    outcomes = [Tried() for _ in progs]
    with trio.fail_after(deadline):  # only a deadlock gets anywhere near it
        async with trio.open_nursery() as nursery:
            for program, outcome in zip(progs, outcomes, strict=True):
                runner = run_callback if program.form is Form.CALLBACK else run_program
                nursery.start_soon(runner, store, program, outcome)
    event("escalated" if store.statistics().escalations else "all optimistic")
    return outcomes


def check(
    initial: dict[str, int],
    progs: Sequence[Program],
    outcomes: Sequence[Tried],
    view: dict[str, Value],
    durable: dict[str, Value],
) -> None:
    assert view == durable, "the in-memory view disagrees with the durable state"
    for program, outcome in zip(progs, outcomes, strict=True):
        if program.form is not Form.CONTEXT:
            assert outcome.committed, f"{program!r} did not commit"
        if program.form is Form.CALLBACK:
            # No starvation: a bounded number of runs, however the others interleave.
            assert outcome.attempts <= attempt_bound(program), f"{program!r} starved"
    done: list[tuple[Program, list[Observation]]] = [
        (p, o.observed) for p, o in zip(progs, outcomes, strict=True) if o.committed
    ]
    event(f"{len(progs) - len(done)} context-form programs conflicted")
    final = {slot: value for slot, value in durable.items() if isinstance(value, int)}
    assert final == durable
    order = find_serial_order(initial, done, final)
    assert order is not None, f"no serial order explains {done!r} ending in {durable!r}"


# -- the memory backend, in virtual time -------------------------------------------------


async def run_on_memory(
    initial: dict[str, int], progs: Sequence[Program], sequenced: bool
) -> tuple[list[Tried], dict[str, Value], dict[str, Value]]:
    sched = SequencedBackend() if sequenced else ScheduledBackend()
    if initial:
        await sched.backend.commit(Batch(keys={TYPE: dict(initial)}))
    store = TransactionalStore(
        sched.read, sched.commit, optimistic_attempts=OPTIMISTIC_ATTEMPTS, sequenced=sequenced
    )
    outcomes = await hammer(store, progs, deadline=3600)
    view = await store.get(TYPE, list(HOT))
    durable = (await sched.backend.snapshot()).keys.get(TYPE, {})
    return outcomes, view, durable


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    initial=initial_states,
    progs=st.lists(hot_programs, min_size=6, max_size=14),
    sequenced=st.booleans(),
    scheduler_seed=st.random_module(),
)
def test_every_callback_commits_and_the_run_stays_serial_on_memory(
    initial: dict[str, int], progs: list[Program], sequenced: bool, scheduler_seed: object
) -> None:
    """In virtual time, every run_transaction returns and a serial order explains the run."""
    outcomes, view, durable = trio.run(
        run_on_memory,
        initial,
        progs,
        sequenced,
        clock=trio.testing.MockClock(autojump_threshold=0),
    )
    check(initial, progs, outcomes, view, durable)


# -- the durable backends, on the real clock --------------------------------------------

Opener = Callable[[Path], AbstractAsyncContextManager[Persistence]]
_locations = itertools.count(1)


def _opener(name: str, request: pytest.FixtureRequest) -> Opener:
    """``open(location)`` for a durable backend (PostgreSQL: one account per location)."""
    factories: dict[str, Callable[[Path], Awaitable[Persistence]]] = {
        "native": lambda loc: open_native_backend(loc),
        "multi_file": lambda loc: open_multi_file_backend(loc),
        "sqlite": lambda loc: open_sqlite_backend(loc),
    }
    if name == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        dsn = shared_database(server)
        factories["postgres"] = lambda loc: open_postgres_backend(
            dsn, account=loc.name, lease_ttl=3600
        )
    factory = factories[name]

    @asynccontextmanager
    async def open_at(location: Path) -> AsyncIterator[Persistence]:
        backend = await factory(location)
        try:
            yield backend
        finally:
            await backend.aclose()

    return open_at


async def run_on_backend(
    open_at: Opener, location: Path, initial: dict[str, int], progs: Sequence[Program]
) -> tuple[list[Tried], dict[str, Value], dict[str, Value]]:
    async with open_at(location) as backend:
        if initial:
            await backend.commit(Batch(keys={TYPE: dict(initial)}))
        store = TransactionalStore(
            backend.read_keys, backend.commit, optimistic_attempts=OPTIMISTIC_ATTEMPTS
        )
        outcomes = await hammer(store, progs, deadline=120)
        view = await store.get(TYPE, list(HOT))
        durable = await backend.read_keys(TYPE, list(HOT))
    return outcomes, view, durable


@pytest.mark.parametrize("backend_name", ["native", "multi_file", "sqlite", "postgres"])
def test_every_callback_commits_and_the_run_stays_serial_on_durable_backends(
    backend_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """On each durable backend, every run_transaction returns and a serial order explains it."""
    open_at = _opener(backend_name, request)

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(
        initial=initial_states,
        progs=st.lists(hot_programs, min_size=6, max_size=12),
        scheduler_seed=st.random_module(),
    )
    def example(initial: dict[str, int], progs: list[Program], scheduler_seed: object) -> None:
        location = tmp_path / f"run-{next(_locations)}"
        outcomes, view, durable = trio.run(run_on_backend, open_at, location, initial, progs)
        check(initial, progs, outcomes, view, durable)

    example()


def test_the_property_fails_a_run_where_a_callback_gave_up() -> None:
    """The check rejects a run where a callback program did not commit."""
    inc = Program("k0", (Op(Kind.INC, "x0"),), Form.CALLBACK, 0, 0, 0, False)
    gave_up = [Tried(committed=True, observed=[("x0", None)], attempts=1), Tried(attempts=3)]
    with pytest.raises(AssertionError, match="did not commit"):
        check({}, [inc, inc], gave_up, {"x0": 1}, {"x0": 1})


def test_the_property_fails_a_callback_that_needed_too_many_runs() -> None:
    """The check rejects a callback that committed only after more runs than the bound."""
    inc = Program("k0", (Op(Kind.INC, "x0"),), Form.CALLBACK, 0, 0, 0, False)
    lucky = [Tried(committed=True, observed=[("x0", None)], attempts=attempt_bound(inc) + 1)]
    with pytest.raises(AssertionError, match="starved"):
        check({}, [inc], lucky, {"x0": 1}, {"x0": 1})
