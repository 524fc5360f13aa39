"""MessagingService between accounts through a minimal in-memory server (usync, keys, routing)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
import trio

from actors.connection.binary.jid import Jid
from actors.connection.binary.node import BinaryNode
from actors.messaging.crypto import LocalCrypto, MessageCrypto
from actors.messaging.errors import RecipientError
from actors.messaging.incoming import IncomingStanza, RetryKeys
from actors.messaging.kept import KEEP, kept_lookup, kept_with
from actors.messaging.receive import ReceivedMessage
from actors.messaging.service import (
    AckTimeout,
    Identity,
    MessagingService,
    SendRefused,
    SendUnconfirmed,
)
from actors.signal import SignalRepository
from runtime.errors import ReplyTimeout
from stores import PersistedAuth, use_memory_auth_state
from stores.keys import generate_pre_keys


@dataclass
class Device:
    """One account device on the fake server: its store, repository, service, events."""

    jid: str
    auth: PersistedAuth
    repo: SignalRepository
    server: Server
    events: list[dict[str, Any]] = field(default_factory=list)
    pre_key_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    service: MessagingService = field(init=False)
    uploaded: dict[int, bytes] = field(default_factory=dict)

    async def upload_pre_keys(self, count: int = 3) -> None:
        keys = generate_pre_keys(next(self.pre_key_ids), count)
        for _ in range(count - 1):
            next(self.pre_key_ids)
        await self.auth.keys.set({"pre-key": keys})
        self.uploaded.update({int(k): v["public"] for k, v in keys.items()})

    async def retry_keys(self) -> RetryKeys:
        key_id = next(self.pre_key_ids)
        keys = generate_pre_keys(key_id, 1)
        await self.auth.keys.set({"pre-key": keys})
        creds = self.auth.state.creds
        return RetryKeys(
            identity=creds.signed_identity_key.public,
            pre_key_id=key_id,
            pre_key=keys[str(key_id)]["public"],
            signed_pre_key_id=creds.signed_pre_key.key_id,
            signed_pre_key=creds.signed_pre_key.key_pair.public,
            signed_pre_key_signature=creds.signed_pre_key.signature,
            device_identity=b"adv",
        )

    def texts(self) -> list[str | None]:
        return [
            m["text"]
            for e in self.events
            if "messages_upsert" in e
            for m in e["messages_upsert"]["messages"]
        ]


class Link:
    """The device's side of the fake connection."""

    def __init__(self, server: Server, jid: str) -> None:
        self.server, self.jid = server, jid
        self.ids = itertools.count(1)

    async def send(self, node: BinaryNode) -> None:
        await self.server.receive(self.jid, node)

    async def query(self, node: BinaryNode) -> BinaryNode:
        return self.server.answer(node)

    def next_id(self) -> str:
        return f"{self.jid}-{next(self.ids)}"


