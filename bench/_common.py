"""Shared pieces of the session, login and soak benches: a sandbox in its own process,
process figures from /proc, percentiles and the machine facts.

The sandbox host (``python -m bench._common sandbox-host``) runs ``open_sandbox`` in
a separate process, so its CPU and memory never count as the runtime's. It prints
one JSON line ``{"url", "root", "admin"}`` and then serves, besides the WhatsApp
protocol, an admin port on loopback: one JSON request line per TCP connection, one
JSON reply line. Requests:

- ``{"op": "scan", "qr": "..."}``: the sandbox's phone scans (one account links
  every device) → ``{"ok": true, "jid": ...}``;
- ``{"op": "drop"}``: cut every live socket at once (no close frame), then sample the
  server's counters every 50 ms → ``{"ok": true, "dropped": n}``;
- ``{"op": "drop_report"}``: the samples since the last drop:
  ``[[t, connections_total, logged_in], ...]`` with t in seconds after the drop;
- ``{"op": "stats"}``: the core's counters plus ``logged_in`` (live logged-in sockets).

Node (bench/sessions_baileys.mjs) speaks the same admin protocol, so both clients
are driven and observed the same way.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- figures ------------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    """The ``q`` quantile by nearest rank (no interpolation: a sample that happened)."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def rss_kib(pid: int | str = "self") -> int:
    """Resident set size of a process in KiB (VmRSS from /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time of a process so far (/proc/PID/stat utime + stime)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def disk_facts(path: Path) -> str:
    """The filesystem type and device that hold ``path`` (from /proc/mounts)."""
    best = ("", "?", "?")
    resolved = str(path.resolve())
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, fstype = line.split()[:3]
            if resolved.startswith(mount) and len(mount) >= len(best[0]):
                best = (mount, fstype, device)
    except OSError:
        pass
    return f"{best[1]} on {best[2]} (mounted at {best[0] or '?'})"


def machine_facts(workdir: Path | None = None) -> dict[str, Any]:
    """Cores, Python, platform, disk of the working folder, and the load average now."""
    load = os.getloadavg()
    facts: dict[str, Any] = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "trio": trio.__version__,
        "disk": disk_facts(workdir or REPO),
        "loadavg_1m_at_start": round(load[0], 2),
    }
    node = node_version()
    if node:
        facts["node"] = node
    return facts


def node_version() -> str | None:
    if shutil.which("node") is None:
        return None
    proc = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=30)
    return proc.stdout.strip() or None


def print_machine(facts: dict[str, Any]) -> None:
    print(
        f"machine: {facts['cores']} cores (shared), Python {facts['python']}, "
        f"trio {facts['trio']}, node {facts.get('node', 'absent')}, {facts['platform']}; "
        f"disk {facts['disk']}; load average {facts['loadavg_1m_at_start']}"
    )


def baileys_root() -> tuple[Path | None, str]:
    """The reference peer's folder (node_modules/baileys inside), or None and why not."""
    if shutil.which("node") is None:
        return None, "node not on PATH"
    try:
        from tests.baileys_peer import install_peer

        return install_peer().root, ""
    except Exception as exc:  # the peer is optional for benches: say why it is absent
        return None, f"reference peer unavailable: {exc}"


# --- the sandbox host (child side) ---------------------------------------------------


@dataclass
class _DropWatch:
    started: float = 0.0
    samples: list[tuple[float, int, int]] = dataclasses.field(default_factory=list)


