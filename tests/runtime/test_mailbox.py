"""The actor mailbox: bounded, FIFO, backpressure, close and wake, exact under cancellation."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from runtime.mailbox import Mailbox


async def test_messages_come_out_in_the_order_they_went_in() -> None:
    """receive returns messages oldest first."""
    box: Mailbox[int] = Mailbox(8)
    for i in range(5):
        await box.send(i)
    assert [await box.receive() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert len(box) == 0


def test_capacity_must_hold_a_message() -> None:
    """A mailbox that can hold nothing is refused."""
    with pytest.raises(ValueError, match="capacity"):
        Mailbox(0)


async def test_send_nowait_refuses_a_full_mailbox() -> None:
    """send_nowait raises WouldBlock once capacity messages wait, and nothing is added."""
    box: Mailbox[int] = Mailbox(2)
    box.send_nowait(1)
    box.send_nowait(2)
    with pytest.raises(trio.WouldBlock):
        box.send_nowait(3)
    assert len(box) == 2
    assert box.receive_nowait() == 1
    box.send_nowait(3)
    assert [box.receive_nowait(), box.receive_nowait()] == [2, 3]


async def test_send_waits_for_room_and_gets_in_when_a_message_is_taken(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A send on a full mailbox blocks until the receiver takes one, then gets in."""
    box: Mailbox[str] = Mailbox(1)
    box.send_nowait("first")
    done = trio.Event()

    async def sender() -> None:
        await box.send("second")
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()
        assert box.blocked_senders == 1
        assert await box.receive() == "first"
        await done.wait()
    assert await box.receive() == "second"


