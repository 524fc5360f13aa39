"""States, transitions, events and disconnect reasons of the client connection core.

This module is the one place that says which trigger moves the connection
from which state to which (h11's ``_state.py`` shape). Rules:

- a connection starts CONNECTING; ``start()`` sends the intro and ClientHello
  (HANDSHAKING);
- when the server's hello verifies, the client sends ClientFinish with a
  registration payload (no ``creds.me``: PAIRING) or a login payload (LOGGING_IN);
- PAIRING shows QR codes until ``pair-success``; the server then ends the stream
  with 515 and the actor reconnects (now with ``me``: a login); with a pairing
  phone number it asks for a pairing code instead (``PairingCode`` once the server
  took it, ``PairingCodeUsed`` once the phone answered it), then the same
  ``pair-success``;
- LOGGING_IN waits for ``success``, then walks the login steps below, then OPEN;
- any ``stream:error``, ``failure``, ``xmlstreamend``, local ``close()``, the
  last QR expiring, or a RemoteProtocolError moves to CLOSED, from any state;
  CLOSED is final;
- a trigger not in the table is refused: LocalProtocolError when our own call
  caused it, RemoteProtocolError when a server stanza did.

Login steps (LOGGING_IN, Baileys' ``CB:success`` handler, PROTOCOL.md "From
connect to open")::

    AWAIT_SUCCESS --success--> AWAIT_COUNT --count result--> DECIDE_UPLOAD
    DECIDE_UPLOAD --upload_prekeys()--> AWAIT_UPLOAD --result--> AWAIT_ACTIVE
    DECIDE_UPLOAD --skip_prekey_upload()--> AWAIT_ACTIVE
    AWAIT_UPLOAD --error result--> DECIDE_UPLOAD      (retry or skip, the actor decides)
    AWAIT_ACTIVE --result--> AWAIT_DIGEST --result--> (OPEN)

Since 0.1.0.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from actors.connection.binary import BinaryNode
from actors.connection.pairing import PairingCredsUpdate, iq_result


class ClientState(enum.Enum):
    """Where the client connection is."""

    CONNECTING = "connecting"
    HANDSHAKING = "handshaking"
    PAIRING = "pairing"
    LOGGING_IN = "logging_in"
    OPEN = "open"
    CLOSED = "closed"


class Trigger(enum.Enum):
    """What moves the top-level state (see TRANSITIONS)."""

    START = "start"
    SENT_REGISTRATION = "sent_registration"
    SENT_LOGIN = "sent_login"
    OPENED = "opened"
    ENDED = "ended"


class LoginStep(enum.Enum):
    """Sub-state of LOGGING_IN: which answer the client waits for."""

    AWAIT_SUCCESS = "await_success"
    AWAIT_COUNT = "await_count"
    DECIDE_UPLOAD = "decide_upload"
    AWAIT_UPLOAD = "await_upload"
    AWAIT_ACTIVE = "await_active"
    AWAIT_DIGEST = "await_digest"


class LoginTrigger(enum.Enum):
    """What moves a login step (see LOGIN_TRANSITIONS)."""

    SUCCESS = "success"
    COUNT_RESULT = "count_result"
    UPLOAD = "upload"
    SKIP_UPLOAD = "skip_upload"
    UPLOAD_OK = "upload_ok"
    UPLOAD_FAILED = "upload_failed"
    ACTIVE_RESULT = "active_result"


_S, _T = ClientState, Trigger
#: The one table of top-level moves. ENDED is allowed from every state but CLOSED.
TRANSITIONS: dict[tuple[ClientState, Trigger], ClientState] = {
    (_S.CONNECTING, _T.START): _S.HANDSHAKING,
    (_S.HANDSHAKING, _T.SENT_REGISTRATION): _S.PAIRING,
    (_S.HANDSHAKING, _T.SENT_LOGIN): _S.LOGGING_IN,
    (_S.LOGGING_IN, _T.OPENED): _S.OPEN,
    **{(state, _T.ENDED): _S.CLOSED for state in ClientState if state is not _S.CLOSED},
}

_L, _LT = LoginStep, LoginTrigger
#: The table of login steps; digest's result leaves LOGGING_IN (Trigger.OPENED).
LOGIN_TRANSITIONS: dict[tuple[LoginStep, LoginTrigger], LoginStep] = {
    (_L.AWAIT_SUCCESS, _LT.SUCCESS): _L.AWAIT_COUNT,
    (_L.AWAIT_COUNT, _LT.COUNT_RESULT): _L.DECIDE_UPLOAD,
    (_L.DECIDE_UPLOAD, _LT.UPLOAD): _L.AWAIT_UPLOAD,
    (_L.DECIDE_UPLOAD, _LT.SKIP_UPLOAD): _L.AWAIT_ACTIVE,
    (_L.AWAIT_UPLOAD, _LT.UPLOAD_OK): _L.AWAIT_ACTIVE,
    (_L.AWAIT_UPLOAD, _LT.UPLOAD_FAILED): _L.DECIDE_UPLOAD,
    (_L.AWAIT_ACTIVE, _LT.ACTIVE_RESULT): _L.AWAIT_DIGEST,
}


# --- Disconnect reasons ------------------------------------------------------------


class DisconnectPolicy(enum.Enum):
    """What the connection actor does after a close."""

    #: Reconnect at once (515: the server asks for a new connection).
    RECONNECT_NOW = "reconnect_now"
    #: Reconnect with capped, jittered backoff.
    RECONNECT = "reconnect"
    #: Stop and do not reconnect (replaced, forbidden, mismatch).
    STOP = "stop"
    #: Stop for good and mark the creds as logged out.
    LOGGED_OUT = "logged_out"


class DisconnectReason(enum.IntEnum):
    """Baileys' ``DisconnectReason`` codes; ``policy`` says what to do about each."""

    CONNECTION_CLOSED = 428
    CONNECTION_LOST = 408
    TIMED_OUT = 408  # Baileys' alias of connectionLost
    CONNECTION_REPLACED = 440
    LOGGED_OUT = 401
    BAD_SESSION = 500
    RESTART_REQUIRED = 515
    MULTIDEVICE_MISMATCH = 411
    FORBIDDEN = 403
    UNAVAILABLE_SERVICE = 503

    @property
    def policy(self) -> DisconnectPolicy:
        """What the actor does after a close for this reason."""
        return _POLICY.get(self, DisconnectPolicy.RECONNECT)

    @classmethod
    def from_code(cls, code: int) -> DisconnectReason | None:
        """The reason of a numeric code, or None for a code Baileys does not name."""
        try:
            return cls(code)
        except ValueError:
            return None


