"""The sandbox's control channel: JSON messages on the websocket path ``/sandbox/control``.

One JSON object per websocket text message each way. Requests:

- ``{"op": "scan", "qr": "<qr string>", "user": "<phone number>"?, "timeout": 30?}``
  → ``{"ok": true, "jid": ..., "lid": ..., "ref": ...}`` once the device is linked;
- ``{"op": "link_code", "code": "ABCD-EFGH", "user": "<phone number>"?, "timeout": 30?}``
  → the same, once the device that asked for the code is linked (since 0.2.0);
- ``{"op": "statistics"}`` → ``{"ok": true, "statistics": {...}}``;
- ``{"op": "connections"}`` → ``{"ok": true, "connections": [{"conn_id", "state",
  "jid"}, ...]}``: every live connection, ``jid`` the device it logged in as (or
  null); since 0.2.0;
- ``{"op": "contact_add", "name": "..."?}`` → ``{"ok": true, "jid", "lid", "name"}``;
- ``{"op": "contact_send", "jid": <contact>, "text": "...", "to": <jid>?}`` →
  ``{"ok": true, "id": <message id>}`` (``to`` defaults to the first phone's account);
- ``{"op": "contact_messages", "jid": <contact>}`` → ``{"ok": true, "messages":
  [{"id", "chat", "author", "text", "timestamp", "error"}, ...]}``;
- ``{"op": "group_create", "subject": "...", "participants": [<jid>, ...]}`` →
  ``{"ok": true, "jid": <group jid>}`` (the first participant creates it).

Errors: ``{"ok": false, "error": "<error class>", "message": "..."}``. The
client side, :func:`scan_via_control`, raises :class:`ControlError` (or the
sandbox error the server named). Since 0.1.0.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, open_websocket_url

from actors.connection.transport import describe_failure
from runtime.exit import unwrap_group
from sandbox import errors
from sandbox.phone import LinkedDevice

if TYPE_CHECKING:
    from sandbox.phone import Phone
    from sandbox.server import Sandbox

#: The control path, relative to the sandbox's websocket URL.
CONTROL_PATH = "/sandbox/control"
_ERRORS: dict[str, type[errors.SandboxError]] = {
    cls.__name__: cls
    for cls in (
        errors.InvalidQRError,
        errors.InvalidCodeError,
        errors.ScanRejectedError,
        errors.PairingFailedError,
        errors.UnknownTargetError,
        errors.InvalidAccountError,
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
        if op == "link_code":
            return await _link_code(sandbox, request)
        if op == "statistics":
            stats = dataclasses.asdict(sandbox.statistics())
            return {"ok": True, "statistics": stats}
        if op in _OPS:
            return _OPS[op](sandbox, request)
    except errors.SandboxError as exc:
        return _error(type(exc).__name__, str(exc))
    return _error("ControlError", f"unknown op {op!r}")


async def _scan(sandbox: Sandbox, request: dict[str, Any]) -> dict[str, Any]:
    return await _link(sandbox, request, "qr", lambda phone, text: phone.scan(text))


async def _link_code(sandbox: Sandbox, request: dict[str, Any]) -> dict[str, Any]:
    return await _link(sandbox, request, "code", lambda phone, text: phone.link_code(text))


async def _link(
    sandbox: Sandbox,
    request: dict[str, Any],
    field: str,
    act: Callable[[Phone, str], Awaitable[LinkedDevice]],
) -> dict[str, Any]:
    """A phone links a device from ``request[field]`` (a QR or a code), within its timeout."""
    text = request.get(field)
    user = request.get("user")
    timeout = request.get("timeout", 30)
    if not isinstance(text, str):
        return _error("ControlError", f"{request.get('op')} needs {field!r}, a string")
    if user is not None and not isinstance(user, str):
        return _error("ControlError", "'user' must be a string")
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        return _error("ControlError", "'timeout' must be a positive number")
    phone = sandbox.phone if user is None else sandbox.phone_of(user)
    with trio.move_on_after(float(timeout)):
        linked = await act(phone, text)
        return {"ok": True, "jid": linked.jid, "lid": linked.lid, "ref": linked.ref}
    raise errors.PairingFailedError(f"no pair-device-sign from the client within {timeout} s")


def _contact_add(sandbox: Sandbox, request: dict[str, Any]) -> dict[str, Any]:
    name = request.get("name")
    if name is not None and not isinstance(name, str):
        return _error("ControlError", "'name' must be a string")
    contact = sandbox.new_contact(name)
    return {"ok": True, "jid": contact.jid, "lid": contact.lid, "name": contact.name}


def _contact_send(sandbox: Sandbox, request: dict[str, Any]) -> dict[str, Any]:
    jid, text, to = request.get("jid"), request.get("text"), request.get("to")
    if not isinstance(jid, str) or not isinstance(text, str):
        return _error("ControlError", "contact_send needs 'jid' and 'text', strings")
    if to is None:
        to = sandbox.core.registry.account(sandbox.phone.user).jid
    if not isinstance(to, str):
        return _error("ControlError", "'to' must be a string")
    return {"ok": True, "id": sandbox.contact_send(jid, to, text)}


def _contact_messages(sandbox: Sandbox, request: dict[str, Any]) -> dict[str, Any]:
    jid = request.get("jid")
    if not isinstance(jid, str):
        return _error("ControlError", "contact_messages needs 'jid', a string")
    messages = [dataclasses.asdict(m) for m in sandbox.contact_messages(jid)]
    return {"ok": True, "messages": messages}


def _group_create(sandbox: Sandbox, request: dict[str, Any]) -> dict[str, Any]:
    subject, participants = request.get("subject"), request.get("participants")
    if not isinstance(subject, str):
        return _error("ControlError", "group_create needs 'subject', a string")
    if not isinstance(participants, list) or not all(isinstance(p, str) for p in participants):
        return _error("ControlError", "'participants' must be a list of JID strings")
    group = sandbox.create_group(subject, participants)
    return {"ok": True, "jid": group.jid}


def _connections(sandbox: Sandbox, request: dict[str, Any]) -> dict[str, Any]:
    live = [
        {"conn_id": c.conn_id, "state": c.state.value, "jid": c.jid}
        for c in sandbox.connections()
    ]
    return {"ok": True, "connections": live}


_OPS = {
    "connections": _connections,
    "contact_add": _contact_add,
    "contact_send": _contact_send,
    "contact_messages": _contact_messages,
    "group_create": _group_create,
}


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
    except (OSError, HandshakeError, ConnectionClosed) as exc:
        # One line naming the cause (refused, DNS, timeout), never a traceback.
        raise errors.ControlError(f"control channel {url}: {describe_failure(exc)}") from exc
    except BaseExceptionGroup as group:
        leaf = unwrap_group(group)
        if not isinstance(leaf, (OSError, HandshakeError, ConnectionClosed)):
            raise
        raise errors.ControlError(f"control channel {url}: {describe_failure(leaf)}") from leaf
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
    return await _link_via_control(sandbox_url, {"op": "scan", "qr": qr}, user, link_timeout)


async def link_code_via_control(
    sandbox_url: str, code: str, *, user: str | None = None, link_timeout: float = 30.0
) -> LinkedDevice:
    """Have the sandbox's phone type pairing ``code``; return the linked device once paired.

    Since 0.2.0.
    """
    request = {"op": "link_code", "code": code}
    return await _link_via_control(sandbox_url, request, user, link_timeout)


async def _link_via_control(
    sandbox_url: str, request: dict[str, Any], user: str | None, link_timeout: float
) -> LinkedDevice:
    request = {**request, "timeout": link_timeout}
    if user is not None:
        request["user"] = user
    reply = await request_control(sandbox_url, request)
    return LinkedDevice(jid=reply["jid"], lid=reply["lid"], ref=reply["ref"])


async def connections_via_control(sandbox_url: str) -> list[dict[str, Any]]:
    """The sandbox's live connections: ``conn_id``, ``state``, ``jid``. Since 0.2.0."""
    reply = await request_control(sandbox_url, {"op": "connections"})
    connections: list[dict[str, Any]] = reply["connections"]
    return connections


