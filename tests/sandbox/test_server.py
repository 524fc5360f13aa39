"""The sandbox on loopback: websocket serving, the phone API, the control channel, I/O faults.

Real sockets, so real time; every wait is bounded by ``trio.fail_after`` (nothing sleeps).
"""

from __future__ import annotations

import pytest
import trio
from trio_websocket import ConnectionClosed

from actors.connection.binary import BinaryNode
from sandbox.control import (
    connections_via_control,
    control_url,
    request_control,
    scan_via_control,
)
from sandbox.errors import ControlError, PairingFailedError, ScanRejectedError
from sandbox.server import Sandbox, open_sandbox
from tests.sandbox.fake_client import FakeDevice
from tests.sandbox.ws_client import WsClient, ws_client

BOUND = 10


async def _register(client: WsClient) -> list[str]:
    await client.handshake(client.device.registration_payload())
    iq = await client.receive()
    return [r.require_bytes().decode() for r in iq.require_child("pair-device").children("ref")]


async def _pair(sb: Sandbox, device: FakeDevice) -> str:
    async with ws_client(sb.url, device, sb.core.identity.root) as client:
        refs = await _register(client)
        async with trio.open_nursery() as nursery:
            linked: list[str] = []

            async def scan() -> None:
                linked.append((await sb.phone.scan(device.qr(refs[0]))).jid)

            nursery.start_soon(scan)
            success = await client.receive()
            await client.send(device.sign_pair_success(success))
        restart = await client.receive()
        assert restart.attr("code") == "515"
        return linked[0]


async def test_the_sandbox_serves_on_loopback_with_its_url_and_root_key() -> None:
    """open_sandbox binds a free port; url is ws://127.0.0.1:PORT/ws/chat; root key is 32 bytes."""
    with trio.fail_after(BOUND):
        async with open_sandbox() as sb:
            assert sb.url.startswith("ws://127.0.0.1:") and sb.url.endswith("/ws/chat")
            assert len(sb.root_public_key) == 32
            assert control_url(sb.url) == sb.control_url


async def test_a_websocket_client_pairs_with_the_phone_and_logs_in() -> None:
    """Over real sockets: register, phone scan, sign, 515, then login → success."""
    with trio.fail_after(BOUND):
        async with open_sandbox() as sb:
            device = FakeDevice()
            jid = await _pair(sb, device)
            assert jid == device.me
            async with ws_client(sb.url, device, sb.core.identity.root) as client:
                await client.handshake(device.login_payload())
                success = await client.receive()
                assert success.tag == "success"
                info = await sb.wait_logged_in(jid)
                assert info.jid == jid
            assert sb.statistics().links == 1


async def test_the_control_channel_scans_and_reports_refusals() -> None:
    """scan over the control channel links; a bad QR and an unknown ref come back as errors."""
    with trio.fail_after(BOUND):
        async with open_sandbox() as sb:
            device = FakeDevice()
            async with ws_client(sb.url, device, sb.core.identity.root) as client:
                refs = await _register(client)
                with pytest.raises(ControlError, match="prefix"):
                    await scan_via_control(sb.url, "not a qr")
                with pytest.raises(ScanRejectedError, match="not issued"):
                    await scan_via_control(sb.url, device.qr("2@nope"))
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(scan_via_control, sb.url, device.qr(refs[0]))
                    success = await client.receive()
                    await client.send(device.sign_pair_success(success))
            reply = await request_control(sb.url, {"op": "statistics"})
            assert reply["statistics"]["links"] == 1


async def test_the_control_channel_lists_connections_and_counts_replaced_logins() -> None:
    """connections names each logged-in device once; a second login of it replaces the first."""
    with trio.fail_after(BOUND):
        async with open_sandbox() as sb:
            device = FakeDevice()
            jid = await _pair(sb, device)
            async with ws_client(sb.url, device, sb.core.identity.root) as first:
                await first.handshake(device.login_payload())
                assert (await first.receive()).tag == "success"
                listed = await connections_via_control(sb.url)
                assert [(c["state"], c["jid"]) for c in listed] == [("logged_in", jid)]
                async with ws_client(sb.url, device, sb.core.identity.root) as second:
                    await second.handshake(device.login_payload())
                    assert (await second.receive()).tag == "success"
                    listed = await connections_via_control(sb.url)
                    logged_in = [c["jid"] for c in listed if c["state"] == "logged_in"]
                    assert logged_in == [jid]
            assert sb.statistics().logins_replaced == 1


