"""Pluggable transports: how the connection actor gets a message channel to the server.

A ``Transport`` opens a ``Channel`` to a URL as an async context manager; a
channel sends and receives whole binary messages (one websocket message each) and
raises ``TransportClosed`` once the connection is gone, whatever the cause.

- ``WebSocketTransport`` (the default): a websocket client on wsproto
  (``actors.connection.websocket``) over a trio TCP or TLS stream, with the
  ``Origin`` header WhatsApp Web sends. It starts no task: the caller's
  ``receive`` reads the socket, so an idle connection costs a socket, the frame
  parser and a lock.
- ``MemoryTransport``: in-process pairs of memory channels, for tests. Each
  ``connect`` hands the server end to ``accept()``; no sockets, so tests run
  under ``MockClock``.

Since 0.1.0.
"""

from __future__ import annotations

import enum
import functools
import math
import ssl
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol, runtime_checkable

import trio

from actors.connection.errors import WebSocketClosed, WebSocketHandshakeError
from actors.connection.websocket import (
    ABNORMAL_CLOSURE,
    Closure,
    Endpoint,
    WebSocketClient,
    WebSocketState,
)
from actors.errors import TransportClosed

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


async def take_lock(lock: trio.Lock) -> None:
    """Acquire ``lock``; a free one without ``acquire``'s trip through the scheduler.

    Not a checkpoint when the lock is free: for a caller whose next step checkpoints
    anyway (a write) and that nothing cancels but the end of its connection.
    """
    if lock.locked():
        await lock.acquire()
    else:
        lock.acquire_nowait()


# --- websocket ------------------------------------------------------------------------

#: Bytes asked of the stream per read: a big message is read in several, and nothing
#: of this size stays allocated while the connection is idle.
RECEIVE_CHUNK = 16 * 1024

_ClosedStream = (trio.BrokenResourceError, trio.ClosedResourceError)


class _WebSocketChannel:
    """A websocket over a trio stream, with no task of its own.

    ``receive`` reads the stream itself until the core has a whole message. Every
    write (a message, or the pongs and Close answers ``receive`` queues) is encoded
    and written under one lock, so frames never interleave on the stream and a
    send cancelled while waiting for the lock leaves nothing queued. One task
    receives at a time (trio's stream refuses a second).
    """

    def __init__(
        self, stream: trio.abc.Stream, ws: WebSocketClient, disconnect_timeout: float
    ) -> None:
        self._stream = stream
        self._ws = ws
        self._disconnect_timeout = disconnect_timeout
        self._send_lock = trio.Lock()
        self._receiving = False
        self._closed = False
        self._held: bytes | None = None  # a message taken when a cancel came

    def __repr__(self) -> str:
        return f"WebSocketChannel({self._ws.state.value})"

    async def send(self, data: bytes) -> None:
        # The write is the checkpoint (a write cancelled midway ends the connection).
        lock = self._send_lock
        await take_lock(lock)
        try:
            try:
                self._ws.send_message(data)
            except WebSocketClosed as exc:
                raise TransportClosed(str(exc)) from None
            await self._write_queued()
        finally:
            lock.release()

    async def receive(self) -> bytes:
        # A cancel is taken here, before a message is taken from the core: once one
        # is, this call returns it, or keeps it for the next (a message lost to a
        # cancel would break the Noise counter of every frame after it).
        await trio.lowlevel.checkpoint_if_cancelled()
        held, self._held = self._held, None
        if held is not None:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return held
        self._receiving = True
        checkpointed = False  # each call is one checkpoint at least, as trio's receives are
        try:
            while True:
                try:
                    message = self._ws.next_message()
                except WebSocketClosed as exc:
                    await self._flush_quietly()
                    raise TransportClosed(str(exc)) from None
                if self._ws.has_data_to_send:  # a pong, which a cancel may interrupt
                    self._held = message
                    await self._flush()
                    self._held = None
                    checkpointed = True
                if message is not None:
                    if not checkpointed:
                        await trio.lowlevel.cancel_shielded_checkpoint()
                    return message
                await self._read()
                checkpointed = True
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        """Close our side: send Close, wait up to ``disconnect_timeout`` for the peer's."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            self._ws.close()
            if self._ws.state is WebSocketState.CLOSING:
                with trio.move_on_after(self._disconnect_timeout):
                    await self._flush_quietly()
                    if not self._receiving:  # a reader would see the peer's Close itself
                        await self._await_peer_close()
        finally:
            await self._close_stream()

    async def _await_peer_close(self) -> None:
        while self._ws.state is WebSocketState.CLOSING:
            try:
                self._ws.next_message()
            except WebSocketClosed:
                pass
            if self._ws.state is WebSocketState.CLOSING:
                await self._read()

    async def _read(self) -> None:
        try:
            data = await self._stream.receive_some(RECEIVE_CHUNK)
        except _ClosedStream as exc:
            self._ws.connection_lost(describe_failure(exc))
            return
        if data:
            self._ws.receive_data(bytes(data))
        else:
            self._ws.connection_lost()

    async def _flush(self) -> None:
        async with self._send_lock:
            await self._write_queued()

    async def _write_queued(self) -> None:
        """Write what the core queued (the caller holds the lock)."""
        data = self._ws.data_to_send()
        if not data:
            return
        try:
            await self._stream.send_all(data)
        except _ClosedStream as exc:
            self._ws.connection_lost(describe_failure(exc))
            raise self._closed_error() from None
        except trio.Cancelled:
            # Part of a frame may be on the wire: nothing more can be written after it.
            self._ws.connection_lost("a write was cancelled midway")
            raise

    def _closed_error(self) -> TransportClosed:
        closure = self._ws.closure or Closure(ABNORMAL_CLOSURE)
        return TransportClosed(closure.description)

    async def _flush_quietly(self) -> None:
        """Write a Close or its answer; if the stream is gone, the close stands anyway."""
        try:
            await self._flush()
        except TransportClosed:
            pass

    async def _close_stream(self) -> None:
        try:
            await self._stream.aclose()
        except trio.BrokenResourceError:
            pass  # the TCP connection was already dead


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """The system's trust store, built once: every wss:// connection shares it."""
    return ssl.create_default_context()


