"""The session's runtime events: their names and the constructors that build them.

Every event is a map with one key, the event name, whose value is the payload
(``{"connection_update": {"connection": "open", "me": ...}}``); docs/events.md
documents each payload. Emitters build events with the constructors below, and
readers (``baileys-trio run``'s printer, the demo) compare names with the constants,
so no other module spells an event name.

==================== =====================================================
event                meaning
==================== =====================================================
connection_update    the connection's state changed: connecting (attempt or
                     QR), paired, open or closed
creds_update         merged creds changes became durable (names and values)
store_error          a backend commit failed (the persister crashes next)
session_ended        a session's tree stopped and its store is closed
messages_upsert      a message reached the bot (after its decryption is durable)
messages_update      a receipt for messages we sent (delivery, read, ...)
pairing_code         a pairing code to type on the phone (instead of QRs)
fleet_claimed        a fleet process claimed a free account and runs it
fleet_takeover       a fleet process took over an account whose owner's
                     lease expired (a dead or stuck process)
fleet_released       a fleet process handed an account's lease back
==================== =====================================================

``baileys-trio run`` prints a ``connection_update`` carrying a QR as a line named
``qr`` (``QR_LINE``).

The session runtime tags each map payload (and each entry of a list payload) with
its ``account`` after these constructors; ``session_ended`` carries it from here.

This module imports only the standard library (``actors.cli`` imports it before
anything heavy).

Since 0.2.0.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias

if TYPE_CHECKING:
    from runtime.events import Event

EventSink: TypeAlias = "Callable[[Event], None]"
"""Where an actor sends the events it emits (the session's tagging emitter)."""

CONNECTION_UPDATE: Final = "connection_update"
CREDS_UPDATE: Final = "creds_update"
STORE_ERROR: Final = "store_error"
SESSION_ENDED: Final = "session_ended"
MESSAGES_UPSERT: Final = "messages_upsert"
MESSAGES_UPDATE: Final = "messages_update"
PAIRING_CODE: Final = "pairing_code"
FLEET_CLAIMED: Final = "fleet_claimed"
FLEET_TAKEOVER: Final = "fleet_takeover"
FLEET_RELEASED: Final = "fleet_released"

QR_LINE: Final = "qr"
"""The name ``baileys-trio run`` prints a ``connection_update`` carrying ``qr`` under."""

EVENTS: Final[Mapping[str, str]] = {
    CONNECTION_UPDATE: "the connection's state changed: connecting, QR, paired, open, closed",
    CREDS_UPDATE: "merged creds changes became durable",
    STORE_ERROR: "a backend commit failed",
    SESSION_ENDED: "a session's tree stopped and its store is closed",
    MESSAGES_UPSERT: "a message reached the bot",
    MESSAGES_UPDATE: "a receipt for messages we sent",
    PAIRING_CODE: "a pairing code to type on the phone (instead of QRs)",
    FLEET_CLAIMED: "a fleet process claimed a free account and runs it",
    FLEET_TAKEOVER: "a fleet process took over an account whose owner's lease expired",
    FLEET_RELEASED: "a fleet process handed an account's lease back",
}
"""Every event name with its one-line meaning (the table above)."""


# --- connection_update -----------------------------------------------------------------


def connection_connecting(attempt: int) -> Event:
    """A connection attempt starts (``attempt`` counts from 1 per actor incarnation)."""
    return {CONNECTION_UPDATE: {"connection": "connecting", "attempt": attempt}}


def connection_qr(qr: str, index: int, ttl: float) -> Event:
    """A pairing QR to show for ``ttl`` seconds (``index`` counts from 0)."""
    return {
        CONNECTION_UPDATE: {
            "connection": "connecting",
            "qr": qr,
            "qr_index": index,
            "qr_ttl": ttl,
        }
    }


def pairing_code(code: str) -> Event:
    """A pairing code (``ABCD-EFGH``) to type on the phone; it replaces the QRs."""
    return {PAIRING_CODE: {"code": code}}


def connection_paired(me: str | None) -> Event:
    """The phone paired this device (``is_new_login``); a 515 close and a login follow."""
    return {CONNECTION_UPDATE: {"is_new_login": True, "me": me}}


def connection_open(me: str | None) -> Event:
    """Logged in: pre-keys are on the server, keepalive runs."""
    return {CONNECTION_UPDATE: {"connection": "open", "me": me}}


def connection_close(
    *, reason: str, code: int, detail: str, reconnect: bool, delay: float | None = None
) -> Event:
    """An attempt ended; ``delay`` (seconds before the next attempt) only when given."""
    update: dict[str, Any] = {
        "connection": "close",
        "reason": reason,
        "code": code,
        "detail": detail,
        "reconnect": reconnect,
    }
    if delay is not None:
        update["delay"] = delay
    return {CONNECTION_UPDATE: update}


# --- persister and runtime ---------------------------------------------------------------


def creds_update(version: int, rev: int, delta: Mapping[str, Any]) -> Event:
    """Durable creds changes: ``changed`` sorted, ``delta`` deep copies (key material)."""
    return {
        CREDS_UPDATE: {
            "version": version,
            "rev": rev,
            "changed": sorted(delta),
            "delta": {name: copy.deepcopy(value) for name, value in delta.items()},
        }
    }


def store_error(location: str, backend: str, error: str, message: str) -> Event:
    """A backend commit failed: where, and the exception's class name and message."""
    return {
        STORE_ERROR: {
            "location": location,
            "backend": backend,
            "error": error,
            "message": message,
        }
    }


def session_ended(account: str, reason: str, error: str | None) -> Event:
    """A session's tree stopped (``reason``: an ``EndReason`` value or ``stopped``)."""
    return {SESSION_ENDED: {"account": account, "reason": reason, "error": error}}


# --- messages ------------------------------------------------------------------------------


def message_key(remote_jid: str, from_me: bool, id: str, participant: str | None) -> dict[str, Any]:
    """A message's ``key`` as both message events carry it."""
    return {"remote_jid": remote_jid, "from_me": from_me, "id": id, "participant": participant}


def message_entry(
    key: Mapping[str, Any],
    message: Any,
    text: str | None,
    push_name: str | None,
    timestamp: int | None,
    undecryptable: str | None = None,
) -> dict[str, Any]:
    """One received message of ``messages_upsert``; ``undecryptable`` only when given."""
    entry: dict[str, Any] = {
        "key": dict(key),
        "message": message,
        "text": text,
        "push_name": push_name,
        "timestamp": timestamp,
    }
    if undecryptable is not None:
        entry["undecryptable"] = undecryptable
    return entry


def messages_upsert(messages: Sequence[Mapping[str, Any]]) -> Event:
    """Messages that reached the bot (``type`` ``notify``; one entry each today)."""
    return {MESSAGES_UPSERT: {"type": "notify", "messages": [dict(m) for m in messages]}}


def message_update(key: Mapping[str, Any], status: str, timestamp: int | None) -> dict[str, Any]:
    """One entry of ``messages_update``: a receipt's status for one of our messages."""
    return {"key": dict(key), "update": {"status": status, "timestamp": timestamp}}


def messages_update(updates: Sequence[Mapping[str, Any]]) -> Event:
    """Receipts for messages we sent: the payload is a list, one entry per message id."""
    return {MESSAGES_UPDATE: [dict(u) for u in updates]}


# --- the fleet ----------------------------------------------------------------------------


def fleet_claimed(account: str, epoch: int, owner: str, previous_owner: str | None) -> Event:
    """This process claimed ``account`` (new, handed back or rebalanced) at lease ``epoch``."""
    return {FLEET_CLAIMED: _claim(account, epoch, owner, previous_owner)}


def fleet_takeover(account: str, epoch: int, owner: str, previous_owner: str | None) -> Event:
    """This process took ``account`` over from ``previous_owner``, whose lease expired."""
    return {FLEET_TAKEOVER: _claim(account, epoch, owner, previous_owner)}


def _claim(account: str, epoch: int, owner: str, previous_owner: str | None) -> dict[str, Any]:
    return {"account": account, "epoch": epoch, "owner": owner, "previous_owner": previous_owner}


def fleet_released(account: str, epoch: int, reason: str, retired: bool) -> Event:
    """This process stopped running ``account``: why, and whether the fleet retired it."""
    return {
        FLEET_RELEASED: {"account": account, "epoch": epoch, "reason": reason, "retired": retired}
    }


__all__ = [
    "CONNECTION_UPDATE",
    "CREDS_UPDATE",
    "EVENTS",
    "FLEET_CLAIMED",
    "FLEET_RELEASED",
    "FLEET_TAKEOVER",
    "MESSAGES_UPDATE",
    "MESSAGES_UPSERT",
    "PAIRING_CODE",
    "QR_LINE",
    "SESSION_ENDED",
    "STORE_ERROR",
    "EventSink",
    "connection_close",
    "connection_connecting",
    "connection_open",
    "connection_paired",
    "connection_qr",
    "creds_update",
    "fleet_claimed",
    "fleet_released",
    "fleet_takeover",
    "message_entry",
    "message_key",
    "message_update",
    "messages_update",
    "messages_upsert",
    "pairing_code",
    "session_ended",
    "store_error",
]
