"""Kept messages: the newest few per author (received) and per chat (sent), as one value.

``received-message`` (id: the author's Signal address as the stanza names it, which
stays put when the contact's sessions move to its LID) lets a stanza the server
delivers again, because our ack was lost in a crash after the commit, be answered
from what was decrypted instead of failing as a duplicate. ``sent-message`` (id:
the chat) lets a retry receipt be answered after a restart. Each value is
``{"ids": [oldest .. newest], "messages": {id: wa.Message bytes}}``, at most
``KEEP`` entries: the write rides on the transaction that touches that author's
session or that chat's send anyway.

Since 0.2.0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

KEEP = 64
"""Messages kept per author or chat.

More than can be committed but not yet acknowledged at a crash: each message's
receipt and ack wait in the connection's outbound channel (64 frames, two per
message) while the inbox goes on, and a SIGKILL loses them all."""

RECEIVED = "received-message"
SENT = "sent-message"


def kept_lookup(value: object, message_id: str) -> bytes | None:
    """The kept bytes of ``message_id`` in a stored value, if there."""
    if not isinstance(value, Mapping):
        return None
    messages = value.get("messages")
    if not isinstance(messages, Mapping):
        return None
    found = messages.get(message_id)
    return bytes(found) if isinstance(found, bytes | bytearray) else None


def kept_with(value: object, message_id: str, data: bytes) -> dict[str, Any]:
    """``value`` with ``message_id`` added as newest, the oldest dropped beyond ``KEEP``."""
    ids: list[str] = []
    messages: dict[str, bytes] = {}
    if isinstance(value, Mapping):
        old_ids = value.get("ids")
        old_messages = value.get("messages")
        if isinstance(old_ids, list) and isinstance(old_messages, Mapping):
            for old in old_ids:
                kept = old_messages.get(old)
                if isinstance(old, str) and isinstance(kept, bytes) and old != message_id:
                    ids.append(old)
                    messages[old] = kept
    ids.append(message_id)
    messages[message_id] = data
    ids = ids[-KEEP:]
    return {"ids": ids, "messages": {i: messages[i] for i in ids}}
