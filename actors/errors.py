"""Errors of the session tree (persister, signal store, connection actor, config).

Each names what went wrong and where. Store failures keep their own types
(``stores.errors``): a ``DurabilityError`` reaches the caller as itself.

Since 0.1.0.
"""

from __future__ import annotations


class SessionError(Exception):
    """Base class of every error raised by the ``actors`` package (outside the protocol core)."""


class ConfigError(SessionError, ValueError):
    """A ``runtime.Config`` field is invalid; ``field`` names it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"Config.{field}: {problem}")
        self.field = field
        self.problem = problem


class SessionEnded(SessionError):
    """The session stopped for good (logged out, replaced, stopped) while it was awaited."""

    def __init__(self, account: str, reason: str, detail: str | None = None) -> None:
        why = reason if detail is None else f"{reason}: {detail}"
        super().__init__(f"session {account!r} ended: {why}")
        self.account = account
        self.reason = reason
        self.detail = detail
        """What ended it, when known (the untrusted certificate, for one). Since 0.2.0."""


class UntrustedServer(SessionError):
    """The server's certificate chain does not verify under the configured root key.

    ``Config.server_root_key`` decides the root (unset: WhatsApp's own). A sandbox
    has a root of its own and prints its public key when it starts. No retry can
    succeed, so the session ends after the first attempt. Since 0.2.0.
    """


class ConnectTimeout(SessionError, TimeoutError):
    """``wait_connected`` saw no open connection within its timeout."""

    def __init__(self, account: str, timeout: float, state: str) -> None:
        super().__init__(f"session {account!r} not connected within {timeout:g} s (state: {state})")
        self.account = account
        self.timeout = timeout
        self.state = state


class TransportClosed(SessionError):
    """The transport's connection ended (network error, peer close); ``detail`` says how."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"transport closed: {detail}")
        self.detail = detail


class NotConnected(SessionError):
    """A request needs an open connection and there is none now (``state`` says where)."""

    def __init__(self, account: str, state: str) -> None:
        super().__init__(f"{account}: not connected (state: {state})")
        self.account = account
        self.state = state


class QueryTimeout(SessionError, TimeoutError):
    """An iq sent with ``query`` got no answer within its deadline (the outcome is unknown)."""

    def __init__(self, iq_id: str, timeout: float) -> None:
        super().__init__(f"no answer to iq {iq_id!r} within {timeout:g} s")
        self.iq_id = iq_id
        self.timeout = timeout


class ConnectionLost(SessionError):
    """The connection ended before the answer came; ``code`` and ``detail`` say how."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"connection ended ({code}: {detail}) before the answer came")
        self.code = code
        self.detail = detail


class StaleCredsChange(SessionError):
    """A numbered creds change from before the writer's fence: a dead incarnation queued it.

    Its batch is refused whole (its keys too): the live writer loaded creds without
    it and numbers its own changes above the fence, so merging it could hand out
    pre-key ids twice.
    """

    def __init__(self, rev: int, fence: int) -> None:
        super().__init__(f"creds change rev {rev} is at or below the writer's fence {fence}")
        self.rev = rev
        self.fence = fence


class CredsSnapshotRefused(SessionError, ValueError):
    """A whole creds snapshot was sent to the creds owner: send the changed fields.

    A snapshot would silently undo fields another component changed after it was
    taken; ``stores.CredsPatch.between(old, new)`` makes the patch.
    """

    def __init__(self, sender: str) -> None:
        super().__init__(f"{sender}: a creds snapshot in a session; send a CredsPatch instead")
        self.sender = sender


__all__ = [
    "ConfigError",
    "ConnectTimeout",
    "ConnectionLost",
    "CredsSnapshotRefused",
    "NotConnected",
    "QueryTimeout",
    "SessionEnded",
    "SessionError",
    "StaleCredsChange",
    "TransportClosed",
]
