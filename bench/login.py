"""Login latency: process start → ``open`` with saved creds, ours vs Baileys v7, p50/p99.

Against one sandbox subprocess (``baileys-trio sandbox``), each side first pairs an
auth folder once (the sandbox's phone scans the QR), then starts a fresh process
``RUNS`` times and times from just before the spawn to the line saying the
connection is open:

- ours: ``baileys-trio run --log-format json`` (the installed console script),
  until ``{"event": "connection_update", "connection": "open"}``;
  stopped with SIGINT (an orderly stop) after each run;
- Baileys: bench/login_baileys.mjs (one socket, useMultiFileAuthState), until its
  ``connection.update`` says open; it exits by itself.

Runs alternate (ours, Baileys, ours, ...) so drift on the shared machine hits both.
Each run is split into start-up (spawn → first line, printed once the modules are
loaded) and connect → open (the state machine: websocket, Noise handshake, login
node, success). ``python -m bench login`` or ``python -m bench.login [--runs N]``.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from bench._common import (
    PYTHON,
    REPO,
    JsonLines,
    baileys_root,
    machine_facts,
    percentile,
    print_machine,
    run_command,
    wall,
)

RUNS = 10
NODE_SCRIPT = Path(__file__).resolve().parent / "login_baileys.mjs"
STEP_LIMIT = 60.0
SELF_EXIT = 10.0
"""Seconds a process that ends on its own once open gets before it is sent SIGINT."""


def sandbox_argv() -> list[str]:
    script = Path(PYTHON).parent / "baileys-trio"
    return [str(script), "sandbox"] if script.exists() else [PYTHON, "-m", "runtime", "sandbox"]


async def start_sandbox() -> tuple[trio.Process, str, str]:
    process = await trio.lowlevel.open_process(sandbox_argv(), stdout=subprocess.PIPE, cwd=REPO)
    assert process.stdout is not None
    buffer = b""
    with trio.fail_after(STEP_LIMIT):
        while buffer.count(b"\n") < 2:
            chunk = await process.stdout.receive_some(4096)
            if not chunk:
                raise RuntimeError("baileys-trio sandbox exited before printing URL and key")
            buffer += chunk
    url, root = buffer.decode().splitlines()[:2]
    return process, url, root


async def scan(url: str, qr: str) -> None:
    from sandbox.control import scan_via_control

    await scan_via_control(url, qr)


def is_open(line: dict[str, Any]) -> bool:
    if line.get("event") == "open":
        return True
    return line.get("event") == "connection_update" and line.get("connection") == "open"


async def one_run(
    argv: list[str], url: str, *, cwd: Path, pair: bool, exits_itself: bool = False
) -> dict[str, Any]:
    """Spawn, read lines until open (scanning a QR when pairing); time the steps.

    ``exits_itself``: the process ends on its own once open (Baileys' script, which
    saves its creds after open): it gets up to ``SELF_EXIT`` seconds before SIGINT,
    since a SIGINT amid useMultiFileAuthState's creds write leaves a torn creds.json
    and the next run a new device.
    """
    started = wall()
    process = await trio.lowlevel.open_process(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=cwd
    )
    lines = JsonLines(process)
    first: float | None = None
    connecting: float | None = None
    opened: float | None = None
    states: list[str] = []
    qrs = 0
    try:
        with trio.fail_after(STEP_LIMIT):
            async with trio.open_nursery() as nursery:
                while True:
                    line = await lines.next()
                    if line is None:
                        raise RuntimeError(f"{argv[:3]} ended before open: {lines.lines[-5:]}")
                    now = wall()
                    first = first if first is not None else now
                    event = str(line.get("event"))
                    state = line.get("connection")
                    if event == "qr":
                        qrs += 1
                        if not pair:
                            raise RuntimeError("a QR on a login with saved creds")
                        nursery.start_soon(scan, url, str(line["qr"]))
                    if event == "connecting" or state == "connecting":
                        connecting = connecting if connecting is not None else now
                    if state is not None:
                        states.append(str(state))
                    if is_open(line) and (not pair or qrs > 0):
                        opened = now
                        break
    finally:
        if exits_itself:
            with trio.move_on_after(SELF_EXIT) as scope:
                scope.shield = True
                await process.wait()
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        with trio.move_on_after(15) as scope:
            scope.shield = True
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert opened is not None and first is not None
    return {
        "total_ms": (opened - started) * 1000,
        "startup_ms": (first - started) * 1000,
        "connect_to_open_ms": (opened - (connecting or first)) * 1000,
        "states": states,
        "exit": process.returncode,
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len(runs)}
    for key in ("total_ms", "startup_ms", "connect_to_open_ms"):
        values = [r[key] for r in runs]
        out[key] = {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99)}
    out["states"] = runs[0]["states"] if runs else []
    out["exits"] = sorted({r["exit"] for r in runs})
    return out


async def measure(runs: int, tmp: Path) -> dict[str, Any]:
    peer, why = baileys_root()
    sandbox, url, root = await start_sandbox()
    try:
        ours_argv = run_command(url, root, tmp / "ours")
        await one_run(ours_argv, url, cwd=REPO, pair=True)
        node_argv: list[str] | None = None
        if peer is not None:
            node_argv = ["node", str(NODE_SCRIPT), str(peer), url, str(tmp / "baileys"), "login"]
            await one_run(node_argv, url, cwd=peer, pair=True, exits_itself=True)
        ours: list[dict[str, Any]] = []
        theirs: list[dict[str, Any]] = []
        for _ in range(runs):
            ours.append(await one_run(ours_argv, url, cwd=REPO, pair=False))
            if node_argv is not None and peer is not None:
                theirs.append(
                    await one_run(node_argv, url, cwd=peer, pair=False, exits_itself=True)
                )
        bare_python = await bare_start([PYTHON, "-c", "pass"], runs)
        bare_node = await bare_start(["node", "-e", "0"], runs) if peer is not None else None
    finally:
        sandbox.send_signal(signal.SIGINT)
        with trio.move_on_after(10):
            await sandbox.wait()
        if sandbox.returncode is None:
            sandbox.kill()
    return {
        "ours": summary(ours),
        "baileys": summary(theirs) if theirs else {"skipped": why},
        "bare_interpreter_ms": {"python": bare_python, "node": bare_node},
    }


async def bare_start(argv: list[str], runs: int) -> float:
    """p50 of an empty interpreter's start to exit: the floor under each process start."""
    samples = []
    for _ in range(runs):
        started = wall()
        await trio.run_process(argv, stdout=subprocess.DEVNULL)
        samples.append((wall() - started) * 1000)
    return percentile(samples, 0.5)


