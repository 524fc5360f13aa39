"""The Signal protocol as WhatsApp speaks it: sessions, pre-key messages, sender keys.

Sans-IO core (``session_builder``, ``session_cipher``, ``group_cipher`` over the
records in ``session_record`` and ``sender_key_record``; messages in ``wire``),
compatible byte for byte with libsignal-node and Baileys' group cipher, and the
:class:`SignalRepository` that runs each operation in one store transaction.

Public names are loaded on first use, like ``actors``'s own.

Since 0.2.0.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BadMac": "actors.signal.errors",
    "DuplicateMessage": "actors.signal.errors",
    "InvalidAddress": "actors.signal.errors",
    "InvalidMessage": "actors.signal.errors",
    "InvalidRecord": "actors.signal.errors",
    "InvalidSignature": "actors.signal.errors",
    "MissingPreKey": "actors.signal.errors",
    "NoSenderKey": "actors.signal.errors",
    "NoSession": "actors.signal.errors",
    "SignalError": "actors.signal.errors",
    "TooFarInFuture": "actors.signal.errors",
    "UntrustedIdentity": "actors.signal.errors",
    "PreKey": "actors.signal.session_builder",
    "PreKeyBundle": "actors.signal.session_builder",
    "SignedPreKey": "actors.signal.session_builder",
    "IdentityChange": "actors.signal.repository",
    "IdentityPolicy": "actors.signal.repository",
    "MigrationResult": "actors.signal.repository",
    "SessionValidation": "actors.signal.repository",
    "SignalRepository": "actors.signal.repository",
    "jid_to_signal_address": "actors.signal.address",
    "sender_key_name": "actors.signal.address",
    "SessionRecord": "actors.signal.session_record",
    "SenderKeyRecord": "actors.signal.sender_key_record",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'actors.signal' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