class Server:
    """Routes stanzas between registered devices and answers usync / key iqs."""

    def __init__(self) -> None:
        self.devices: dict[str, Device] = {}
        self.sent: list[tuple[str, BinaryNode]] = []
        self.refuse_with: str | None = None
        self.swallow_acks = False
        self.tamper: Any = None
        self.groups: dict[str, list[str]] = {}

    async def add(self, jid: str) -> Device:
        auth = await use_memory_auth_state(jid)
        repo = SignalRepository(auth.keys, auth.state.creds)
        device = Device(jid, auth, repo, self)
        await self.restart(device)
        await device.upload_pre_keys()
        self.devices[jid] = device
        return device

    async def restart(self, device: Device, crypto: MessageCrypto | None = None) -> None:
        """A new service over the device's store, as after a process restart."""
        auth, repo, jid = device.auth, device.repo, device.jid
        device.service = MessagingService(
            crypto or LocalCrypto(auth.keys, repo),
            Link(self, jid),
            lambda: Identity(jid, None, b"adv"),
            device.events.append,
            retry_keys=device.retry_keys,
            registration_id=lambda: auth.state.creds.registration_id,
            log=structlog.get_logger(),
        )

    def user_devices(self, user: str) -> list[Device]:
        return [d for jid, d in self.devices.items() if Jid.parse(jid).user == Jid.parse(user).user]

    def answer(self, node: BinaryNode) -> BinaryNode:
        xmlns = node.attr("xmlns")
        if xmlns == "usync":
            users = node.children("usync")[0].children("list")[0].children("user")
            listed = []
            for user in users:
                devices = [
                    BinaryNode(
                        "device", {"id": str(Jid.parse(d.jid).device or 0), "key-index": "1"}
                    )
                    for d in self.user_devices(user.attrs["jid"])
                ]
                listed.append(
                    BinaryNode(
                        "user",
                        {"jid": user.attrs["jid"]},
                        [BinaryNode("devices", {}, [BinaryNode("device-list", {}, devices)])],
                    )
                )
            return BinaryNode(
                "iq",
                {"type": "result"},
                [BinaryNode("usync", {}, [BinaryNode("list", {}, listed)])],
            )
        if xmlns == "w:g2" and node.attrs["to"] not in self.groups:
            return BinaryNode("iq", {"type": "error"}, [BinaryNode("error", {"code": "404"})])
        if xmlns == "w:g2":
            group = node.attrs["to"]
            members = [BinaryNode("participant", {"jid": jid}) for jid in self.groups[group]]
            attrs = {"id": group, "subject": "test", "addressing_mode": "pn"}
            return BinaryNode("iq", {"type": "result"}, [BinaryNode("group", attrs, members)])
        assert xmlns == "encrypt"
        users = []
        for user in node.children("key")[0].children("user"):
            device = self.devices[user.attrs["jid"]]
            users.append(BinaryNode("user", {"jid": device.jid}, self.bundle_nodes(device)))
        return BinaryNode("iq", {"type": "result"}, [BinaryNode("list", {}, users)])

    def bundle_nodes(self, device: Device) -> list[BinaryNode]:
        creds = device.auth.state.creds
        nodes = [
            BinaryNode("registration", {}, creds.registration_id.to_bytes(4, "big")),
            BinaryNode("type", {}, b"\x05"),
            BinaryNode("identity", {}, creds.signed_identity_key.public),
            BinaryNode(
                "skey",
                {},
                [
                    BinaryNode("id", {}, creds.signed_pre_key.key_id.to_bytes(3, "big")),
                    BinaryNode("value", {}, creds.signed_pre_key.key_pair.public),
                    BinaryNode("signature", {}, creds.signed_pre_key.signature),
                ],
            ),
        ]
        if device.uploaded:
            key_id = min(device.uploaded)
            public = device.uploaded.pop(key_id)
            nodes.append(
                BinaryNode(
                    "key",
                    {},
                    [
                        BinaryNode("id", {}, key_id.to_bytes(3, "big")),
                        BinaryNode("value", {}, public),
                    ],
                )
            )
        return nodes

    async def receive(self, sender: str, node: BinaryNode) -> None:
        self.sent.append((sender, node))
        if node.tag == "message":
            await self.route_message(sender, node)
        elif node.tag == "receipt":
            await self.route_receipt(sender, node)

    async def route_group(self, sender: str, node: BinaryNode) -> None:
        group = node.attrs["to"]
        per_device = {
            to.attrs["jid"]: to.children("enc")
            for p in node.children("participants")
            for to in p.children("to")
        }
        members = [d for user in self.groups[group] for d in self.user_devices(user)]
        for device in members:
            if device.jid == sender:
                continue
            parts = per_device.get(device.jid, []) + node.children("enc")
            if node.attrs.get("participant"):  # a resend to one device
                if node.attrs["participant"] != device.jid:
                    continue
                parts = node.children("enc")
            attrs = {"id": node.attrs["id"], "from": group, "participant": sender, "t": "1"}
            await device.service.on_message(BinaryNode("message", attrs, parts))

    async def route_message(self, sender: str, node: BinaryNode) -> None:
        ack_attrs = {"class": "message", "id": node.attrs["id"], "from": node.attrs["to"]}
        if self.refuse_with:
            ack_attrs["error"] = self.refuse_with
        if not self.swallow_acks:
            self.devices[sender].service.on_ack(BinaryNode("ack", ack_attrs))
        if self.refuse_with:
            return
        if node.attrs["to"].endswith("@g.us"):
            await self.route_group(sender, node)
            return
        targets: list[tuple[str, list[BinaryNode]]] = []
        for participants in node.children("participants"):
            targets += [(to.attrs["jid"], to.children("enc")) for to in participants.children("to")]
        if not node.children("participants"):
            targets.append((node.attrs["to"], node.children("enc")))
        for jid, encs in targets:
            target = self.devices[jid]
            attrs = {"id": node.attrs["id"], "from": sender, "t": "1700000000", "type": "text"}
            if Jid.parse(jid).user == Jid.parse(sender).user:
                attrs["recipient"] = node.attrs["to"]
            if self.tamper is not None:
                encs = self.tamper(encs)
            await target.service.on_message(BinaryNode("message", attrs, encs))

    async def route_receipt(self, sender: str, node: BinaryNode) -> None:
        original = next(
            (s for s, n in self.sent if n.tag == "message" and n.attrs["id"] == node.attrs["id"]),
            None,
        )
        if original is None:
            return
        attrs = dict(node.attrs)
        attrs.pop("to", None)
        attrs["from"] = sender
        await self.devices[original].service.on_receipt(BinaryNode("receipt", attrs, node.content))


