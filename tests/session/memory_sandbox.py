"""The sandbox server core behind a ``MemoryTransport``: no sockets, so tests run on MockClock.

``MemorySandbox`` is a ``sandbox.Sandbox`` (same phone, faults and statistics)
whose connections come from ``MemoryTransport.accept()`` instead of websockets.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from actors.connection.certs import RootKey
from actors.connection.transport import MemoryChannel, MemoryTransport
from actors.errors import TransportClosed
from sandbox.core import Close, SandboxConfig, ServerCore
from sandbox.server import Sandbox, _Outbox


class MemorySandbox(Sandbox):
    """A sandbox serving the server ends of a MemoryTransport."""

    def __init__(self, core: ServerCore, transport: MemoryTransport) -> None:
        super().__init__(core)
        self.transport = transport
        self.url = "ws://memory.sandbox/ws/chat"

    @property
    def root(self) -> RootKey:
        return RootKey(self.root_public_key)

    async def serve(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                channel = await self.transport.accept()
                nursery.start_soon(self._serve_one, channel)

    async def _serve_one(self, channel: MemoryChannel) -> None:
        conn_id = self.core.connect()
        if self.faults.stall_new_connections:
            self.core.stall(conn_id)
        send, receive = trio.open_memory_channel[bytes | Close](math.inf)
        self._outboxes[conn_id] = _Outbox(send)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_memory, channel, receive, nursery.cancel_scope)
                while True:
                    try:
                        data = await channel.receive()
                    except TransportClosed:
                        break
                    self.dispatch(self.core.receive(conn_id, data, trio.current_time()))
                nursery.cancel_scope.cancel()
        finally:
            del self._outboxes[conn_id]
            self.dispatch(self.core.disconnected(conn_id, trio.current_time()))
            with trio.CancelScope(shield=True):
                await channel.aclose()

    async def _write_memory(
        self,
        channel: MemoryChannel,
        outbox: trio.MemoryReceiveChannel[bytes | Close],
        scope: trio.CancelScope,
    ) -> None:
        try:
            async for item in outbox:
                if self.faults.reply_delay > 0:
                    await trio.sleep(self.faults.reply_delay)
                if isinstance(item, Close):
                    await channel.aclose()
                    break
                await channel.send(item)
        except TransportClosed:
            pass
        scope.cancel()


@asynccontextmanager
async def open_memory_sandbox(config: SandboxConfig | None = None) -> AsyncIterator[MemorySandbox]:
    """A MemorySandbox serving for the block; connect with ``sb.transport``."""
    transport = MemoryTransport()
    sb = MemorySandbox(ServerCore(config=config), transport)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sb.serve)
        yield sb
        nursery.cancel_scope.cancel()
