"""An attempt's end reaches every sender: one waiting for room in the writer's queue too.

A sender may be any task (a ``send_message`` runs in the actor's nursery, not the
attempt's); when the connection dies with the writer's queue full, nothing will make
room again, so a sender still waiting must get ``ConnectionLost``, as an iq waiter does.
"""

from __future__ import annotations

import trio
import trio.testing

from actors.connection.attempt import OUTBOUND_FRAMES
from actors.errors import ConnectionLost, TransportClosed
from tests.session.test_attempt_writes import HeldChannel, running_attempt, stanza


class BreakingChannel(HeldChannel):
    """A held channel whose socket then breaks: every send waiting on it fails."""

    def __init__(self) -> None:
        super().__init__(held=True)
        self.broken = False

    async def send(self, data: bytes) -> None:
        await super().send(data)
        if self.broken:
            raise TransportClosed("socket broke")

    def break_(self) -> None:
        self.broken = True
        self.release()


async def test_a_sender_waiting_for_room_gets_connection_lost_when_the_socket_breaks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The writer holds a frame, the queue is full, a sender waits; the socket breaks: it fails."""
    channel = BreakingChannel()
    caught: list[BaseException] = []
    done = trio.Event()

    async def send_late() -> None:
        try:
            await attempt.send_node(stanza(OUTBOUND_FRAMES + 1))
        except ConnectionLost as exc:
            caught.append(exc)
        finally:
            done.set()

    async with trio.open_nursery() as elsewhere:
        async with trio.open_nursery() as nursery:  # the attempt's own tasks
            attempt, _server = running_attempt(channel, nursery)
            await attempt.send_node(stanza(0))
            await trio.testing.wait_all_tasks_blocked()  # the writer holds frame 0
            for n in range(1, OUTBOUND_FRAMES + 1):
                await attempt.send_node(stanza(n))
            elsewhere.start_soon(send_late)
            await trio.testing.wait_all_tasks_blocked()
            assert caught == [] and len(attempt._outbound) == OUTBOUND_FRAMES
            channel.break_()
        with trio.fail_after(5):
            await done.wait()
    [lost] = caught
    assert "socket broke" in str(lost) and len(attempt._outbound) == 0
