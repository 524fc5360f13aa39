"""SIGKILL of a running ``baileys-trio run`` during pairing and pre-key upload, again and again.

The product's promise: once the sandbox acknowledged the pairing (the phone's scan
completed, which needs our pair-device-sign reply, which we send only after the
identity is durable), no later run ever shows a QR again: it logs in with the
saved creds. Kill moments are random (seeded, printed on failure) and anchored to
what the process reports: its start, its QR, its reconnect after 515 (the pre-key
upload follows), its open.
"""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path
from typing import Any

import trio

from actors.cli import EXIT_LOGGED_OUT
from sandbox.server import Sandbox, open_sandbox
from tests.session.test_loopback import CliRun, start_cli

ROUNDS = 8
KILLS_PER_ROUND = 3
SEED = int(os.environ.get("KILL9_SEED", "20261127"))


class Pairing:
    """One auth directory's pairing, as the sandbox saw it (its link count is the truth)."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.base = sb.statistics().links
        self.qrs_after_ack = 0
        self.scans = 0

    @property
    def acknowledged(self) -> bool:
        """The sandbox completed the link: it received our pair-device-sign reply."""
        return self.sb.statistics().links > self.base


async def read_all(cli: CliRun, seen: dict[str, trio.Event], on_qr: Any) -> None:
    """Read event lines until the process dies, setting ``seen`` flags as they appear."""
    try:
        while True:
            line = await cli.next_event()
            update = line.get("event")
            if update == "qr":
                seen["qr"].set()
                on_qr(line["qr"])
            elif update == "connection_update":
                if line.get("connection") == "close" and line.get("code") == 515:
                    seen["login"].set()
                if line.get("connection") == "open":
                    seen["open"].set()
                if line.get("connection") == "connecting":
                    seen["start"].set()
    except AssertionError:
        pass  # the process ended (a logged-out run exits by itself)
    for event in seen.values():
        event.set()  # nothing more will come: release whoever waits


async def one_run(sb: Sandbox, auth: Path, rng: random.Random, pairing: Pairing) -> str:
    """Start the CLI, SIGKILL it at a random moment; returns the aim and what it had reached.

    Not yet paired: the kill comes 0-60 ms after the QR (the phone scans at once), which
    spans the scan, the durable identity commit, the reply, the 515, the login and the
    pre-key commit and upload on loopback. Paired: 0-40 ms after it starts connecting.
    """
    cli = await start_cli(sb, auth)
    seen = {name: trio.Event() for name in ("start", "qr", "login", "open")}
    anchor = "start" if pairing.acknowledged else "qr"
    delay = rng.uniform(0.0, 0.04 if pairing.acknowledged else 0.06)
    async with trio.open_nursery() as nursery:

        async def scan(qr: str) -> None:
            pairing.scans += 1
            with trio.move_on_after(10):
                try:
                    await sb.phone.scan(qr)
                except Exception:
                    return  # the client died before its reply: not acknowledged

        def on_qr(qr: str) -> None:
            if pairing.acknowledged:
                pairing.qrs_after_ack += 1
            else:
                nursery.start_soon(scan, qr)

        nursery.start_soon(read_all, cli, seen, on_qr)
        with trio.move_on_after(20):
            await seen[anchor].wait()
        await trio.sleep(delay)
        reached = [name for name in ("start", "qr", "login", "open") if seen[name].is_set()]
        cli.process.send_signal(signal.SIGKILL)
        await cli.process.wait()
        nursery.cancel_scope.cancel()
    return f"{anchor}+{delay:.2f}s:{'/'.join(reached) or 'nothing'}"


async def finish(sb: Sandbox, auth: Path, pairing: Pairing) -> str:
    """A run that is not killed: once pairing was acknowledged it must open with no QR.

    Not acknowledged: either the identity never became durable (a QR again, which we
    scan) or it did but the reply never reached the server, which then refuses the
    login (401: the run ends logged out, exit 3). Both are honest outcomes of a
    pairing the phone never confirmed. Returns which one happened.
    """
    with trio.fail_after(60):
        cli = await start_cli(sb, auth)
        if pairing.acknowledged:
            await cli.next_event(event="connection_update", connection="open")
            assert cli.events("qr") == [], f"seed {SEED}: a QR after the acknowledged pairing"
            outcome = "login"
        else:
            first = await cli.next_event(event=lambda e: e in ("qr", "session_ended"))
            if first["event"] == "session_ended":
                assert first["reason"] == "logged_out"
                assert await cli.process.wait() == EXIT_LOGGED_OUT
                return "unacknowledged-then-401"
            await sb.phone.scan(first["qr"])
            await cli.next_event(event="connection_update", connection="open")
            outcome = "paired-again-before-ack"
        cli.process.send_signal(signal.SIGINT)
        assert await cli.process.wait() == 0
    return outcome


async def test_sigkill_during_pairing_and_prekey_upload_never_forces_a_repairing(tmp_path):
    """≥ 20 SIGKILLs at random moments: after the pairing was acknowledged, never a QR again."""
    rng = random.Random(SEED)
    kills: list[str] = []
    finishes: list[str] = []
    async with open_sandbox() as sb:
        for round_ in range(ROUNDS):
            auth = tmp_path / f"auth{round_}"
            pairing = Pairing(sb)
            for _ in range(KILLS_PER_ROUND):
                kills.append(await one_run(sb, auth, rng, pairing))
            finishes.append(await finish(sb, auth, pairing))
            assert pairing.qrs_after_ack == 0, f"seed {SEED}: QR after the acknowledged pairing"
            assert sb.statistics().links - pairing.base <= 1, f"seed {SEED}: paired twice"
    print(f"kill9 seed {SEED}: {kills} {finishes}")
    assert len(kills) >= 20
    # The kills must land inside pairing and login, not only before or after them.
    inside = [k for k in kills if "open" not in k.split(":")[1] and "qr" in k.split(":")[1]]
    assert inside, f"seed {SEED}: no kill landed during pairing or login: {kills}"
