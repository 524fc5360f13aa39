"""The sans-IO client websocket: URLs, the upgrade, messages, pings, closes, the size limit.

The client is wired to a wsproto server in memory (``server.receive_data(client
.data_to_send())``), as the other protocol cores are tested.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)

from actors.connection.errors import (
    LocalProtocolError,
    WebSocketClosed,
    WebSocketHandshakeError,
    WebSocketURLError,
)
from actors.connection.websocket import Closure, Endpoint, WebSocketClient, WebSocketState

ENDPOINT = Endpoint(secure=False, host="127.0.0.1", port=8080, target="/ws/chat")


def client(max_message_size: int = 1 << 20) -> WebSocketClient:
    return WebSocketClient(
        ENDPOINT, max_message_size=max_message_size, extra_headers=[(b"Origin", b"https://o")]
    )


def server_events(server: WSConnection, data: bytes) -> list[Event]:
    server.receive_data(data)
    return list(server.events())


def opened(max_message_size: int = 1 << 20) -> tuple[WebSocketClient, WSConnection]:
    """A client and a server wsproto connection, upgraded."""
    ws = client(max_message_size)
    server = WSConnection(ConnectionType.SERVER)
    [request] = server_events(server, ws.data_to_send())
    assert isinstance(request, Request)
    ws.receive_data(server.send(AcceptConnection()))
    assert ws.opened and ws.state is WebSocketState.OPEN
    return ws, server


# --- URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "endpoint", "host_header"),
    [
        ("ws://h/ws/chat", Endpoint(False, "h", 80, "/ws/chat"), "h"),
        (
            "wss://web.whatsapp.com/ws/chat",
            Endpoint(True, "web.whatsapp.com", 443, "/ws/chat"),
            "web.whatsapp.com",
        ),
        ("ws://127.0.0.1:9000", Endpoint(False, "127.0.0.1", 9000, "/"), "127.0.0.1:9000"),
        ("wss://h:443/p?a=1&b=2", Endpoint(True, "h", 443, "/p?a=1&b=2"), "h"),
        ("ws://h:443/", Endpoint(False, "h", 443, "/"), "h:443"),
        ("ws://[::1]:8080/ws", Endpoint(False, "::1", 8080, "/ws"), "[::1]:8080"),
        ("wss://[2001:db8::1]/x", Endpoint(True, "2001:db8::1", 443, "/x"), "[2001:db8::1]"),
    ],
)
def test_a_url_gives_host_port_target_and_host_header(
    url: str, endpoint: Endpoint, host_header: str
) -> None:
    """The scheme decides TLS and the default port; Host names the port only if not default."""
    assert Endpoint.from_url(url) == endpoint
    assert endpoint.host_header == host_header


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://h/ws", "scheme"),
        ("ws:///ws", "no host"),
        ("ws://h:99999/", "Port out of range"),
        ("ws://h:port/", "Port could not be cast"),
    ],
)
def test_a_bad_url_names_what_is_wrong(url: str, problem: str) -> None:
    """A URL that names no place to connect raises WebSocketURLError with the URL and the part."""
    with pytest.raises(WebSocketURLError, match=problem) as caught:
        Endpoint.from_url(url)
    assert url in str(caught.value)


@pytest.mark.parametrize(
    ("closure", "text"),
    [
        (Closure(1000), "websocket closed (1000 NORMAL_CLOSURE)"),
        (Closure(1001, "bye"), "websocket closed (1001 GOING_AWAY: bye)"),
        (Closure(2500), "websocket closed (2500 RFC_RESERVED)"),
        (Closure(3000, "x"), "websocket closed (3000 IANA_RESERVED: x)"),
        (Closure(4999), "websocket closed (4999 PRIVATE_RESERVED)"),
        (Closure(17), "websocket closed (17 INVALID_CODE)"),
    ],
)
def test_a_closure_describes_itself_in_one_line(closure: Closure, text: str) -> None:
    """Code, its RFC name (or range) and the reason if any."""
    assert closure.description == text


# --- the upgrade -----------------------------------------------------------------------


def test_the_upgrade_request_carries_host_target_and_extra_headers() -> None:
    """The first bytes are a GET upgrade for the target, with Host and the extra headers."""
    server = WSConnection(ConnectionType.SERVER)
    [request] = server_events(server, client().data_to_send())
    assert isinstance(request, Request)
    assert (request.host, request.target) == ("127.0.0.1:8080", "/ws/chat")
    assert (b"origin", b"https://o") in [(k.lower(), v) for k, v in request.extra_headers]


def test_the_upgrade_answer_is_read_byte_by_byte_and_later_bytes_are_kept() -> None:
    """The 101 may arrive in pieces; a message right behind it in the same read is not lost."""
    ws = client()
    server = WSConnection(ConnectionType.SERVER)
    server_events(server, ws.data_to_send())
    answer = server.send(AcceptConnection()) + server.send(BytesMessage(data=b"first"))
    for i in range(len(answer)):
        assert ws.next_message() is None
        ws.receive_data(answer[i : i + 1])
    assert ws.next_message() == b"first"


def test_messages_that_came_in_one_read_with_the_101_are_all_read() -> None:
    """The 101 and two messages in one chunk: both messages, in order, then nothing."""
    ws = client()
    server = WSConnection(ConnectionType.SERVER)
    server_events(server, ws.data_to_send())
    answer = server.send(AcceptConnection()) + server.send(BytesMessage(data=b"first"))
    ws.receive_data(answer + server.send(BytesMessage(data=b"second")))
    assert [ws.next_message(), ws.next_message(), ws.next_message()] == [b"first", b"second", None]


def test_messages_that_came_in_one_read_are_all_read_before_more_arrive() -> None:
    """Three messages in one read: three next_message calls give them without new bytes."""
    ws, server = opened()
    chunk = b"".join(server.send(BytesMessage(data=bytes([n]))) for n in range(3))
    ws.receive_data(chunk)
    assert [ws.next_message() for _ in range(4)] == [b"\x00", b"\x01", b"\x02", None]
    ws.receive_data(server.send(BytesMessage(data=b"later")))
    assert ws.next_message() == b"later"


@pytest.mark.parametrize(("status", "text"), [(403, "HTTP 403 Forbidden"), (599, "HTTP 599")])
def test_a_refused_upgrade_names_the_status(status: int, text: str) -> None:
    """Any status but 101 is a WebSocketHandshakeError carrying it."""
    ws = client()
    server = WSConnection(ConnectionType.SERVER)
    server_events(server, ws.data_to_send())
    with pytest.raises(WebSocketHandshakeError) as caught:
        ws.receive_data(server.send(RejectConnection(status_code=status)))
    assert caught.value.status == status
    assert str(caught.value) == f"websocket upgrade refused: {text}"
    assert ws.state is WebSocketState.CLOSED


def test_garbage_instead_of_http_is_a_handshake_error() -> None:
    """Bytes that are not an HTTP response are refused while connecting."""
    with pytest.raises(WebSocketHandshakeError, match="Bad HTTP message"):
        client().receive_data(b"\x00\x01garbage\r\n\r\n")


def test_the_stream_ending_before_the_answer_is_a_handshake_error() -> None:
    """End of stream while connecting says the server closed before answering."""
    with pytest.raises(WebSocketHandshakeError, match="before answering"):
        client().connection_lost()


def test_sending_before_the_upgrade_is_our_bug() -> None:
    """send_message while connecting is a LocalProtocolError."""
    with pytest.raises(LocalProtocolError):
        client().send_message(b"x")


# --- messages --------------------------------------------------------------------------


def test_messages_both_ways() -> None:
    """What the client sends the server reads as one binary message, and back."""
    ws, server = opened()
    ws.send_message(b"hello")
    [message] = server_events(server, ws.data_to_send())
    assert isinstance(message, BytesMessage) and message.data == b"hello"
    ws.receive_data(server.send(BytesMessage(data=b"world")))
    assert ws.next_message() == b"world"
    assert ws.next_message() is None


def test_fragments_and_text_are_assembled_fed_byte_by_byte() -> None:
    """A fragmented binary message and a text message, one byte per read, come out whole."""
    ws, server = opened()
    wire = (
        server.send(BytesMessage(data=b"ab", message_finished=False))
        + server.send(Ping(payload=b"p"))
        + server.send(BytesMessage(data=b"cd", message_finished=True))
        + server.send(TextMessage(data="é✓"))
    )
    got: list[bytes] = []
    for i in range(len(wire)):
        ws.receive_data(wire[i : i + 1])
        while (message := ws.next_message()) is not None:
            got.append(message)
    assert got == [b"abcd", "é✓".encode()]
    [pong] = server_events(server, ws.data_to_send())
    assert pong == Pong(payload=b"p")


def test_the_size_limit_counts_the_whole_message_and_closes_with_1009() -> None:
    """At the limit a message passes; a byte over, Close 1009 is queued and the channel is over."""
    ws, server = opened(max_message_size=10)
    ws.receive_data(server.send(BytesMessage(data=b"x" * 10)))
    assert ws.next_message() == b"x" * 10
    ws.receive_data(server.send(BytesMessage(data=b"y" * 6, message_finished=False)))
    ws.receive_data(server.send(BytesMessage(data=b"y" * 5)))
    with pytest.raises(WebSocketClosed) as caught:
        ws.next_message()
    assert caught.value.code == 1009
    assert "Exceeded maximum message size: 10 bytes" in str(caught.value)
    [close] = server_events(server, ws.data_to_send())
    assert isinstance(close, CloseConnection) and close.code == 1009
    assert ws.state is WebSocketState.CLOSING
    with pytest.raises(WebSocketClosed):
        ws.send_message(b"no")


# --- closing ---------------------------------------------------------------------------


def test_the_peers_close_is_echoed_and_ends_the_connection() -> None:
    """The server's Close is answered with the same code and then every call raises it."""
    ws, server = opened()
    ws.receive_data(server.send(CloseConnection(code=4000, reason="later")))
    with pytest.raises(WebSocketClosed, match=r"4000 PRIVATE_RESERVED: later"):
        ws.next_message()
    [echo] = server_events(server, ws.data_to_send())
    assert isinstance(echo, CloseConnection) and echo.code == 4000
    assert ws.state is WebSocketState.CLOSED
    with pytest.raises(WebSocketClosed, match="4000"):
        ws.send_message(b"x")