ALICE, BOB = "111:1@s.whatsapp.net", "222@s.whatsapp.net"


async def test_a_sent_text_arrives_decrypted_and_the_sender_hears_of_delivery() -> None:
    """send_message returns once acked; the recipient emits it; a delivery receipt comes back."""
    server = Server()
    alice, bob = await server.add(ALICE), await server.add(BOB)
    key = await alice.service.send_message("222@s.whatsapp.net", {"text": "hello"})
    assert key.from_me and key.remote_jid == "222@s.whatsapp.net" and key.id.startswith("3EB0")
    assert bob.texts() == ["hello"]
    [event] = bob.events
    message = event["messages_upsert"]["messages"][0]
    assert message["key"] == {
        "remote_jid": "111@s.whatsapp.net",
        "from_me": False,
        "id": key.id,
        "participant": None,
    }
    updates = [e["messages_update"] for e in alice.events if "messages_update" in e]
    assert (
        updates
        and updates[0][0]["key"]["id"] == key.id
        and updates[0][0]["update"]["status"] == "delivery"
    )
    acked = [n for s, n in server.sent if s == BOB and n.tag == "ack"]
    assert acked and acked[0].attrs["class"] == "message"
    # Bob's first one-time pre-key was consumed by the pkmsg.
    assert await bob.auth.keys.get("pre-key", ["1"]) == {}


async def test_a_conversation_goes_both_ways() -> None:
    """Replies decrypt at the first sender; later messages are msg, not pkmsg."""
    server = Server()
    alice, bob = await server.add(ALICE), await server.add(BOB)
    await alice.service.send_message("222@s.whatsapp.net", {"text": "one"})
    await bob.service.send_message("111@s.whatsapp.net", {"text": "two"})
    await alice.service.send_message("222@s.whatsapp.net", {"text": "three"})
    assert bob.texts() == ["one", "three"] and alice.texts() == ["two"]
    last = [n for s, n in server.sent if s == ALICE and n.tag == "message"][-1]
    kinds = [
        enc.attrs["type"]
        for p in last.children("participants")
        for to in p.children("to")
        for enc in to.children("enc")
    ]
    assert kinds == ["msg"]


