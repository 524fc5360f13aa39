"""DynamicSupervisor: children added and removed at run time."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from runtime import (
    ActorDown,
    ChildSpec,
    ChildStartError,
    DuplicateChild,
    DynamicSupervisor,
    ExitKind,
    InvalidSpec,
    MaxChildren,
    NoSuchChild,
    Restart,
    Strategy,
    Supervisor,
    SupervisorGaveUp,
    SupervisorNotRunning,
    open_dynamic_supervisor,
)
from tests.runtime.helpers import Journal, Probe, probe_spec


async def test_start_child_returns_once_ready(autojump_clock: trio.testing.MockClock) -> None:
    """start_child waits for init and the child is reachable by its ref right after."""
    journal = Journal()
    async with open_dynamic_supervisor(name="sessions") as dyn:
        info = await dyn.start_child(ChildSpec("alice", lambda: Probe(journal, init_delay=2.0)))
        assert info.running and info.name == "sessions/alice"
        assert trio.current_time() == 2.0
        assert await dyn.ref("alice").call(("add", 1)) == 1


async def test_max_children_is_enforced(autojump_clock: trio.testing.MockClock) -> None:
    """Starting beyond max_children raises MaxChildren; a slot frees when a child leaves."""
    journal = Journal()
    async with open_dynamic_supervisor(max_children=2) as dyn:
        await dyn.start_child(probe_spec("a", journal))
        await dyn.start_child(probe_spec("b", journal))
        with pytest.raises(MaxChildren):
            await dyn.start_child(probe_spec("c", journal))
        await dyn.terminate_child("a")
        await dyn.start_child(probe_spec("c", journal))
        assert [i.id for i in dyn.which_children()] == ["b", "c"]


async def test_duplicate_and_missing_ids(autojump_clock: trio.testing.MockClock) -> None:
    """Ids are unique among live children; unknown ids raise NoSuchChild."""
    async with open_dynamic_supervisor() as dyn:
        await dyn.start_child(probe_spec("a", Journal()))
        with pytest.raises(DuplicateChild):
            await dyn.start_child(probe_spec("a", Journal()))
        with pytest.raises(NoSuchChild):
            await dyn.terminate_child("zzz")


async def test_terminate_child_stops_and_forgets_it(autojump_clock: trio.testing.MockClock) -> None:
    """terminate_child runs terminate(shutdown), unregisters the name, frees the id."""
    journal = Journal()
    async with open_dynamic_supervisor(name="d") as dyn:
        await dyn.start_child(probe_spec("a", journal))
        ref = dyn.ref("a")
        await dyn.terminate_child("a")
        assert journal.terminates() == [("d/a", "shutdown")]
        assert "d/a" not in dyn.registry
        with pytest.raises(ActorDown):
            await ref.call("get")
        await dyn.start_child(probe_spec("a", journal))


async def test_children_restart_one_for_one(autojump_clock: trio.testing.MockClock) -> None:
    """A crashed dynamic child restarts alone; its siblings keep running untouched."""
    journal = Journal()
    async with open_dynamic_supervisor(name="d") as dyn:
        for cid in ("a", "b", "c"):
            await dyn.start_child(probe_spec(cid, journal))
        journal.clear()
        dyn.ref("b").cast_nowait(("exit", ExitKind.CRASH))
        await trio.testing.wait_all_tasks_blocked()
        assert journal.starts() == ["d/b"]
        assert journal.terminates() == [("d/b", "crash")]


@pytest.mark.parametrize(
    ("restart", "exit_kind"),
    [
        (Restart.TRANSIENT, ExitKind.NORMAL),
        (Restart.TEMPORARY, ExitKind.CRASH),
    ],
)
async def test_children_that_exit_for_good_leave_the_list(
    autojump_clock: trio.testing.MockClock, restart: Restart, exit_kind: ExitKind
) -> None:
    """A child not restarted is removed whatever its restart type."""
    async with open_dynamic_supervisor() as dyn:
        await dyn.start_child(probe_spec("a", Journal(), restart))
        dyn.ref("a").cast_nowait(("exit", exit_kind))
        await trio.testing.wait_all_tasks_blocked()
        assert dyn.which_children() == []


async def test_failed_start_leaves_nothing_behind(autojump_clock: trio.testing.MockClock) -> None:
    """A child failing init raises ChildStartError and holds neither id nor name."""
    async with open_dynamic_supervisor(name="d") as dyn:
        with pytest.raises(ChildStartError):
            await dyn.start_child(probe_spec("bad", Journal(), fail_init=True))
        assert dyn.which_children() == []
        assert "d/bad" not in dyn.registry
        assert dyn.statistics().restarts_in_window == 0


async def test_intensity_gives_up(autojump_clock: trio.testing.MockClock) -> None:
    """Too many restarts in the window stop every child and fail the supervisor."""
    journal = Journal()
    with pytest.raises(SupervisorGaveUp):
        async with open_dynamic_supervisor(name="d", max_restarts=1) as dyn:
            await dyn.start_child(probe_spec("a", journal))
            await dyn.start_child(probe_spec("b", journal))
            for _ in range(2):
                dyn.ref("a").cast_nowait(("exit", ExitKind.CRASH))
                await trio.testing.wait_all_tasks_blocked()
            await trio.sleep_forever()
    assert ("d/b", "shutdown") in journal.terminates()


async def test_stop_stops_all_children_concurrently(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Stopping waits for all children in parallel, each within its own timeout."""
    journal = Journal()
    async with open_dynamic_supervisor() as dyn:
        for cid in ("a", "b", "c"):
            await dyn.start_child(ChildSpec(cid, lambda: Probe(journal, terminate_delay=2.0)))
        start = trio.current_time()
    assert trio.current_time() - start == pytest.approx(2.0)
    assert len(journal.terminates()) == 3