_POLICY = {
    DisconnectReason.RESTART_REQUIRED: DisconnectPolicy.RECONNECT_NOW,
    DisconnectReason.LOGGED_OUT: DisconnectPolicy.LOGGED_OUT,
    DisconnectReason.CONNECTION_REPLACED: DisconnectPolicy.STOP,
    DisconnectReason.FORBIDDEN: DisconnectPolicy.STOP,
    DisconnectReason.MULTIDEVICE_MISMATCH: DisconnectPolicy.STOP,
}


def policy_for_code(code: int) -> DisconnectPolicy:
    """The policy for any close code; codes Baileys does not name reconnect with backoff."""
    reason = DisconnectReason.from_code(code)
    return reason.policy if reason is not None else DisconnectPolicy.RECONNECT


# --- Events ------------------------------------------------------------------------


@dataclass(frozen=True)
class HandshakeComplete:
    """The server's certificate verified and ClientFinish was queued; ``registering`` = pairing."""

    server_static: bytes
    registering: bool


@dataclass(frozen=True, repr=False)
class QrCode:
    """Show this QR string for ``ttl`` seconds, then call ``rotate_qr()``.

    ``index`` counts the codes of this pair-device from 0. The string holds the
    adv secret: the repr hides it.
    """

    qr: str = field(repr=False)
    ref: str
    ttl: float
    index: int

    def __repr__(self) -> str:
        return f"QrCode(ref={self.ref[:8]!r}…, ttl={self.ttl}, index={self.index})"


@dataclass(frozen=True, repr=False)
class PairingCode:
    """The server took our code request: show ``code`` (``ABCD-EFGH``) for ``ttl`` seconds.

    The person types it on the phone of the account; when ``ttl`` ran out unused,
    ``expire_code()`` ends the attempt (408) and the next one asks for a new code.
    """

    code: str = field(repr=False)
    ttl: float

    def __repr__(self) -> str:
        return f"PairingCode(ttl={self.ttl})"


@dataclass(frozen=True)
class PairingCodeUsed:
    """The phone answered our code; the companion_finish is queued, pair-success comes next."""


