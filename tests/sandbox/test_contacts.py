"""Simulated contacts: our Signal code on the sandbox's side, end to end with a bot's repository."""

from __future__ import annotations

from actors.connection.binary import BinaryNode
from actors.messaging.incoming import retry_receipt
from actors.messaging.outgoing import DeviceCiphertext, message_stanza
from actors.messaging.queries import parse_usync_devices, usync_devices_iq
from sandbox.contacts import CONTACT_PRE_KEYS
from stores.keys import KEY_BUNDLE_TYPE, verify
from tests.sandbox.messaging_world import World


def _encs(nodes: list[BinaryNode]) -> list[str | None]:
    return [n.require_child("enc").attr("type") for n in nodes if n.tag == "message"]


async def test_a_new_contact_is_an_account_whose_phone_uploaded_its_keys() -> None:
    """contact add: a new number, device 0 with a verified signed pre-key and one-time keys."""
    world = World()
    contact = world.core.add_contact("Ann")
    device = world.core.registry.find(contact.jid)
    assert device.device_id == 0 and contact.name == "Ann"
    assert device.pre_key_count == CONTACT_PRE_KEYS
    signed = device.signed_pre_key
    assert signed is not None
    assert verify(device.identity_key, KEY_BUNDLE_TYPE + signed.public, signed.signature)
    bot = await world.bot()
    result = bot.client_or_fail().iq(
        "usync", "get", usync_devices_iq("u", "s", [contact.jid]).children()
    )
    assert parse_usync_devices(result)[0].devices == (0,)
    assert world.core.statistics().contacts == 1


async def test_a_contacts_pkmsg_decrypts_at_the_bot_and_the_bots_reply_at_the_contact() -> None:
    """Contact → bot (pkmsg, through SignalRepository), bot → contact (msg), then msg both ways."""
    world = World()
    bot = await world.bot()
    bot.client_or_fail().take()
    contact = world.core.add_contact("Ann")
    msg_id = world.contact_send(contact.jid, bot.user_jid, "hello bot")
    nodes = bot.client_or_fail().take()
    assert _encs(nodes) == ["pkmsg"]
    assert nodes[0].attr("notify") == "Ann" and nodes[0].attr("from") == contact.jid
    (received,) = await bot.process(nodes)
    assert (received.key.id, received.text, received.error) == (msg_id, "hello bot", None)
    assert [(r.id, r.sender, r.type) for r in contact.receipts] == [(msg_id, bot.user_jid, None)]
    assert world.core.pending(bot.jid) == []  # acked

    reply_id = await bot.send_text(contact.jid, "hi Ann")
    assert [(m.id, m.chat, m.author, m.text) for m in contact.messages] == [
        (reply_id, bot.user_jid, bot.jid, "hi Ann")
    ]
    assert [n.attr("id") for n in bot.client_or_fail().take() if n.tag == "receipt"] == [reply_id]

    world.contact_send(contact.jid, bot.user_jid, "and again")
    nodes = bot.client_or_fail().take()
    assert _encs(nodes) == ["msg"]
    assert [m.text for m in await bot.process(nodes)] == ["and again"]


async def test_a_bot_starts_the_session_from_the_contacts_bundle() -> None:
    """The bot's first message is a pkmsg on the contact's one-time key, which both forget."""
    world = World()
    bot = await world.bot()
    contact = world.core.add_contact()
    before = set(contact.pre_keys)
    await bot.send_text(contact.jid, "first")
    assert [m.text for m in contact.messages] == ["first"]
    assert before - set(contact.pre_keys) == {1}
    assert world.core.registry.find(contact.jid).pre_key_count == CONTACT_PRE_KEYS - 1
    world.contact_send(contact.jid, bot.user_jid, "answer")
    nodes = [n for n in bot.client_or_fail().take() if n.tag == "message"]
    assert _encs(nodes) == ["msg"]
    assert [m.text for m in await bot.process(nodes)] == ["answer"]


async def test_a_contact_reaches_every_device_of_the_bot_account() -> None:
    """Each paired device of the account gets its own pkmsg and decrypts it."""
    world = World()
    bot = await world.bot()
    other = await world.bot(bot.jid.split(":")[0])
    contact = world.core.add_contact()
    world.contact_send(contact.jid, bot.user_jid, "to both")
    for device in (bot, other):
        assert [m.text for m in await device.process()] == ["to both"]
    assert len(contact.receipts) == 2


async def test_a_contact_message_to_an_offline_bot_decrypts_after_its_login() -> None:
    """Sent while the bot is away: queued, delivered after success, and it decrypts."""
    world = World()
    bot = await world.bot()
    bot.disconnect()
    contact = world.core.add_contact()
    world.contact_send(contact.jid, bot.user_jid, "while you were out")
    assert contact.receipts == []
    nodes = bot.connect()
    assert [m.text for m in await bot.process(nodes)] == ["while you were out"]
    assert len(contact.receipts) == 1


async def test_a_retry_receipt_from_the_bot_gets_a_fresh_pkmsg_that_decrypts() -> None:
    """The bot lost its session: on its retry receipt the contact resends (count=1, new session)."""
    world = World()
    bot = await world.bot()
    bot.client_or_fail().take()
    contact = world.core.add_contact()
    world.contact_send(contact.jid, bot.user_jid, "one")
    await bot.process()
    await bot.repository.delete_session([contact.jid])
    msg_id = world.contact_send(contact.jid, bot.user_jid, "two")
    (node,) = [n for n in bot.client_or_fail().take() if n.tag == "message"]
    (failed,) = await bot.process([node], receipt=False)
    assert failed.error is not None
    retry = retry_receipt(node, 1, bot.device.registration_id, None)
    bot.client_or_fail().send(retry)
    resent = [n for n in bot.client_or_fail().take() if n.tag == "message"]
    assert [(n.attr("id"), n.require_child("enc").attr("count")) for n in resent] == [(msg_id, "1")]
    assert _encs(resent) == ["pkmsg"]
    assert [m.text for m in await bot.process(resent)] == ["two"]


async def test_a_message_the_contact_cannot_decrypt_is_recorded_and_answered_with_retry() -> None:
    """Garbage in an enc: the contact records the error and sends the bot a retry receipt."""
    world = World()
    bot = await world.bot()
    bot.client_or_fail().take()
    contact = world.core.add_contact()
    stanza = message_stanza(
        "BAD1", contact.jid, [DeviceCiphertext(contact.jid, "msg", b"\x33not a message")]
    )
    bot.client_or_fail().send(stanza)
    (message,) = contact.messages
    assert message.text is None and message.error is not None
    receipts = [n for n in bot.client_or_fail().take() if n.tag == "receipt"]
    assert [(r.attr("type"), r.attr("from")) for r in receipts] == [("retry", contact.jid)]
    assert receipts[0].require_child("retry").attr("count") == "1"
