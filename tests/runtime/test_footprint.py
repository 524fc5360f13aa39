"""What an idle actor costs in trio structure: one task, one nursery, nothing per call."""

from __future__ import annotations

import gc
from collections import Counter

import trio
import trio.testing

from runtime import ChildSpec, open_dynamic_supervisor
from tests.runtime.helpers import Journal, Probe

WATCHED = (
    trio.lowlevel.Task,
    trio.Nursery,
    trio.CancelScope,
    trio.Event,
    trio.Lock,
    trio.lowlevel.ParkingLot,
    trio.MemorySendChannel,
    trio.MemoryReceiveChannel,
)


def census() -> Counter[str]:
    gc.collect()
    return Counter(type(o).__name__ for o in gc.get_objects() if isinstance(o, WATCHED))


async def test_each_idle_actor_is_one_task_and_one_nursery_and_nothing_else(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Ten more idle actors add ten tasks, ten nurseries and their ten scopes, nothing else.

    No memory channel, event, lock or parking lot per actor, and nothing left over
    from the calls and casts they answered.
    """
    journal = Journal()
    async with open_dynamic_supervisor([ChildSpec("w", lambda: Probe(journal))]) as sup:
        await sup.ref("w").call("get")
        await trio.testing.wait_all_tasks_blocked()
        before = census()
        for i in range(10):
            await sup.start_child(ChildSpec(f"w{i}", lambda: Probe(journal)))
            await sup.ref(f"w{i}").call(("add", i))
            await sup.ref(f"w{i}").cast(("add", 1))
        await trio.testing.wait_all_tasks_blocked()
        grown = census()
        grown.subtract(before)
    assert +grown == Counter({"Task": 10, "Nursery": 10, "CancelScope": 10})
