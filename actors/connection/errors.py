"""Errors of the sans-IO protocol core, split by side as h11 does.

A *local* protocol error means our own code misused a state machine (called
``send`` in the wrong state, for instance): a bug on this side. A *remote* one
means the peer sent bytes that break the protocol; it carries
``error_status_hint``, the disconnect reason the connection actor should
report when it closes because of it (Baileys' ``DisconnectReason`` codes).

Since 0.1.0.
"""

from __future__ import annotations

#: Baileys answers a bad handshake (bad certificate, bad ciphertext) with status 400.
BAD_HANDSHAKE = 400
#: Baileys' ``DisconnectReason.badSession``: the session cannot continue as is.
BAD_SESSION = 500


class ProtocolError(Exception):
    """Base of every error raised by the protocol core."""


class LocalProtocolError(ProtocolError):
    """We used a protocol state machine wrongly (a bug on our side, not the peer's)."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; ``error_status_hint`` says how to close.

    The message names what was wrong and where (state, frame, field).
    """

    def __init__(self, message: str, *, error_status_hint: int = BAD_HANDSHAKE) -> None:
        super().__init__(message)
        self.error_status_hint = error_status_hint


ROOT_KEY_HINT = (
    "the root is Config.server_root_key (--server-root-key for baileys-trio run); unset,"
    " it is WhatsApp's own root, so against a sandbox set the key it prints when it starts"
)
"""What an untrusted certificate chain's error says about where the root comes from."""


class UntrustedServerError(RemoteProtocolError):
    """The server's certificate chain does not verify under the configured root key.

    No retry can succeed with this configuration (a wrong or missing
    ``server_root_key``, or a server that is not who it claims): the connection
    actor ends the session after the first attempt instead of reconnecting.

    Since 0.2.0.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"server cert chain: {reason} ({ROOT_KEY_HINT})")
        self.reason = reason


class WebSocketURLError(ProtocolError, ValueError):
    """A websocket URL that names no place to connect to (scheme, host or port)."""

    def __init__(self, url: str, problem: str) -> None:
        super().__init__(f"websocket URL {url!r}: {problem}")
        self.url = url
        self.problem = problem


class WebSocketHandshakeError(RemoteProtocolError):
    """The server did not upgrade to a websocket; ``status`` is its HTTP status if it sent one."""

    def __init__(self, problem: str, status: int | None = None) -> None:
        super().__init__(f"websocket {problem}")
        self.status = status


class WebSocketClosed(ProtocolError):
    """The websocket is over: ``code`` is its close code, the message says how it closed."""

    def __init__(self, description: str, code: int) -> None:
        super().__init__(description)
        self.code = code
