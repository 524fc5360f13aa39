"""The proof for messaging: a real Baileys v7 bot talks with the sandbox's simulated contacts.

The contact's side is our Signal code; Baileys' is libsignal-node. Real time (node is a
real process); every wait is bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from sandbox.server import Sandbox, open_sandbox
from tests.baileys_peer import BaileysPeer
from tests.sandbox.baileys_run import Event, NodeClient

pytestmark = pytest.mark.peer

SCRIPT = Path(__file__).with_name("baileys_messaging.mjs")


class Bot(NodeClient):
    """The Baileys bot process: its events, and commands written to its stdin."""

    noise: list[str]

    async def _read(self) -> None:
        # Baileys writes some diagnostics with console.log: keep them aside, not as events.
        assert self.process.stdout is not None
        chunk = await self.process.stdout.receive_some(65536)
        if not chunk:
            raise AssertionError(f"node exited; events so far: {self.events}")
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            text = line.decode(errors="replace").strip()
            if text.startswith("{"):
                self.events.append(json.loads(text))
            elif text:
                self.noise = [*getattr(self, "noise", []), text]

    async def command(self, **command: Any) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(json.dumps(command).encode() + b"\n")

    async def send(self, to: str, text: str) -> str:
        await self.command(op="send", to=to, text=text)
        done = await self.next_event(lambda e: e["event"] in ("sent", "error"), within=20)
        assert done["event"] == "sent", done
        return str(done["id"])


@asynccontextmanager
async def baileys_bot(peer: BaileysPeer, sb: Sandbox, tmp: Path) -> AsyncIterator[Bot]:
    """A Baileys bot paired by the sandbox's phone and open; killed on exit from the block."""
    env = dict(os.environ, SB_URL=sb.url, SB_AUTH=str(tmp / "auth"), SB_LOG="debug")
    with (tmp / "baileys.log").open("wb") as log:
        process = await trio.lowlevel.open_process(
            ["node", "--input-type=module", "-e", SCRIPT.read_text()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=str(peer.root),
            env=env,
        )
        try:
            bot = Bot(process)
            qr = await bot.next_event(lambda e: e["event"] == "qr", within=15)
            with trio.fail_after(15):
                await sb.phone.scan(qr["qr"])
            await bot.next_event(lambda e: e["event"] == "open", within=20)
            yield bot
        finally:
            if process.returncode is None:
                process.kill()
            with trio.move_on_after(5) as scope:
                scope.shield = True
                await process.wait()


def _text(text: str) -> Any:
    return lambda e: e["event"] == "message" and e["text"] == text


async def test_baileys_and_a_contact_exchange_texts_both_ways(
    baileys_peer: BaileysPeer, tmp_path: Path
) -> None:
    """Contact → Baileys (pkmsg, decrypted by libsignal), Baileys → contact, then again."""
    async with open_sandbox() as sb, baileys_bot(baileys_peer, sb, tmp_path) as bot:
        bot_user = sb.core.registry.account(sb.phone.user).jid
        ann = sb.new_contact("Ann")
        msg_id = sb.contact_send(ann.jid, bot_user, "hello from Ann")
        got = await bot.next_event(_text("hello from Ann"), within=20)
        assert (got["id"], got["remoteJid"], got["pushName"]) == (msg_id, ann.jid, "Ann")
        assert got["type"] == "notify" and got["fromMe"] is False
        reply_id = await bot.send(ann.jid, "hi Ann, Baileys here")
        with trio.fail_after(20):
            messages = await sb.wait_contact_messages(ann.jid, 1)
        assert [(m.id, m.chat, m.text, m.error) for m in messages] == [
            (reply_id, bot_user, "hi Ann, Baileys here", None)
        ]
        # Ann's delivery receipt: DELIVERY_ACK (3). (Baileys v7 reads the server's message
        # ack only for errors, so no SERVER_ACK update comes before it.)
        await bot.next_event(
            lambda e: e["event"] == "update" and (e["id"], e["status"]) == (reply_id, 3),
            within=10,
        )
        sb.contact_send(ann.jid, bot_user, "second from Ann")
        await bot.next_event(_text("second from Ann"), within=20)
        await bot.send(ann.jid, "second from Baileys")
        with trio.fail_after(20):
            messages = await sb.wait_contact_messages(ann.jid, 2)
        assert [m.text for m in messages] == ["hi Ann, Baileys here", "second from Baileys"]
        assert not [e for e in bot.events if e["event"] == "error"]


async def test_baileys_and_contacts_talk_in_a_group(
    baileys_peer: BaileysPeer, tmp_path: Path
) -> None:
    """A contact's skdm + skmsg decrypt in Baileys; Baileys' group message decrypts at contacts."""
    async with open_sandbox() as sb, baileys_bot(baileys_peer, sb, tmp_path) as bot:
        bot_user = sb.core.registry.account(sb.phone.user).jid
        ann, ben = sb.new_contact("Ann"), sb.new_contact("Ben")
        group = sb.create_group("Team", [ann.jid, bot_user, ben.jid])
        sb.contact_send(ann.jid, group.jid, "hello team")
        got: Event = await bot.next_event(_text("hello team"), within=20)
        assert (got["remoteJid"], got["participant"]) == (group.jid, ann.jid)
        msg_id = await bot.send(group.jid, "hello from Baileys")
        for contact in (ann, ben):
            with trio.fail_after(20):
                messages = await sb.wait_contact_messages(contact.jid, 1 if contact is ann else 2)
            assert (messages[-1].id, messages[-1].chat, messages[-1].text) == (
                msg_id,
                group.jid,
                "hello from Baileys",
            )
        sb.contact_send(ben.jid, group.jid, "from Ben")
        await bot.next_event(_text("from Ben"), within=20)
        # Both contacts' delivery receipts for the group message reach Baileys as group receipts.
        receipts = [
            await bot.next_event(lambda e: e["event"] == "receipt" and e["id"] == msg_id, within=10)
            for _ in range(2)
        ]
        assert sorted(r["userJid"] for r in receipts) == sorted([ann.jid, ben.jid])
