"""Flag: a set-once event that wakes every waiter, early or late."""

from __future__ import annotations

import trio
import trio.testing

from runtime.flag import Flag


async def test_set_wakes_every_waiter(autojump_clock: trio.testing.MockClock) -> None:
    """All tasks waiting on a flag return once it is set, not before."""
    flag = Flag()
    woken: list[int] = []

    async def waiter(i: int) -> None:
        await flag.wait()
        woken.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(waiter, i)
        await trio.sleep(10)
        assert woken == [] and not flag.is_set()
        flag.set()
    assert sorted(woken) == [0, 1, 2]


async def test_wait_on_a_set_flag_returns_at_once_and_is_a_checkpoint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A late waiter returns without blocking, but still honours cancellation."""
    flag = Flag()
    flag.set()
    flag.set()  # idempotent
    await flag.wait()
    with trio.CancelScope() as scope:
        scope.cancel()
        await flag.wait()
    assert scope.cancelled_caught


async def test_a_cancelled_waiter_does_not_keep_others_from_waking(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancelling one waiter leaves the flag usable for the rest."""
    flag = Flag()
    with trio.move_on_after(1):
        await flag.wait()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(flag.wait)
        await trio.testing.wait_all_tasks_blocked()
        flag.set()
    assert flag.is_set()
