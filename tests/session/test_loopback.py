"""Against the real sandbox over loopback websockets (real clock; nothing here sleeps).

The in-process runtime uses the default trio-websocket transport; the CLI tests run
``baileys-trio run`` (``python -m actors.cli run``) in a subprocess and drive
it through its JSON event lines, pairing with the sandbox's phone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.cli import (
    EXIT_LOGGED_OUT,
    EXIT_OK,
    EXIT_REPLACED,
    EXIT_STORE_LOCKED,
)
from runtime.app import AuthLocation, Config, open_runtime
from sandbox.server import Sandbox, open_sandbox
from tests.session.helpers import Recorder

ROOT = Path(__file__).resolve().parents[2]
STEP_TIMEOUT = 60.0


def loopback_config(sb: Sandbox, path: Path, **overrides: Any) -> Config:
    return Config(
        auth=AuthLocation(path),
        ws_url=sb.url,
        server_root_key=sb.root_public_key,
        **overrides,
    )


async def test_pairing_and_restart_over_real_websockets(tmp_path):
    """Fresh dir → QR → scan → 515 → login → 812 pre-keys → open; again: open with no QR."""
    async with open_sandbox() as sb, trio.open_nursery() as nursery:
        events = Recorder()
        scans: list[str] = []

        def on_qr(qr: str) -> None:
            if not scans:
                scans.append(qr)
                nursery.start_soon(sb.phone.scan, qr)

        with trio.fail_after(STEP_TIMEOUT):
            config = loopback_config(sb, tmp_path / "auth", on_qr=on_qr)
            async with open_runtime(config, subscribe=events) as rt:
                await rt.wait_connected()
                creds = await rt.auth_state()
        assert creds.next_pre_key_id == 813
        assert [c["code"] for c in events.closes()][:1] == [515]
        assert sb.statistics().pre_key_uploads == 1
        again = Recorder()
        with trio.fail_after(STEP_TIMEOUT):
            config = loopback_config(sb, tmp_path / "auth", on_qr=on_qr)
            async with open_runtime(config, subscribe=again) as rt:
                await rt.wait_connected()
                assert (await rt.auth_state()).me == creds.me
        assert again.connection("qr") == [] and len(scans) == 1
        nursery.cancel_scope.cancel()


class CliRun:
    """A ``baileys-trio run`` subprocess and its JSON event lines."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []
        self._buffer = b""

    async def next_event(self, **match: Any) -> dict[str, Any]:
        """Read lines until a JSON object matching every item shows up (a value or a test)."""
        assert self.process.stdout is not None
        while True:
            while b"\n" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\n", 1)
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                self.lines.append(line)
                if all(
                    v(line.get(k)) if callable(v) else line.get(k) == v for k, v in match.items()
                ):
                    return line
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                raise AssertionError(f"process ended before {match}; last lines {self.lines[-5:]}")
            self._buffer += chunk

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == name]


def cli_command(sb: Sandbox, auth: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "actors.cli",
        "--log-format",
        "json",
        "run",
        "--auth",
        str(auth),
        "--url",
        sb.url,
        "--server-root-key",
        sb.root_public_key.hex(),
    ]


async def start_cli(sb: Sandbox, auth: Path) -> CliRun:
    process = await trio.lowlevel.open_process(
        cli_command(sb, auth),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return CliRun(process)


async def test_cli_run_pairs_through_json_events_and_exits_0_on_sigint(tmp_path):
    """`run --log-format json`: qr line → phone scans → open line; SIGINT → exit 0; rerun no QR."""
    async with open_sandbox() as sb:
        with trio.fail_after(STEP_TIMEOUT):
            cli = await start_cli(sb, tmp_path / "auth")
            qr = await cli.next_event(event="qr")
            assert qr["qr"].startswith("https://wa.me/settings/linked_devices#")
            await sb.phone.scan(qr["qr"])
            opened = await cli.next_event(event="connection_update", connection="open")
            assert opened["me"].endswith("@s.whatsapp.net")
            assert cli.events("creds_update") and all(
                set(u) <= {"event", "version", "rev", "changed", "account"}
                for u in cli.events("creds_update")
            )
            cli.process.send_signal(signal.SIGINT)
            assert await cli.process.wait() == EXIT_OK
        with trio.fail_after(STEP_TIMEOUT):
            cli = await start_cli(sb, tmp_path / "auth")
            await cli.next_event(event="connection_update", connection="open")
            assert cli.events("qr") == []
            second = await start_cli(sb, tmp_path / "auth")
            assert await second.process.wait() == EXIT_STORE_LOCKED
            sb.faults.stream_error(440)
            assert await cli.process.wait() == EXIT_REPLACED
        with trio.fail_after(STEP_TIMEOUT):
            cli = await start_cli(sb, tmp_path / "auth")
            await cli.next_event(event="connection_update", connection="open")
            sb.faults.failure(401)
            closed = await cli.next_event(event="connection_update", connection="close")
            assert closed["reason"] == "logged_out"
            assert await cli.process.wait() == EXIT_LOGGED_OUT


@pytest.mark.parametrize("backend", ["multi-file", "sqlite"])
async def test_cli_run_with_other_backends_pairs_and_reopens(tmp_path, backend):
    """`run --backend multi-file|sqlite` pairs, then reopens the same location without QR."""
    auth = tmp_path / ("bots.db" if backend == "sqlite" else "auth")
    async with open_sandbox() as sb:
        for round_ in range(2):
            with trio.fail_after(STEP_TIMEOUT):
                process = await trio.lowlevel.open_process(
                    [*cli_command(sb, auth), "--backend", backend, "--account", "alice"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    cwd=ROOT,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                )
                cli = CliRun(process)
                if round_ == 0:
                    await sb.phone.scan((await cli.next_event(event="qr"))["qr"])
                opened = await cli.next_event(event="connection_update", connection="open")
                assert opened["account"] == "alice"
                assert round_ == 0 or cli.events("qr") == []
                process.send_signal(signal.SIGTERM)
                assert await process.wait() == EXIT_OK