async def test_our_other_devices_get_a_copy_as_from_me() -> None:
    """A second device of the sender receives the message as from_me in the recipient's chat."""
    server = Server()
    alice, alice_phone, bob = (
        await server.add(ALICE),
        await server.add("111@s.whatsapp.net"),
        await server.add(BOB),
    )
    await alice.service.send_message("222@s.whatsapp.net", {"text": "hi"})
    assert bob.texts() == ["hi"]
    [event] = alice_phone.events
    message = event["messages_upsert"]["messages"][0]
    assert message["key"]["from_me"] and message["key"]["remote_jid"] == "222@s.whatsapp.net"
    assert message["text"] == "hi"


async def test_a_lost_session_is_recovered_through_retry_receipts() -> None:
    """Bob loses his session: retry 1 without keys, retry 2 with keys, the resend decrypts."""
    server = Server()
    alice, bob = await server.add(ALICE), await server.add(BOB)
    await alice.service.send_message("222@s.whatsapp.net", {"text": "first"})
    await bob.repo.delete_session(["111:1@s.whatsapp.net"])
    await alice.service.send_message("222@s.whatsapp.net", {"text": "second"})
    upserts = [
        m for e in bob.events if "messages_upsert" in e for m in e["messages_upsert"]["messages"]
    ]
    assert [m["text"] for m in upserts] == ["first", None, None, "second"]
    assert "undecryptable" in upserts[1] and "undecryptable" in upserts[2]
    retries = [
        n
        for s, n in server.sent
        if s == BOB and n.tag == "receipt" and n.attrs.get("type") == "retry"
    ]
    assert [r.children("retry")[0].attrs["count"] for r in retries] == ["1", "2"]
    assert retries[0].child("keys") is None and retries[1].child("keys") is not None
    resends = [n for s, n in server.sent if s == ALICE and n.tag == "message"][2:]
    assert [n.children("enc")[0].attrs.get("count") for n in resends] == ["1", "2"]


async def test_retries_stop_after_five() -> None:
    """A message that never decrypts gets at most five retry receipts."""
    server = Server()
    alice = await server.add(ALICE)
    await server.add(BOB)
    await alice.service.send_message("222@s.whatsapp.net", {"text": "first"})

    def garble(encs: list[BinaryNode]) -> list[BinaryNode]:
        return [BinaryNode("enc", enc.attrs, b"\x33" + b"\x01" * 60) for enc in encs]

    server.tamper = garble
    await alice.service.send_message("222@s.whatsapp.net", {"text": "never"})
    retries = [
        n
        for s, n in server.sent
        if s == BOB and n.tag == "receipt" and n.attrs.get("type") == "retry"
    ]
    assert len(retries) == 5


async def test_a_refused_stanza_is_send_refused() -> None:
    """An error ack from the server fails send_message with SendRefused."""
    server = Server()
    alice = await server.add(ALICE)
    await server.add(BOB)
    server.refuse_with = "463"
    with pytest.raises(SendRefused, match="463"):
        await alice.service.send_message("222@s.whatsapp.net", {"text": "x"})


async def test_no_ack_is_a_timeout(autojump_clock: trio.testing.MockClock) -> None:
    """Without the server's ack, send_message gives up with AckTimeout after 60 s."""
    server = Server()
    alice = await server.add(ALICE)
    await server.add(BOB)
    server.swallow_acks = True
    with pytest.raises(AckTimeout):
        await alice.service.send_message("222@s.whatsapp.net", {"text": "x"})


async def test_a_connection_lost_fails_waiting_sends() -> None:
    """connection_lost wakes every send waiting for an ack: SendUnconfirmed, the outcome unknown."""
    server = Server()
    alice = await server.add(ALICE)
    await server.add(BOB)
    server.swallow_acks = True
    async with trio.open_nursery() as nursery:

        async def send() -> None:
            with pytest.raises(SendUnconfirmed, match="connection ended"):
                await alice.service.send_message("222@s.whatsapp.net", {"text": "x"})

        nursery.start_soon(send)
        await trio.testing.wait_all_tasks_blocked()
        alice.service.connection_lost()


