"""The three actors of a session (persister, signal store, connection) and their protocol.

Public names are loaded on first use (``actors.Persister``...), so importing a
submodule such as ``actors.connection.binary`` stays light.

Since 0.1.0.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConfigError": "actors.errors",
    "ConnectTimeout": "actors.errors",
    "ConnectionLost": "actors.errors",
    "NotConnected": "actors.errors",
    "QueryTimeout": "actors.errors",
    "CredsSnapshotRefused": "actors.errors",
    "SessionEnded": "actors.errors",
    "UntrustedServer": "actors.errors",
    "SessionError": "actors.errors",
    "StaleCredsChange": "actors.errors",
    "TransportClosed": "actors.errors",
    "EndReason": "actors.status",
    "SessionStatus": "actors.status",
    "call_durable": "runtime.reply",
    "Persister": "actors.persister",
    "SignalStoreActor": "actors.signal_store",
    "ConnectionActor": "actors.connection.actor",
    "ConnectionSettings": "actors.connection.actor",
    "MemoryTransport": "actors.connection.transport",
    "Transport": "actors.connection.transport",
    "WebSocketTransport": "actors.connection.transport",
    "ReopeningBackend": "actors.session",
    "SessionPlan": "actors.session",
    "SessionSupervisor": "actors.session",
    "SharedBackend": "actors.session",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'actors' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