@dataclass(frozen=True)
class PairSuccess:
    """The phone paired us. Commit ``update`` durably, then call ``confirm_pairing()``."""

    update: PairingCredsUpdate
    iq_id: str
    key_index: int
    server_time: int | None


@dataclass(frozen=True)
class LoginSuccess:
    """The server accepted our login: ``lid`` for ``me.lid`` (None erases it), ``t`` its clock."""

    attrs: dict[str, str]
    lid: str | None
    t: int | None


@dataclass(frozen=True)
class PreKeyCount:
    """How many of our pre-keys the server holds; the actor now uploads or skips.

    None: the server answered the count iq with an error (Baileys then skips the upload).
    """

    count: int | None


@dataclass(frozen=True)
class PreKeyUploadResult:
    """The server's answer to an upload; on failure the actor retries or skips."""

    ok: bool
    error_code: str | None = None


@dataclass(frozen=True)
class Opened:
    """Login finished: the connection is open.

    ``digest_ok`` False: the server's digest result had no digest (upload 5 more
    keys, as Baileys does); None: the digest was not checked (the server answered
    the passive or digest iq with an error; Baileys opens anyway).
    """

    digest_ok: bool | None


@dataclass(frozen=True)
class IqResult:
    """The answer (type result or error) to an iq sent with ``query()`` or ``keepalive_ping()``."""

    iq_id: str
    node: BinaryNode

    @property
    def ok(self) -> bool:
        """Whether the server answered ``type=result``."""
        return self.node.attrs.get("type") == "result"


@dataclass(frozen=True)
class Ping:
    """A server ping (``iq type=get xmlns=urn:xmpp:ping``); send ``response()`` back."""

    iq_id: str

    def response(self) -> BinaryNode:
        """The bare iq result that answers it."""
        return iq_result(self.iq_id)


@dataclass(frozen=True, repr=False)
class RoutingInfo:
    """``ib > edge_routing > routing_info``: store it in creds; the next intro carries it."""

    routing_info: bytes

    def __repr__(self) -> str:
        return f"RoutingInfo(<{len(self.routing_info)} bytes>)"


@dataclass(frozen=True)
class NodeReceived:
    """Any other stanza (messages, notifications, receipts...) for the layers above."""

    node: BinaryNode


@dataclass(frozen=True)
class RestartRequired:
    """``stream:error code=515``: the stream is over; reconnect at once."""

    code: int = 515

    @property
    def reason(self) -> DisconnectReason:
        """Always RESTART_REQUIRED."""
        return DisconnectReason.RESTART_REQUIRED


@dataclass(frozen=True)
class StreamError:
    """The server ended the stream: ``stream:error`` (code attr, else conflict 440, else 500)
    or ``failure`` (reason attr, else 500). ``text`` names the first child or the tag."""

    code: int
    text: str
    node: BinaryNode

    @property
    def reason(self) -> DisconnectReason | None:
        """The named reason of ``code``; None for a code Baileys does not name."""
        return DisconnectReason.from_code(self.code)

    @property
    def policy(self) -> DisconnectPolicy:
        """What to do about it."""
        return policy_for_code(self.code)


@dataclass(frozen=True)
class Closed:
    """The connection ended for ``reason`` (server stream end, QR refs exhausted, ``close()``)."""

    reason: DisconnectReason
    detail: str = ""


ClientEvent = (
    HandshakeComplete
    | QrCode
    | PairingCode
    | PairingCodeUsed
    | PairSuccess
    | LoginSuccess
    | PreKeyCount
    | PreKeyUploadResult
    | Opened
    | IqResult
    | Ping
    | RoutingInfo
    | NodeReceived
    | RestartRequired
    | StreamError
    | Closed
)
#: Events after which the connection is CLOSED.
TERMINAL_EVENTS: tuple[type[Any], ...] = (RestartRequired, StreamError, Closed)


__all__ = [
    "LOGIN_TRANSITIONS",
    "TERMINAL_EVENTS",
    "TRANSITIONS",
    "ClientEvent",
    "ClientState",
    "Closed",
    "DisconnectPolicy",
    "DisconnectReason",
    "HandshakeComplete",
    "IqResult",
    "LoginStep",
    "LoginSuccess",
    "LoginTrigger",
    "NodeReceived",
    "Opened",
    "PairSuccess",
    "PairingCode",
    "PairingCodeUsed",
    "Ping",
    "PreKeyCount",
    "PreKeyUploadResult",
    "QrCode",
    "RestartRequired",
    "RoutingInfo",
    "StreamError",
    "policy_for_code",
]
