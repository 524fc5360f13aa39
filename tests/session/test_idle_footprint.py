"""What an open, idle session keeps: one creds object shared, nothing left from the login.

A scripted server logs a real connection actor (with its persister and signal store)
in; the tests look at what the actors hold afterwards.
"""

from __future__ import annotations

import trio
import trio.testing

from actors.connection.binary import BinaryNode
from actors.mail import CredsState, LoadCreds, PersisterStatistics, PersisterStats
from runtime.reply import call_durable
from stores.creds import AuthCreds
from tests.protocol.test_client import paired_creds, result
from tests.session.test_attempt import Session, scripted_session, wait_open

LID = "998877:7@lid"
"""The lid ``ServerEnd.log_in`` announces."""


def logged_in_creds() -> AuthCreds:
    """Paired creds that already hold the lid the server announces (a later login)."""
    creds = paired_creds()
    creds.me = {**(creds.me or {}), "lid": LID}
    return creds


async def durable(s: Session) -> CredsState:
    state: CredsState = await call_durable(s.persister, LoadCreds(), timeout=10)
    return state


async def persister_stats(s: Session) -> PersisterStatistics:
    stats: PersisterStatistics = await s.persister.call(PersisterStats(), timeout=10)
    return stats


async def test_an_open_session_that_changed_nothing_holds_one_creds_object(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The durable creds, the connection actor's and its open connection's are one object."""
    async with scripted_session(opened=True, creds=logged_in_creds()) as s:
        state = await durable(s)
        actor = s.incarnations[-1]
        live = actor._live
        assert live is not None
        # The connection's copy is private by name only: the point is that there is none.
        assert actor.creds is state.creds and live.conn._creds is state.creds
        stats = await persister_stats(s)
    assert stats.snapshots_received == 0


async def test_routing_info_the_device_already_has_is_not_saved_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An edge_routing equal to the stored routing info sends no change; new bytes do."""
    creds = logged_in_creds()
    creds.routing_info = b"\x08\x01"

    def edge_routing(info: bytes) -> BinaryNode:
        return BinaryNode(
            "ib", {}, [BinaryNode("edge_routing", {}, [BinaryNode("routing_info", {}, info)])]
        )

    async with scripted_session(opened=True, creds=creds) as s:
        await s.server.send(edge_routing(b"\x08\x01"))
        await trio.testing.wait_all_tasks_blocked()
        same = await persister_stats(s)
        shared = s.incarnations[-1].creds is (await durable(s)).creds
        await s.server.send(edge_routing(b"\x08\x02"))
        await trio.testing.wait_all_tasks_blocked()
        changed = await persister_stats(s)
        state = await durable(s)
        shared_again = s.incarnations[-1].creds is state.creds
    assert same.snapshots_received == 0 and shared
    assert changed.snapshots_received == 1 and state.creds.routing_info == b"\x08\x02"
    # The persister merged the change into creds equal to the connection's: it keeps theirs.
    assert shared_again


async def test_the_attempt_keeps_no_pre_keys_once_the_server_took_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """812 keys uploaded at login and acknowledged: the attempt holds none of them afterwards."""
    async with scripted_session(creds=logged_in_creds()) as s:
        upload = await s.server.log_in(0)
        live = s.incarnations[-1]._live
        assert live is not None and len(live.upload_keys) == 812
        await s.server.send(result(upload.attrs["id"]))
        active = await s.server.next_node()
        await s.server.send(result(active.attrs["id"]))
        digest = await s.server.next_node()
        await s.server.send(result(digest.attrs["id"], BinaryNode("digest")))
        await wait_open(s.status)
        assert live.upload_keys == {}


async def keepalive_then_ping(s: Session, ping_id: str) -> tuple[BinaryNode, BinaryNode]:
    """The client's next keepalive (answered) and its pong to a server ping; then quiet."""
    keepalive = await s.server.next_node()  # 30 s after the last one
    await s.server.send(result(keepalive.attrs["id"]))
    ping = {"from": "s.whatsapp.net", "type": "get", "id": ping_id, "xmlns": "urn:xmpp:ping"}
    await s.server.send(BinaryNode("iq", ping))
    pong = await s.server.next_node()
    await trio.testing.wait_all_tasks_blocked()
    return keepalive, pong


async def test_an_idle_open_connection_runs_nothing_but_its_read_loop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Open and quiet, then after a keepalive and a ping: no writer, reactor or inbox task waits."""
    async with scripted_session(opened=True, creds=logged_in_creds()) as s:
        live = s.incarnations[-1]._live
        assert live is not None and live._nursery is not None
        await trio.testing.wait_all_tasks_blocked()
        idle_after_open = set(live._nursery.child_tasks)
        keepalive, pong = await keepalive_then_ping(s, "p1")
        idle_after_traffic = set(live._nursery.child_tasks)
    assert keepalive.require_child("ping") is not None and pong.attrs["id"] == "p1"
    assert idle_after_open == set() and idle_after_traffic == set()


class SpawnCounter(trio.abc.Instrument):
    """Counts the tasks trio starts while installed."""

    def __init__(self) -> None:
        self.spawned = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawned += 1


async def test_a_keepalive_exchange_and_a_ping_answer_start_no_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The keepalive, its answer and the pong to a server ping: the read loop alone, no task."""
    async with scripted_session(opened=True, creds=logged_in_creds()) as s:
        await trio.testing.wait_all_tasks_blocked()
        counter = SpawnCounter()
        trio.lowlevel.add_instrument(counter)
        try:
            keepalive, pong = await keepalive_then_ping(s, "p2")
        finally:
            trio.lowlevel.remove_instrument(counter)
    assert keepalive.require_child("ping") is not None and pong.attrs["id"] == "p2"
    assert counter.spawned == 0
