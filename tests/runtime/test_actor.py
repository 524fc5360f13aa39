"""Actors and refs: call, cast, deadlines, deaths and restarts as seen by a caller."""

from __future__ import annotations

import math
from contextlib import suppress
from typing import Any

import pytest
import trio
import trio.testing

from runtime import (
    Actor,
    ActorDown,
    CallTimeout,
    ChildKind,
    ChildSpec,
    ExitKind,
    ExitReason,
    InvalidSpec,
    MailboxFull,
    Registry,
    Restart,
    StopActor,
    SupervisorGaveUp,
    UnexpectedMessage,
    open_supervisor,
)
from tests.runtime.helpers import Boom, Journal, Probe, capture_logger, probe_spec


async def test_call_returns_the_handlers_reply(autojump_clock: trio.testing.MockClock) -> None:
    """call delivers to handle_call and returns what it returns."""
    async with open_supervisor([probe_spec("p", Journal())]) as sup:
        ref = sup.ref("p")
        assert await ref.call(("add", 3)) == 3
        assert await ref.call(("add", 4)) == 7


async def test_cast_is_handled_in_order_with_calls(autojump_clock: trio.testing.MockClock) -> None:
    """Casts and calls from one sender are handled in the order sent."""
    async with open_supervisor([probe_spec("p", Journal())]) as sup:
        ref = sup.ref("p")
        for _ in range(10):
            await ref.cast(("add", 1))
        assert await ref.call("get") == 10


async def test_call_deadline_raises_call_timeout(autojump_clock: trio.testing.MockClock) -> None:
    """A call whose handler outlasts the timeout raises CallTimeout at the deadline."""
    async with open_supervisor([probe_spec("p", Journal())]) as sup:
        start = trio.current_time()
        with pytest.raises(CallTimeout) as info:
            await sup.ref("p").call(("sleep", 10.0), timeout=2.0)
        assert trio.current_time() - start == pytest.approx(2.0)
        assert info.value.name == "root/p"


async def test_callee_dying_mid_call_raises_actor_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A caller waiting on an actor that crashes gets ActorDown with the crash, not a hang."""
    async with open_supervisor([probe_spec("p", Journal())]) as sup:
        ref = sup.ref("p")
        async with trio.open_nursery() as nursery:
            caught: list[BaseException] = []

            async def slow_call() -> None:
                try:
                    await ref.call(("sleep", 10.0), timeout=60.0)
                except ActorDown as exc:
                    caught.append(exc)

            nursery.start_soon(slow_call)
            await trio.testing.wait_all_tasks_blocked()
            assert ref.statistics().pending_calls == 1
            # Crash the actor from a background task while it sleeps in the handler.
            await _crash_current_incarnation(sup, "p")
        assert len(caught) == 1
        reason = caught[0].reason  # type: ignore[attr-defined]  # caught holds ActorDown
        assert reason is not None
        assert reason.kind is ExitKind.CRASH and isinstance(reason.error, Boom)


async def _crash_current_incarnation(sup: Any, child_id: str) -> None:
    """Crash a busy actor by making its background nursery fail."""
    for child in sup._children.values():
        if child.spec.id == child_id and child.running is not None:
            actor = child.running.obj
            assert isinstance(actor, Actor)

            async def boom() -> None:
                raise Boom("background task failed")

            actor.ctx.nursery.start_soon(boom)
    await trio.testing.wait_all_tasks_blocked()


async def test_crash_while_handling_a_call_fails_that_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The call whose handler raises gets ActorDown carrying the crash reason."""
    async with open_supervisor([probe_spec("p", Journal())]) as sup:
        with pytest.raises(ActorDown) as info:
            await sup.ref("p").call("crash")
        assert info.value.reason is not None
        assert info.value.reason.kind is ExitKind.CRASH
        assert isinstance(info.value.reason.error, Boom)


async def test_calls_made_while_restarting_wait_for_the_new_incarnation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A call issued while the actor restarts is served by the next incarnation."""
    journal = Journal()
    spec = ChildSpec("p", lambda: Probe(journal, init_delay=1.0))
    async with open_supervisor([spec]) as sup:
        ref = sup.ref("p")
        assert await ref.call("incarnation") == 1
        ref.cast_nowait(("exit", ExitKind.CRASH))
        await trio.sleep(0.5)  # the second incarnation is inside its 1 s init
        assert not ref.statistics().running
        start = trio.current_time()
        assert await ref.call("incarnation", timeout=5.0) == 2
        assert trio.current_time() - start == pytest.approx(0.5)


async def test_call_waiting_on_restart_still_honours_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A call waiting for a slow restart raises CallTimeout at its deadline."""
    spec = ChildSpec("p", lambda: Probe(Journal(), init_delay=10.0))
    async with open_supervisor([spec]) as sup:
        ref = sup.ref("p")
        ref.cast_nowait(("exit", ExitKind.CRASH))
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(CallTimeout):
            await ref.call("get", timeout=3.0)


