"""Shared pieces of the session tests: an event recorder and config builders."""

from __future__ import annotations

from typing import Any

import trio

from runtime.app import Config
from runtime.ref import ActorRef
from sandbox.errors import PairingFailedError
from tests.session.memory_sandbox import MemorySandbox


class Recorder:
    """Collects every event map the runtime emits, in order."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.times: list[float] = []
        self._changed = trio.Event()

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.times.append(trio.current_time())
        self._changed.set()
        self._changed = trio.Event()

    def of(self, name: str) -> list[dict[str, Any]]:
        """Payloads of the events named ``name``."""
        return [event[name] for event in self.events if name in event]

    def connection(self, key: str = "connection") -> list[Any]:
        """The ``key`` values of connection_update events that carry it."""
        return [u[key] for u in self.of("connection_update") if key in u]

    def closes(self) -> list[dict[str, Any]]:
        return [u for u in self.of("connection_update") if u.get("connection") == "close"]

    def opens(self) -> int:
        return self.connection().count("open")

    def time_of(self, predicate: Any, nth: int = 0) -> float:
        """When the ``nth`` event satisfying ``predicate(event)`` was emitted."""
        hits = [t for t, e in zip(self.times, self.events, strict=True) if predicate(e)]
        return hits[nth]

    async def wait_for(self, predicate: Any) -> None:
        """Wait until ``predicate(self)`` holds."""
        while not predicate(self):
            await self._changed.wait()


class Crash:
    """A message no actor handles: casting it crashes the actor on purpose."""


async def crash_and_wait_restart(ref: ActorRef) -> None:
    """Crash the actor behind ``ref`` on purpose and wait until a new incarnation serves."""
    before = ref.statistics().incarnations
    ref.cast_nowait(Crash())
    with trio.fail_after(30):
        while True:
            stats = ref.statistics()
            if stats.incarnations > before and stats.running:
                return
            await trio.sleep(0.001)  # polls the registry; no timing depends on it


def sandbox_config(sb: MemorySandbox, auth: Any, **overrides: Any) -> Config:
    """A Config that connects to ``sb`` over its memory transport."""
    values: dict[str, Any] = {
        "auth": auth,
        "transport": sb.transport,
        "ws_url": sb.url,
        "server_root_key": sb.root_public_key,
        "creds_coalesce_delay": 0.0,
    }
    values.update(overrides)
    return Config(**values)


def scanning_phone(
    sb: MemorySandbox, nursery: trio.Nursery, *, times: int = 1, may_fail: bool = False
) -> Any:
    """An ``on_qr`` callback whose phone scans the first ``times`` QR codes it is shown.

    With ``may_fail`` a link the client never completes is not an error of the test.
    """
    scanned: list[str] = []

    async def scan(qr: str) -> None:
        try:
            await sb.phone.scan(qr)
        except PairingFailedError:
            if not may_fail:
                raise

    def on_qr(qr: str) -> None:
        if len(scanned) < times:
            scanned.append(qr)
            nursery.start_soon(scan, qr)

    on_qr.scanned = scanned  # type: ignore[attr-defined]  # tests read what was scanned
    return on_qr
