"""The sandbox tells a person watching it about connections, pairings and logins, one line each."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import trio

from actors.connection.certs import RootKey
from runtime.app import AuthLocation, Config, open_runtime
from sandbox.server import open_sandbox
from tests.sandbox.fake_client import FakeDevice
from tests.sandbox.ws_client import ws_client

BOUND = 30


async def test_a_bot_pairing_then_logging_in_again_is_told_line_by_line(tmp_path: Path) -> None:
    """open, pair asked, paired, closed (515), open, logged in, closed: in that order."""
    told, heard = trio.open_memory_channel[str](100)
    lines: list[str] = []
    with trio.fail_after(BOUND):
        async with open_sandbox(on_event=told.send_nowait) as sb, trio.open_nursery() as nursery:

            def on_qr(qr: str) -> None:
                nursery.start_soon(sb.phone.scan, qr)

            config = Config(
                auth=AuthLocation(tmp_path / "auth"),
                ws_url=sb.url,
                server_root_key=sb.root_public_key,
                on_qr=on_qr,
            )
            async with open_runtime(config) as rt:
                await rt.wait_connected()
                jid = sb.connections()[0].jid
            async for line in heard:
                lines.append(line)
                if line == "connection 2 closed":
                    break
            nursery.cancel_scope.cancel()
    assert lines[0].startswith("connection 1 opened from 127.0.0.1:")
    assert lines[1:] == [
        "connection 1: a new device asks to pair (QR codes sent)",
        f"paired: the phone linked {jid}",
        "connection 1 closed",
        lines[4],
        f"connection 2: {jid} logged in",
        "connection 2 closed",
    ]
    assert lines[4].startswith("connection 2 opened from 127.0.0.1:")


async def test_the_sandbox_command_prints_events_on_stderr_not_stdout() -> None:
    """`baileys-trio sandbox`: stdout stays URL and root key; each connection is a stderr line."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "sandbox.cli", "sandbox"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        with trio.fail_after(BOUND):
            assert process.stdout is not None and process.stderr is not None
            out = b""
            while out.count(b"\n") < 2:
                out += await process.stdout.receive_some(4096)
            url, root_hex = out.decode().splitlines()
            device = FakeDevice()
            async with ws_client(url, device, RootKey(bytes.fromhex(root_hex))) as client:
                await client.handshake(device.registration_payload())
                await client.receive()
            err = b""
            while b"closed" not in err:
                err += await process.stderr.receive_some(4096)
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
            assert await process.stdout.receive_some(4096) == b""
    finally:
        if process.returncode is None:
            process.kill()
    events = [line.split(" ", 1)[1] for line in err.decode().splitlines()]
    assert events[0].startswith("connection 1 opened from 127.0.0.1:")
    assert events[1:] == [
        "connection 1: a new device asks to pair (QR codes sent)",
        "connection 1 closed",
    ]