async def test_ref_stays_valid_across_restarts(autojump_clock: trio.testing.MockClock) -> None:
    """One ActorRef reaches every incarnation; state is rebuilt, not carried over."""
    async with open_supervisor([probe_spec("p", Journal())]) as sup:
        ref = sup.ref("p")
        await ref.call(("add", 5))
        for expected in (2, 3, 4):
            ref.cast_nowait(("exit", ExitKind.CRASH))
            await trio.testing.wait_all_tasks_blocked()  # a call queued now would die with it
            assert await ref.call("incarnation") == expected
            assert await ref.call("get") == 0


async def test_cast_nowait_raises_mailbox_full(autojump_clock: trio.testing.MockClock) -> None:
    """cast_nowait raises MailboxFull once the bounded mailbox is full."""
    spec = ChildSpec("p", lambda: Probe(Journal()), mailbox_size=2)
    async with open_supervisor([spec]) as sup:
        ref = sup.ref("p")
        ref.cast_nowait(("sleep", 5.0))
        await trio.testing.wait_all_tasks_blocked()  # the actor is now busy sleeping
        ref.cast_nowait(("add", 1))
        ref.cast_nowait(("add", 1))
        with pytest.raises(MailboxFull):
            ref.cast_nowait(("add", 1))
        assert ref.statistics().mailbox_used == 2


