"""The proof for messaging against the reference peer, on the sandbox over real websockets.

A real Baileys v7 bot talks with the sandbox's simulated contacts (their side is our
Signal code, Baileys' is libsignal-node), and with our bot: the runtime in a process
of its own (tests/sandbox/bot_child.py), so it can be SIGKILLed and restarted on its
auth folder. Real time (node and the bot are real processes); every wait is bounded.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.connection.binary import BinaryNode
from sandbox.phone import Phone
from sandbox.server import Sandbox, open_sandbox
from tests.baileys_peer import BaileysPeer
from tests.sandbox.baileys_run import Event, NodeClient

pytestmark = pytest.mark.peer

SCRIPT = Path(__file__).with_name("baileys_messaging.mjs")
CHAT_SCRIPT = Path(__file__).with_name("baileys_chat.mjs")
ROOT = Path(__file__).resolve().parents[2]


class Bot(NodeClient):
    """The Baileys bot process: its events, and commands written to its stdin."""

    noise: list[str]
    #: Its device JID (``user:device@s.whatsapp.net``), once open.
    device: str

    @property
    def user(self) -> str:
        """The account's phone number."""
        return self.device.split(":")[0]

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

    async def wait_status(self, msg_id: str, status: int, *, within: float) -> None:
        """Wait until Baileys reports ``status`` for its message ``msg_id``.

        A ``messages.update``, or the message's own upsert when Baileys' event buffer
        folded the update into it.
        """
        with trio.fail_after(within):
            while not any(
                e["event"] in ("update", "message")
                and (e.get("id"), e.get("status")) == (msg_id, status)
                for e in self.events
            ):
                await self._read()

    async def wait_receipts(self, msg_id: str, count: int, *, within: float) -> list[str]:
        """The users whose receipts Baileys reported for ``msg_id``, once there are ``count``.

        ``message-receipt.update`` events, and the receipts Baileys' event buffer folded
        into the message's own upsert (``userReceipt``).
        """
        with trio.fail_after(within):
            while True:
                users = [
                    e["userJid"]
                    for e in self.events
                    if (e["event"], e.get("id")) == ("receipt", msg_id)
                ]
                users += [
                    user
                    for e in self.events
                    if (e["event"], e.get("id")) == ("message", msg_id)
                    for user in e.get("userReceipt") or []
                ]
                if len(users) >= count:
                    return users
                await self._read()

    async def send(self, to: str, text: str) -> str:
        await self.command(op="send", to=to, text=text)
        done = await self.next_event(lambda e: e["event"] in ("sent", "error"), within=20)
        assert done["event"] == "sent", done
        return str(done["id"])