async def test_a_malformed_stanza_is_nacked_not_raised() -> None:
    """A message stanza that does not parse gets an ack with error 487 and no event."""
    server = Server()
    bob = await server.add(BOB)
    await bob.service.on_message(BinaryNode("message", {"id": "1", "from": "g@g.us"}))
    [(_, nack)] = [(s, n) for s, n in server.sent if n.tag == "ack"]
    assert nack.attrs["error"] == "487" and bob.events == []


async def test_a_device_sent_copy_is_unwrapped_before_the_event() -> None:
    """The event carries the inner message of a deviceSentMessage, not the wrapper."""
    server = Server()
    alice, alice_phone = await server.add(ALICE), await server.add("111@s.whatsapp.net")
    await server.add(BOB)
    await alice.service.send_message("222@s.whatsapp.net", {"text": "hey"})
    copy = next(n for s, n in server.sent if s == ALICE and n.tag == "message")
    to_phone = next(
        to
        for p in copy.children("participants")
        for to in p.children("to")
        if to.attrs["jid"] == alice_phone.jid
    )
    enc = to_phone.children("enc")[0]
    assert enc.attrs["type"] == "pkmsg"
    message = alice_phone.events[0]["messages_upsert"]["messages"][0]["message"]
    assert not message.HasField("deviceSentMessage") and message.conversation == "hey"


async def test_a_group_message_reaches_every_member_device_once_with_the_sender_key() -> None:
    """The first group send carries our sender key to every device; the next one does not."""
    server = Server()
    alice, bob, carol = (
        await server.add(ALICE),
        await server.add(BOB),
        await server.add("333@s.whatsapp.net"),
    )
    group = "1203@g.us"
    server.groups[group] = ["111@s.whatsapp.net", "222@s.whatsapp.net", "333@s.whatsapp.net"]
    key = await alice.service.send_message(group, {"text": "hi all"})
    assert key.remote_jid == group and key.participant == ALICE
    await alice.service.send_message(group, {"text": "again"})
    for member in (bob, carol):
        assert member.texts() == ["hi all", "again"]
        message = member.events[0]["messages_upsert"]["messages"][0]
        assert message["key"]["remote_jid"] == group and message["key"]["participant"] == ALICE
    sends = [n for s, n in server.sent if s == ALICE and n.tag == "message"]
    assert [bool(n.children("participants")) for n in sends] == [True, False]
    memory = await alice.auth.keys.get("sender-key-memory", [group])
    assert set(memory[group]) == {BOB, "333@s.whatsapp.net"}


async def test_a_new_member_device_gets_the_sender_key_on_the_next_send() -> None:
    """A device not in sender-key-memory is sent the distribution message."""
    server = Server()
    alice, bob = await server.add(ALICE), await server.add(BOB)
    group = "1203@g.us"
    server.groups[group] = ["111@s.whatsapp.net", "222@s.whatsapp.net"]
    await alice.service.send_message(group, {"text": "one"})
    dave = await server.add("444@s.whatsapp.net")
    server.groups[group].append("444@s.whatsapp.net")
    await alice.service.send_message(group, {"text": "two"})
    assert bob.texts() == ["one", "two"] and dave.texts() == ["two"]
    last = [n for s, n in server.sent if s == ALICE and n.tag == "message"][-1]
    [participants] = last.children("participants")
    assert [to.attrs["jid"] for to in participants.children("to")] == ["444@s.whatsapp.net"]


def delivered_to_bob_again(server: Server, index: int) -> BinaryNode:
    """Bob's copy of Alice's ``index``-th stanza, as the server would deliver it again."""
    delivered = sent_by_alice(server, index)
    attrs = {"id": delivered.attrs["id"], "from": ALICE, "t": "1"}
    return BinaryNode("message", attrs, parts_for_bob(delivered))


def parts_for_bob(delivered: BinaryNode) -> list[BinaryNode]:
    return [
        enc
        for p in delivered.children("participants")
        for to in p.children("to")
        if to.attrs["jid"] == BOB
        for enc in to.children("enc")
    ]


