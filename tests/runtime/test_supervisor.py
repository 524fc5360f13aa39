"""Supervisor semantics: the rules table of runtime.supervisor, one behaviour per test."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from runtime import (
    ActorDown,
    ActorRef,
    Backoff,
    ChildSpec,
    ChildStartError,
    ExitKind,
    InvalidSpec,
    Restart,
    Strategy,
    Supervisor,
    SupervisorGaveUp,
    SupervisorState,
    open_supervisor,
)
from tests.runtime.helpers import Boom, Journal, Probe, capture_logger, events, probe_spec


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


def three(journal: Journal, restart: Restart = Restart.PERMANENT) -> list[ChildSpec]:
    return [probe_spec(cid, journal, restart) for cid in ("a", "b", "c")]


async def test_children_start_in_order_each_ready_before_the_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Child n+1 starts only after child n's init returned; the tree is ready after all."""
    journal = Journal()
    started_at: dict[str, float] = {}

    class Timed(Probe):
        async def init(self) -> None:
            await super().init()
            started_at[self.ctx.path] = trio.current_time()

    specs = [
        ChildSpec("a", lambda: Timed(journal, init_delay=1.0)),
        ChildSpec("b", lambda: Timed(journal, init_delay=2.0)),
    ]
    async with open_supervisor(specs):
        assert journal.starts() == ["root/a", "root/b"]
        assert started_at == {"root/a": 1.0, "root/b": 3.0}
        assert trio.current_time() == 3.0


async def test_stop_is_in_reverse_start_order(autojump_clock: trio.testing.MockClock) -> None:
    """Leaving open_supervisor terminates children last-started first."""
    journal = Journal()
    async with open_supervisor(three(journal)):
        pass
    assert journal.terminates() == [
        ("root/c", "shutdown"),
        ("root/b", "shutdown"),
        ("root/a", "shutdown"),
    ]


@pytest.mark.parametrize(
    ("strategy", "terminated", "restarted"),
    [
        (Strategy.ONE_FOR_ONE, [("root/b", "crash")], ["root/b"]),
        (
            Strategy.ONE_FOR_ALL,
            [("root/b", "crash"), ("root/c", "shutdown"), ("root/a", "shutdown")],
            ["root/a", "root/b", "root/c"],
        ),
        (
            Strategy.REST_FOR_ONE,
            [("root/b", "crash"), ("root/c", "shutdown")],
            ["root/b", "root/c"],
        ),
    ],
)
async def test_strategy_decides_which_siblings_restart(
    autojump_clock: trio.testing.MockClock,
    strategy: Strategy,
    terminated: list[tuple[str, str]],
    restarted: list[str],
) -> None:
    """A crash of the middle child restarts the group its strategy names, in order."""
    journal = Journal()
    async with open_supervisor(three(journal), strategy=strategy) as sup:
        journal.clear()
        sup.ref("b").cast_nowait(("exit", ExitKind.CRASH))
        await settle()
        assert journal.terminates() == terminated
        assert journal.starts() == restarted
        assert all(info.running for info in sup.which_children())


@pytest.mark.parametrize(
    ("restart", "exit_kind", "restarted"),
    [
        (Restart.PERMANENT, ExitKind.NORMAL, True),
        (Restart.PERMANENT, ExitKind.SHUTDOWN, True),
        (Restart.PERMANENT, ExitKind.CRASH, True),
        (Restart.TRANSIENT, ExitKind.NORMAL, False),
        (Restart.TRANSIENT, ExitKind.SHUTDOWN, False),
        (Restart.TRANSIENT, ExitKind.CRASH, True),
        (Restart.TEMPORARY, ExitKind.NORMAL, False),
        (Restart.TEMPORARY, ExitKind.CRASH, False),
    ],
)
async def test_restart_type_decides_whether_an_exit_restarts(
    autojump_clock: trio.testing.MockClock,
    restart: Restart,
    exit_kind: ExitKind,
    restarted: bool,
) -> None:
    """permanent: always; transient: only abnormal exits; temporary: never (and forgotten)."""
    journal = Journal()
    async with open_supervisor([probe_spec("w", journal, restart)]) as sup:
        sup.ref("w").cast_nowait(("exit", exit_kind))
        await settle()
        assert journal.starts() == ["root/w"] * (2 if restarted else 1)
        ids = [info.id for info in sup.which_children()]
        if restart is Restart.TEMPORARY:
            assert ids == []
        else:
            assert ids == ["w"]
            assert sup.which_children()[0].running is restarted


