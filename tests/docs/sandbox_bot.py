"""A bot program run as a user runs it, against a sandbox this test process serves.

``run_bot`` starts the sandbox in the test's trio loop, then the program in a
subprocess (its stdout and stderr read line by line). The program reaches the
sandbox through the settings it is given: the environment variables
``WA_URL`` and ``WA_ROOT_KEY`` (what README's bot reads; unset, it dials
WhatsApp) or command-line flags built from the sandbox. The sandbox's phone
scans every QR the program prints (a line starting with the QR prefix, or a
``{"event": "qr"}`` JSON line), as a person would scan it. Once the device is
logged in, ``converse(bot)`` plays the other side (a simulated contact writes,
waits for an answer or an output line). The program then either exits by
itself, or is stopped as a person stops it: SIGINT (Ctrl-C).

Real time, real processes: the whole run is bounded by ``within`` seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

from actors.connection.binary.jid import Jid
from sandbox.phone import LinkedDevice
from sandbox.server import Sandbox, open_sandbox

ROOT = Path(__file__).resolve().parents[2]
QR_PREFIX = "https://wa.me/settings/linked_devices#"
TIMEOUT = 60.0
"""Real seconds a bot run may take in all (pairing, the conversation, the stop)."""


def sandbox_env(sb: Sandbox) -> dict[str, str]:
    """The environment a program gets: the repository importable, the sandbox's settings."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",  # lines (the QR) reach the harness as they are printed
        "WA_URL": sb.url,
        "WA_ROOT_KEY": sb.root_public_key.hex(),
    }


@dataclass
class Bot:
    """A running bot program: what it printed, the device it linked, the sandbox."""

    sb: Sandbox
    lines: list[str] = field(default_factory=list)
    linked: list[LinkedDevice] = field(default_factory=list)
    returncode: int | None = None
    stopped_by_sigint: bool = False
    _changed: trio.Event = field(default_factory=trio.Event)

    @property
    def user_jid(self) -> str:
        """The bot's account (``user@s.whatsapp.net``): what contacts write to."""
        return str(Jid.parse(self.linked[0].jid).user_jid())

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def _bump(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_line(self, predicate: Callable[[str], bool]) -> str:
        """The first printed line satisfying ``predicate`` (waits for it)."""
        while True:
            for line in self.lines:
                if predicate(line):
                    return line
            await self._changed.wait()

    async def wait_linked(self) -> LinkedDevice:
        """The device once the phone linked it and it logged in."""
        while not self.linked:
            await self._changed.wait()
        await self.sb.wait_logged_in(self.linked[0].jid)
        return self.linked[0]


def qr_of(line: str) -> str | None:
    """The QR string a printed line carries (plain, or a JSON ``qr`` event), if any."""
    text = line.strip()
    if text.startswith(QR_PREFIX):
        return text
    if text.startswith("{"):
        try:
            record = json.loads(text)
        except ValueError:
            return None
        if isinstance(record, dict) and record.get("event") == "qr":
            return str(record["qr"])
    return None


async def run_bot(
    command: Callable[[Sandbox], Sequence[str]],
    cwd: Path,
    converse: Callable[[Bot], Awaitable[None]],
    *,
    stdin: bytes | None = None,
    within: float = TIMEOUT,
) -> Bot:
    """Run ``command(sandbox)`` in ``cwd``; pair it, ``converse``, stop it; what happened."""
    async with open_sandbox() as sb, trio.open_nursery() as nursery:
        bot = Bot(sb)
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                list(command(sb)),
                stdin=stdin if stdin is not None else b"",
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=sandbox_env(sb),
                cwd=cwd,
                check=False,
            )
        )

        async def scan(qr: str) -> None:
            with trio.fail_after(10):
                bot.linked.append(await sb.phone.scan(qr))
            bot._bump()

        async def read() -> None:
            assert process.stdout is not None
            pending = b""
            async for chunk in process.stdout:
                pending += chunk
                *whole, pending = pending.split(b"\n")
                for raw in whole:
                    line = raw.decode("utf-8", "replace")
                    bot.lines.append(line)
                    if (qr := qr_of(line)) is not None:
                        nursery.start_soon(scan, qr)
                bot._bump()
            if pending:
                bot.lines.append(pending.decode("utf-8", "replace"))
                bot._bump()

        async def talk(done: trio.Event) -> None:
            await bot.wait_linked()
            await converse(bot)
            done.set()

        nursery.start_soon(read)
        answered = trio.Event()
        try:
            with trio.fail_after(within):
                async with trio.open_nursery() as race:
                    race.start_soon(talk, answered)

                    async def exited() -> None:
                        await process.wait()
                        race.cancel_scope.cancel()

                    async def conversed() -> None:
                        await answered.wait()
                        race.cancel_scope.cancel()

                    race.start_soon(exited)
                    race.start_soon(conversed)
                if process.returncode is None:
                    bot.stopped_by_sigint = True
                    process.send_signal(signal.SIGINT)
                    await process.wait()
        except trio.TooSlowError:
            raise AssertionError(
                f"the bot run took longer than {within:.0f} s; it printed:\n{bot.output}"
            ) from None
        bot.returncode = process.returncode
        nursery.cancel_scope.cancel()
    return bot