@asynccontextmanager
async def baileys_bot(
    peer: BaileysPeer, sb: Sandbox, tmp: Path, script: Path = SCRIPT
) -> AsyncIterator[Bot]:
    """A Baileys bot paired by the sandbox's phone and open; killed on exit from the block."""
    env = dict(os.environ, SB_URL=sb.url, SB_AUTH=str(tmp / "auth"), SB_LOG="debug")
    with (tmp / "baileys.log").open("wb") as log:
        process = await trio.lowlevel.open_process(
            ["node", "--input-type=module", "-e", await trio.Path(script).read_text()],
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
            opened = await bot.next_event(lambda e: e["event"] == "open", within=20)
            bot.device = opened["me"]["id"]
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
        await bot.wait_status(reply_id, 3, within=10)
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
        receipts = await bot.wait_receipts(msg_id, 2, within=10)
        assert sorted(receipts) == sorted([ann.jid, ben.jid])


# --- Baileys and our bot ---------------------------------------------------------------


class OurBot(NodeClient):
    """Our runtime in a process of its own (tests/sandbox/bot_child.py), driven by JSON lines."""

    #: Its device JID (``user:device@s.whatsapp.net``), once open.
    device: str

    def __init__(self, process: trio.Process) -> None:
        super().__init__(process)
        #: Every event line, also those ``next_event`` took.
        self.history: list[Event] = []
        self._refs = itertools.count()

    @property
    def user(self) -> str:
        """The account's phone number."""
        return self.device.split(":")[0]

    async def _read(self) -> None:
        before = len(self.events)
        await super()._read()
        self.history += self.events[before:]

    async def send(self, to: str, text: str) -> str:
        """``rt.send_message(to, {"text": text})`` in the bot; the id once the server acked."""
        ref = next(self._refs)
        assert self.process.stdin is not None
        line = {"op": "send", "to": to, "text": text, "ref": ref}
        await self.process.stdin.send_all(json.dumps(line).encode() + b"\n")
        done = await self.next_event(
            lambda e: e["event"] in ("sent", "error") and e.get("ref") == ref, within=20
        )
        assert done["event"] == "sent", done
        return str(done["id"])

    def undecryptable(self) -> list[Event]:
        return [e for e in self.history if e["event"] == "message" and e["undecryptable"]]


def _opened(event: Event) -> bool:
    return event["event"] == "connection_update" and event.get("connection") == "open"


@asynccontextmanager
async def our_bot(sb: Sandbox, auth: Path, phone: Phone) -> AsyncIterator[OurBot]:
    """Our bot open on ``auth`` (``phone`` scans its QR if it is new); killed on exit."""
    command = [
        sys.executable,
        "-m",
        "tests.sandbox.bot_child",
        "--auth",
        str(auth),
        "--url",
        sb.url,
        "--key",
        sb.root_public_key.hex(),
    ]
    with (auth.parent / f"{auth.name}.log").open("ab") as log:
        process = await trio.lowlevel.open_process(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=str(ROOT),
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            bot = OurBot(process)
            opened = await bot.next_event(lambda e: e["event"] == "qr" or _opened(e), within=30)
            if opened["event"] == "qr":
                with trio.fail_after(15):
                    await phone.scan(opened["qr"])
                opened = await bot.next_event(_opened, within=30)
            bot.device = opened["me"]
            yield bot
        finally:
            if process.returncode is None:
                process.kill()
            with trio.move_on_after(5) as scope:
                scope.shield = True
                await process.wait()


class RoutedStanzas:
    """What the sandbox routed: message stanzas and their deliveries (a spy on its router)."""

    def __init__(self, sb: Sandbox) -> None:
        self.core = sb.core
        #: (sender device JID, stanza) of every message stanza, in order.
        self.stanzas: list[tuple[str, BinaryNode]] = []
        #: (device JID, stanza) of every message delivered to a device, in order.
        self.deliveries: list[tuple[str, BinaryNode]] = []
        #: (device JID, id) of every ack a device sent, in order.
        self.acks: list[tuple[str, str | None]] = []
        self._changed = trio.Event()
        router = sb.core.router
        on_message, on_receipt, on_ack = router.on_message, router.on_receipt, router.on_ack

        def spy_message(sender: Any, node: BinaryNode, t: str) -> Any:
            self.stanzas.append((sender.jid, node))
            routed = on_message(sender, node, t)
            self.deliveries += [(d.device.jid, d.node) for d in routed.deliveries]
            return routed

        def spy_receipt(sender: Any, node: BinaryNode, t: str) -> Any:
            try:
                return on_receipt(sender, node, t)
            finally:
                self._wake()

        def spy_ack(device: Any, node: BinaryNode) -> Any:
            self.acks.append((device.jid, node.attr("id")))
            try:
                return on_ack(device, node)
            finally:
                self._wake()

        router.on_message = spy_message
        router.on_receipt = spy_receipt
        router.on_ack = spy_ack

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def kinds(self, msg_id: str, user: str) -> list[str]:
        """The enc types of message ``msg_id`` addressed to the devices of account ``user``."""
        found = []
        for _, node in self.stanzas:
            if node.attr("id") != msg_id:
                continue
            participants = node.child("participants")
            for to in participants.children("to") if participants is not None else []:
                enc = to.child("enc")
                if enc is not None and self.core.registry.find(to.require_attr("jid")).user == user:
                    found.append(enc.attr("type") or "")
        return found

    def delivered(self, msg_id: str, device: str) -> list[BinaryNode]:
        """The stanzas of message ``msg_id`` delivered to ``device``, in order."""
        return [node for jid, node in self.deliveries if (jid, node.attr("id")) == (device, msg_id)]

    async def wait_acks(self, device: str, msg_id: str, count: int) -> None:
        """Wait until ``device`` acked stanza ``msg_id`` ``count`` times (10 s at most)."""
        with trio.fail_after(10):
            while self.acks.count((device, msg_id)) < count:
                await self._changed.wait()

    async def wait_taken(self, device: str, msg_id: str) -> None:
        """Wait until the sandbox no longer queues ``msg_id`` for ``device`` (10 s at most).

        The device took it: an ack, or (Baileys) the receipt it sends instead.
        """
        with trio.fail_after(10):
            while any(n.attr("id") == msg_id for n in self.core.pending(device)):
                await self._changed.wait()


@asynccontextmanager
async def baileys_and_our_bot(
    peer: BaileysPeer, tmp: Path
) -> AsyncIterator[tuple[Sandbox, Bot, OurBot, RoutedStanzas]]:
    """A sandbox with Baileys (the sandbox's phone) and our bot (a phone of its own) open."""
    async with open_sandbox() as sb:
        routed = RoutedStanzas(sb)
        async with baileys_bot(peer, sb, tmp, CHAT_SCRIPT) as baileys:
            async with our_bot(sb, tmp / "bot", sb.new_phone()) as bot:
                yield sb, baileys, bot, routed


def _jids(sb: Sandbox, baileys: Bot, bot: OurBot) -> tuple[str, str]:
    """(Baileys' user JID, our bot's user JID)."""
    return sb.core.registry.account(baileys.user).jid, sb.core.registry.account(bot.user).jid


def _user(jid: str) -> str:
    """The user JID of a device JID (``user:device@server`` → ``user@server``)."""
    user, server = jid.split("@")
    return f"{user.split(':')[0]}@{server}"


def _at_bot(text: str) -> Callable[[Event], bool]:
    return lambda e: e["event"] == "message" and e["text"] == text and not e["from_me"]


def _at_baileys(text: str) -> Callable[[Event], bool]:
    return lambda e: e["event"] == "message" and e["text"] == text and not e["fromMe"]


def _failed_at_baileys(baileys: Bot) -> list[Event]:
    """Messages libsignal-node could not decrypt (a CIPHERTEXT stub) and command errors."""
    return [
        e
        for e in baileys.events
        if e["event"] == "error" or (e["event"] == "message" and e["stub"] is not None)
    ]


@pytest.mark.slow
async def test_baileys_and_our_bot_exchange_texts_one_to_one(
    baileys_peer: BaileysPeer, tmp_path: Path
) -> None:
    """Baileys → our bot and our bot → Baileys, twice: both sides decrypt every text."""
    async with baileys_and_our_bot(baileys_peer, tmp_path) as (sb, baileys, bot, routed):
        baileys_user, bot_user = _jids(sb, baileys, bot)
        first = await baileys.send(bot_user, "hi bot, Baileys here")
        got = await bot.next_event(_at_bot("hi bot, Baileys here"), within=20)
        assert (got["id"], got["remote_jid"], got["undecryptable"]) == (first, baileys_user, None)
        reply = await bot.send(baileys_user, "hello Baileys")
        heard = await baileys.next_event(_at_baileys("hello Baileys"), within=20)
        assert (heard["id"], heard["fromMe"], heard["stub"]) == (reply, False, None)
        assert routed.kinds(reply, baileys.user) == ["msg"]  # Baileys started the session
        await baileys.send(bot_user, "second from Baileys")
        await bot.next_event(_at_bot("second from Baileys"), within=20)
        await bot.send(baileys_user, "second from the bot")
        await baileys.next_event(_at_baileys("second from the bot"), within=20)
        assert bot.undecryptable() == [] and _failed_at_baileys(baileys) == []


@pytest.mark.slow
async def test_baileys_our_bot_and_a_contact_talk_in_a_group(
    baileys_peer: BaileysPeer, tmp_path: Path
) -> None:
    """A group of Baileys, our bot and a contact: each one's text reaches the other two."""
    async with baileys_and_our_bot(baileys_peer, tmp_path) as (sb, baileys, bot, routed):
        baileys_user, bot_user = _jids(sb, baileys, bot)
        ann = sb.new_contact("Ann")
        group = sb.create_group("Team", [baileys_user, bot_user, ann.jid])
        from_ann = sb.contact_send(ann.jid, group.jid, "hello from Ann")
        for got in (
            await bot.next_event(_at_bot("hello from Ann"), within=20),
            await baileys.next_event(_at_baileys("hello from Ann"), within=20),
        ):
            assert (got["id"], got.get("remote_jid", got.get("remoteJid"))) == (from_ann, group.jid)
            assert _user(got["participant"]) == ann.jid
        from_bot = await bot.send(group.jid, "hello from the bot")
        got = await baileys.next_event(_at_baileys("hello from the bot"), within=20)
        assert (got["id"], got["remoteJid"], _user(got["participant"])) == (
            from_bot,
            group.jid,
            bot_user,
        )
        from_baileys = await baileys.send(group.jid, "hello from Baileys")
        got = await bot.next_event(_at_bot("hello from Baileys"), within=20)
        assert (got["id"], got["remote_jid"], _user(got["participant"])) == (
            from_baileys,
            group.jid,
            baileys_user,
        )
        with trio.fail_after(20):
            at_ann = await sb.wait_contact_messages(ann.jid, 2)
        assert sorted((m.id, m.chat, m.text, m.error) for m in at_ann) == sorted(
            [
                (from_bot, group.jid, "hello from the bot", None),
                (from_baileys, group.jid, "hello from Baileys", None),
            ]
        )
        # Our sender key went to Baileys' device once (a new session: pkmsg); the next
        # group message is the skmsg alone, which Baileys decrypts with the kept key.
        again = await bot.send(group.jid, "again from the bot")
        await baileys.next_event(_at_baileys("again from the bot"), within=20)
        assert (routed.kinds(from_bot, baileys.user), routed.kinds(again, baileys.user)) == (
            ["pkmsg"],
            [],
        )
        assert bot.undecryptable() == [] and _failed_at_baileys(baileys) == []


@pytest.mark.slow
async def test_our_bot_sigkilled_and_restarted_goes_on_with_its_sessions(
    baileys_peer: BaileysPeer, tmp_path: Path
) -> None:
    """SIGKILL our bot mid-talk, restart it on its folder: no QR, 1:1 and group go on as msg."""
    async with open_sandbox() as sb:
        routed = RoutedStanzas(sb)
        bot_phone = sb.new_phone()
        auth = tmp_path / "bot"
        async with baileys_bot(baileys_peer, sb, tmp_path, CHAT_SCRIPT) as baileys:
            async with our_bot(sb, auth, bot_phone) as bot:
                baileys_user, bot_user = _jids(sb, baileys, bot)
                group = sb.create_group("Team", [baileys_user, bot_user])
                one = await bot.send(baileys_user, "one")  # our bot starts the session
                await baileys.next_event(_at_baileys("one"), within=20)
                two = await baileys.send(bot_user, "two")
                await bot.next_event(_at_bot("two"), within=20)
                three = await bot.send(baileys_user, "three")
                await baileys.next_event(_at_baileys("three"), within=20)
                group_one = await bot.send(group.jid, "group one")
                await baileys.next_event(_at_baileys("group one"), within=20)
                await baileys.send(group.jid, "group two")
                await bot.next_event(_at_bot("group two"), within=20)
                bot.process.send_signal(signal.SIGKILL)
                with trio.fail_after(5):
                    assert await bot.process.wait() == -signal.SIGKILL
            links = sb.statistics().links
            async with our_bot(sb, auth, bot_phone) as again:
                # The server delivers "two" once more (as after a crash before the ack): the
                # restarted bot answers it from what it kept, without decrypting it again.
                [stanza] = routed.delivered(two, bot.device)
                acks = routed.acks.count((bot.device, two))
                with trio.fail_after(10):
                    conn = await sb.wait_logged_in(bot.device)
                sb.dispatch(sb.core.send_node(conn.conn_id, stanza))
                await routed.wait_acks(bot.device, two, acks + 1)
                four = await baileys.send(bot_user, "four")
                await again.next_event(_at_bot("four"), within=20)
                five = await again.send(baileys_user, "five")
                await baileys.next_event(_at_baileys("five"), within=20)
                await baileys.send(group.jid, "group three")
                await again.next_event(_at_bot("group three"), within=20)
                group_four = await again.send(group.jid, "group four")
                await baileys.next_event(_at_baileys("group four"), within=20)
        assert sb.statistics().links == links
        assert [e for e in again.history if e["event"] == "qr"] == []
        assert bot.undecryptable() == again.undecryptable() == []
        assert _failed_at_baileys(baileys) == []
        # What the sandbox routed to Baileys' device: a pkmsg only for the very first message,
        # and no sender key again after the restart (the group message is the skmsg alone).
        assert [routed.kinds(m, baileys.user) for m in (one, three, group_one)] == [
            ["pkmsg"],
            ["msg"],
            ["msg"],
        ]
        assert [routed.kinds(m, baileys.user) for m in (five, group_four)] == [["msg"], []]
        assert [routed.kinds(m, bot.user) for m in (two, four)] == [["msg"], ["msg"]]


@pytest.mark.slow
async def test_the_conversation_goes_on_after_baileys_reconnects(
    baileys_peer: BaileysPeer, tmp_path: Path
) -> None:
    """Baileys closes and opens a new socket: what our bot sent meanwhile arrives; talk goes on."""
    async with baileys_and_our_bot(baileys_peer, tmp_path) as (sb, baileys, bot, routed):
        baileys_user, bot_user = _jids(sb, baileys, bot)
        group = sb.create_group("Team", [baileys_user, bot_user])
        await baileys.send(bot_user, "before")
        await bot.next_event(_at_bot("before"), within=20)
        before = await bot.send(baileys_user, "reply before")
        await baileys.next_event(_at_baileys("reply before"), within=20)
        # Baileys' receipt is its ack: the server keeps nothing for the next connection.
        await routed.wait_taken(baileys.device, before)
        await baileys.command(op="close")
        await baileys.next_event(lambda e: e["event"] == "close", within=10)
        away = await bot.send(baileys_user, "while you were away")
        group_away = await bot.send(group.jid, "group while away")
        await baileys.command(op="connect")
        opened = await baileys.next_event(lambda e: e["event"] == "open", within=20)
        assert opened["socket"] == 3  # 1 paired, 2 logged in after the 515, 3 is the new one
        for msg_id, chat, text in (
            (away, bot_user, "while you were away"),
            (group_away, group.jid, "group while away"),
        ):
            got = await baileys.next_event(_at_baileys(text), within=20)
            assert (got["id"], got["remoteJid"], got["socket"]) == (msg_id, chat, 3)
        back = await baileys.send(bot_user, "back again")
        await bot.next_event(_at_bot("back again"), within=20)
        welcome = await bot.send(baileys_user, "welcome back")
        await baileys.next_event(_at_baileys("welcome back"), within=20)
        await baileys.send(group.jid, "group back")
        await bot.next_event(_at_bot("group back"), within=20)
        assert bot.undecryptable() == [] and _failed_at_baileys(baileys) == []
        # Both sides went on with the sessions they had: no new pre-key message.
        assert routed.kinds(back, bot.user) == routed.kinds(welcome, baileys.user) == ["msg"]


@pytest.mark.slow
async def test_a_message_baileys_gets_twice_is_sent_again_on_its_retry_receipt(
    baileys_peer: BaileysPeer, tmp_path: Path
) -> None:
    """Delivered again (a connection lost before its receipt): Baileys asks, our resend decrypts."""
    async with baileys_and_our_bot(baileys_peer, tmp_path) as (sb, baileys, bot, routed):
        baileys_user, bot_user = _jids(sb, baileys, bot)
        await baileys.send(bot_user, "hi")
        await bot.next_event(_at_bot("hi"), within=20)
        msg_id = await bot.send(baileys_user, "say it again")
        await baileys.next_event(_at_baileys("say it again"), within=20)
        await routed.wait_taken(baileys.device, msg_id)
        [stanza] = routed.delivered(msg_id, baileys.device)
        with trio.fail_after(10):
            conn = await sb.wait_logged_in(baileys.device)
        sb.dispatch(sb.core.send_node(conn.conn_id, stanza))
        # libsignal-node: the message key was used already; Baileys sends a retry receipt.
        failed = await baileys.next_event(
            lambda e: e["event"] == "message" and e["id"] == msg_id and e["stub"] is not None,
            within=10,
        )
        assert failed["stubParameters"] == ["No matching sessions found for message"]
        again = await baileys.next_event(_at_baileys("say it again"), within=10)
        assert (again["id"], again["remoteJid"]) == (msg_id, bot_user)
        resends = [n for j, n in routed.stanzas if j == bot.device and n.attr("id") == msg_id][1:]
        assert [(n.attr("to"), n.require_child("enc").attr("count")) for n in resends] == [
            (baileys.device, "1")
        ]


@pytest.mark.slow
async def test_a_group_message_baileys_gets_twice_is_sent_again_on_its_retry_receipt(
    baileys_peer: BaileysPeer, tmp_path: Path
) -> None:
    """The same in a group: Baileys' retry names the group; our resend to its device decrypts."""
    async with baileys_and_our_bot(baileys_peer, tmp_path) as (sb, baileys, bot, routed):
        baileys_user, bot_user = _jids(sb, baileys, bot)
        group = sb.create_group("Team", [baileys_user, bot_user])
        msg_id = await bot.send(group.jid, "say it again, all")
        await baileys.next_event(_at_baileys("say it again, all"), within=20)
        await routed.wait_taken(baileys.device, msg_id)
        [stanza] = routed.delivered(msg_id, baileys.device)
        with trio.fail_after(10):
            conn = await sb.wait_logged_in(baileys.device)
        sb.dispatch(sb.core.send_node(conn.conn_id, stanza))
        failed = await baileys.next_event(
            lambda e: e["event"] == "message" and e.get("id") == msg_id and e["stub"] is not None,
            within=10,
        )
        # libsignal's group cipher: that iteration was used already; Baileys asks again.
        assert failed["stubParameters"][0].startswith("Received message with old counter")
        again = await baileys.next_event(_at_baileys("say it again, all"), within=10)
        assert (again["id"], again["remoteJid"], _user(again["participant"])) == (
            msg_id,
            group.jid,
            bot_user,
        )
        resends = [n for j, n in routed.stanzas if j == bot.device and n.attr("id") == msg_id][1:]
        assert [
            (n.attr("to"), n.attr("participant"), n.require_child("enc").attr("count"))
            for n in resends
        ] == [(group.jid, baileys.device, "1")]
