"""The serializable-isolation property, with the PostgreSQL backend as the durable store.

The programs, the schedule and the serial model are those of
``property_tests/test_transaction_isolation.py``; only the backend under the
``TransactionalStore`` changes: each example runs on a fresh account of one database
on the session's real server, and the durable state the model must explain is read
back from PostgreSQL.

The examples run on the real clock (a tick is 1 ms): with MockClock's autojump,
virtual time races ahead while every task waits on the writer thread, up to the
deadline that gives up a hung lease renewal, and the lease would expire in virtual
time. The schedule then varies with real timing; serializability must hold in any.
"""

from __future__ import annotations

import itertools

import trio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from property_tests.test_transaction_isolation import (
    SLOTS,
    TYPE,
    Outcome,
    Program,
    ScheduledBackend,
    SequencedBackend,
    find_serial_order,
    initial_states,
    programs,
    run_program,
)
from stores.postgres import PostgresBackend, open_postgres_backend
from stores.transactions import TransactionalStore
from stores.types import Batch
from tests.stores.postgres_server import (  # noqa: F401 (fixtures, used by name)
    PostgresServer,
    postgres_server_fixture,
)

_accounts = itertools.count(1)


async def _run(
    dsn: str, initial: dict[str, int], progs: list[Program], cache_size: int | None, sequenced: bool
) -> tuple[list[Outcome], dict[str, int], dict[str, int]]:
    backend = await open_postgres_backend(dsn, account=f"iso-{next(_accounts)}", lease_ttl=3600)
    async with backend:
        sched = SequencedBackend() if sequenced else ScheduledBackend()
        sched.backend = backend  # type: ignore[assignment] (any Persistence will do)
        if initial:
            await backend.commit(Batch(keys={TYPE: dict(initial)}))
        store = TransactionalStore(
            sched.read,
            sched.commit,
            cache_size=cache_size,
            optimistic_attempts=4,
            sequenced=sequenced,
        )
        outcomes = [Outcome() for _ in progs]
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for program, outcome in zip(progs, outcomes, strict=True):
                    nursery.start_soon(run_program, store, program, outcome)
        view = await store.get(TYPE, list(SLOTS))
        durable = (await backend.snapshot()).keys.get(TYPE, {})
    assert isinstance(backend, PostgresBackend)
    return outcomes, view, durable


def _check(
    dsn: str, initial: dict[str, int], progs: list[Program], cache_size: int | None, sequenced: bool
) -> None:
    outcomes, view, durable = trio.run(_run, dsn, initial, progs, cache_size, sequenced)
    assert view == durable, "the in-memory view disagrees with the durable state"
    done = [(p, o.observed) for p, o in zip(progs, outcomes, strict=True) if o.committed]
    event(f"{len(progs) - len(done)} of {len(progs)} programs aborted")
    order = find_serial_order(initial, done, durable)
    assert order is not None, f"no serial order explains {done!r} ending in {durable!r}"


_settings = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@_settings
@given(
    initial=initial_states,
    progs=st.lists(programs, min_size=2, max_size=6),
    cache_size=st.sampled_from([0, 1, None]),
    sequenced=st.booleans(),
    scheduler_seed=st.random_module(),
)
def test_transactions_over_postgres_equal_some_serial_order(
    postgres_server: PostgresServer,
    initial: dict[str, int],
    progs: list[Program],
    cache_size: int | None,
    sequenced: bool,
    scheduler_seed: object,
) -> None:
    """Over PostgreSQL, committed programs match a serial run and aborted ones vanish."""
    _check(shared_database(postgres_server), initial, progs, cache_size, sequenced)


_databases: dict[int, str] = {}


def shared_database(server: PostgresServer) -> str:
    """One database for all examples (each example has its own account in it)."""
    key = id(server)
    if key not in _databases:
        _databases[key] = server.create_database()
    return _databases[key]