def test_our_close_waits_for_the_peers_and_keeps_its_own_code() -> None:
    """close() queues Close; CLOSING until the peer answers; the closure stays ours."""
    ws, server = opened()
    in_flight = server.send(BytesMessage(data=b"in flight"))
    ws.close()
    [close] = server_events(server, ws.data_to_send())
    assert isinstance(close, CloseConnection) and close.code == 1000
    assert ws.state.value == "closing"
    ws.receive_data(in_flight + server.send(close.response()))
    with pytest.raises(WebSocketClosed, match=r"^websocket closed \(1000 NORMAL_CLOSURE\)$"):
        ws.next_message()
    assert ws.state is WebSocketState.CLOSED
    ws.close()  # idempotent
    assert ws.data_to_send() == b""


def test_the_stream_ending_without_a_close_is_1006() -> None:
    """End of stream on an open connection: closure 1006 ABNORMAL_CLOSURE with the detail."""
    ws, _ = opened()
    ws.connection_lost("reset by peer")
    with pytest.raises(WebSocketClosed, match=r"1006 ABNORMAL_CLOSURE: reset by peer"):
        ws.next_message()
    ws.receive_data(b"late bytes are ignored")


def test_a_broken_frame_closes_with_the_code_wsproto_names() -> None:
    """A reserved opcode: Close 1002 queued, closure 1002 PROTOCOL_ERROR."""
    ws, server = opened()
    ws.receive_data(b"\x83\x00")
    with pytest.raises(WebSocketClosed, match="1002 PROTOCOL_ERROR"):
        ws.next_message()
    [close] = server_events(server, ws.data_to_send())
    assert isinstance(close, CloseConnection) and close.code == 1002


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_any_bytes_after_the_upgrade_give_messages_or_a_close(chunks: list[bytes]) -> None:
    """Whatever the server sends, the client returns messages, waits, or is closed: nothing else."""
    ws, _ = opened(max_message_size=64)
    for chunk in chunks:
        ws.receive_data(chunk)
        try:
            while ws.next_message() is not None:
                pass
        except WebSocketClosed:
            assert ws.closure is not None
            return