async def test_operations_need_a_running_supervisor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """start_child before run or after stop raises SupervisorNotRunning."""
    dyn = DynamicSupervisor()
    with pytest.raises(SupervisorNotRunning):
        await dyn.start_child(probe_spec("a", Journal()))
    async with open_dynamic_supervisor() as running:
        pass
    with pytest.raises(SupervisorNotRunning):
        await running.start_child(probe_spec("a", Journal()))
    with pytest.raises(InvalidSpec):
        DynamicSupervisor(max_children=-1)


async def test_session_tree_shape(autojump_clock: trio.testing.MockClock) -> None:
    """The planned tree: one rest_for_one session per account under a dynamic supervisor."""
    journal = Journal()

    def session(account: str) -> ChildSpec:
        return ChildSpec(
            account,
            lambda: Supervisor(
                [probe_spec(n, journal) for n in ("persister", "signal_store", "connection")],
                strategy=Strategy.REST_FOR_ONE,
            ),
        )

    sessions = ChildSpec("sessions", lambda: DynamicSupervisor(name="sessions"))
    async with open_dynamic_supervisor(name="root") as root:
        await root.start_child(sessions)
        dyn = root.which_children()[0].supervisor
        assert isinstance(dyn, DynamicSupervisor)
        await dyn.start_child(session("alice"))
        await dyn.start_child(session("bob"))
        journal.clear()
        root.registry.ref("root/sessions/alice/signal_store").cast_nowait(("exit", ExitKind.CRASH))
        await trio.testing.wait_all_tasks_blocked()
        assert journal.starts() == [
            "root/sessions/alice/signal_store",
            "root/sessions/alice/connection",
        ]
        assert await root.registry.ref("root/sessions/bob/connection").call("incarnation") == 1


async def test_initial_children_come_back_after_a_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Children listed in the factory are started again when the dynamic supervisor restarts."""
    journal = Journal()

    def sessions() -> DynamicSupervisor:
        return DynamicSupervisor([probe_spec("alice", journal)], max_restarts=0, name="sessions")

    async with open_dynamic_supervisor([ChildSpec("sessions", sessions)], name="root") as root:
        dyn = root.which_children()[0].supervisor
        assert isinstance(dyn, DynamicSupervisor)
        await dyn.start_child(probe_spec("bob", journal))
        journal.clear()
        root.registry.ref("root/sessions/alice").cast_nowait(("exit", ExitKind.CRASH))
        await trio.testing.wait_all_tasks_blocked()
        assert journal.starts() == ["root/sessions/alice"]  # bob was added at run time
        fresh = root.which_children()[0].supervisor
        assert isinstance(fresh, DynamicSupervisor) and fresh is not dyn
        assert [i.id for i in fresh.which_children()] == ["alice"]