AdminAnswer = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""One admin request in, its JSON reply out (``{"ok": ...}``)."""


async def serve_admin(sb: Any, answer: AdminAnswer, seconds: float, nursery: trio.Nursery) -> None:
    """Serve ``answer`` as one-line JSON requests on a loopback port for ``seconds``.

    Prints the sandbox's address, root key and the admin port as one JSON line (what
    the parent side reads), then cancels ``nursery`` when the lifetime is over.
    """

    async def handle(stream: trio.SocketStream) -> None:
        buffer = b""
        async with stream:
            while b"\n" not in buffer:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                buffer += chunk
            try:
                reply = await answer(json.loads(buffer.split(b"\n", 1)[0]))
            except Exception as exc:  # the admin caller gets the reason, the host lives on
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            await stream.send_all(json.dumps(reply).encode() + b"\n")

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    print(json.dumps({"url": sb.url, "root": sb.root_public_key.hex(), "admin": port}), flush=True)
    with trio.move_on_after(seconds):
        await trio.sleep_forever()
    nursery.cancel_scope.cancel()


async def _serve_host(seconds: float) -> None:
    from sandbox.core import ConnState
    from sandbox.server import open_sandbox

    watch = _DropWatch()

    async with open_sandbox() as sb, trio.open_nursery() as nursery:

        def logged_in() -> int:
            return sum(1 for c in sb.connections() if c.state is ConnState.LOGGED_IN)

        async def sample(scope: trio.CancelScope) -> None:
            with scope:
                while True:
                    stats = sb.statistics()
                    watch.samples.append(
                        (trio.current_time() - watch.started, stats.connections_total, logged_in())
                    )
                    await trio.sleep(0.05)

        sampler = trio.CancelScope()

        async def answer(request: dict[str, Any]) -> dict[str, Any]:
            nonlocal sampler
            op = request.get("op")
            if op == "scan":
                with trio.fail_after(float(request.get("timeout", 60))):
                    linked = await sb.phone.scan(str(request["qr"]))
                return {"ok": True, "jid": linked.jid}
            if op == "drop":
                sampler.cancel()
                watch.started = trio.current_time()
                watch.samples = []
                dropped = sb.faults.drop(None)
                sampler = trio.CancelScope(deadline=trio.current_time() + 180)
                nursery.start_soon(sample, sampler)
                return {"ok": True, "dropped": dropped}
            if op == "drop_report":
                return {"ok": True, "samples": watch.samples}
            if op == "stats":
                stats = dataclasses.asdict(sb.statistics())
                return {"ok": True, "logged_in": logged_in(), **stats}
            return {"ok": False, "error": f"unknown op {op!r}"}

        await serve_admin(sb, answer, seconds, nursery)


# --- the sandbox host (parent side) --------------------------------------------------


@dataclass(frozen=True)
class HostInfo:
    url: str
    root: str
    admin: int
    pid: int


async def admin(port: int, request: dict[str, Any], *, limit: float = 90.0) -> dict[str, Any]:
    """One admin request to a sandbox host; raises RuntimeError on ``ok: false``."""
    with trio.fail_after(limit):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(json.dumps(request).encode() + b"\n")
            buffer = b""
            while b"\n" not in buffer:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    raise RuntimeError(f"sandbox host closed the admin connection on {request}")
                buffer += chunk
    reply: dict[str, Any] = json.loads(buffer)
    if not reply.get("ok"):
        raise RuntimeError(f"sandbox host: {reply.get('error')}")
    return reply


@asynccontextmanager
async def sandbox_host(lifetime: float = 1800.0) -> AsyncIterator[HostInfo]:
    """A sandbox host subprocess for the block (killed at the end, bounded by ``lifetime``)."""
    process = await trio.lowlevel.open_process(
        [PYTHON, "-m", "bench._common", "sandbox-host", str(lifetime)],
        stdout=subprocess.PIPE,
        cwd=str(REPO),
    )
    try:
        assert process.stdout is not None
        buffer = b""
        with trio.fail_after(60):
            while b"\n" not in buffer:
                chunk = await process.stdout.receive_some(4096)
                if not chunk:
                    raise RuntimeError("the sandbox host exited before printing its address")
                buffer += chunk
        info = json.loads(buffer.split(b"\n", 1)[0])
        yield HostInfo(info["url"], info["root"], int(info["admin"]), process.pid)
    finally:
        process.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await process.wait()


def wall() -> float:
    return time.perf_counter()


class JsonLines:
    """The JSON lines a child process prints, read as they arrive (other lines skipped)."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []
        self._buffer = b""

    async def next(self) -> dict[str, Any] | None:
        """The next JSON line, or None once the process closed its stdout."""
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            try:
                chunk = await self.process.stdout.receive_some(65536)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                chunk = b""
            if not chunk:
                return None
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\n", 1)
        try:
            line = json.loads(raw)
        except ValueError:
            return await self.next()
        if not isinstance(line, dict):
            return await self.next()
        self.lines.append(line)
        return line


def run_command(url: str, root_hex: str, auth: Path) -> list[str]:
    """``baileys-trio run`` with JSON event lines, against a sandbox.

    The installed console script itself, so a login measurement includes its start-up.
    """
    return [
        str(Path(PYTHON).parent / "baileys-trio"),
        "--log-format",
        "json",
        "run",
        "--auth",
        str(auth),
        "--url",
        url,
        "--server-root-key",
        root_hex,
    ]


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "sandbox-host":
        trio.run(_serve_host, float(sys.argv[2]) if len(sys.argv) > 2 else 1800.0)
    else:
        sys.exit("usage: python -m bench._common sandbox-host [SECONDS]")
