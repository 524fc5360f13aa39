"""A tiny scripted WhatsApp server for the client core tests: NoiseResponder + node codec.

It does only what a test tells it: answer the handshake, decode what the client
sent, encrypt the nodes the test wants to send. No protocol logic of its own.
"""

from __future__ import annotations

from actors.connection.binary import BinaryNode, decode_node, encode_node
from actors.connection.client import ClientConnection
from actors.connection.client_state import ClientEvent
from actors.connection.noise import (
    ClientFinish,
    ClientHello,
    Hello,
    NoiseResponder,
    NoiseTransport,
)
from actors.connection.proto import wa_pb2
from stores.creds import AuthCreds
from tests.protocol.noise_fixtures import ServerIdentity, make_server_identity


class ScriptedServer:
    """The server side of one connection, driven step by step by a test."""

    def __init__(self, identity: ServerIdentity | None = None) -> None:
        self.identity = identity or make_server_identity()
        self.noise = NoiseResponder(
            static_key=self.identity.static_key, cert_chain=self.identity.cert_chain
        )
        self.transport: NoiseTransport | None = None
        self.client_hello: ClientHello | None = None
        self.payload: wa_pb2.ClientPayload | None = None
        self.client_static: bytes | None = None

    def receive(self, data: bytes) -> tuple[bytes, list[BinaryNode]]:
        """Feed client bytes; return (bytes the server answers with, nodes the client sent)."""
        if self.transport is not None:
            self.transport.receive_data(data)
            return b"", [decode_node(frame.payload) for frame in self.transport.events()]
        self.noise.receive_data(data)
        reply = b""
        while True:
            event = self.noise.next_event()
            if isinstance(event, ClientHello):
                self.client_hello = event
                reply += self.noise.send(Hello())
            elif isinstance(event, ClientFinish):
                self.client_static = event.static_key
                self.payload = wa_pb2.ClientPayload.FromString(event.payload)
                self.transport = self.noise.transport
                return reply, [decode_node(f.payload) for f in self.transport.events()]
            else:
                return reply, []

    def send(self, node: BinaryNode) -> bytes:
        """The bytes of ``node`` encrypted and framed for the client."""
        assert self.transport is not None, "handshake not finished"
        return self.transport.send(encode_node(node))

    def send_raw(self, plaintext: bytes) -> bytes:
        """An encrypted frame holding arbitrary plaintext (for malformed-node tests)."""
        assert self.transport is not None, "handshake not finished"
        return self.transport.send(plaintext)


def connect(
    creds: AuthCreds, server: ScriptedServer | None = None, **kwargs: object
) -> tuple[ClientConnection, ScriptedServer, list[ClientEvent]]:
    """A client and a server through the handshake; the client's first events."""
    server = server or ScriptedServer()
    client = ClientConnection(
        creds=creds,
        root=server.identity.root,
        id_prefix="1.2-",
        **kwargs,  # type: ignore[arg-type]  # test pass-through
    )
    hello, _ = server.receive(client.start())
    client.receive_data(hello)
    events = client.events()
    _, nodes = server.receive(client.data_to_send())
    assert nodes == []
    return client, server, events


def exchange(
    client: ClientConnection, server: ScriptedServer, *nodes: BinaryNode
) -> tuple[list[ClientEvent], list[BinaryNode]]:
    """Server sends ``nodes``; return the client's events and what it queued back."""
    for node in nodes:
        client.receive_data(server.send(node))
    events = client.events()
    _, replies = server.receive(client.data_to_send())
    return events, replies