class _Phase(enum.Enum):
    TCP = "TCP connect"
    TLS = "TLS handshake"
    UPGRADE = "websocket upgrade"


class WebSocketTransport:
    """A websocket client on wsproto over a trio stream, with WhatsApp Web's ``Origin``.

    ``connect_timeout`` bounds TCP + TLS + the HTTP upgrade; ``disconnect_timeout``
    how long closing waits for the server's Close; a message over
    ``max_message_size`` closes the connection with 1009. ``ssl_context`` (for
    ``wss://``) defaults to the system's trust store.
    """

    def __init__(
        self,
        *,
        connect_timeout: float = 20.0,
        disconnect_timeout: float = 2.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.disconnect_timeout = disconnect_timeout
        self.max_message_size = max_message_size
        self.ssl_context = ssl_context

    def __repr__(self) -> str:
        return f"WebSocketTransport(connect_timeout={self.connect_timeout})"

    @asynccontextmanager
    async def connect(self, url: str) -> AsyncIterator[Channel]:
        channel = await self._open(url)
        try:
            yield channel
        finally:
            await channel.aclose()

    async def _open(self, url: str) -> _WebSocketChannel:
        endpoint = Endpoint.from_url(url)
        phase = _Phase.TCP
        try:
            with trio.fail_after(self.connect_timeout):
                stream: trio.abc.Stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
                try:
                    if endpoint.secure:
                        phase = _Phase.TLS
                        stream = await self._wrap_tls(stream, endpoint.host)
                    phase = _Phase.UPGRADE
                    ws = await self._upgrade(stream, endpoint)
                except BaseException:
                    await trio.aclose_forcefully(stream)
                    raise
        except trio.TooSlowError:
            raise TransportClosed(
                f"{url}: timed out after {self.connect_timeout:g} s ({phase.value})"
            ) from None
        except (OSError, trio.BrokenResourceError, WebSocketHandshakeError) as exc:
            raise TransportClosed(f"{url}: {describe_failure(exc)}") from exc
        return _WebSocketChannel(stream, ws, self.disconnect_timeout)

    async def _wrap_tls(
        self, stream: trio.abc.Stream, host: str
    ) -> trio.SSLStream[trio.abc.Stream]:
        context = self.ssl_context or default_ssl_context()
        tls = trio.SSLStream(stream, context, server_hostname=host, https_compatible=True)
        await tls.do_handshake()
        return tls

    async def _upgrade(self, stream: trio.abc.Stream, endpoint: Endpoint) -> WebSocketClient:
        ws = WebSocketClient(
            endpoint, max_message_size=self.max_message_size, extra_headers=[(b"Origin", ORIGIN)]
        )
        await stream.send_all(ws.data_to_send())
        while not ws.opened:
            data = await stream.receive_some(RECEIVE_CHUNK)
            if data:
                ws.receive_data(bytes(data))
            else:
                ws.connection_lost()
        return ws


def describe_failure(exc: BaseException) -> str:
    """One line naming a connect failure and its root cause.

    A wrapper such as trio's ``BrokenResourceError`` says little by itself; the
    reason a user needs (DNS, refused, TLS) is in the chain behind it.
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
    "take_lock",
]
