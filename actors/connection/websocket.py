"""The client end of a websocket, sans-IO: the upgrade, whole messages, the close.

wsproto does the framing (masking, fragments, control frames, UTF-8 checks); this
module adds what a client channel needs on top of it, in wsproto's own shape: bytes
in, results out, every byte to write gathered in one outbox (``data_to_send()``).
``actors.connection.transport`` drives it over a trio stream.

States and what moves them (one place, as the protocol core's other state tables):

============  ================================  ============  ===========================
state         event                             next state    outbox / result
============  ================================  ============  ===========================
CONNECTING    (construction)                    CONNECTING    the HTTP upgrade request
CONNECTING    ``101`` with the right accept     OPEN          (bytes after it are kept)
CONNECTING    any other status                  CLOSED        ``WebSocketHandshakeError``
CONNECTING    bad HTTP, bad accept, end         CLOSED        ``WebSocketHandshakeError``
OPEN          a whole message                   OPEN          ``next_message()`` returns it
OPEN          Ping                              OPEN          Pong
OPEN          message over the size limit       CLOSING       Close 1009 (closure: 1009)
OPEN          the peer's Close                  CLOSED        our Close echoed
OPEN          a frame that breaks the protocol  CLOSING       Close with wsproto's code
OPEN          ``close(code, reason)``           CLOSING       Close (closure: that code)
CLOSING       the peer's Close                  CLOSED        (the closure stays ours)
any           end of stream / broken stream     CLOSED        closure 1006 unless closed
============  ================================  ============  ===========================

Once the closure is known (the peer's Close, ours, or the stream's end), every
``next_message`` and ``send_message`` raises ``WebSocketClosed`` carrying it; its
``description`` is the line users see: ``websocket closed (1000 NORMAL_CLOSURE: bye)``.

Memory: the HTTP parser (h11) is dropped once the connection is open, and no message
buffer is kept between messages, so an idle connection holds wsproto's frame parser
and little else; a ``next_message`` with no new bytes since the last one returns at once.

Since 0.2.0.
"""

from __future__ import annotations

import enum
import http
import urllib.parse
from dataclasses import dataclass

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError as WsprotoRemoteError

from actors.connection.errors import (
    LocalProtocolError,
    WebSocketClosed,
    WebSocketHandshakeError,
    WebSocketURLError,
)

ABNORMAL_CLOSURE = int(CloseReason.ABNORMAL_CLOSURE)
MESSAGE_TOO_BIG = int(CloseReason.MESSAGE_TOO_BIG)
NORMAL_CLOSURE = int(CloseReason.NORMAL_CLOSURE)