async def test_a_scan_whose_client_vanishes_fails_the_link() -> None:
    """If the client disconnects after pair-success, phone.scan raises PairingFailedError."""
    with trio.fail_after(BOUND):
        async with open_sandbox() as sb:
            device = FakeDevice()
            async with ws_client(sb.url, device, sb.core.identity.root) as client:
                refs = await _register(client)
                scanning = trio.open_memory_channel[BaseException | str](1)

                async def scan() -> None:
                    try:
                        await sb.phone.scan(device.qr(refs[0]))
                    except PairingFailedError as exc:
                        scanning[0].send_nowait(exc)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(scan)
                    await client.receive()  # pair-success
                    await client.ws.aclose()
            result = await scanning[1].receive()
            assert isinstance(result, PairingFailedError)


async def test_drop_cuts_the_connection_without_a_close_frame() -> None:
    """faults.drop closes the TCP stream: the client sees an abnormal closure (1006)."""
    with trio.fail_after(BOUND):
        async with open_sandbox() as sb:
            device = FakeDevice()
            jid = await _pair(sb, device)
            async with ws_client(sb.url, device, sb.core.identity.root) as client:
                await client.handshake(device.login_payload())
                await client.receive()
                await sb.wait_logged_in(jid)
                assert sb.faults.drop(jid) == 1
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        await client.receive()
                reason = info.value.reason
                assert reason is not None and reason.code == 1006


async def test_delayed_replies_arrive_after_the_delay() -> None:
    """faults.delay_replies(s) holds every server message s seconds before writing it."""
    with trio.fail_after(BOUND):
        async with open_sandbox() as sb:
            device = FakeDevice()
            await _pair(sb, device)
            sb.faults.delay_replies(0.05)
            async with ws_client(sb.url, device, sb.core.identity.root) as client:
                start = trio.current_time()
                await client.handshake(device.login_payload())
                await client.receive()
                assert trio.current_time() - start >= 0.1  # ServerHello and success each waited


async def test_stalled_new_connections_never_get_a_server_hello() -> None:
    """With stall_new_connections, a client's hello is held: no ServerHello until resumed."""
    with trio.fail_after(BOUND):
        async with open_sandbox() as sb:
            sb.faults.stall_new_connections = True
            device = FakeDevice()
            async with ws_client(sb.url, device, sb.core.identity.root) as client:
                with trio.move_on_after(0.3) as waited:
                    await client.handshake(device.registration_payload())
                assert waited.cancelled_caught
                (info,) = sb.connections()
                assert info.stalled
                sb.faults.stall_new_connections = False
                assert sb.faults.resume(info.conn_id) == 1
                # The held hello is answered now; the client continues from there.
                message = await client.ws.get_message()
                assert isinstance(message, bytes) and len(message) > 100


async def test_many_clients_at_once_each_get_their_own_refs() -> None:
    """Ten clients registering at once each get six refs of their own."""
    with trio.fail_after(BOUND):
        async with open_sandbox() as sb:
            seen: list[list[str]] = []

            async def one() -> None:
                device = FakeDevice()
                async with ws_client(sb.url, device, sb.core.identity.root) as client:
                    seen.append(await _register(client))

            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(one)
            assert len(seen) == 10
            assert len({ref for refs in seen for ref in refs}) == 60


async def test_ping_is_answered_over_the_socket() -> None:
    """A logged-in client's ping gets an iq result with the same id."""
    with trio.fail_after(BOUND):
        async with open_sandbox() as sb:
            device = FakeDevice()
            await _pair(sb, device)
            async with ws_client(sb.url, device, sb.core.identity.root) as client:
                await client.handshake(device.login_payload())
                await client.receive()  # success
                await client.receive()  # edge_routing
                await client.receive()  # ib > offline (the empty offline queue)
                ping = BinaryNode(
                    "iq", {"id": "p", "xmlns": "w:p", "type": "get"}, [BinaryNode("ping", {})]
                )
                await client.send(ping)
                pong = await client.receive()
                assert (pong.attr("id"), pong.attr("type")) == ("p", "result")
            assert sb.statistics().pings == 1
