"""The FakeDevice's protocol over a real websocket to a running sandbox (for I/O tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from trio_websocket import WebSocketConnection, open_websocket_url

from actors.connection.binary import BinaryNode, decode_node, encode_node
from actors.connection.certs import RootKey
from actors.connection.noise import NEED_DATA, Finish, Frame, Hello, NoiseInitiator, ServerHello
from tests.sandbox.fake_client import FakeDevice


class WsClient:
    """One websocket connection speaking the client side of the protocol."""

    def __init__(self, ws: WebSocketConnection, device: FakeDevice, root: RootKey) -> None:
        self.ws = ws
        self.device = device
        self.initiator = NoiseInitiator(
            noise_key=device.noise_key, routing_info=device.routing_info, root=root
        )

    async def handshake(self, payload: bytes) -> None:
        await self.ws.send_message(self.initiator.send(Hello()))
        while True:
            message = await self.ws.get_message()
            assert isinstance(message, bytes)
            self.initiator.receive_data(message)
            event = self.initiator.next_event()
            if event is not NEED_DATA:
                assert isinstance(event, ServerHello)
                break
        await self.ws.send_message(self.initiator.send(Finish(payload)))

    async def receive(self) -> BinaryNode:
        transport = self.initiator.transport
        while True:
            event = transport.next_event()
            if isinstance(event, Frame):
                return decode_node(event.payload)
            message = await self.ws.get_message()
            assert isinstance(message, bytes)
            transport.receive_data(message)

    async def send(self, node: BinaryNode) -> None:
        await self.ws.send_message(self.initiator.transport.send(encode_node(node)))


@asynccontextmanager
async def ws_client(url: str, device: FakeDevice, root: RootKey) -> AsyncIterator[WsClient]:
    async with open_websocket_url(url) as ws:
        yield WsClient(ws, device, root)
