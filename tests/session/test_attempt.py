"""The connection attempt: reactions that wait never stall the read loop; iq queries; the door.

A scripted server (``ScriptedServer``: Noise responder + node codec, no logic of its
own) on a ``MemoryTransport`` talks to a real connection actor, persister and signal
store, so time is ``MockClock`` and every stanza is the test's choice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing

from actors.connection.actor import ConnectionActor, ConnectionSettings
from actors.connection.binary import BinaryNode
from actors.connection.client_state import ClientState
from actors.connection.transport import MemoryChannel, MemoryTransport
from actors.errors import ConnectionLost, NotConnected, QueryTimeout
from actors.mail import Query, SendNode
from actors.persister import Persister
from actors.session import SharedBackend
from actors.signal_store import SignalStoreActor
from actors.status import SessionStatus
from runtime.ref import ActorRef
from runtime.registry import Registry
from runtime.reply import call_durable
from runtime.spec import ChildSpec, Strategy
from runtime.supervisor import open_supervisor
from stores.creds import AuthCreds
from stores.memory import MemoryBackend
from stores.types import Batch
from tests.protocol.scripted_server import ScriptedServer
from tests.protocol.test_client import paired_creds, result

S = "s.whatsapp.net"


class ServerEnd:
    """The server side of one connection, scripted by the test."""

    def __init__(self, channel: MemoryChannel, server: ScriptedServer) -> None:
        self.channel = channel
        self.server = server
        self.pending: list[BinaryNode] = []

    async def handshake(self) -> None:
        while self.server.transport is None:
            reply, nodes = self.server.receive(await self.channel.receive())
            self.pending += nodes
            if reply:
                await self.channel.send(reply)

    async def next_node(self) -> BinaryNode:
        """The next stanza the client sent."""
        while not self.pending:
            _reply, nodes = self.server.receive(await self.channel.receive())
            self.pending += nodes
        return self.pending.pop(0)

    async def send(self, node: BinaryNode) -> None:
        await self.channel.send(self.server.send(node))

    async def log_in(self, prekeys_on_server: int) -> BinaryNode:
        """success → count; returns the client's next stanza after the count answer."""
        await self.send(BinaryNode("success", {"t": "1764250000", "lid": "998877:7@lid"}))
        count = await self.next_node()
        value = BinaryNode("count", {"value": str(prekeys_on_server)})
        await self.send(result(count.attrs["id"], value))
        return await self.next_node()

    async def open(self) -> None:
        """Log in with 40 pre-keys on the server (no upload) up to an open connection."""
        active = await self.log_in(40)
        await self.send(result(active.attrs["id"]))
        digest = await self.next_node()
        await self.send(result(digest.attrs["id"], BinaryNode("digest")))


@dataclass
class Session:
    connection: ActorRef
    status: SessionStatus
    server: ServerEnd
    persister: ActorRef
    incarnations: list[ConnectionActor]
    """Every connection actor the supervisor made, the live one last."""


@asynccontextmanager
async def scripted_session(
    *, opened: bool = False, creds: AuthCreds | None = None, **settings: Any
) -> AsyncIterator[Session]:
    """A paired device's persister, signal store and connection, and the server's end.

    ``opened``: the server logs the device in (no upload) and the connection is open.
    ``creds``: the device's durable creds (default: freshly paired ones).
    """
    backend = MemoryBackend()
    await backend.commit(Batch(creds=creds if creds is not None else paired_creds()))
    source = SharedBackend(backend)
    transport = MemoryTransport()
    server = ScriptedServer()
    status = SessionStatus("default")
    registry = Registry()
    config = ConnectionSettings(
        url="ws://scripted", root=server.identity.root, transport=transport, **settings
    )

    incarnations: list[ConnectionActor] = []

    def connection() -> ConnectionActor:
        refs = {
            "persister": registry.ref("persister"),
            "signal_store": registry.ref("signal_store"),
        }
        actor = ConnectionActor(config, **refs, status=status, emit=lambda _event: None)
        incarnations.append(actor)
        return actor

    children = [
        ChildSpec(
            "persister", lambda: Persister(source, emit=lambda _event: None), name="persister"
        ),
        ChildSpec(
            "signal_store", lambda: SignalStoreActor(registry.ref("persister")), name="signal_store"
        ),
        ChildSpec("connection", connection, name="connection"),
    ]
    async with open_supervisor(children, strategy=Strategy.REST_FOR_ONE, registry=registry) as sup:
        end = ServerEnd(await transport.accept(), server)
        await end.handshake()
        if opened:
            await end.open()
            await wait_open(status)
        yield Session(sup.ref("connection"), status, end, sup.ref("persister"), incarnations)
    await source.aclose()