def print_table(result: dict[str, Any]) -> None:
    ours, theirs = result["ours"], result["baileys"]
    print(f"{'login with saved creds (ms)':34} {'ours':>9} {'Baileys':>9} {'ours/B':>7}")
    for key, label in (
        ("total_ms", "process start -> open"),
        ("startup_ms", "  start-up (to first line)"),
        ("connect_to_open_ms", "  connecting -> open"),
    ):
        for q in ("p50", "p99"):
            a = ours[key][q]
            b = theirs[key][q] if key in theirs else None
            r = f"{a / b:.2f}" if b else "-"
            shown = f"{b:.0f}" if b is not None else "-"
            print(f"{label + ' ' + q:34} {a:>9.0f} {shown:>9} {r:>7}")
    bare = result["bare_interpreter_ms"]
    node = bare["node"]
    print(
        f"empty interpreter start, p50: python {bare['python']:.0f} ms, node {node:.0f} ms"
        if node is not None
        else f"python {bare['python']:.0f} ms"
    )
    print(f"ours: states {' -> '.join(ours['states'])}; exit codes after SIGINT {ours['exits']}")
    if "skipped" in theirs:
        print(f"Baileys: skipped: {theirs['skipped']}")
    print(f"runs: {ours['runs']} each, alternating; p99 of {ours['runs']} runs is their maximum")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Pair once each, time ``RUNS`` logins each, print the table, return the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.login")
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args(list(argv) if argv is not None else [])
    facts = machine_facts()
    print_machine(facts)
    with tempfile.TemporaryDirectory(prefix="bench-login-") as tmp:
        result = trio.run(measure, args.runs, Path(tmp))
    print_table(result)
    return {"machine": facts, **result}


if __name__ == "__main__":
    main(sys.argv[1:])