async def test_cast_waits_for_room_in_a_full_mailbox(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """cast blocks while the mailbox is full and completes once the actor catches up."""
    spec = ChildSpec("p", lambda: Probe(Journal()), mailbox_size=1)
    async with open_supervisor([spec]) as sup:
        ref = sup.ref("p")
        await ref.cast(("sleep", 5.0))
        await trio.testing.wait_all_tasks_blocked()
        await ref.cast(("add", 1))
        start = trio.current_time()
        await ref.cast(("add", 1))  # waits until the sleep ends and a slot frees
        assert trio.current_time() - start == pytest.approx(5.0)
        assert await ref.call("get") == 2


async def test_cast_nowait_while_restarting_raises_mailbox_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Between incarnations there is no mailbox: cast_nowait would have to wait."""
    spec = ChildSpec("p", lambda: Probe(Journal(), init_delay=1.0))
    async with open_supervisor([spec]) as sup:
        ref = sup.ref("p")
        ref.cast_nowait(("exit", ExitKind.CRASH))
        await trio.sleep(0.5)
        with pytest.raises(MailboxFull):
            ref.cast_nowait(("add", 1))


async def test_unknown_name_raises_actor_down(autojump_clock: trio.testing.MockClock) -> None:
    """A ref to a name nobody holds fails at once with ActorDown."""
    registry = Registry()
    with pytest.raises(ActorDown):
        await registry.ref("nobody").call("get")
    with pytest.raises(ActorDown):
        registry.ref("nobody").cast_nowait("x")


async def test_ref_to_stopped_actor_raises_actor_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Once the supervisor stops, refs to its actors raise ActorDown."""
    async with open_supervisor([probe_spec("p", Journal())]) as sup:
        ref = sup.ref("p")
    with pytest.raises(ActorDown):
        await ref.call("get")


async def test_init_must_finish_before_the_actor_is_ready(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The supervisor reports ready only after init returned."""
    journal = Journal()
    spec = ChildSpec("p", lambda: Probe(journal, init_delay=3.0))
    start = trio.current_time()
    async with open_supervisor([spec]):
        assert trio.current_time() - start == pytest.approx(3.0)
        assert journal.starts() == ["root/p"]


async def test_terminate_gets_the_exit_reason(autojump_clock: trio.testing.MockClock) -> None:
    """terminate receives crash, normal and shutdown reasons as they happened."""
    journal = Journal()
    async with open_supervisor([probe_spec("p", journal, Restart.PERMANENT)]) as sup:
        ref = sup.ref("p")
        ref.cast_nowait(("exit", ExitKind.CRASH))
        await trio.testing.wait_all_tasks_blocked()
        ref.cast_nowait(("exit", ExitKind.NORMAL))
        await trio.testing.wait_all_tasks_blocked()
    assert journal.terminates() == [
        ("root/p", "crash"),
        ("root/p", "normal"),
        ("root/p", "shutdown"),
    ]


async def test_unhandled_message_crashes_the_actor(autojump_clock: trio.testing.MockClock) -> None:
    """An actor without a handler for a message crashes with UnexpectedMessage."""

    class Silent(Actor):
        pass

    async with open_supervisor([ChildSpec("s", Silent)]) as sup:
        with pytest.raises(ActorDown) as info:
            await sup.ref("s").call("hello")
        assert info.value.reason is not None
        assert isinstance(info.value.reason.error, UnexpectedMessage)


async def test_background_task_failure_crashes_the_actor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An exception escaping a task in ctx.nursery crashes (and restarts) the actor."""
    journal = Journal()

    class Reader(Probe):
        async def init(self) -> None:
            await super().init()
            if self.ctx.incarnation == 1:
                self.ctx.nursery.start_soon(self.read)

        async def read(self) -> None:
            await trio.sleep(1.0)
            raise Boom("socket closed")

    log, entries = capture_logger()
    async with open_supervisor([ChildSpec("r", lambda: Reader(journal))], log=log) as sup:
        await trio.sleep(2.0)
        assert await sup.ref("r").call("incarnation") == 2
    crashed = [e for e in entries if e["event"] == "child_crashed"]
    assert len(crashed) == 1 and isinstance(crashed[0]["exc_info"], Boom)


async def test_stop_waits_for_the_message_in_hand(autojump_clock: trio.testing.MockClock) -> None:
    """A stop request lets the current handler finish, then terminate runs with shutdown."""
    journal = Journal()
    async with open_supervisor([probe_spec("p", journal)]) as sup:
        ref = sup.ref("p")
        async with trio.open_nursery() as nursery:
            results: list[object] = []

            async def call() -> None:
                results.append(await ref.call(("sleep", 2.0)))

            nursery.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
            await sup.aclose()
        assert results == ["slept"]
    assert journal.terminates() == [("root/p", "shutdown")]


def test_exit_reason_abnormal_only_for_crash_and_kill() -> None:
    """Only crash and killed exits count as abnormal."""
    assert ExitReason.crash(Boom()).abnormal
    assert ExitReason.killed().abnormal
    assert not ExitReason.normal().abnormal
    assert not ExitReason.shutdown().abnormal
    assert math.isinf(ChildSpec("s", Probe).shutdown_for(ChildKind.SUPERVISOR))


async def test_cast_during_restart_waits_and_is_delivered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """cast issued between incarnations is delivered to the next one."""
    spec = ChildSpec("p", lambda: Probe(Journal(), init_delay=1.0))
    async with open_supervisor([spec]) as sup:
        ref = sup.ref("p")
        ref.cast_nowait(("exit", ExitKind.CRASH))
        await trio.sleep(0.5)
        await ref.cast(("add", 7))
        assert trio.current_time() == pytest.approx(1.0 + 1.0)
        assert await ref.call("get") == 7


async def test_stop_actor_from_a_background_task_is_a_normal_exit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """StopActor raised in ctx.nursery ends the actor normally (a transient stays down)."""
    journal = Journal()

    class Finisher(Probe):
        async def init(self) -> None:
            await super().init()
            self.ctx.nursery.start_soon(self.finish)

        async def finish(self) -> None:
            await trio.sleep(1.0)
            raise StopActor()

    spec = ChildSpec("f", lambda: Finisher(journal), restart=Restart.TRANSIENT)
    async with open_supervisor([spec]) as sup:
        await trio.sleep(2.0)
        assert not sup.which_children()[0].running
    assert journal.terminates() == [("root/f", "normal")]


async def test_an_actor_object_is_never_reused(autojump_clock: trio.testing.MockClock) -> None:
    """A factory returning the same Actor twice makes every restart fail, never reuse state."""
    same = Probe(Journal())
    with pytest.raises(SupervisorGaveUp) as info:
        async with open_supervisor([ChildSpec("p", lambda: same)]) as sup:
            with pytest.raises(ActorDown):
                await sup.ref("p").call("crash")
            await trio.sleep_forever()
    assert "already ran" in str(info.value.last.error)


async def test_concurrent_callers_through_crashes_never_hang(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Many callers during repeated crashes each get a reply or ActorDown before their deadline."""
    outcomes: dict[str, int] = {"reply": 0, "down": 0}
    spec = ChildSpec("p", lambda: Probe(Journal(), init_delay=0.05), mailbox_size=4)
    async with open_supervisor([spec], max_restarts=1000, max_seconds=1.0) as sup:
        ref = sup.ref("p")

        async def caller(n: int) -> None:
            for i in range(20):
                start = trio.current_time()
                try:
                    await ref.call(("sleep", 0.01 * ((n + i) % 3)), timeout=1.0)
                    outcomes["reply"] += 1
                except ActorDown:
                    outcomes["down"] += 1
                assert trio.current_time() - start <= 1.0

        async def crasher() -> None:
            for _ in range(30):
                await trio.sleep(0.07)
                with suppress(ActorDown, CallTimeout):
                    await ref.call("crash", timeout=1.0)

        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(caller, n)
            nursery.start_soon(crasher)
    assert outcomes["reply"] + outcomes["down"] == 20 * 20
    assert outcomes["reply"] > 0 and outcomes["down"] > 0


async def test_bad_call_timeout_is_a_typed_error(autojump_clock: trio.testing.MockClock) -> None:
    """A negative or NaN timeout raises InvalidSpec naming the field."""
    async with open_supervisor([probe_spec("p", Journal())]) as sup:
        for bad in (-1.0, math.nan):
            with pytest.raises(InvalidSpec, match="timeout"):
                await sup.ref("p").call("get", timeout=bad)
