"""`baileys-trio sandbox` and `baileys-trio phone scan`, through sandbox/cli.py's entry points."""

from __future__ import annotations

import argparse
import io
import signal
import subprocess
import sys

import pytest
import trio

from actors.connection.certs import RootKey
from sandbox.cli import configure_phone, configure_sandbox, run_phone, run_sandbox
from sandbox.server import open_sandbox
from stores.keys import generate_key_pair
from tests.sandbox.fake_client import FakeDevice
from tests.sandbox.ws_client import ws_client

BOUND = 15


def _phone_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_phone(parser)
    return parser.parse_args(argv)


async def _read_lines(stream: trio.abc.ReceiveStream, count: int) -> list[str]:
    data = b""
    while data.count(b"\n") < count:
        chunk = await stream.receive_some(4096)
        assert chunk, f"stdout ended after {data!r}"
        data += chunk
    return data.decode().splitlines()[:count]


async def test_phone_scan_exits_0_once_the_sandbox_linked_the_device(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`phone scan QR --sandbox URL` prints the linked JID and exits 0 after the link."""
    with trio.fail_after(BOUND):
        async with open_sandbox() as sb:
            device = FakeDevice()
            async with ws_client(sb.url, device, sb.core.identity.root) as client:
                await client.handshake(device.registration_payload())
                iq = await client.receive()
                ref = iq.require_child("pair-device").children("ref")[0].require_bytes().decode()
                args = _phone_args("scan", device.qr(ref), "--sandbox", sb.url)
                out = io.StringIO()
                async with trio.open_nursery() as nursery:
                    codes: list[int] = []

                    async def scan() -> None:
                        codes.append(
                            await trio.to_thread.run_sync(lambda: run_phone(args, out=out))
                        )

                    nursery.start_soon(scan)
                    success = await client.receive()
                    await client.send(device.sign_pair_success(success))
            assert codes == [0]
            assert out.getvalue().strip() == device.me


async def test_phone_scan_exits_1_naming_why_the_sandbox_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A QR the sandbox never issued: exit 1, one stderr line naming ScanRejectedError."""
    with trio.fail_after(BOUND):
        async with open_sandbox() as sb:
            args = _phone_args("scan", FakeDevice().qr("2@unknown"), "--sandbox", sb.url)
            code = await trio.to_thread.run_sync(lambda: run_phone(args, out=io.StringIO()))
    assert code == 1
    assert "ScanRejectedError" in capsys.readouterr().err


def test_phone_scan_needs_the_sandbox_url() -> None:
    """`phone scan QR` without --sandbox is a usage error."""
    with pytest.raises(SystemExit):
        _phone_args("scan", "qr")


def test_sandbox_command_defaults_to_loopback_and_any_port() -> None:
    """`sandbox` binds 127.0.0.1 on a free port unless told otherwise."""
    parser = argparse.ArgumentParser()
    configure_sandbox(parser)
    args = parser.parse_args([])
    assert (args.host, args.port, args.root_key) == ("127.0.0.1", 0, None)


async def test_sandbox_command_prints_url_and_root_then_serves_until_sigterm() -> None:
    """First line the URL, second the root key hex (the one given); serves; SIGTERM → exit 0."""
    root = generate_key_pair()
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "sandbox.cli", "sandbox", "--root-key", root.private.hex()],
        stdout=subprocess.PIPE,
    )
    try:
        with trio.fail_after(BOUND):
            assert process.stdout is not None
            url, root_hex = await _read_lines(process.stdout, 2)
            assert url.startswith("ws://127.0.0.1:") and url.endswith("/ws/chat")
            assert root_hex == root.public.hex()
            device = FakeDevice()
            # The served chain verifies under the printed root (the client checks it).
            async with ws_client(url, device, RootKey(bytes.fromhex(root_hex))) as client:
                await client.handshake(device.registration_payload())
                iq = await client.receive()
                assert iq.require_child("pair-device")
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()


def test_the_commands_plug_into_the_baileys_trio_cli() -> None:
    """runtime.cli's parser has `sandbox` and `phone scan ... --sandbox` from cli_commands."""
    from runtime.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["sandbox", "--port", "8765"])
    assert (args.host, args.port, args._run) == ("127.0.0.1", 8765, run_sandbox)
    args = parser.parse_args(["phone", "scan", "QR", "--sandbox", "ws://127.0.0.1:1/ws/chat"])
    assert (args.action, args.text, args._run) == ("scan", "QR", run_phone)


async def test_phone_scan_can_scan_as_another_account() -> None:
    """--user picks which of the sandbox's phones scans; an unknown one is refused."""
    with trio.fail_after(BOUND):
        async with open_sandbox() as sb:
            shop = sb.new_phone(biz_name="Shop")
            device = FakeDevice()
            async with ws_client(sb.url, device, sb.core.identity.root) as client:
                await client.handshake(device.registration_payload())
                iq = await client.receive()
                ref = iq.require_child("pair-device").children("ref")[0].require_bytes().decode()
                nobody = _phone_args("scan", device.qr(ref), "--sandbox", sb.url, "--user", "1")
                code = await trio.to_thread.run_sync(lambda: run_phone(nobody, out=io.StringIO()))
                assert code == 1
                args = _phone_args("scan", device.qr(ref), "--sandbox", sb.url, "--user", shop.user)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        trio.to_thread.run_sync, lambda: run_phone(args, out=io.StringIO())
                    )
                    success = await client.receive()
                    await client.send(device.sign_pair_success(success))
            assert device.me is not None and device.me.startswith(shop.user + ":")
