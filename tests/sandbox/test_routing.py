"""The sandbox routes messages: usync, pre-key bundles, messages, receipts, offline queues."""

from __future__ import annotations

from actors.connection.binary import BinaryNode
from actors.messaging.incoming import ack_for
from actors.messaging.outgoing import DeviceCiphertext, message_stanza
from actors.messaging.queries import (
    key_bundles_iq,
    parse_key_bundles,
    parse_usync_devices,
    usync_devices_iq,
)
from sandbox.routing import OfflineQueues
from stores.keys import signal_public_key
from tests.sandbox.messaging_world import WALL, Bot, World

T = str(int(WALL))


def _usync(bot: Bot, jids: list[str]) -> BinaryNode:
    return bot.client_or_fail().iq("usync", "get", usync_devices_iq("x", "s1", jids).children())


def _stanza(msg_id: str, to: str, targets: dict[str, bytes], kind: str = "msg") -> BinaryNode:
    devices = [DeviceCiphertext(jid, kind, data) for jid, data in targets.items()]
    return message_stanza(msg_id, to, devices)


def _messages(nodes: list[BinaryNode]) -> list[BinaryNode]:
    return [n for n in nodes if n.tag == "message"]


async def test_usync_lists_paired_devices_with_key_index_and_the_lid() -> None:
    """usync answers each user's paired devices (key-index on companions) and its LID."""
    world = World()
    first = await world.bot()
    user = first.jid.split(":")[0]
    second = await world.bot(user)
    contact = world.core.add_contact("Ann")
    result = _usync(first, [first.user_jid, contact.jid, "19999999999@s.whatsapp.net"])
    users = {u.jid: u for u in parse_usync_devices(result)}
    account = world.core.registry.account(user)
    assert users[first.user_jid].devices == (1, 2)
    assert users[first.user_jid].lid == f"{account.lid_user}@lid"
    assert users[contact.jid].devices == (0,)
    assert users[contact.jid].lid == contact.lid
    assert users["19999999999@s.whatsapp.net"].devices == ()
    listed = result.require_child("usync", "list").children("user")[0]
    key_indexes = [
        d.attr("key-index") for d in listed.require_child("devices", "device-list").children()
    ]
    assert key_indexes == ["1", "2"]
    assert second.jid == f"{user}:2@s.whatsapp.net"


async def test_a_bundle_fetch_consumes_one_pre_key_and_the_last_leaves_none() -> None:
    """Each fetch hands out (and forgets) the lowest one-time pre-key; then bundles have none."""
    world = World()
    asker = await world.bot()
    target = await world.bot(pre_keys=2)
    device = world.core.registry.find(target.jid)
    fetched = []
    for _ in range(3):
        reply = asker.client_or_fail().query(key_bundles_iq("k", [target.jid]))
        fetched.append(parse_key_bundles(reply)[target.jid])
    assert [b.pre_key.key_id if b.pre_key else None for b in fetched] == [1, 2, None]
    assert device.pre_key_count == 0
    bundle = fetched[0]
    assert bundle.registration_id == target.device.registration_id
    assert bundle.identity_key == signal_public_key(target.device.identity_key.public)
    assert bundle.signed_pre_key.key_id == target.device.skey.key_id


async def test_a_bundle_for_an_unknown_device_is_left_out() -> None:
    """A key request naming a device the sandbox lacks gets a list without it (no error)."""
    world = World()
    asker = await world.bot()
    reply = asker.client_or_fail().query(key_bundles_iq("k", ["19999999999:3@s.whatsapp.net"]))
    assert reply.attr("type") == "result"
    assert reply.require_child("list").children() == []


async def test_a_message_is_acked_and_delivered_to_each_addressed_device() -> None:
    """The sender gets ack{class=message, id, from=to, t}; each device its own enc."""
    world = World()
    alice = await world.bot()
    alice_user = alice.jid.split(":")[0]
    alice2 = await world.bot(alice_user)
    bob = await world.bot()
    bob2 = await world.bot(bob.jid.split(":")[0])
    for bot in (alice, alice2, bob, bob2):
        bot.client_or_fail().take()
    targets = {bob.jid: b"to-bob-1", bob2.jid: b"to-bob-2", alice2.jid: b"own-copy"}
    alice.client_or_fail().send(_stanza("M1", bob.user_jid, targets))
    (ack,) = alice.client_or_fail().take()
    assert ack.tag == "ack"
    assert ack.attrs == {"class": "message", "id": "M1", "from": bob.user_jid, "t": T}
    (to_bob,) = bob.client_or_fail().take()
    assert to_bob.attrs == {"id": "M1", "from": alice.jid, "t": T, "type": "text"}
    (enc,) = to_bob.children()
    assert (enc.attr("type"), enc.content) == ("msg", b"to-bob-1")
    (to_bob2,) = bob2.client_or_fail().take()
    assert to_bob2.require_child("enc").content == b"to-bob-2"
    (own,) = alice2.client_or_fail().take()
    assert own.attr("recipient") == bob.user_jid
    assert own.require_child("enc").content == b"own-copy"
    assert world.core.statistics().messages_routed == 1