async def test_intensity_allows_max_restarts_then_gives_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With 3 restarts in 5 s, the 4th crash inside the window gives up and fails upward."""
    journal = Journal()
    log, entries = capture_logger()
    with pytest.raises(SupervisorGaveUp) as info:
        async with open_supervisor(three(journal), log=log) as sup:
            for _ in range(3):
                sup.ref("b").cast_nowait(("exit", ExitKind.CRASH))
                await settle()
                await trio.sleep(1.0)
            assert sup.statistics().restarts_in_window == 3
            journal.clear()
            sup.ref("b").cast_nowait(("exit", ExitKind.CRASH))
            await trio.sleep_forever()
    assert info.value.child_id == "b"
    assert info.value.max_restarts == 3 and info.value.max_seconds == 5.0
    # Give-up stops the remaining children in reverse order.
    assert journal.terminates() == [
        ("root/b", "crash"),
        ("root/c", "shutdown"),
        ("root/a", "shutdown"),
    ]
    assert len(events(entries, "supervisor_gave_up")) == 1


async def test_intensity_window_slides(autojump_clock: trio.testing.MockClock) -> None:
    """Crashes spaced wider than max_seconds/max_restarts never exhaust the window."""
    journal = Journal()
    async with open_supervisor([probe_spec("w", journal)], max_restarts=2, max_seconds=5.0) as sup:
        for _ in range(10):
            sup.ref("w").cast_nowait(("exit", ExitKind.CRASH))
            await settle()
            await trio.sleep(2.5)
        assert sup.state is SupervisorState.RUNNING
        assert sup.statistics().total_restarts == 10
        assert sup.statistics().restarts_in_window == 1


async def test_window_boundary_is_exclusive(autojump_clock: trio.testing.MockClock) -> None:
    """A restart exactly max_seconds old no longer counts."""
    async with open_supervisor(
        [probe_spec("w", Journal())], max_restarts=1, max_seconds=5.0
    ) as sup:
        sup.ref("w").cast_nowait(("exit", ExitKind.CRASH))
        await settle()
        await trio.sleep(5.0)
        sup.ref("w").cast_nowait(("exit", ExitKind.CRASH))
        await settle()
        assert sup.state is SupervisorState.RUNNING


async def test_max_restarts_zero_gives_up_on_first_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """max_restarts=0 means any restartable exit gives up at once."""
    with pytest.raises(SupervisorGaveUp):
        async with open_supervisor([probe_spec("w", Journal())], max_restarts=0) as sup:
            sup.ref("w").cast_nowait(("exit", ExitKind.NORMAL))
            await trio.sleep_forever()


async def test_exits_that_do_not_restart_do_not_count(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Temporary and transient-normal exits never touch the intensity window."""
    journal = Journal()
    specs = [probe_spec(f"t{i}", journal, Restart.TEMPORARY) for i in range(5)]
    async with open_supervisor(specs, max_restarts=0) as sup:
        for i in range(5):
            sup.ref(f"t{i}").cast_nowait(("exit", ExitKind.CRASH))
        await settle()
        assert sup.state is SupervisorState.RUNNING
        assert sup.statistics().restarts_in_window == 0