async def test_a_stanza_delivered_again_is_answered_from_the_kept_message() -> None:
    """The same stanza again (our ack was lost): answered from the kept copy, no retry."""
    server = Server()
    alice, bob = await server.add(ALICE), await server.add(BOB)
    await alice.service.send_message("222@s.whatsapp.net", {"text": "once"})
    again = delivered_to_bob_again(server, 0)
    await bob.service.on_message(again)
    assert bob.texts() == ["once"]  # exactly once while the process lives
    await server.restart(bob)
    await bob.service.on_message(again)
    assert bob.texts() == ["once", "once"]  # at least once across a restart
    retries = [n for s, n in server.sent if s == BOB and n.attrs.get("type") == "retry"]
    assert retries == []
    kept = await bob.auth.keys.get("received-message", ["111.1"])
    assert kept["111.1"]["ids"] == [again.attrs["id"]]


async def test_a_stanza_delivered_again_after_the_sender_moved_to_its_lid_is_still_kept() -> None:
    """Committed, ack lost, then the contact's sessions migrate to its LID (as the first
    usync that names the LID does), then a restart and the redelivery: answered from the
    kept copy, not decrypted a second time (which is a DuplicateMessage)."""
    server = Server()
    alice, bob = await server.add(ALICE), await server.add(BOB)
    await alice.service.send_message("222@s.whatsapp.net", {"text": "first"})
    await bob.service.send_message("111@s.whatsapp.net", {"text": "reply"})
    await alice.service.send_message("222@s.whatsapp.net", {"text": "second"})
    again = delivered_to_bob_again(server, 1)
    assert again.children("enc")[0].attrs["type"] == "msg"
    await bob.repo.migrate_session("111@s.whatsapp.net", "900@lid")
    assert await bob.repo.resolve_address(ALICE) == "900_1.1"
    await server.restart(bob)
    await bob.service.on_message(again)
    upserts = [m for e in bob.events for m in e.get("messages_upsert", {}).get("messages", [])]
    assert bob.texts() == ["first", "second", "second"], [m.get("undecryptable") for m in upserts]
    assert [n for s, n in server.sent if s == BOB and n.attrs.get("type") == "retry"] == []


def sent_by_alice(server: Server, index: int) -> BinaryNode:
    return [n for s, n in server.sent if s == ALICE and n.tag == "message"][index]


def bob_replies(server: Server) -> list[BinaryNode]:
    """What Bob sent back about Alice's messages: receipts (delivery and retry) and acks."""
    return [n for s, n in server.sent if s == BOB and n.tag in ("receipt", "ack")]


async def test_a_stanza_delivered_again_after_its_kept_copy_was_dropped_is_a_duplicate() -> None:
    """Emitted, then KEEP later messages of its author push its kept copy out, then it comes
    again after a restart: every counter used, so it was handled; no second event, no retry
    receipt, but its delivery receipt and ack again (the first ones may have been lost).
    The same for a pkmsg (before Bob replied) and a msg (after)."""
    server = Server()
    alice, bob = await server.add(ALICE), await server.add(BOB)
    await alice.service.send_message("222@s.whatsapp.net", {"text": "m0"})
    await bob.service.send_message("111@s.whatsapp.net", {"text": "reply"})
    for i in range(1, KEEP + 2):
        await alice.service.send_message("222@s.whatsapp.net", {"text": f"m{i}"})
    await server.restart(bob)
    for index, kind in ((0, "pkmsg"), (1, "msg")):
        again = delivered_to_bob_again(server, index)
        assert [enc.attrs["type"] for enc in again.children("enc")] == [kind]
        before = len(bob_replies(server))
        with structlog.testing.capture_logs() as logs:
            received = await bob.service.on_message(again)
        assert received is not None and received.duplicate and received.message is None
        replies = bob_replies(server)[before:]
        assert [(n.tag, n.attrs.get("type")) for n in replies] == [
            ("receipt", None),
            ("ack", None),
        ]
        assert all(n.attrs["id"] == again.attrs["id"] for n in replies)
        assert logs == [
            {
                "event": "message_duplicate",
                "log_level": "debug",
                "remote_jid": "111@s.whatsapp.net",
                "id": again.attrs["id"],
                "participant": None,
            }
        ]
    assert bob.texts() == [f"m{i}" for i in range(KEEP + 2)]
    assert bob.service.duplicates == 2
    assert "duplicate" in repr(received)