class WebSocketState(enum.Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"  # our Close is sent (or queued); waiting for the peer's
    CLOSED = "closed"


@dataclass(frozen=True)
class Endpoint:
    """Where a ``ws://`` or ``wss://`` URL points."""

    secure: bool
    host: str  # without brackets for an IPv6 literal: what the socket layer takes
    port: int
    target: str  # path and query, at least "/"

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        """Parse ``url``; ``WebSocketURLError`` naming the part that is wrong."""
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise WebSocketURLError(url, str(exc)) from None
        if parts.scheme not in ("ws", "wss"):
            raise WebSocketURLError(url, "the scheme must be ws or wss")
        if not parts.hostname:
            raise WebSocketURLError(url, "no host")
        secure = parts.scheme == "wss"
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        default = 443 if secure else 80
        return cls(secure, parts.hostname, default if port is None else port, target)

    @property
    def host_header(self) -> str:
        """The ``Host`` header: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == (443 if self.secure else 80) else f"{host}:{self.port}"


@dataclass(frozen=True)
class Closure:
    """How a websocket ended: the close code and the reason sent with it."""

    code: int
    reason: str = ""

    @property
    def name(self) -> str:
        """The RFC 6455 name of the code, or the range it falls in."""
        try:
            return CloseReason(self.code).name
        except ValueError:
            if 1000 <= self.code <= 2999:
                return "RFC_RESERVED"
            if 3000 <= self.code <= 3999:
                return "IANA_RESERVED"
            if 4000 <= self.code <= 4999:
                return "PRIVATE_RESERVED"
            return "INVALID_CODE"

    @property
    def description(self) -> str:
        detail = f": {self.reason}" if self.reason else ""
        return f"websocket closed ({self.code} {self.name}{detail})"


class WebSocketClient:
    """One client websocket connection, without I/O (see the module docstring)."""

    def __init__(
        self, endpoint: Endpoint, *, max_message_size: int, extra_headers: list[tuple[bytes, bytes]]
    ) -> None:
        self.max_message_size = max_message_size
        self.state = WebSocketState.CONNECTING
        self.closure: Closure | None = None
        self._handshake: H11Handshake | None = H11Handshake(ConnectionType.CLIENT)
        self._ws: Connection | None = None
        self._parts: list[bytes] = []
        self._size = 0
        # Bytes fed to wsproto that its events have not gone through yet: without
        # them a ``next_message`` has nothing to parse and asks wsproto nothing.
        self._unread = False
        self._outbox = self._handshake.send(
            Request(host=endpoint.host_header, target=endpoint.target, extra_headers=extra_headers)
        )

    def __repr__(self) -> str:
        return f"WebSocketClient(state={self.state.value}, closure={self.closure})"

    # --- bytes out -----------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call (``b""`` if nothing)."""
        data, self._outbox = self._outbox, b""
        return data

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._outbox)

    def send_message(self, data: bytes) -> None:
        """Queue one binary message; ``WebSocketClosed`` once the connection is over."""
        self._raise_if_over()
        if self._ws is None:
            raise LocalProtocolError("websocket: send before the upgrade completed")
        self._outbox += self._ws.send(BytesMessage(data=data))

    def close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        """Queue our Close; the connection is over from now on (``closure`` is ours)."""
        if self.closure is not None:
            return
        self.closure = Closure(code, reason)
        if self._ws is not None and self._ws.state is ConnectionState.OPEN:
            self._outbox += self._ws.send(CloseConnection(code=code, reason=reason or None))
            self.state = WebSocketState.CLOSING
        else:
            self.state = WebSocketState.CLOSED

    # --- bytes in ------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the stream.

        While connecting this reads the upgrade answer and raises
        ``WebSocketHandshakeError`` if it is not a valid ``101``.
        """
        if self.state is WebSocketState.CLOSED:
            return
        if self._handshake is not None:
            self._receive_handshake(data)
        elif self._ws is not None:
            self._ws.receive_data(data)
            self._unread = True

    def connection_lost(self, detail: str = "") -> None:
        """The stream ended (``detail`` says how, if not a clean end of file)."""
        if self._handshake is not None:
            self._handshake = None
            self.state = WebSocketState.CLOSED
            raise WebSocketHandshakeError(
                "the server closed the connection before answering the upgrade"
                + (f" ({detail})" if detail else "")
            )
        if self.closure is None:
            self.closure = Closure(ABNORMAL_CLOSURE, detail)
        self.state = WebSocketState.CLOSED

    def next_message(self) -> bytes | None:
        """The next whole message, or ``None`` until more data arrives.

        Answers pings and the peer's Close into the outbox on the way; raises
        ``WebSocketClosed`` once the connection is over. While CLOSING it still
        reads (messages are dropped) so that the peer's Close is seen.
        """
        if self._ws is None or self.state is WebSocketState.CLOSED or not self._unread:
            self._raise_if_over()
            return None
        for event in self._ws.events():
            if isinstance(event, (BytesMessage, TextMessage)):
                message = self._add_part(event)
                if message is not None and self.closure is None:
                    return message
            elif isinstance(event, Ping):
                if self._ws.state is ConnectionState.OPEN:
                    self._outbox += self._ws.send(event.response())
            elif isinstance(event, CloseConnection):
                self._on_close(event)
                break
            # A Pong answers a ping we never send: nothing to do.
        else:
            self._unread = False  # every byte fed so far is parsed (or waits for more)
        self._raise_if_over()
        return None

    @property
    def opened(self) -> bool:
        return self._ws is not None

    # --- internals -----------------------------------------------------------------

    def _raise_if_over(self) -> None:
        if self.closure is not None:
            raise WebSocketClosed(self.closure.description, self.closure.code)

    def _receive_handshake(self, data: bytes) -> None:
        assert self._handshake is not None  # the caller checked
        try:
            self._handshake.receive_data(data)
            events = list(self._handshake.events())
        except WsprotoRemoteError as exc:
            self._handshake = None
            self.state = WebSocketState.CLOSED
            raise WebSocketHandshakeError(str(exc)) from None
        for event in events:
            if isinstance(event, AcceptConnection):
                # The connection object carries any bytes read past the 101; the HTTP
                # parser is not needed any more.
                self._ws = self._handshake.connection
                self._handshake = None
                self.state = WebSocketState.OPEN
                self._unread = True  # frames may have come with the 101
                return
            if isinstance(event, RejectConnection):
                self._handshake = None
                self.state = WebSocketState.CLOSED
                raise WebSocketHandshakeError(_status_line(event.status_code), event.status_code)

    def _add_part(self, event: BytesMessage | TextMessage) -> bytes | None:
        part = event.data.encode() if isinstance(event, TextMessage) else bytes(event.data)
        self._size += len(part)
        if self._size > self.max_message_size:
            self._parts, self._size = [], 0
            self.close(
                MESSAGE_TOO_BIG, f"Exceeded maximum message size: {self.max_message_size} bytes"
            )
            return None
        if not event.message_finished:
            self._parts.append(part)
            return None
        if self._parts:
            self._parts.append(part)
            part = b"".join(self._parts)
            self._parts = []
        self._size = 0
        return part

    def _on_close(self, event: CloseConnection) -> None:
        assert self._ws is not None  # events come only from an open connection
        if self._ws.state is ConnectionState.REMOTE_CLOSING:
            # The peer started the close: echo it, the connection is over.
            self._outbox += self._ws.send(event.response())
            self.closure = self.closure or Closure(event.code, event.reason or "")
            self.state = WebSocketState.CLOSED
        elif self._ws.state is ConnectionState.CLOSED:
            # The peer's answer to our Close, or the end of the stream.
            self.closure = self.closure or Closure(event.code, event.reason or "")
            self.state = WebSocketState.CLOSED
        else:
            # wsproto's parser refused a frame: close with the code it names.
            self.close(event.code, event.reason or "")


def _status_line(status: int) -> str:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"upgrade refused: HTTP {status} {phrase}".rstrip()


__all__ = ["Closure", "Endpoint", "WebSocketClient", "WebSocketState"]
