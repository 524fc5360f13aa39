"""WebSocketTransport's channel against real servers in this process.

Most tests talk to trio-websocket's server (``serve_websocket`` on 127.0.0.1:0), the
library the client used to be built on; the few that need frames trio-websocket
does not send (fragments, a broken frame) use a raw wsproto server, and the TLS
tests a certificate made on the spot with ``cryptography``.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Ping, Request

from actors.connection.transport import ORIGIN, Channel, WebSocketTransport
from actors.errors import TransportClosed

Handler = Callable[[WebSocketRequest], Awaitable[None]]


@asynccontextmanager
async def websocket_server(
    handler: Handler, *, ssl_context: ssl.SSLContext | None = None, queue: int = 1
) -> AsyncIterator[tuple[int, trio.Nursery]]:
    """A trio-websocket server on an ephemeral port; yields the port and its nursery."""
    serve = partial(serve_websocket, message_queue_size=queue)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve, handler, "127.0.0.1", 0, ssl_context)
        yield server.port, nursery
        nursery.cancel_scope.cancel()


async def echo(request: WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass


def url(port: int, path: str = "/ws/chat", scheme: str = "ws", host: str = "127.0.0.1") -> str:
    return f"{scheme}://{host}:{port}{path}"


async def expect_closed(channel: Channel) -> str:
    """The message of the TransportClosed the next receive raises."""
    with trio.fail_after(10), pytest.raises(TransportClosed) as caught:
        await channel.receive()
    return caught.value.detail


async def connect_failure(target: str, transport: WebSocketTransport | None = None) -> str:
    """The message of the TransportClosed that connecting to ``target`` raises."""
    with pytest.raises(TransportClosed) as caught:
        async with (transport or WebSocketTransport()).connect(target):
            pass
    return caught.value.detail


# --- messages ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70_000, 1_000_000])
async def test_binary_messages_of_every_length_class_round_trip(size: int) -> None:
    """Messages with 7-bit, 16-bit and 64-bit lengths, over 64 KiB too, come back whole."""
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    async with websocket_server(echo) as (port, _):
        async with WebSocketTransport().connect(url(port)) as channel:
            with trio.fail_after(10):
                await channel.send(data)
                assert await channel.receive() == data


async def test_many_messages_in_a_row_keep_their_order() -> None:
    """Back-to-back messages, read from the stream in chunks, arrive in order."""
    async with websocket_server(echo) as (port, _):
        async with WebSocketTransport().connect(url(port)) as channel:
            with trio.fail_after(10):
                for i in range(200):
                    await channel.send(i.to_bytes(2, "big") * (i + 1))
                for i in range(200):
                    assert await channel.receive() == i.to_bytes(2, "big") * (i + 1)


async def test_a_text_message_arrives_as_its_utf8_bytes() -> None:
    """A text frame is accepted and handed over encoded as UTF-8."""

    async def greet(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message("héllo ✓")
        await trio.sleep_forever()

    async with websocket_server(greet) as (port, _):
        async with WebSocketTransport().connect(url(port)) as channel:
            with trio.fail_after(10):
                assert await channel.receive() == "héllo ✓".encode()


async def test_the_upgrade_carries_origin_host_path_and_query() -> None:
    """The request names the path and query of the URL, WhatsApp Web's Origin and the host."""
    seen: list[Request] = []

    async def record(stream: trio.SocketStream) -> None:
        await accept_upgrade(stream, seen)
        await trio.sleep_forever()

    async with raw_server(record) as port:
        async with WebSocketTransport(disconnect_timeout=0.1).connect(
            url(port, "/ws/chat?ED=CAIICA")
        ):
            pass
    assert seen[0].target == "/ws/chat?ED=CAIICA"
    assert seen[0].host == f"127.0.0.1:{port}"
    assert dict(seen[0].extra_headers)[b"origin"] == ORIGIN


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="this machine has no IPv6 loopback")
async def test_an_ipv6_literal_url_connects_with_a_bracketed_host_header() -> None:
    """ws://[::1]:port/ reaches the server and sends Host: [::1]:port."""
    seen: list[Request] = []

    async def record(stream: trio.SocketStream) -> None:
        ws = await accept_upgrade(stream, seen)
        await stream.send_all(ws.send(BytesMessage(data=b"v6")))
        await trio.sleep_forever()

    async with raw_server(record, host="::1") as port:
        transport = WebSocketTransport(disconnect_timeout=0.1)
        async with transport.connect(f"ws://[::1]:{port}/ws") as channel:
            with trio.fail_after(10):
                assert await channel.receive() == b"v6"
    assert seen[0].host == f"[::1]:{port}"


