"""Who writes an attempt's frames: the read loop itself when no frame waits, else the writer.

The Noise counters accept frames only in the order they were encrypted, so a frame
the read loop encrypts behind frames the writer still holds must wait its turn; a
frame with nothing ahead of it goes out from the read loop, with no writer task.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
import structlog
import trio
import trio.testing

from actors.connection.attempt import (
    KEEPALIVE_GRACE,
    Attempt,
    AttemptHost,
    AttemptOver,
    AttemptTimers,
)
from actors.connection.binary import BinaryNode
from actors.connection.transport import take_lock
from tests.protocol.test_client import open_connection, paired_creds


class HeldChannel:
    """A channel whose sends wait until ``release()`` (a socket whose buffer is full)."""

    def __init__(self, *, held: bool) -> None:
        self.frames: list[bytes] = []
        self._open = trio.Event()
        if not held:
            self._open.set()

    def release(self) -> None:
        self._open.set()

    async def send(self, data: bytes) -> None:
        await self._open.wait()
        self.frames.append(data)

    async def receive(self) -> bytes:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def running_attempt(channel: HeldChannel, nursery: trio.Nursery) -> tuple[Attempt, Any]:
    """An attempt over an open connection, its tasks in ``nursery``; and the server's end."""
    conn, server = open_connection(paired_creds())
    timers = AttemptTimers(connect_timeout=20, keepalive_interval=30, query_timeout=60)
    host = cast(AttemptHost, SimpleNamespace())  # the send paths never ask the host
    attempt = Attempt(host, conn, timers, structlog.get_logger())
    # What ``run`` sets before its tasks start; the test plays the read loop itself.
    attempt._channel = channel
    attempt._nursery = nursery
    return attempt, server


def stanza(n: int) -> BinaryNode:
    return BinaryNode("presence", {"id": f"s{n}"})


async def test_the_read_loop_writes_a_frame_itself_when_none_waits() -> None:
    """Nothing queued: the read loop's frame is on the channel at once, and no task started."""
    channel = HeldChannel(held=False)
    async with trio.open_nursery() as nursery:
        attempt, server = running_attempt(channel, nursery)
        await attempt._send_from_reader(lambda: attempt.conn.send_node(stanza(1)))
        written = list(channel.frames)
        tasks = list(nursery.child_tasks)
    [frame] = written
    assert server.receive(frame)[1] == [stanza(1)]
    assert tasks == [] and not attempt._outbound.running


async def test_a_read_loop_frame_waits_behind_the_frames_the_writer_holds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The writer holds two frames on a full socket; the read loop's third goes after them."""
    channel = HeldChannel(held=True)
    async with trio.open_nursery() as nursery:
        attempt, server = running_attempt(channel, nursery)
        await attempt.send_node(stanza(1))
        await attempt.send_node(stanza(2))
        await trio.testing.wait_all_tasks_blocked()
        assert attempt._outbound.running and channel.frames == []
        with trio.fail_after(5):  # queued, not written: it waits for nothing
            await attempt._send_from_reader(lambda: attempt.conn.send_node(stanza(3)))
        assert channel.frames == [], "the read loop's frame jumped the queue"
        channel.release()
        await trio.testing.wait_all_tasks_blocked()
    received = [node for frame in channel.frames for node in server.receive(frame)[1]]
    assert received == [stanza(1), stanza(2), stanza(3)]


async def test_take_lock_takes_a_free_lock_in_place_and_waits_for_a_held_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Free: taken with no checkpoint (a task started before has not run). Held: it waits."""
    lock = trio.Lock()
    order: list[str] = []

    async def other() -> None:
        order.append("other ran")
        async with lock:
            await trio.sleep(1)
            order.append("other released")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await take_lock(lock)
        order.append("took the free lock")
        lock.release()
        await trio.testing.wait_all_tasks_blocked()  # other holds it now, for 1 s
        await take_lock(lock)
        order.append("took it after other")
        lock.release()
    assert order == ["took the free lock", "other ran", "other released", "took it after other"]


async def test_a_read_loop_write_the_socket_never_takes_ends_the_attempt_as_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A full socket and a silent server: the write gives up at keepalive + 5 s, with 408."""
    channel = HeldChannel(held=True)
    async with trio.open_nursery() as nursery:
        attempt, _server = running_attempt(channel, nursery)
        started = trio.current_time()
        with trio.fail_after(60), pytest.raises(AttemptOver) as over:
            await attempt._send_from_reader(lambda: attempt.conn.send_node(stanza(1)))
        waited = trio.current_time() - started
    assert over.value.outcome.code == 408 and channel.frames == []
    assert waited == pytest.approx(30 + KEEPALIVE_GRACE)
