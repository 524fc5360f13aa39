"""``baileys-trio run --pairing-phone`` in a subprocess, and SIGKILL between the code and the end.

The promise: nothing of a code pairing is durable before pair-success, so a process
killed anywhere between showing the code and committing the identity leaves a folder
that is still a new device (no ``me``, not ``registered``); the next run asks for a
new code and pairs with it. Once the sandbox counted the link (it got our reply,
sent only after the identity was durable), the folder is paired and the next run
logs in without a code: 0 re-pairings once pairing was acknowledged. Kill moments
after the phone typed the code are random (seeded, printed on failure). Real clock,
loopback websockets.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import trio

from actors.cli import EXIT_LOGGED_OUT, EXIT_OK
from sandbox.errors import SandboxError
from sandbox.server import Sandbox, open_sandbox
from stores.auth import use_native_file_auth_state
from tests.session.test_loopback import ROOT, STEP_TIMEOUT, CliRun, cli_command

SEED = int(os.environ.get("PAIRING_KILL_SEED", "20261206"))
ROUNDS = 3
IDENTITY_DURABLE = "identity durable"
"""``kill_round``'s moment: the ``creds_update`` line naming ``me`` (published once durable)."""


async def start_code_cli(sb: Sandbox, auth: Path) -> CliRun:
    """``run --pairing-phone <the sandbox's first phone>``, JSON lines on stdout."""
    process = await trio.lowlevel.open_process(
        [*cli_command(sb, auth), "--pairing-phone", "+" + sb.phone.user],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return CliRun(process)


async def kill(cli: CliRun) -> None:
    cli.process.send_signal(signal.SIGKILL)
    with trio.fail_after(10):
        await cli.process.wait()


async def saved_me(auth: Path) -> tuple[object, bool]:
    """What the folder holds now: (creds.me, creds.registered)."""
    async with await use_native_file_auth_state(auth) as opened:
        creds = opened.state.creds
        return creds.me, creds.registered


async def type_code(sb: Sandbox, code: str, linked: list[str], settled: trio.Event) -> None:
    """The phone types ``code``; a link the killed client never finishes is no error here.

    ``settled`` is set once the phone knows the outcome: linked, or failed because the
    device's connection ended before its pair-device-sign reply arrived."""
    try:
        linked.append((await sb.phone.link_code(code)).jid)
    except SandboxError:
        pass
    finally:
        settled.set()


async def test_sigkill_after_the_code_leaves_a_new_device_that_asks_again(tmp_path):
    """Killed once the code is shown: the folder is unpaired; a rerun shows a new code.

    The new code pairs through ``baileys-trio phone link-code``; SIGINT exits 0 and a
    third run logs in without any code.
    """
    auth = tmp_path / "auth"
    async with open_sandbox() as sb:
        with trio.fail_after(STEP_TIMEOUT):
            cli = await start_code_cli(sb, auth)
            first = await cli.next_event(event="pairing_code")
            await kill(cli)
        assert await saved_me(auth) == (None, False)
        with trio.fail_after(STEP_TIMEOUT):
            cli = await start_code_cli(sb, auth)
            second = await cli.next_event(event="pairing_code")
            assert second["code"] != first["code"] and second["account"] == "default"
            phone = [sys.executable, "-m", "runtime", "phone", "link-code", second["code"]]
            done = await trio.run_process(
                [*phone, "--sandbox", sb.url], capture_stdout=True, cwd=ROOT
            )
            opened = await cli.next_event(event="connection_update", connection="open")
            assert opened["me"] == done.stdout.decode().strip()
            cli.process.send_signal(signal.SIGINT)
            assert await cli.process.wait() == EXIT_OK
        assert cli.events("qr") == []
        with trio.fail_after(STEP_TIMEOUT):
            cli = await start_code_cli(sb, auth)
            await cli.next_event(event="connection_update", connection="open")
            await kill(cli)
        assert cli.events("pairing_code") == []
        assert sb.statistics().links == 1


async def test_sigkill_at_random_moments_after_the_phone_typed_the_code(tmp_path):
    """Kill while the exchange runs: once the sandbox linked the device it logs in with no code.

    The device commits its identity durably BEFORE its pair-device-sign reply leaves,
    so a kill between the two leaves a folder paired on disk that the server never
    linked. That is allowed: the pairing was never acknowledged. Its next login is
    refused (401: the run ends logged out, exit 3, files kept) and the location has to
    be deleted to pair again, as docs/configuration.md says. The outcome is read only
    once the phone knows it: a reply sent just before the kill can still be on its
    way to the sandbox when the process is gone.
    """
    rng = random.Random(SEED)
    outcomes: list[str] = []
    async with open_sandbox() as sb, trio.open_nursery() as nursery:
        for round_no in range(ROUNDS):
            delay = rng.uniform(0.0, 0.4)
            where = f"seed {SEED} round {round_no} delay {delay:.3f}"
            outcomes.append(
                await kill_round(sb, nursery, tmp_path / f"auth{round_no}", delay, where)
            )
        nursery.cancel_scope.cancel()
    print(f"pairing code kills, seed {SEED}: {outcomes}")


async def test_sigkill_as_the_identity_becomes_durable_never_forces_a_repairing(tmp_path):
    """Killed the moment it reports the identity durable (its reply races the kill): same rule.

    Most rounds land between the commit and the reply: paired on disk, never linked,
    then a 401. Whichever way each race goes, a linked device logs in with no code.
    """
    outcomes: list[str] = []
    async with open_sandbox() as sb, trio.open_nursery() as nursery:
        for round_no in range(ROUNDS):
            where = f"round {round_no}, killed at the identity's creds_update"
            outcomes.append(
                await kill_round(sb, nursery, tmp_path / f"auth{round_no}", IDENTITY_DURABLE, where)
            )
        nursery.cancel_scope.cancel()
    print(f"pairing code kills at the identity commit: {outcomes}")


async def kill_round(
    sb: Sandbox, nursery: trio.Nursery, auth: Path, moment: float | str, where: str
) -> str:
    """Pair by code, SIGKILL at ``moment`` (seconds after the phone typed, or
    ``IDENTITY_DURABLE``), then check the rule on the next run; which outcome it was."""
    links = sb.statistics().links
    linked: list[str] = []
    settled = trio.Event()
    with trio.fail_after(STEP_TIMEOUT):
        cli = await start_code_cli(sb, auth)
        code = (await cli.next_event(event="pairing_code"))["code"]
        nursery.start_soon(type_code, sb, code, linked, settled)
        if moment == IDENTITY_DURABLE:
            await cli.next_event(event="creds_update", changed=lambda c: "me" in (c or ()))
        else:
            await trio.sleep(float(moment))
        await kill(cli)
        await settled.wait()
    acknowledged = sb.statistics().links > links
    assert acknowledged == bool(linked), where
    outcome = await rerun(sb, auth, acknowledged, where)
    assert sb.statistics().links == links + 1, where
    return outcome


async def rerun(sb: Sandbox, auth: Path, acknowledged: bool, where: str) -> str:
    """The run after the kill; which of the three allowed outcomes it was."""
    me, registered = await saved_me(auth)
    with trio.fail_after(STEP_TIMEOUT):
        if acknowledged:
            assert me is not None and registered, where
            cli = await start_code_cli(sb, auth)
            await cli.next_event(event="connection_update", connection="open")
            await kill(cli)
            assert cli.events("pairing_code") == [], where
            return "logged-in"
        outcome = "asked-again"
        if (me, registered) != (None, False):
            assert me is not None and registered, where
            cli = await start_code_cli(sb, auth)
            ended = await cli.next_event(event="session_ended")
            assert ended["reason"] == "logged_out", where
            assert await cli.process.wait() == EXIT_LOGGED_OUT, where
            shutil.rmtree(auth)
            outcome = "paired-unacknowledged-then-401"
        cli = await start_code_cli(sb, auth)
        code = (await cli.next_event(event="pairing_code"))["code"]
        await sb.phone.link_code(code)
        await cli.next_event(event="connection_update", connection="open")
        await kill(cli)
    return outcome