async def test_blocked_senders_get_in_before_later_senders(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Room freed goes to the longest-blocked sender; a newcomer cannot jump the queue."""
    box: Mailbox[str] = Mailbox(1)
    box.send_nowait("a")
    async with trio.open_nursery() as nursery:
        for name in ("b", "c"):
            nursery.start_soon(box.send, name)
            await trio.testing.wait_all_tasks_blocked()
        assert await box.receive() == "a"
        # b took the freed room at once; c still waits, so a newcomer must wait too.
        with pytest.raises(trio.WouldBlock):
            box.send_nowait("late")
        assert await box.receive() == "b"
        assert await box.receive() == "c"


async def test_a_send_cancelled_while_blocked_is_not_delivered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A send cancelled while waiting for room did not get in; others are unaffected."""
    box: Mailbox[str] = Mailbox(1)
    box.send_nowait("a")
    doomed = trio.CancelScope()

    async def send_doomed() -> None:
        with doomed:
            await box.send("lost")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(box.send, "b")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(send_doomed)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(box.send, "c")
        await trio.testing.wait_all_tasks_blocked()
        assert box.blocked_senders == 3
        doomed.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert box.blocked_senders == 2
        assert [await box.receive() for _ in range(3)] == ["a", "b", "c"]
    assert len(box) == 0


async def test_a_receive_cancelled_while_waiting_takes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A receive cancelled while idle loses no later message, and none comes out twice."""
    box: Mailbox[int] = Mailbox(4)
    with trio.move_on_after(1):
        await box.receive()
    await box.send(7)
    assert await box.receive() == 7
    with pytest.raises(trio.WouldBlock):
        box.receive_nowait()


async def test_a_message_handed_to_a_waiting_receiver_is_received_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A message sent to a waiting receiver is its result, even if it is cancelled just after."""
    box: Mailbox[int] = Mailbox(4)
    got: list[int | None] = []

    async def receiver(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            got.append(await box.receive())

    async with trio.open_nursery() as nursery:
        scope = await nursery.start(receiver)
        await trio.testing.wait_all_tasks_blocked()
        box.send_nowait(1)
        scope.cancel()  # too late: the message was already handed over
    assert got == [1]
    assert len(box) == 0


async def test_close_fails_waiting_and_later_senders(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Closing drops queued messages and fails blocked and later sends as BrokenResourceError."""
    box: Mailbox[int] = Mailbox(1)
    box.send_nowait(1)
    failures: list[type[BaseException]] = []

    async def blocked() -> None:
        try:
            await box.send(2)
        except trio.BrokenResourceError as exc:
            failures.append(type(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(blocked)
        nursery.start_soon(blocked)
        await trio.testing.wait_all_tasks_blocked()
        box.close()
    assert failures == [trio.BrokenResourceError, trio.BrokenResourceError]
    assert len(box) == 0 and box.blocked_senders == 0
    with pytest.raises(trio.BrokenResourceError):
        box.send_nowait(3)
    with pytest.raises(trio.BrokenResourceError):
        await box.send(3)
    with pytest.raises(trio.ClosedResourceError):
        box.receive_nowait()


async def test_clear_drops_the_waiting_messages_and_lets_blocked_senders_in_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """clear drops what waits and says how many; blocked sends then get in, oldest first."""
    box: Mailbox[str] = Mailbox(2)
    box.send_nowait("a")
    box.send_nowait("b")
    returned: list[str] = []

    async def send(msg: str) -> None:
        await box.send(msg)
        returned.append(msg)

    async with trio.open_nursery() as nursery:
        for msg in ("c", "d", "e"):
            nursery.start_soon(send, msg)
            await trio.testing.wait_all_tasks_blocked()
        assert box.clear() == 2
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(returned) == ["c", "d"] and box.blocked_senders == 1
        with pytest.raises(trio.WouldBlock):
            box.send_nowait("late")  # e still waits: a newcomer cannot jump it
        assert [await box.receive() for _ in range(3)] == ["c", "d", "e"]
    assert sorted(returned) == ["c", "d", "e"] and len(box) == 0


def test_clear_on_an_idle_mailbox_drops_nothing() -> None:
    """An empty mailbox stays empty and keeps no buffer after clear."""
    box: Mailbox[int] = Mailbox(2)
    assert box.clear() == 0
    assert len(box) == 0 and box._queue is None
    box.send_nowait(1)
    assert box.receive_nowait() == 1


async def test_wake_ends_an_idle_receive_without_a_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """wake makes a waiting receive return None; a wake with no receiver waiting is a no-op."""
    box: Mailbox[int] = Mailbox(2)
    box.wake()
    box.send_nowait(5)
    assert await box.receive() == 5
    results: list[int | None] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _append(results, box))
        await trio.testing.wait_all_tasks_blocked()
        box.wake()
    assert results == [None]


async def _append(results: list[int | None], box: Mailbox[int]) -> None:
    results.append(await box.receive())


async def test_one_receiver_at_a_time(autojump_clock: trio.testing.MockClock) -> None:
    """A second concurrent receive is a BusyResourceError, not a silent split of messages."""
    box: Mailbox[int] = Mailbox(2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(box.receive)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await box.receive()
        box.send_nowait(1)


async def test_an_unbounded_mailbox_never_blocks_a_sender() -> None:
    """With capacity math.inf every send_nowait gets in."""
    box: Mailbox[int] = Mailbox(math.inf)
    for i in range(10_000):
        box.send_nowait(i)
    assert len(box) == 10_000
    assert box.receive_nowait() == 0


async def test_many_senders_under_random_cancellation_lose_and_duplicate_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every send that returned is received exactly once, in each sender's order."""
    box: Mailbox[tuple[int, int]] = Mailbox(3)
    sent: list[tuple[int, int]] = []
    received: list[tuple[int, int]] = []

    async def sender(who: int) -> None:
        for i in range(50):
            with trio.move_on_after(0.01 * ((who * 7 + i) % 5)):
                await box.send((who, i))
                sent.append((who, i))

    async def receiver() -> None:
        while True:
            with trio.move_on_after(0.013):
                msg = await box.receive()
                assert msg is not None
                received.append(msg)
            await trio.sleep(0.005)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        async with trio.open_nursery() as senders:
            for who in range(6):
                senders.start_soon(sender, who)
        nursery.cancel_scope.cancel()
    while len(box):
        received.append(box.receive_nowait())
    assert sorted(received) == sorted(sent)
    assert len(received) == len(set(received))
    for who in range(6):
        mine = [i for w, i in received if w == who]
        assert mine == sorted(mine)
