"""Sandbox groups: metadata iq, fan-out to every participant device, sender keys end to end."""

from __future__ import annotations

import pytest

from actors.connection.binary import BinaryNode
from actors.messaging.incoming import retry_receipt
from actors.messaging.outgoing import message_stanza
from sandbox.errors import UnknownTargetError
from tests.sandbox.messaging_world import WALL, Bot, World


def _metadata_iq(bot: Bot, group: str) -> BinaryNode:
    iq = BinaryNode(
        "iq",
        {"xmlns": "w:g2", "type": "get", "to": group},
        [BinaryNode("query", {"request": "interactive"})],
    )
    return bot.client_or_fail().query(iq)


def _messages(bot: Bot) -> list[BinaryNode]:
    return [n for n in bot.client_or_fail().take() if n.tag == "message"]


async def test_group_metadata_names_subject_creator_and_participants() -> None:
    """w:g2 query → group{id, subject, creation, creator, addressing_mode=pn} > participant*."""
    world = World()
    bot = await world.bot()
    ann = world.core.add_contact("Ann")
    group = world.core.create_group("Team", [ann.jid, bot.user_jid])
    assert group.jid.endswith("@g.us")
    reply = _metadata_iq(bot, group.jid)
    assert (reply.attr("type"), reply.attr("from")) == ("result", group.jid)
    node = reply.require_child("group")
    assert node.attrs["id"] == group.jid.removesuffix("@g.us")
    assert (node.attr("subject"), node.attr("creator"), node.attr("creation")) == (
        "Team",
        ann.jid,
        str(int(WALL)),
    )
    assert node.attr("addressing_mode") == "pn"
    members = [(p.attr("jid"), p.attr("type")) for p in node.children("participant")]
    assert members == [(ann.jid, "superadmin"), (bot.user_jid, None)]
    assert world.core.statistics().groups == 1


async def test_metadata_of_an_unknown_group_is_a_404() -> None:
    """A query for a group the sandbox does not hold gets error 404."""
    world = World()
    bot = await world.bot()
    reply = _metadata_iq(bot, "120363999999999999@g.us")
    assert reply.attr("type") == "error"
    assert reply.require_child("error").attr("code") == "404"


async def test_creating_a_group_with_an_unknown_member_fails() -> None:
    """create_group refuses a JID that is no account of the sandbox."""
    world = World()
    with pytest.raises(UnknownTargetError):
        world.core.create_group("Nobody", ["19999999999@s.whatsapp.net"])


async def test_a_contacts_group_message_reaches_every_participant_device() -> None:
    """skdm (pkmsg) + skmsg to each device first, then skmsg only; every device decrypts."""
    world = World()
    bot = await world.bot()
    bot2 = await world.bot(bot.jid.split(":")[0])
    ann, ben = world.core.add_contact("Ann"), world.core.add_contact("Ben")
    group = world.core.create_group("Team", [ann.jid, bot.user_jid, ben.jid])
    for device in (bot, bot2):
        device.client_or_fail().take()
    first = world.contact_send(ann.jid, group.jid, "hello team")
    for device in (bot, bot2):
        (node,) = _messages(device)
        assert node.attr("from") == group.jid and node.attr("participant") == ann.jid
        assert node.attr("addressing_mode") == "pn" and node.attr("notify") == "Ann"
        assert [e.attr("type") for e in node.children("enc")] == ["pkmsg", "skmsg"]
        (received,) = await device.process([node])
        assert (received.key.id, received.text, received.key.participant) == (
            first,
            "hello team",
            ann.jid,
        )
    assert [(m.chat, m.author, m.text) for m in ben.messages] == [
        (group.jid, ann.jid, "hello team")
    ]
    world.contact_send(ann.jid, group.jid, "second")
    (node,) = _messages(bot)
    assert [e.attr("type") for e in node.children("enc")] == ["skmsg"]
    assert [m.text for m in await bot.process([node])] == ["second"]
    assert [m.text for m in ben.messages] == ["hello team", "second"]


async def test_a_bots_group_message_decrypts_at_contacts_and_receipts_come_back() -> None:
    """The bot's skdm + skmsg decrypt at each contact; their group receipts reach the bot."""
    world = World()
    bot = await world.bot()
    ann, ben = world.core.add_contact("Ann"), world.core.add_contact("Ben")
    group = world.core.create_group("Team", [bot.user_jid, ann.jid, ben.jid])
    msg_id = await bot.send_group_text(group.jid, "hi all")
    for contact in (ann, ben):
        assert [(m.id, m.chat, m.author, m.text) for m in contact.messages] == [
            (msg_id, group.jid, bot.jid, "hi all")
        ]
    receipts = [n for n in bot.client_or_fail().take() if n.tag == "receipt"]
    assert sorted((r.attr("from"), r.attr("participant")) for r in receipts) == sorted(
        [(group.jid, ann.jid), (group.jid, ben.jid)]
    )
    await bot.send_group_text(group.jid, "again")
    assert [m.text for m in ann.messages] == ["hi all", "again"]


async def test_group_stanzas_from_outsiders_or_to_unknown_groups_are_refused() -> None:
    """A non-participant's group stanza gets ack error=403; an unknown group's, 404."""
    world = World()
    bot = await world.bot()
    ann = world.core.add_contact()
    group = world.core.create_group("Closed", [ann.jid])
    bot.client_or_fail().take()
    bot.client_or_fail().send(message_stanza("G1", group.jid, [], group_ciphertext=b"x"))
    bot.client_or_fail().send(
        message_stanza("G2", "120363999999999999@g.us", [], group_ciphertext=b"x")
    )
    acks = bot.client_or_fail().take()
    assert [(a.attr("id"), a.attr("error")) for a in acks] == [("G1", "403"), ("G2", "404")]
    assert ann.messages == []


async def test_a_group_retry_gets_the_distribution_again_to_that_device_only() -> None:
    """A bot device that lost the sender key asks again; only it gets the message (count=1)."""
    world = World()
    bot = await world.bot()
    bot2 = await world.bot(bot.jid.split(":")[0])
    ann = world.core.add_contact("Ann")
    group = world.core.create_group("Team", [ann.jid, bot.user_jid])
    for device in (bot, bot2):
        device.client_or_fail().take()
    world.contact_send(ann.jid, group.jid, "one")
    for device in (bot, bot2):
        await device.process()
    msg_id = world.contact_send(ann.jid, group.jid, "two")
    await bot.auth.state.keys.set(
        {"sender-key": {f"{group.jid}::{ann.jid.split('@')[0]}::0": None}}
    )
    (node,) = _messages(bot)
    (failed,) = await bot.process([node], receipt=False)
    assert failed.error is not None
    assert [m.text for m in await bot2.process()] == ["two"]
    bot.client_or_fail().send(retry_receipt(node, 1, bot.device.registration_id, None))
    (resent,) = _messages(bot)
    assert (resent.attr("id"), resent.attr("participant")) == (msg_id, ann.jid)
    # As Baileys v7 resends: one enc for the device, the distribution inside it.
    assert [(e.attr("type"), e.attr("count")) for e in resent.children("enc")] == [("pkmsg", "1")]
    assert [m.text for m in await bot.process([resent])] == ["two"]
    assert _messages(bot2) == []