async def test_parts_for_devices_outside_the_conversation_are_dropped() -> None:
    """A part addressed to a third account's device, or to no device, reaches nobody."""
    world = World()
    alice, bob, carol = await world.bot(), await world.bot(), await world.bot()
    for bot in (alice, bob, carol):
        bot.client_or_fail().take()
    targets = {carol.jid: b"not yours", "15550199999:1@s.whatsapp.net": b"nobody", bob.jid: b"ok"}
    alice.client_or_fail().send(_stanza("M4", bob.user_jid, targets))
    assert [n.require_child("enc").content for n in bob.client_or_fail().take()] == [b"ok"]
    assert carol.client_or_fail().take() == []
    assert world.core.statistics().stanzas_dropped == 2


async def test_a_pkmsg_carries_the_senders_device_identity_along() -> None:
    """device-identity goes with a pkmsg enc, not with a msg one."""
    world = World()
    alice, bob = await world.bot(), await world.bot()
    bob.client_or_fail().take()
    stanza = message_stanza(
        "M2",
        bob.user_jid,
        [DeviceCiphertext(bob.jid, "pkmsg", b"x")],
        device_identity=b"adv-identity",
    )
    alice.client_or_fail().send(stanza)
    (delivered,) = bob.client_or_fail().take()
    assert [c.tag for c in delivered.children()] == ["enc", "device-identity"]
    assert delivered.require_child("device-identity").content == b"adv-identity"


async def test_a_message_to_an_unknown_user_is_nacked_with_404() -> None:
    """A stanza to a user the sandbox does not know gets ack error=404 and goes nowhere."""
    world = World()
    alice = await world.bot()
    alice.client_or_fail().take()
    alice.client_or_fail().send(_stanza("M3", "19999999999@s.whatsapp.net", {}))
    (ack,) = alice.client_or_fail().take()
    assert ack.attr("error") == "404"


async def test_an_offline_device_gets_its_queue_after_login_in_order() -> None:
    """Stanzas for a device that is not connected wait; after success they come in order."""
    world = World()
    alice, bob = await world.bot(), await world.bot()
    bob.disconnect()
    for msg_id in ("Q1", "Q2"):
        alice.client_or_fail().send(_stanza(msg_id, bob.user_jid, {bob.jid: msg_id.encode()}))
    assert [n.attr("id") for n in world.core.pending(bob.jid)] == ["Q1", "Q2"]
    nodes = bob.connect()
    assert [n.tag for n in nodes] == ["success", "ib", "message", "message", "ib"]
    assert [n.attr("id") for n in _messages(nodes)] == ["Q1", "Q2"]
    assert nodes[-1].require_child("offline").attr("count") == "2"


async def test_a_stanza_stays_queued_until_acked_and_is_redelivered_on_reconnect() -> None:
    """Delivered but not acked before the disconnect: sent again at the next login; acked: gone."""
    world = World()
    alice, bob = await world.bot(), await world.bot()
    bob.client_or_fail().take()
    alice.client_or_fail().send(_stanza("R1", bob.user_jid, {bob.jid: b"one"}))
    (first,) = bob.client_or_fail().take()
    assert [n.attr("id") for n in world.core.pending(bob.jid)] == ["R1"]
    bob.disconnect()
    again = _messages(bob.connect())
    assert [n.attr("id") for n in again] == ["R1"]
    assert again[0].require_child("enc").content == first.require_child("enc").content
    bob.client_or_fail().send(ack_for(again[0], bob.jid))
    assert world.core.pending(bob.jid) == []
    bob.disconnect()
    nodes = bob.connect()
    assert _messages(nodes) == []
    assert nodes[-1].require_child("offline").attr("count") == "0"


async def test_an_ack_for_another_id_leaves_the_queue_alone() -> None:
    """Only the ack naming the stanza's class, id and sender removes it."""
    world = World()
    alice, bob = await world.bot(), await world.bot()
    alice.client_or_fail().send(_stanza("A1", bob.user_jid, {bob.jid: b"x"}))
    client = bob.client_or_fail()
    client.send(BinaryNode("ack", {"class": "message", "id": "other", "to": alice.jid}))
    client.send(BinaryNode("ack", {"class": "receipt", "id": "A1", "to": alice.jid}))
    client.send(BinaryNode("ack", {"class": "message", "id": "A1", "to": bob.jid}))
    assert [n.attr("id") for n in world.core.pending(bob.jid)] == ["A1"]
    client.send(BinaryNode("ack", {"class": "message", "id": "A1", "to": alice.jid}))
    assert world.core.pending(bob.jid) == []