async def test_a_group_stanza_delivered_again_after_its_kept_copy_was_dropped_is_a_duplicate() -> (
    None
):
    """The same for skmsg: the first (with the sender key in a pkmsg) and the second (skmsg
    alone) come again after KEEP later group messages: no event, no retry, receipt and ack."""
    server = Server()
    alice, bob = await server.add(ALICE), await server.add(BOB)
    group = "1203@g.us"
    server.groups[group] = ["111@s.whatsapp.net", "222@s.whatsapp.net"]
    for i in range(KEEP + 2):
        await alice.service.send_message(group, {"text": f"g{i}"})
    await server.restart(bob)
    for index, kinds in ((0, ["pkmsg", "skmsg"]), (1, ["skmsg"])):
        again = group_delivered_to_bob_again(server, group, index)
        assert [enc.attrs["type"] for enc in again.children("enc")] == kinds
        before = len(bob_replies(server))
        received = await bob.service.on_message(again)
        assert received is not None and received.duplicate
        replies = bob_replies(server)[before:]
        assert [(n.tag, n.attrs.get("type")) for n in replies] == [
            ("receipt", None),
            ("ack", None),
        ]
    assert bob.texts() == [f"g{i}" for i in range(KEEP + 2)]


async def test_a_used_counter_beside_a_part_that_fails_otherwise_still_asks_for_a_retry() -> None:
    """One part's counter used, another part unreadable: not a duplicate, an undecryptable
    message answered with a retry receipt, as any failure."""
    server = Server()
    alice, bob = await server.add(ALICE), await server.add(BOB)
    for i in range(KEEP + 1):
        await alice.service.send_message("222@s.whatsapp.net", {"text": f"m{i}"})
    again = delivered_to_bob_again(server, 0)
    broken = BinaryNode("enc", {"v": "2", "type": "msg"}, b"\x33not a whisper message")
    mixed = BinaryNode("message", dict(again.attrs), [*again.children("enc"), broken])
    received = await bob.service.on_message(mixed)
    assert received is not None and not received.duplicate
    assert received.error is not None and "DuplicateMessage" in received.error
    assert bob.texts()[-1] is None  # emitted as undecryptable
    retries = [n for s, n in server.sent if s == BOB and n.attrs.get("type") == "retry"]
    assert [n.attrs["id"] for n in retries] == [again.attrs["id"]]
    assert bob.service.duplicates == 0


class CommitsThenTimesOut(LocalCrypto):
    """The store commits the decrypt, but the answer comes too late (ReplyTimeout)."""

    def __init__(self, device: Device, times: int = 1) -> None:
        super().__init__(device.auth.keys, device.repo)
        self.times = times

    async def decrypt(self, stanza: IncomingStanza) -> ReceivedMessage:
        received = await super().decrypt(stanza)
        if self.times:
            self.times -= 1
            raise ReplyTimeout("the decrypt", 30.0)
        return received


async def test_a_stanza_whose_decrypt_timed_out_is_emitted_before_later_ones_are_decrypted() -> (
    None
):
    """Committed but its answer timed out (not emitted, not acked): the next stanza first
    handles it again (answered from the kept copy), so KEEP later ones cannot push that
    copy out before it was emitted and turn its redelivery into a silent duplicate."""
    server = Server()
    alice, bob = await server.add(ALICE), await server.add(BOB)
    await server.restart(bob, CommitsThenTimesOut(bob))
    with pytest.raises(ReplyTimeout):
        await alice.service.send_message("222@s.whatsapp.net", {"text": "m0"})
    assert bob.texts() == []
    for i in range(1, KEEP + 2):
        await alice.service.send_message("222@s.whatsapp.net", {"text": f"m{i}"})
    assert bob.texts() == [f"m{i}" for i in range(KEEP + 2)]
    acked = [n.attrs["id"] for s, n in server.sent if s == BOB and n.tag == "ack"]
    assert acked[0] == sent_by_alice(server, 0).attrs["id"]
    assert [n for s, n in server.sent if s == BOB and n.attrs.get("type") == "retry"] == []