async def add_contact_via_control(sandbox_url: str, *, name: str | None = None) -> str:
    """Create a simulated contact; its JID. Since 0.2.0."""
    request: dict[str, Any] = {"op": "contact_add"}
    if name is not None:
        request["name"] = name
    reply = await request_control(sandbox_url, request)
    return str(reply["jid"])


async def contact_send_via_control(
    sandbox_url: str, contact: str, text: str, *, to: str | None = None
) -> str:
    """Have a contact send ``text`` (to the first phone's account unless ``to``); the id.

    Since 0.2.0.
    """
    request: dict[str, Any] = {"op": "contact_send", "jid": contact, "text": text}
    if to is not None:
        request["to"] = to
    reply = await request_control(sandbox_url, request)
    return str(reply["id"])


async def contact_messages_via_control(sandbox_url: str, contact: str) -> list[dict[str, Any]]:
    """What a contact received, as the control channel reports it. Since 0.2.0."""
    reply = await request_control(sandbox_url, {"op": "contact_messages", "jid": contact})
    messages: list[dict[str, Any]] = reply["messages"]
    return messages


async def create_group_via_control(sandbox_url: str, subject: str, participants: list[str]) -> str:
    """Create a group (the first participant creates it); its JID. Since 0.2.0."""
    request = {"op": "group_create", "subject": subject, "participants": participants}
    reply = await request_control(sandbox_url, request)
    return str(reply["jid"])