async def test_a_receipt_is_acked_and_routed_to_every_device_of_the_sender() -> None:
    """A receipt is acked to its author and reaches each device of the message's sender."""
    world = World()
    alice = await world.bot()
    alice2 = await world.bot(alice.jid.split(":")[0])
    bob = await world.bot()
    alice.client_or_fail().send(_stanza("D1", bob.user_jid, {bob.jid: b"x"}))
    for bot in (alice, alice2, bob):
        bot.client_or_fail().take()
    bob.client_or_fail().send(BinaryNode("receipt", {"id": "D1", "to": alice.jid}))
    (ack,) = bob.client_or_fail().take()
    assert ack.attrs == {"id": "D1", "class": "receipt", "from": alice.jid}
    for bot in (alice, alice2):
        (receipt,) = bot.client_or_fail().take()
        assert receipt.attrs == {"id": "D1", "t": T, "from": bob.user_jid}
    read = BinaryNode("receipt", {"id": "D1", "to": alice.jid, "type": "read", "t": T})
    bob.client_or_fail().send(read)
    (receipt,) = alice.client_or_fail().take()
    assert receipt.attr("type") == "read"
    assert world.core.statistics().receipts_routed == 2


async def test_a_retry_receipt_goes_to_the_one_device_that_sent_the_message() -> None:
    """A retry receipt reaches only the sending device, from the asking device's JID."""
    world = World()
    alice = await world.bot()
    alice2 = await world.bot(alice.jid.split(":")[0])
    bob = await world.bot()
    alice.client_or_fail().send(_stanza("X1", bob.user_jid, {bob.jid: b"x"}))
    for bot in (alice, alice2, bob):
        bot.client_or_fail().take()
    retry = BinaryNode(
        "receipt",
        {"id": "X1", "to": alice.jid, "type": "retry"},
        [BinaryNode("retry", {"count": "1", "id": "X1", "t": T, "v": "1"})],
    )
    bob.client_or_fail().send(retry)
    (receipt,) = alice.client_or_fail().take()
    assert receipt.attrs == {"id": "X1", "type": "retry", "t": T, "from": bob.jid}
    assert receipt.require_child("retry").attr("count") == "1"
    assert alice2.client_or_fail().take() == []


async def test_a_receipt_for_an_offline_sender_waits_in_its_queue() -> None:
    """Receipts are queued like messages: an offline sender gets them after its next login."""
    world = World()
    alice, bob = await world.bot(), await world.bot()
    alice.client_or_fail().send(_stanza("W1", bob.user_jid, {bob.jid: b"x"}))
    alice.disconnect()
    bob.client_or_fail().send(BinaryNode("receipt", {"id": "W1", "to": alice.jid}))
    nodes = alice.connect()
    assert [(n.tag, n.attr("id")) for n in nodes if n.tag == "receipt"] == [("receipt", "W1")]


def test_offline_queue_ack_matches_class_id_sender_and_type() -> None:
    """OfflineQueues.ack removes the first stanza matching class, id, from, and type if named."""
    queues = OfflineQueues()
    read = BinaryNode("receipt", {"id": "1", "from": "a@s.whatsapp.net", "type": "read"})
    plain = BinaryNode("receipt", {"id": "1", "from": "a@s.whatsapp.net"})
    queues.push(("u", 1), read)
    queues.push(("u", 1), plain)
    ack = BinaryNode("ack", {"class": "receipt", "id": "1", "to": "a@s.whatsapp.net"})
    typed = BinaryNode("ack", {**ack.attrs, "type": "read"})
    assert queues.ack(("u", 1), BinaryNode("ack", {**ack.attrs, "type": "played"})) is None
    assert queues.ack(("u", 1), typed) is read
    assert queues.ack(("u", 1), ack) is plain
    assert queues.total == 0


async def test_a_resend_to_one_device_reaches_only_that_device() -> None:
    """Baileys' resend shapes: to=<device> > enc{count}; own device: to=<device>, recipient."""
    world = World()
    alice = await world.bot()
    alice2 = await world.bot(alice.jid.split(":")[0])
    bob = await world.bot()
    bob2 = await world.bot(bob.jid.split(":")[0])
    for bot in (alice, alice2, bob, bob2):
        bot.client_or_fail().take()
    enc = BinaryNode("enc", {"v": "2", "type": "msg", "count": "1"}, b"again")
    alice.client_or_fail().send(BinaryNode("message", {"id": "S1", "to": bob2.jid}, [enc]))
    (resent,) = bob2.client_or_fail().take()
    assert (resent.attr("id"), resent.require_child("enc").content) == ("S1", b"again")
    assert bob.client_or_fail().take() == []
    own = BinaryNode("message", {"id": "S1", "to": alice2.jid, "recipient": bob.user_jid}, [enc])
    alice.client_or_fail().send(own)
    (copy,) = alice2.client_or_fail().take()
    assert (copy.attr("from"), copy.attr("recipient")) == (alice.jid, bob.user_jid)