# --- pings and closes --------------------------------------------------------------------


async def test_a_server_ping_is_answered_while_the_client_reads() -> None:
    """The server's ping gets its pong (trio-websocket's ping() waits for it)."""

    async def pinger(request: WebSocketRequest) -> None:
        ws = await request.accept()
        with trio.fail_after(10):
            await ws.ping(b"are you there")
        await ws.send_message(b"pong seen")
        await trio.sleep_forever()

    async with websocket_server(pinger) as (port, _):
        async with WebSocketTransport().connect(url(port)) as channel:
            with trio.fail_after(10):
                assert await channel.receive() == b"pong seen"


async def test_a_server_close_names_its_code_and_reason() -> None:
    """The server's Close becomes TransportClosed with its code, name and reason."""

    async def closer(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.aclose(code=4001, reason="go away now")

    async with websocket_server(closer) as (port, _):
        async with WebSocketTransport().connect(url(port)) as channel:
            detail = await expect_closed(channel)
            assert detail == "websocket closed (4001 PRIVATE_RESERVED: go away now)"
            with pytest.raises(TransportClosed, match="4001"):
                await channel.send(b"too late")


async def test_a_normal_close_reads_as_normal_closure() -> None:
    """A Close 1000 without a reason is described as 1000 NORMAL_CLOSURE."""

    async def closer(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.aclose()

    async with websocket_server(closer) as (port, _):
        async with WebSocketTransport().connect(url(port)) as channel:
            assert await expect_closed(channel) == "websocket closed (1000 NORMAL_CLOSURE)"


async def test_a_dropped_tcp_connection_is_an_abnormal_closure() -> None:
    """The server's socket closing without a Close frame reads as 1006."""

    async def dropper(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws._close_stream()  # trio-websocket has no public "drop the socket"

    async with websocket_server(dropper) as (port, _):
        async with WebSocketTransport().connect(url(port)) as channel:
            detail = await expect_closed(channel)
            assert detail.startswith("websocket closed (1006 ABNORMAL_CLOSURE")


async def test_a_message_over_the_limit_closes_with_1009() -> None:
    """A message bigger than max_message_size: Close 1009 to the server, TransportClosed here."""
    server_saw: list[int | None] = []

    async def big(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message(b"y" * 1001)
        try:
            await ws.get_message()
        except ConnectionClosed as exc:
            server_saw.append(exc.reason.code if exc.reason else None)

    async with websocket_server(big) as (port, _):
        transport = WebSocketTransport(max_message_size=1000)
        async with transport.connect(url(port)) as channel:
            detail = await expect_closed(channel)
    assert detail == (
        "websocket closed (1009 MESSAGE_TOO_BIG: Exceeded maximum message size: 1000 bytes)"
    )
    assert server_saw == [1009]


async def test_a_message_exactly_at_the_limit_is_accepted() -> None:
    """max_message_size is inclusive: a message of exactly that size is delivered."""
    async with websocket_server(echo) as (port, _):
        async with WebSocketTransport(max_message_size=1000).connect(url(port)) as channel:
            await channel.send(b"z" * 1000)
            with trio.fail_after(10):
                assert await channel.receive() == b"z" * 1000


async def test_closing_sends_close_1000_and_is_idempotent() -> None:
    """aclose does the close handshake once; later calls and sends do nothing harmful."""
    server_saw: list[int | None] = []
    done = trio.Event()

    async def watch(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await ws.get_message()
        except ConnectionClosed as exc:
            server_saw.append(exc.reason.code if exc.reason else None)
        done.set()

    async with websocket_server(watch) as (port, _):
        async with WebSocketTransport().connect(url(port)) as channel:
            with trio.fail_after(10):
                await channel.aclose()
                await channel.aclose()
                with pytest.raises(TransportClosed, match=r"1000 NORMAL_CLOSURE"):
                    await channel.send(b"after close")
                with pytest.raises(TransportClosed, match=r"1000 NORMAL_CLOSURE"):
                    await channel.receive()
                await done.wait()
    assert server_saw == [1000]


async def test_close_does_not_wait_longer_than_disconnect_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server that never answers our Close is cut off after disconnect_timeout."""
    async with silent_server(upgrade=True) as port:
        transport = WebSocketTransport(disconnect_timeout=3)
        async with transport.connect(url(port)) as channel:
            start = trio.current_time()
        assert trio.current_time() - start == pytest.approx(3)
        with pytest.raises(TransportClosed):
            await channel.send(b"x")


# --- cancellation and tasks ------------------------------------------------------------


async def test_a_cancelled_receive_leaves_the_channel_usable() -> None:
    """Cancelling a pending receive loses nothing: the next one gets the message, close works."""
    release = trio.Event()

    async def late(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await release.wait()
        await ws.send_message(b"late")
        await ws.get_message()

    async with websocket_server(late) as (port, _):
        async with WebSocketTransport().connect(url(port)) as channel:
            with trio.move_on_after(0.2) as scope:
                await channel.receive()
            assert scope.cancelled_caught
            release.set()
            with trio.fail_after(10):
                assert await channel.receive() == b"late"
            with trio.fail_after(10):
                await channel.aclose()


async def test_a_receive_cancelled_when_a_message_is_already_read_loses_nothing() -> None:
    """Two messages in one write: the first read, then a cancelled receive; the second stays."""

    async def two_at_once(stream: trio.SocketStream) -> None:
        ws = await accept_upgrade(stream)
        await stream.send_all(
            ws.send(BytesMessage(data=b"one")) + ws.send(BytesMessage(data=b"two"))
        )
        await trio.sleep_forever()

    async with raw_server(two_at_once) as port:
        async with WebSocketTransport(disconnect_timeout=0.5).connect(url(port)) as channel:
            with trio.fail_after(10):
                assert await channel.receive() == b"one"
            with trio.CancelScope() as scope:
                scope.cancel()  # a deadline that passed while the reader handled "one"
                await channel.receive()
            assert scope.cancelled_caught
            with trio.fail_after(10):
                assert await channel.receive() == b"two"


async def test_a_receive_cancelled_while_it_answers_a_ping_keeps_the_message_it_took() -> None:
    """A ping, then a message, in one write; the pong's write is cut short: the message stays."""

    async def message_and_ping(stream: trio.SocketStream) -> None:
        ws = await accept_upgrade(stream)
        await stream.send_all(ws.send(Ping(b"p")) + ws.send(BytesMessage(data=b"kept")))
        await trio.sleep_forever()

    async with raw_server(message_and_ping) as port:
        async with WebSocketTransport(disconnect_timeout=0.5).connect(url(port)) as channel:
            flush = channel._flush  # type: ignore[attr-defined]  # the pong's write

            async def slow_flush() -> None:
                await trio.sleep(5)  # a socket slow to take the pong
                await flush()

            channel._flush = slow_flush  # type: ignore[attr-defined]
            with trio.move_on_after(0.2) as scope:
                await channel.receive()
            assert scope.cancelled_caught
            channel._flush = flush  # type: ignore[attr-defined]
            with trio.fail_after(10):
                assert await channel.receive() == b"kept"


async def test_send_and_receive_from_two_tasks_at_once() -> None:
    """A writer and a reader share the channel; pongs and messages do not interleave."""

    async def busy(request: WebSocketRequest) -> None:
        ws = await request.accept()
        for _ in range(20):
            with trio.fail_after(10):
                await ws.ping()
            await ws.send_message(await ws.get_message())
        await trio.sleep_forever()

    # trio-websocket's server stops reading (pongs too) while its message queue is full.
    async with websocket_server(busy, queue=32) as (port, _):
        async with WebSocketTransport().connect(url(port)) as channel:
            got: list[bytes] = []

            async def write() -> None:
                for i in range(20):
                    await channel.send(bytes([i]) * 50_000)

            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(write)
                    for _ in range(20):
                        got.append(await channel.receive())
    assert got == [bytes([i]) * 50_000 for i in range(20)]


async def test_a_send_cancelled_midway_ends_the_connection() -> None:
    """A write cut off with part of a frame on the wire: later sends refuse, close is quick."""
    async with silent_server(upgrade=True) as port:  # never reads: the socket fills up
        transport = WebSocketTransport(disconnect_timeout=30)
        async with transport.connect(url(port)) as channel:
            with trio.move_on_after(1) as scope:
                await channel.send(b"w" * (32 << 20))
            assert scope.cancelled_caught
            with pytest.raises(TransportClosed, match="a write was cancelled midway"):
                await channel.send(b"x")
            with trio.fail_after(5):
                await channel.aclose()


async def test_closing_while_another_task_receives_wakes_the_reader() -> None:
    """aclose from one task ends a receive pending in another with the close, promptly."""
    async with websocket_server(echo) as (port, _):
        async with WebSocketTransport().connect(url(port)) as channel:
            details: list[str] = []

            async def read() -> None:
                details.append(await expect_closed(channel))

            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read)
                    await trio.testing.wait_all_tasks_blocked()
                    await channel.aclose()
    assert details == ["websocket closed (1000 NORMAL_CLOSURE)"]


def tasks_outside(excluded: trio.Nursery) -> int:
    """Live tasks of this run, leaving out everything under ``excluded``."""
    count = 0
    root = trio.lowlevel.current_root_task()
    assert root is not None  # inside a run
    pending = [root]
    while pending:
        task = pending.pop()
        count += 1
        for nursery in task.child_nurseries:
            if nursery is not excluded:
                pending.extend(nursery.child_tasks)
    return count


async def test_an_open_connection_runs_no_task_of_its_own() -> None:
    """Connected and idle, the client adds no task (trio-websocket adds some: the count works)."""
    from trio_websocket import open_websocket_url

    async with websocket_server(echo) as (port, server_nursery):
        before = tasks_outside(server_nursery)
        async with WebSocketTransport().connect(url(port)) as channel:
            await channel.send(b"hi")
            with trio.fail_after(10):
                await channel.receive()
            during = tasks_outside(server_nursery)
        async with open_websocket_url(url(port)) as _:
            with_trio_websocket = tasks_outside(server_nursery)
        after = tasks_outside(server_nursery)
    assert during == before == after
    assert with_trio_websocket > before


# --- failures to connect -----------------------------------------------------------------


async def test_a_rejected_upgrade_names_the_http_status() -> None:
    """A server that refuses the upgrade gives TransportClosed naming its status."""

    async def refuse(request: WebSocketRequest) -> None:
        await request.reject(403, body=b"not you")

    async with websocket_server(refuse) as (port, _):
        with trio.fail_after(10):
            detail = await connect_failure(url(port))
    assert detail == (
        f"{url(port)}: WebSocketHandshakeError: websocket upgrade refused: HTTP 403 Forbidden"
    )


@asynccontextmanager
async def raw_server(
    serve: Callable[[trio.SocketStream], Awaitable[None]], host: str = "127.0.0.1"
) -> AsyncIterator[int]:
    """A TCP server on an ephemeral port running ``serve`` for each connection."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host=host))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def silent_server(*, upgrade: bool) -> AsyncIterator[int]:
    """Accepts TCP and then says nothing more (after a websocket upgrade if ``upgrade``)."""

    async def serve(stream: trio.SocketStream) -> None:
        if upgrade:
            await accept_upgrade(stream)
        await trio.sleep_forever()

    async with raw_server(serve) as port:
        yield port


async def accept_upgrade(
    stream: trio.SocketStream, seen: list[Request] | None = None
) -> WSConnection:
    """Answer a websocket upgrade with wsproto by hand (the request goes to ``seen``)."""
    ws = WSConnection(ConnectionType.SERVER)
    while True:
        ws.receive_data(await stream.receive_some(4096))
        for event in ws.events():
            if isinstance(event, Request):
                if seen is not None:
                    seen.append(event)
                await stream.send_all(ws.send(AcceptConnection()))
                return ws


class NoSuchHost(trio.abc.HostnameResolver):
    """A resolver that knows no name, as a DNS answering NXDOMAIN."""

    async def getaddrinfo(self, *args: object, **kwargs: object) -> Any:
        await trio.lowlevel.checkpoint()
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def getnameinfo(self, *args: object, **kwargs: object) -> Any:
        raise NotImplementedError


async def test_a_name_that_does_not_resolve_is_named_in_the_failure() -> None:
    """A DNS failure becomes TransportClosed naming the resolver's error."""
    previous = trio.socket.set_custom_hostname_resolver(NoSuchHost())
    try:
        with trio.fail_after(10):
            detail = await connect_failure("wss://no-such-host.invalid/ws/chat")
    finally:
        trio.socket.set_custom_hostname_resolver(previous)
    assert detail == (
        "wss://no-such-host.invalid/ws/chat: gaierror: [Errno -2] Name or service not known"
    )


async def test_a_server_that_is_not_a_websocket_gives_a_handshake_error() -> None:
    """A 101 without the right accept token is refused, naming what was wrong."""

    async def liar(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: bm90IHRoZSByaWdodCBvbmU=\r\n\r\n"
        )
        await trio.sleep_forever()

    async with raw_server(liar) as port:
        with trio.fail_after(10):
            detail = await connect_failure(url(port))
    assert "WebSocketHandshakeError: websocket Bad accept token" in detail


async def test_a_server_that_hangs_up_during_the_upgrade_says_so() -> None:
    """TCP accepted, then closed before any answer: a handshake error that says so."""

    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        await stream.aclose()

    async with raw_server(hang_up) as port:
        with trio.fail_after(10):
            detail = await connect_failure(url(port))
    assert "closed the connection before answering the upgrade" in detail


async def test_an_unanswered_upgrade_times_out_after_connect_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No answer to the upgrade: TransportClosed after connect_timeout, naming the phase."""
    async with silent_server(upgrade=False) as port:
        start = trio.current_time()
        detail = await connect_failure(url(port), WebSocketTransport(connect_timeout=7))
    assert trio.current_time() - start == pytest.approx(7)
    assert detail == f"{url(port)}: timed out after 7 s (websocket upgrade)"


async def test_an_unanswered_tls_handshake_times_out_naming_tls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """wss:// to a server that never speaks TLS times out in the TLS handshake."""
    async with silent_server(upgrade=False) as port:
        detail = await connect_failure(
            url(port, scheme="wss"), WebSocketTransport(connect_timeout=5)
        )
    assert detail.endswith("timed out after 5 s (TLS handshake)")


# --- frames trio-websocket does not send ----------------------------------------------


async def test_a_fragmented_message_is_assembled() -> None:
    """A message sent in several frames (a binary start and continuations) arrives whole."""
    parts = [b"a" * 70_000, b"b" * 10, b"", b"c" * 5000]

    async def fragments(stream: trio.SocketStream) -> None:
        ws = await accept_upgrade(stream)
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            await stream.send_all(ws.send(BytesMessage(data=part, message_finished=last)))
        await stream.send_all(ws.send(BytesMessage(data=b"next")))
        await trio.sleep_forever()

    async with raw_server(fragments) as port:
        async with WebSocketTransport(disconnect_timeout=0.5).connect(url(port)) as channel:
            with trio.fail_after(10):
                assert await channel.receive() == b"".join(parts)
                assert await channel.receive() == b"next"


async def test_fragments_over_the_limit_together_close_with_1009() -> None:
    """The limit applies to the whole message, not to each frame."""

    async def fragments(stream: trio.SocketStream) -> None:
        ws = await accept_upgrade(stream)
        for _ in range(3):
            await stream.send_all(ws.send(BytesMessage(data=b"f" * 400, message_finished=False)))
        await trio.sleep_forever()

    async with raw_server(fragments) as port:
        transport = WebSocketTransport(max_message_size=1000, disconnect_timeout=0.5)
        async with transport.connect(url(port)) as channel:
            assert "1009 MESSAGE_TOO_BIG" in await expect_closed(channel)


async def test_a_frame_breaking_the_protocol_closes_with_1002() -> None:
    """A frame with a reserved opcode ends the connection with 1002 PROTOCOL_ERROR."""

    async def garbage(stream: trio.SocketStream) -> None:
        await accept_upgrade(stream)
        await stream.send_all(b"\x83\x00")  # FIN, opcode 3 (reserved), no payload
        await trio.sleep_forever()

    async with raw_server(garbage) as port:
        async with WebSocketTransport(disconnect_timeout=0.5).connect(url(port)) as channel:
            assert (await expect_closed(channel)).startswith(
                "websocket closed (1002 PROTOCOL_ERROR"
            )


# --- TLS ---------------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext, list[str | None]]:
    """(server context, client context trusting it, the SNI names the server saw)."""
    cert, key = self_signed(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    names: list[str | None] = []
    server.sni_callback = lambda _sock, name, _ctx: names.append(name)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client, names


async def test_wss_round_trips_over_tls_with_sni(
    tls: tuple[ssl.SSLContext, ssl.SSLContext, list[str | None]],
) -> None:
    """wss:// wraps the socket in TLS, sends the URL's host as SNI and checks the certificate."""
    server_context, client_context, names = tls
    async with websocket_server(echo, ssl_context=server_context) as (port, _):
        transport = WebSocketTransport(ssl_context=client_context)
        async with transport.connect(url(port, scheme="wss", host="localhost")) as channel:
            await channel.send(b"secret" * 20_000)
            with trio.fail_after(10):
                assert await channel.receive() == b"secret" * 20_000
    assert names == ["localhost"]


async def test_wss_to_an_untrusted_certificate_names_the_verification_failure(
    tls: tuple[ssl.SSLContext, ssl.SSLContext, list[str | None]],
) -> None:
    """The default trust store refuses a self-signed server: TransportClosed says why."""
    server_context, _, _ = tls
    async with websocket_server(echo, ssl_context=server_context) as (port, _):
        with trio.fail_after(10):
            detail = await connect_failure(url(port, scheme="wss", host="localhost"))
    assert "CERTIFICATE_VERIFY_FAILED" in detail


async def test_every_wss_connection_shares_one_trust_store(
    tls: tuple[ssl.SSLContext, ssl.SSLContext, list[str | None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The system trust store is loaded once, not per connection (about 860 KiB RSS each)."""
    from actors.connection import transport as transport_module

    made: list[ssl.SSLContext] = []
    create = ssl.create_default_context

    def counting_context() -> ssl.SSLContext:
        made.append(create())
        return made[-1]

    transport_module.default_ssl_context.cache_clear()
    monkeypatch.setattr(ssl, "create_default_context", counting_context)
    server_context, _, _ = tls
    try:
        async with websocket_server(echo, ssl_context=server_context) as (port, _):
            for _ in range(3):
                with trio.fail_after(10):
                    await connect_failure(url(port, scheme="wss", host="localhost"))
                    await connect_failure(
                        url(port, scheme="wss", host="localhost"), WebSocketTransport()
                    )
    finally:
        transport_module.default_ssl_context.cache_clear()
    assert len(made) == 1


async def test_a_url_without_a_host_is_refused_before_any_connect() -> None:
    """A URL naming no host raises a ValueError naming the URL, not a network error."""
    from actors.connection.errors import WebSocketURLError

    with pytest.raises(WebSocketURLError, match="no host"):
        async with WebSocketTransport().connect("ws:///ws/chat"):
            pass
