"""Run tests/sandbox/baileys_client.mjs (a real Baileys v7 client) under trio, line by line."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from tests.baileys_peer import BaileysPeer

SCRIPT = Path(__file__).with_name("baileys_client.mjs")
Event = dict[str, Any]


class NodeClient:
    """A running Baileys client: its JSON events, in order, as they arrive."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.events: list[Event] = []
        self._buffer = b""
        self._stderr = b""

    async def next_event(self, match: Callable[[Event], bool], *, within: float) -> Event:
        """The first event (past or new) for which ``match`` holds; fails after ``within`` s."""
        seen = 0
        with trio.fail_after(within):
            while True:
                for event in self.events[seen:]:
                    if match(event):
                        self.events.remove(event)
                        return event
                seen = len(self.events)
                await self._read()

    async def _read(self) -> None:
        assert self.process.stdout is not None
        chunk = await self.process.stdout.receive_some(65536)
        if not chunk:
            raise AssertionError(f"node exited; events so far: {self.events}")
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self.events.append(json.loads(line))


@asynccontextmanager
async def baileys_client(
    peer: BaileysPeer,
    *,
    url: str,
    auth_dir: Path,
    reconnects: int = 0,
    hold_ms: int = 0,
    timeout_ms: int = 40000,
    qr_timeout_ms: int | None = None,
    keepalive_ms: int = 30000,
    pairing_phone: str | None = None,
) -> AsyncIterator[NodeClient]:
    """Start the Baileys client; it is killed on exit from the block if still running."""
    env = dict(
        os.environ,
        SB_URL=url,
        SB_AUTH=str(auth_dir),
        SB_RECONNECTS=str(reconnects),
        SB_HOLD_MS=str(hold_ms),
        SB_TIMEOUT_MS=str(timeout_ms),
        SB_KEEPALIVE_MS=str(keepalive_ms),
    )
    if qr_timeout_ms is not None:
        env["SB_QR_TIMEOUT_MS"] = str(qr_timeout_ms)
    if pairing_phone is not None:
        env["SB_PAIRING_PHONE"] = pairing_phone
    process = await trio.lowlevel.open_process(
        ["node", "--input-type=module", "-e", SCRIPT.read_text()],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=str(peer.root),
        env=env,
    )
    try:
        yield NodeClient(process)
    finally:
        if process.returncode is None:
            process.kill()
        with trio.move_on_after(5) as scope:
            scope.shield = True
            await process.wait()