def ping(iq_id: str) -> BinaryNode:
    return BinaryNode("iq", {"from": S, "type": "get", "id": iq_id, "xmlns": "urn:xmpp:ping"})


def usync() -> BinaryNode:
    return BinaryNode("iq", {"to": S, "type": "get", "xmlns": "usync"}, [BinaryNode("usync")])


async def test_a_ping_is_answered_while_a_pre_key_upload_retry_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Upload refused → the retry backs off 2 s; a ping sent meanwhile is answered at once."""
    async with scripted_session() as s:
        upload = await s.server.log_in(0)
        assert upload.attrs["xmlns"] == "encrypt" and upload.attrs["type"] == "set"
        error = BinaryNode("error", {"code": "500", "text": "internal-server-error"})
        await s.server.send(result(upload.attrs["id"], error, kind="error"))
        refused_at = trio.current_time()
        await s.server.send(ping("ping-1"))
        pong = await s.server.next_node()
        answered_after = trio.current_time() - refused_at
        retry = await s.server.next_node()
        retried_after = trio.current_time() - refused_at
    assert pong.attrs["id"] == "ping-1" and pong.attrs["type"] == "result"
    assert answered_after < 0.1, f"the ping waited {answered_after} s for the upload retry"
    assert retry.attrs["xmlns"] == "encrypt" and retried_after >= 2.0


async def test_a_query_gets_its_answer_through_the_actors_door(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Query on an open connection sends the iq with an id and resolves with the answer."""
    async with scripted_session(opened=True) as s, trio.open_nursery() as nursery:
        answers: list[BinaryNode] = []

        async def ask() -> None:
            answers.append(await call_durable(s.connection, Query(usync()), timeout=30))

        nursery.start_soon(ask)
        sent = await s.server.next_node()
        await s.server.send(result(sent.attrs["id"], BinaryNode("usync", {"sid": "1"})))
    assert sent.attrs["xmlns"] == "usync" and sent.attrs["id"]
    [answer] = answers
    assert answer.attrs["id"] == sent.attrs["id"] and answer.require_child("usync").attrs == {
        "sid": "1"
    }


async def test_a_query_nobody_answers_is_a_query_timeout_and_pings_still_flow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No answer within the deadline: QueryTimeout naming the iq; the connection stays open."""
    async with scripted_session(opened=True) as s:
        with pytest.raises(QueryTimeout) as caught:
            await call_durable(s.connection, Query(usync(), timeout=5.0), timeout=30)
        sent = await s.server.next_node()
        await s.server.send(ping("ping-2"))
        pong = await s.server.next_node()
        state = s.status.state
    assert caught.value.iq_id == sent.attrs["id"] and caught.value.timeout == 5.0
    assert pong.attrs["id"] == "ping-2" and state is ClientState.OPEN


async def test_a_connection_that_ends_fails_every_waiting_query(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two queries wait; the server ends the stream: both fail with ConnectionLost (not a hang)."""
    async with scripted_session(opened=True) as s, trio.open_nursery() as nursery:
        failures: list[ConnectionLost] = []

        async def ask() -> None:
            try:
                await call_durable(s.connection, Query(usync()), timeout=30)
            except ConnectionLost as exc:
                failures.append(exc)

        nursery.start_soon(ask)
        nursery.start_soon(ask)
        await s.server.next_node()
        await s.server.next_node()
        await s.server.send(BinaryNode("stream:error", {"code": "503"}))
    assert len(failures) == 2 and all(f.code == 503 for f in failures)


async def test_without_an_open_connection_the_door_says_not_connected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Query and SendNode before the login opened: NotConnected naming the state, nothing sent."""
    async with scripted_session() as s:
        with pytest.raises(NotConnected) as query:
            await call_durable(s.connection, Query(usync()), timeout=5)
        with pytest.raises(NotConnected):
            await call_durable(s.connection, SendNode(BinaryNode("presence")), timeout=5)
        await s.server.send(BinaryNode("success", {"t": "1", "lid": "998877:7@lid"}))
        count = await s.server.next_node()
    assert query.value.state == "logging_in"
    assert count.attrs["xmlns"] == "encrypt", "the refused requests sent nothing before it"


async def test_a_stanza_sent_through_the_door_reaches_the_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """SendNode on an open connection: the server receives exactly that stanza."""
    async with scripted_session(opened=True) as s:
        presence = BinaryNode("presence", {"type": "available", "name": "bot"})
        await call_durable(s.connection, SendNode(presence), timeout=5)
        received = await s.server.next_node()
    assert received == presence


async def wait_open(status: SessionStatus) -> None:
    while status.state is not ClientState.OPEN:
        await status.wait_changed()
