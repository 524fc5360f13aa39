"""The sandbox's control channel: JSON messages on the websocket path ``/sandbox/control``.

One JSON object per websocket text message each way. Requests:

- ``{"op": "scan", "qr": "<qr string>", "user": "<phone number>"?, "timeout": 30?}``
  → ``{"ok": true, "jid": ..., "lid": ..., "ref": ...}`` once the device is linked;
- ``{"op": "statistics"}`` → ``{"ok": true, "statistics": {...}}``.

Errors: ``{"ok": false, "error": "<error class>", "message": "..."}``. The
client side, :func:`scan_via_control`, raises :class:`ControlError` (or the
sandbox error the server named). Since 0.1.0.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from sandbox import errors
from sandbox.phone import LinkedDevice

if TYPE_CHECKING:
    from sandbox.server import Sandbox

#: The control path, relative to the sandbox's websocket URL.
CONTROL_PATH = "/sandbox/control"
_ERRORS: dict[str, type[errors.SandboxError]] = {
    cls.__name__: cls
    for cls in (
        errors.InvalidQRError,
        errors.ScanRejectedError,
        errors.PairingFailedError,
        errors.UnknownTargetError,
    )
}


async def serve_control(sandbox: Sandbox, ws: WebSocketConnection) -> None:
    """Answer control requests on ``ws`` until the peer closes it."""
    while True:
        try:
            message = await ws.get_message()
        except ConnectionClosed:
            return
        reply = await _answer(sandbox, message)
        try:
            await ws.send_message(json.dumps(reply))
        except ConnectionClosed:
            return


async def _answer(sandbox: Sandbox, message: str | bytes) -> dict[str, Any]:
    try:
        request = json.loads(message)
    except (ValueError, UnicodeDecodeError) as exc:
        return _error("ControlError", f"not JSON: {exc}")
    if not isinstance(request, dict):
        return _error("ControlError", "a request is a JSON object")
    op = request.get("op")
    try:
        if op == "scan":
            return await _scan(sandbox, request)
        if op == "statistics":
            stats = dataclasses.asdict(sandbox.statistics())
            return {"ok": True, "statistics": stats}
    except errors.SandboxError as exc:
        return _error(type(exc).__name__, str(exc))
    return _error("ControlError", f"unknown op {op!r}")


async def _scan(sandbox: Sandbox, request: dict[str, Any]) -> dict[str, Any]:
    qr = request.get("qr")
    user = request.get("user")
    timeout = request.get("timeout", 30)
    if not isinstance(qr, str):
        return _error("ControlError", "scan needs 'qr', a string")
    if user is not None and not isinstance(user, str):
        return _error("ControlError", "'user' must be a string")
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        return _error("ControlError", "'timeout' must be a positive number")
    phone = sandbox.phone if user is None else sandbox.phone_of(user)
    with trio.move_on_after(float(timeout)):
        linked = await phone.scan(qr)
        return {"ok": True, "jid": linked.jid, "lid": linked.lid, "ref": linked.ref}
    raise errors.PairingFailedError(f"no pair-device-sign from the client within {timeout} s")


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": kind, "message": message}


def control_url(sandbox_url: str) -> str:
    """The control channel URL of a sandbox given its websocket URL (same host and port)."""
    parts = urlsplit(sandbox_url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise errors.ControlError(f"sandbox URL must be ws://host:port/..., got {sandbox_url!r}")
    return urlunsplit((parts.scheme, parts.netloc, CONTROL_PATH, "", ""))


async def request_control(sandbox_url: str, request: dict[str, Any]) -> Any:
    """Send one control request and return the decoded reply (raising on ``ok: false``).

    Unbounded: wrap it in ``trio.fail_after``.
    """
    url = control_url(sandbox_url)
    try:
        async with open_websocket_url(url) as ws:
            await ws.send_message(json.dumps(request))
            raw = await ws.get_message()
    except (OSError, ConnectionClosed) as exc:
        raise errors.ControlError(f"control channel {url}: {exc}") from exc
    try:
        reply = json.loads(raw)
    except ValueError as exc:
        raise errors.ControlError(f"control channel {url} sent non-JSON: {exc}") from exc
    if not isinstance(reply, dict) or "ok" not in reply:
        raise errors.ControlError(f"control channel {url} sent an unexpected reply")
    if not reply["ok"]:
        cls = _ERRORS.get(str(reply.get("error")))
        message = str(reply.get("message", ""))
        if cls is errors.InvalidQRError:
            raise errors.ControlError(message)  # InvalidQRError needs (part, reason)
        raise (cls or errors.ControlError)(message)
    return reply


async def scan_via_control(
    sandbox_url: str, qr: str, *, user: str | None = None, link_timeout: float = 30.0
) -> LinkedDevice:
    """Have the sandbox's phone scan ``qr``; return the linked device once paired.

    ``link_timeout`` bounds, on the sandbox's side, the wait for the client's signature.
    """
    request: dict[str, Any] = {"op": "scan", "qr": qr, "timeout": link_timeout}
    if user is not None:
        request["user"] = user
    reply = await request_control(sandbox_url, request)
    return LinkedDevice(jid=reply["jid"], lid=reply["lid"], ref=reply["ref"])