async def test_while_a_doubtful_stanza_still_fails_later_ones_are_left_for_the_next_login() -> None:
    """The store times out again on the doubtful stanza: the later stanza is not decrypted
    and not acked (the server delivers it again at the next login), and decrypts then."""
    server = Server()
    alice, bob = await server.add(ALICE), await server.add(BOB)
    await server.restart(bob, CommitsThenTimesOut(bob, times=2))
    for text in ("m0", "m1"):
        with pytest.raises(ReplyTimeout):
            await alice.service.send_message("222@s.whatsapp.net", {"text": text})
    await alice.service.send_message("222@s.whatsapp.net", {"text": "m2"})
    assert bob.texts() == ["m0", "m2"]
    acked = [n.attrs["id"] for s, n in server.sent if s == BOB and n.tag == "ack"]
    assert acked == [sent_by_alice(server, i).attrs["id"] for i in (0, 2)]
    await server.restart(bob)
    await bob.service.on_message(delivered_to_bob_again(server, 1))
    assert bob.texts() == ["m0", "m2", "m1"]


def group_delivered_to_bob_again(server: Server, group: str, index: int) -> BinaryNode:
    """Bob's copy of Alice's ``index``-th group stanza, as the server would deliver it again."""
    delivered = sent_by_alice(server, index)
    attrs = {"id": delivered.attrs["id"], "from": group, "participant": ALICE, "t": "1"}
    return BinaryNode("message", attrs, parts_for_bob(delivered) + delivered.children("enc"))


async def test_a_retry_after_a_restart_is_answered_from_the_durable_sent_store() -> None:
    """A fresh service over the same store (a restart) still resends what was sent before."""
    server = Server()
    alice, bob = await server.add(ALICE), await server.add(BOB)
    await alice.service.send_message("222@s.whatsapp.net", {"text": "first"})
    old_service = alice.service
    await server.restart(alice)
    assert alice.service is not old_service
    await bob.repo.delete_session(["111:1@s.whatsapp.net"])
    await alice.service.send_message("222@s.whatsapp.net", {"text": "second"})
    assert bob.texts()[-1] == "second"
    sent = await alice.auth.keys.get("sent-message", ["222@s.whatsapp.net"])
    assert len(sent["222@s.whatsapp.net"]["ids"]) == 2


def test_kept_messages_are_bounded_and_newest_last() -> None:
    """At most KEEP per author or chat; the oldest go first; an id kept twice moves to the end."""
    value: object = None
    for i in range(KEEP + 5):
        value = kept_with(value, f"m{i}", bytes([i]))
    assert isinstance(value, dict)
    assert value["ids"] == [f"m{i}" for i in range(5, KEEP + 5)]
    assert kept_lookup(value, "m4") is None and kept_lookup(value, "m5") == bytes([5])
    value = kept_with(value, "m5", b"x")
    assert value["ids"][-1] == "m5" and len(value["ids"]) == KEEP


async def test_a_user_the_server_does_not_know_is_a_recipient_error() -> None:
    """usync lists no device for the recipient: RecipientError, nothing encrypted or sent."""
    server = Server()
    alice = await server.add(ALICE)
    with pytest.raises(RecipientError, match="no device"):
        await alice.service.send_message("999@s.whatsapp.net", {"text": "anyone?"})
    assert [n for s, n in server.sent if n.tag == "message"] == []


async def test_a_group_the_server_refuses_is_a_recipient_error() -> None:
    """An error answer to the group metadata query: RecipientError naming the group."""
    server = Server()
    alice = await server.add(ALICE)
    with pytest.raises(RecipientError, match="404"):
        await alice.service.send_message("404@g.us", {"text": "anyone?"})
