"""Pluggable transports: how the connection actor gets a message channel to the server.

A ``Transport`` opens a ``Channel`` to a URL as an async context manager; a
channel sends and receives whole binary messages (one websocket message each) and
raises ``TransportClosed`` once the connection is gone, whatever the cause.

- ``WebSocketTransport`` (the default): trio-websocket, with the ``Origin``
  header WhatsApp Web sends.
- ``MemoryTransport``: in-process pairs of memory channels, for tests. Each
  ``connect`` hands the server end to ``accept()``; no sockets, so tests run
  under ``MockClock``.

Since 0.1.0.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol, runtime_checkable

import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from actors.errors import TransportClosed
from runtime.exit import unwrap_group

ORIGIN = b"https://web.whatsapp.com"
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024


@runtime_checkable
class Channel(Protocol):
    """One connection: whole binary messages both ways."""

    async def send(self, data: bytes) -> None:
        """Send one message; ``TransportClosed`` if the connection is gone."""
        ...

    async def receive(self) -> bytes:
        """The next message; ``TransportClosed`` once the connection is gone."""
        ...

    async def aclose(self) -> None:
        """Close our side (idempotent)."""
        ...


@runtime_checkable
class Transport(Protocol):
    """Opens channels; ``connect`` raises ``TransportClosed`` when it cannot."""

    def connect(self, url: str) -> AbstractAsyncContextManager[Channel]: ...


# --- websocket ------------------------------------------------------------------------


class _WebSocketChannel:
    def __init__(self, ws: object) -> None:
        self._ws = ws

    async def send(self, data: bytes) -> None:
        try:
            await self._ws.send_message(data)  # type: ignore[attr-defined]  # trio_websocket has no stubs for this
        except ConnectionClosed as exc:
            raise TransportClosed(_describe(exc)) from exc

    async def receive(self) -> bytes:
        try:
            message = await self._ws.get_message()  # type: ignore[attr-defined]  # see send
        except ConnectionClosed as exc:
            raise TransportClosed(_describe(exc)) from exc
        return message.encode() if isinstance(message, str) else bytes(message)

    async def aclose(self) -> None:
        await self._ws.aclose()  # type: ignore[attr-defined]  # see send


def _describe(exc: ConnectionClosed) -> str:
    reason = exc.reason
    if reason is None:
        return "websocket closed"
    detail = f": {reason.reason}" if reason.reason else ""
    return f"websocket closed ({reason.code} {reason.name}{detail})"


class WebSocketTransport:
    """trio-websocket; ``connect_timeout`` bounds the TCP + websocket handshake."""

    def __init__(
        self,
        *,
        connect_timeout: float = 20.0,
        disconnect_timeout: float = 2.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.disconnect_timeout = disconnect_timeout
        self.max_message_size = max_message_size

    def __repr__(self) -> str:
        return f"WebSocketTransport(connect_timeout={self.connect_timeout})"

    @asynccontextmanager
    async def connect(self, url: str) -> AsyncIterator[Channel]:
        try:
            async with open_websocket_url(
                url,
                extra_headers=[(b"Origin", ORIGIN)],
                max_message_size=self.max_message_size,
                connect_timeout=self.connect_timeout,
                disconnect_timeout=self.disconnect_timeout,
            ) as ws:
                yield _WebSocketChannel(ws)
        except BaseExceptionGroup as group:
            leaf = unwrap_group(group)
            if isinstance(leaf, (OSError, HandshakeError, ConnectionClosed, trio.TooSlowError)):
                raise TransportClosed(f"{url}: {describe_failure(leaf)}") from leaf
            if leaf is group:
                raise
            raise leaf from None
        except (OSError, HandshakeError, ConnectionClosed, trio.TooSlowError) as exc:
            raise TransportClosed(f"{url}: {describe_failure(exc)}") from exc


def describe_failure(exc: BaseException) -> str:
    """One line naming a connect failure and its root cause.

    trio-websocket's ``HandshakeError()`` says nothing by itself; the reason a user
    needs (DNS, refused, TLS, timeout) is in the chain behind it.
    """
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(parts) < 4:
        seen.add(id(current))
        if isinstance(current, BaseExceptionGroup):
            # trio's happy-eyeballs groups one error per address: the first speaks for all.
            current = current.exceptions[0]
            continue
        text = str(current).strip() or (
            "timed out" if isinstance(current, trio.TooSlowError) else ""
        )
        name = type(current).__name__
        parts.append(f"{name}: {text}" if text else name)
        current = current.__cause__ or current.__context__
    return " <- ".join(parts)


# --- memory ----------------------------------------------------------------------------


class MemoryChannel:
    """One end of an in-memory connection."""

    def __init__(
        self,
        send: trio.MemorySendChannel[bytes],
        receive: trio.MemoryReceiveChannel[bytes],
        url: str,
    ) -> None:
        self._send = send
        self._receive = receive
        self.url = url
        self.closed = False

    def __repr__(self) -> str:
        return f"MemoryChannel({self.url!r}, closed={self.closed})"

    async def send(self, data: bytes) -> None:
        try:
            await self._send.send(bytes(data))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise TransportClosed("peer closed") from exc

    async def receive(self) -> bytes:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            raise TransportClosed("peer closed") from exc

    async def aclose(self) -> None:
        self.closed = True
        await self._send.aclose()
        await self._receive.aclose()


class MemoryTransport:
    """In-process transport: ``accept()`` yields the server end of every ``connect``.

    ``refuse`` makes new connects fail with ``TransportClosed`` (a down server).
    """

    def __init__(self, backlog: int = 16) -> None:
        self._listen_send, self._listen = trio.open_memory_channel[MemoryChannel](backlog)
        self.refuse = False
        self.connects = 0

    def __repr__(self) -> str:
        return f"MemoryTransport(connects={self.connects}, refuse={self.refuse})"

    async def accept(self) -> MemoryChannel:
        """The server end of the next connection."""
        return await self._listen.receive()

    @asynccontextmanager
    async def connect(self, url: str) -> AsyncIterator[Channel]:
        if self.refuse:
            await trio.lowlevel.checkpoint()
            raise TransportClosed(f"{url}: connection refused")
        self.connects += 1
        to_server_send, to_server_receive = trio.open_memory_channel[bytes](math.inf)
        to_client_send, to_client_receive = trio.open_memory_channel[bytes](math.inf)
        client = MemoryChannel(to_server_send, to_client_receive, url)
        server = MemoryChannel(to_client_send, to_server_receive, url)
        try:
            self._listen_send.send_nowait(server)
        except trio.WouldBlock:
            raise TransportClosed(f"{url}: backlog full") from None
        try:
            yield client
        finally:
            await client.aclose()


__all__ = [
    "ORIGIN",
    "Channel",
    "MemoryChannel",
    "MemoryTransport",
    "Transport",
    "WebSocketTransport",
]