async def test_nested_supervisor_gives_up_to_its_parent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A child supervisor exceeding intensity crashes; its parent restarts the subtree."""
    journal = Journal()
    log, entries = capture_logger()

    def session() -> Supervisor:
        return Supervisor(three(journal), strategy=Strategy.REST_FOR_ONE, max_restarts=1)

    specs = [probe_spec("top", journal), ChildSpec("session", session)]
    async with open_supervisor(specs, log=log) as root:
        worker = root.registry.ref("root/session/b")
        for _ in range(2):
            worker.cast_nowait(("exit", ExitKind.CRASH))
            await settle()
        # The second crash exceeded session's intensity: root restarted "session" once.
        assert root.statistics().total_restarts == 1
        crashed = events(entries, "child_crashed")
        assert isinstance(crashed[-1]["exc_info"], SupervisorGaveUp)
        assert crashed[-1]["path"] == "root/session"
        assert journal.starts()[-3:] == ["root/session/a", "root/session/b", "root/session/c"]
        assert await worker.call("incarnation") == 1  # a fresh subtree, fresh names
        session_info = root.which_children()[1]
        assert session_info.supervisor is not None
        assert session_info.supervisor.state is SupervisorState.RUNNING


async def test_give_up_travels_up_until_the_root(autojump_clock: trio.testing.MockClock) -> None:
    """When every level exceeds its intensity the root raises SupervisorGaveUp."""
    journal = Journal()

    def inner() -> Supervisor:
        return Supervisor([probe_spec("w", journal)], max_restarts=0)

    def middle() -> Supervisor:
        return Supervisor([ChildSpec("inner", inner)], max_restarts=0)

    with pytest.raises(SupervisorGaveUp) as info:
        async with open_supervisor([ChildSpec("middle", middle)], max_restarts=0) as root:
            root.registry.ref("root/middle/inner/w").cast_nowait(("exit", ExitKind.CRASH))
            await trio.sleep_forever()
    assert info.value.path == "root"
    assert isinstance(info.value.last.error, SupervisorGaveUp)


async def test_worker_overrunning_shutdown_is_killed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A worker slower than its shutdown timeout is cancelled when it expires."""
    journal = Journal()
    log, entries = capture_logger()
    slow = ChildSpec("slow", lambda: Probe(journal, terminate_delay=60.0))
    quick = ChildSpec("quick", lambda: Probe(journal, terminate_delay=60.0), shutdown=1.0)
    start = trio.current_time()
    async with open_supervisor([slow, quick], log=log):
        pass
    assert trio.current_time() - start == pytest.approx(5.0 + 1.0)
    stopped = events(entries, "child_stopped")
    assert [(e["child"], e["killed"]) for e in stopped] == [("quick", True), ("slow", True)]


async def test_shutdown_zero_cancels_at_once(autojump_clock: trio.testing.MockClock) -> None:
    """shutdown=0 is OTP's brutal_kill: no terminate, no waiting."""
    journal = Journal()
    spec = ChildSpec("w", lambda: Probe(journal, terminate_delay=60.0), shutdown=0)
    start = trio.current_time()
    async with open_supervisor([spec]):
        pass
    assert trio.current_time() == start
    assert journal.terminates() == []


async def test_supervisor_children_get_unlimited_shutdown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A supervisor child is waited for as long as its own children need."""
    journal = Journal()
    slow = ChildSpec("w", lambda: Probe(journal, terminate_delay=30.0), shutdown=40.0)
    inner = ChildSpec("inner", lambda: Supervisor([slow]))
    start = trio.current_time()
    async with open_supervisor([inner]):
        pass
    assert trio.current_time() - start == pytest.approx(30.0)
    assert journal.terminates() == [("root/inner/w", "shutdown")]


async def test_failed_initial_start_stops_started_children(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """If child n fails to start, children before it stop in reverse and start fails."""
    journal = Journal()
    specs = [
        probe_spec("a", journal),
        probe_spec("b", journal),
        probe_spec("bad", journal, fail_init=True),
        probe_spec("never", journal),
    ]
    with pytest.raises(ChildStartError) as info:
        async with open_supervisor(specs):
            pytest.fail("the block must not run")
    assert info.value.path == "root/bad"
    assert journal.starts() == ["root/a", "root/b"]
    assert journal.terminates() == [("root/b", "shutdown"), ("root/a", "shutdown")]


async def test_failed_restart_counts_as_another_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A child whose restart fails is retried within the intensity limit, then given up."""
    journal = Journal()
    attempts: list[int] = []

    def factory() -> Probe:
        attempts.append(1)
        return Probe(journal, fail_init=len(attempts) > 1)

    with pytest.raises(SupervisorGaveUp):
        async with open_supervisor([ChildSpec("w", factory)], max_restarts=3) as sup:
            sup.ref("w").cast_nowait(("exit", ExitKind.CRASH))
            await trio.sleep_forever()
    assert len(attempts) == 1 + 3  # the first start, then 3 failed restarts


