"""A minimal HTTP endpoint that serves one text document: ``GET /metrics``.

Knows nothing of what it serves: ``render()`` returns the body (called on the
Trio thread at each request, so it may read actor state). One request per
connection, a bounded request head and a deadline per client, so a slow or
hostile scraper costs one task for at most ``CLIENT_TIMEOUT`` seconds and can
never take the runtime down.

Since 0.2.0.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from runtime.log import Logger

CLIENT_TIMEOUT = 10.0
MAX_HEAD = 8192
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

Render = Callable[[], bytes]


async def serve_metrics(
    render: Render,
    port: int,
    *,
    host: str = "127.0.0.1",
    content_type: str = PROMETHEUS_TEXT,
    log: Logger | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``render()`` at ``/metrics`` (and ``/``) until cancelled.

    ``task_status.started`` gets the bound ``(host, port)``: port 0 picks a free one.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    address = listeners[0].socket.getsockname()
    bound = (str(address[0]), int(address[1]))
    if log is not None:
        log.info("metrics_serving", host=bound[0], port=bound[1])

    async def handle(stream: trio.SocketStream) -> None:
        try:
            with trio.fail_after(CLIENT_TIMEOUT):
                await _answer(stream, render, content_type)
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    task_status.started(bound)
    await trio.serve_listeners(handle, listeners)


async def _answer(stream: trio.SocketStream, render: Render, content_type: str) -> None:
    head = await _read_head(stream)
    if head is None:
        await _respond(stream, 400, "Bad Request", b"bad request\n", "text/plain")
        return
    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        await _respond(stream, 400, "Bad Request", b"bad request\n", "text/plain")
        return
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if method not in (b"GET", b"HEAD"):
        await _respond(stream, 405, "Method Not Allowed", b"GET only\n", "text/plain")
        return
    if target not in (b"/metrics", b"/"):
        await _respond(stream, 404, "Not Found", b"try /metrics\n", "text/plain")
        return
    body = render()
    await _respond(stream, 200, "OK", body, content_type, head_only=method == b"HEAD")


async def _read_head(stream: trio.SocketStream) -> bytes | None:
    """The request head up to the blank line; None if it is too long or cut short."""
    data = bytearray()
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        if len(data) > MAX_HEAD:
            return None
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        data += chunk
    return bytes(data)


async def _respond(
    stream: trio.SocketStream,
    status: int,
    phrase: str,
    body: bytes,
    content_type: str,
    *,
    head_only: bool = False,
) -> None:
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    await stream.send_all(head if head_only else head + body)


def valid_port(value: object) -> bool:
    """A TCP port to listen on: 0 (any free one) to 65535."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535


__all__ = ["CLIENT_TIMEOUT", "MAX_HEAD", "PROMETHEUS_TEXT", "serve_metrics", "valid_port"]