async def test_one_for_all_restarts_a_transient_that_had_exited_normally(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """As in OTP, a group restart starts every non-temporary child in the list."""
    journal = Journal()
    specs = [probe_spec("t", journal, Restart.TRANSIENT), probe_spec("p", journal)]
    async with open_supervisor(specs, strategy=Strategy.ONE_FOR_ALL) as sup:
        sup.ref("t").cast_nowait(("exit", ExitKind.NORMAL))
        await settle()
        assert [i.running for i in sup.which_children()] == [False, True]
        sup.ref("p").cast_nowait(("exit", ExitKind.CRASH))
        await settle()
        assert [i.running for i in sup.which_children()] == [True, True]


async def test_group_restart_drops_temporary_siblings(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Temporary siblings stopped for a group restart are not started again."""
    journal = Journal()
    specs = [probe_spec("p", journal), probe_spec("tmp", journal, Restart.TEMPORARY)]
    async with open_supervisor(specs, strategy=Strategy.REST_FOR_ONE) as sup:
        sup.ref("p").cast_nowait(("exit", ExitKind.CRASH))
        await settle()
        assert [i.id for i in sup.which_children()] == ["p"]
        assert "root/tmp" not in sup.registry


async def test_backoff_delays_grow_and_are_capped(autojump_clock: trio.testing.MockClock) -> None:
    """Restart n in the window waits min(max_delay, initial * factor**(n-1)), jitter scaled."""
    journal = Journal()
    log, entries = capture_logger()
    backoff = Backoff(initial=0.5, factor=2.0, max_delay=1.5, jitter=0.5, random=lambda: 0.5)
    async with open_supervisor(
        [probe_spec("w", journal)], backoff=backoff, max_restarts=5, max_seconds=60.0, log=log
    ) as sup:
        ref = sup.ref("w")
        for _ in range(4):
            ref.cast_nowait(("exit", ExitKind.CRASH))
            await settle()
            await ref.call("get")
    delays = [e["delay"] for e in events(entries, "child_restarting")]
    # base 0.5, 1.0, 1.5 (capped), 1.5 — each times (1 - 0.5 * 0.5)
    assert delays == pytest.approx([0.375, 0.75, 1.125, 1.125])
    assert [e["restart_count"] for e in events(entries, "child_restarting")] == [1, 2, 3, 4]


async def test_backoff_waits_before_restarting(autojump_clock: trio.testing.MockClock) -> None:
    """The next incarnation serves only after the backoff delay."""
    backoff = Backoff(initial=2.0, jitter=0.0)
    async with open_supervisor([probe_spec("w", Journal())], backoff=backoff) as sup:
        ref = sup.ref("w")
        ref.cast_nowait(("exit", ExitKind.CRASH))
        await settle()
        start = trio.current_time()
        assert await ref.call("incarnation") == 2
        assert trio.current_time() - start == pytest.approx(2.0)


async def test_backoff_restarts_still_count_in_the_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A flapping child with backoff still gives up once it exceeds intensity."""
    journal = Journal()
    backoff = Backoff(initial=0.5, factor=2.0, max_delay=1.0, jitter=0.0)

    class Flapper(Probe):
        async def init(self) -> None:
            await super().init()
            self.ctx.nursery.start_soon(self.die)

        async def die(self) -> None:
            await trio.sleep(0.1)
            raise Boom("flap")

    with pytest.raises(SupervisorGaveUp):
        async with open_supervisor(
            [ChildSpec("f", lambda: Flapper(journal))], backoff=backoff, max_seconds=5.0
        ):
            await trio.sleep_forever()
    # Starts at 0, 0.6, 1.7, 2.8; the 4th crash at 2.9 s is inside the 5 s window.
    assert len(journal.starts()) == 4
    assert trio.current_time() == pytest.approx(2.9)


async def test_stop_request_interrupts_backoff(autojump_clock: trio.testing.MockClock) -> None:
    """Stopping a supervisor waiting out a backoff does not wait for the delay."""
    backoff = Backoff(initial=100.0, max_delay=100.0, jitter=0.0)
    async with open_supervisor([probe_spec("w", Journal())], backoff=backoff) as sup:
        sup.ref("w").cast_nowait(("exit", ExitKind.CRASH))
        await trio.sleep(1.0)
        start = trio.current_time()
    assert trio.current_time() == start


async def test_leaving_the_block_by_exception_stops_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An exception in the body propagates unchanged after an orderly stop."""
    journal = Journal()
    with pytest.raises(Boom):
        async with open_supervisor(three(journal)):
            raise Boom("user code failed")
    assert [t[0] for t in journal.terminates()] == ["root/c", "root/b", "root/a"]


async def test_cancellation_still_stops_in_order(autojump_clock: trio.testing.MockClock) -> None:
    """Cancelling the enclosing scope stops the tree in order, shielded, within timeouts."""
    journal = Journal()
    with trio.move_on_after(1.0):
        async with open_supervisor(three(journal)):
            await trio.sleep_forever()
    assert [t[0] for t in journal.terminates()] == ["root/c", "root/b", "root/a"]


async def test_run_in_callers_nursery(autojump_clock: trio.testing.MockClock) -> None:
    """nursery.start(sup.run) embeds a tree; aclose stops it and run returns."""
    journal = Journal()
    sup = Supervisor(three(journal), name="app")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        assert sup.state is SupervisorState.RUNNING
        assert await sup.ref("a").call(("add", 1)) == 1
        await sup.aclose()
        assert sup.statistics().state is SupervisorState.STOPPED
    assert journal.starts() == ["app/a", "app/b", "app/c"]


async def test_a_supervisor_object_runs_once(autojump_clock: trio.testing.MockClock) -> None:
    """A spec must build a fresh supervisor per incarnation; reusing one is refused."""
    sup = Supervisor([])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.aclose()
    with pytest.raises(Exception, match="already ran"):
        await sup.run()


def test_bad_options_raise_invalid_spec() -> None:
    """Malformed specs and options name the field at fault."""
    with pytest.raises(InvalidSpec, match="max_restarts"):
        Supervisor([], max_restarts=-1)
    with pytest.raises(InvalidSpec, match="max_seconds"):
        Supervisor([], max_seconds=0)
    with pytest.raises(InvalidSpec, match="duplicate"):
        Supervisor([probe_spec("a", Journal()), probe_spec("a", Journal())])
    with pytest.raises(InvalidSpec, match="id"):
        ChildSpec("a/b", Probe)
    with pytest.raises(InvalidSpec, match="shutdown"):
        ChildSpec("a", Probe, shutdown=-1)
    with pytest.raises(InvalidSpec, match="mailbox_size"):
        ChildSpec("a", Probe, mailbox_size=0)
    with pytest.raises(InvalidSpec, match="factor"):
        Backoff(factor=0.5)


async def test_factory_returning_garbage_fails_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A start callable that builds neither an Actor nor a supervisor is a start failure."""
    with pytest.raises(ChildStartError) as info:
        async with open_supervisor([ChildSpec("x", lambda: object())]):  # type: ignore[arg-type,return-value]  # deliberately wrong
            pass
    assert isinstance(info.value.reason.error, InvalidSpec)


async def test_worker_busy_past_its_shutdown_is_killed_without_terminate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A handler outlasting the shutdown timeout is cancelled: no terminate; callers: ActorDown."""
    journal = Journal()
    log, entries = capture_logger()
    spec = ChildSpec("w", lambda: Probe(journal), shutdown=1.0)
    outcome: list[BaseException] = []

    async def caller(ref: ActorRef) -> None:
        try:
            await ref.call(("sleep", 60.0), timeout=100)
        except ActorDown as exc:
            outcome.append(exc)

    async with trio.open_nursery() as nursery:
        async with open_supervisor([spec], log=log) as sup:
            nursery.start_soon(caller, sup.ref("w"))
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
    assert trio.current_time() - start == pytest.approx(1.0)
    assert journal.terminates() == []
    assert [e["killed"] for e in events(entries, "child_stopped")] == [True]
    assert len(outcome) == 1 and isinstance(outcome[0], ActorDown)
    assert outcome[0].reason is not None and outcome[0].reason.kind is ExitKind.KILLED


async def test_supervisor_child_past_its_shutdown_is_killed_with_its_children(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A supervisor child given a shutdown timeout is cancelled whole when it expires."""
    journal = Journal()
    log, entries = capture_logger()
    slow = ChildSpec("w", lambda: Probe(journal, terminate_delay=60.0), shutdown=30.0)
    inner = ChildSpec("inner", lambda: Supervisor([slow]), shutdown=2.0)
    start = trio.current_time()
    async with open_supervisor([inner], log=log) as root:
        assert "root/inner/w" in root.registry
    assert trio.current_time() - start == pytest.approx(2.0)
    assert journal.terminates() == [("root/inner/w", "shutdown")]
    killed = {e["child"]: e["killed"] for e in events(entries, "child_stopped")}
    assert killed == {"inner": True}
    assert "root/inner/w" not in root.registry
