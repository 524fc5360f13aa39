"""A bot on the in-memory sandbox receives and sends: contacts, groups, crashes, restarts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from actors.connection.binary.jid import Jid
from actors.connection.binary.node import BinaryNode
from actors.messaging.incoming import MessageKey
from runtime.app import open_runtime
from sandbox.core import ConnState
from stores.auth import use_memory_auth_state
from tests.session.helpers import Recorder, crash_and_wait_restart, sandbox_config, scanning_phone
from tests.session.memory_sandbox import MemorySandbox, open_memory_sandbox


def texts(events: Recorder) -> list[str | None]:
    """The text of every message the runtime emitted, in order."""
    return [m["text"] for e in events.of("messages_upsert") for m in e["messages"]]


async def contact_texts(sb: MemorySandbox, contact: str, count: int) -> list[str | None]:
    """Wait until ``contact`` received ``count`` messages; their texts."""
    return [m.text for m in await sb.wait_contact_messages(contact, count)]


async def until(condition: Any) -> None:
    """Let the runtime and the sandbox work until ``condition()`` holds (60 s of mock time)."""
    for _ in range(6000):
        if condition():
            return
        await trio.sleep(0.01)
    raise AssertionError("condition never held")


async def paired(rt: Any) -> str:
    await rt.wait_connected(timeout=120)
    creds = await rt.auth_state()
    return str(Jid.parse(creds.me["id"]).user_jid())


@asynccontextmanager
async def paired_bot() -> AsyncIterator[tuple[MemorySandbox, Any, Recorder, str]]:
    """A bot paired with an in-memory sandbox: ``(sandbox, runtime, events, bot user JID)``."""
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        auth = await use_memory_auth_state()
        events = Recorder()
        config = sandbox_config(sb, auth, on_qr=scanning_phone(sb, nursery))
        async with open_runtime(config, subscribe=events) as rt:
            yield sb, rt, events, await paired(rt)
        nursery.cancel_scope.cancel()


async def test_a_contact_and_the_bot_exchange_texts(autojump_clock):
    """A contact's pkmsg is emitted as messages_upsert; the bot's reply decrypts at the contact."""
    async with paired_bot() as (sb, rt, events, bot):
        carol = sb.new_contact("Carol")
        sent_id = sb.contact_send(carol.jid, bot, "hello bot")
        await events.wait_for(lambda r: "hello bot" in texts(r))
        [message] = [m for e in events.of("messages_upsert") for m in e["messages"]]
        assert message["key"]["id"] == sent_id and not message["key"]["from_me"]
        assert message["key"]["remote_jid"] == str(Jid.parse(carol.jid).user_jid())
        assert message["push_name"] == "Carol"
        key = await rt.send_message(carol.jid, {"text": "hello carol"})
        assert key.from_me and key.id.startswith("3EB0")
        assert await contact_texts(sb, carol.jid, 1) == ["hello carol"]
        sb.contact_send(carol.jid, bot, "second")
        await events.wait_for(lambda r: "second" in texts(r))
        await rt.send_message(carol.jid, {"text": "again"})
        assert await contact_texts(sb, carol.jid, 2) == ["hello carol", "again"]


async def test_sessions_survive_a_crash_of_every_actor(autojump_clock):
    """After the connection and signal-store actors restart, the conversation goes on."""
    async with paired_bot() as (sb, rt, events, bot):
        carol = sb.new_contact("Carol")
        sb.contact_send(carol.jid, bot, "before")
        await events.wait_for(lambda r: "before" in texts(r))
        for name in ("signal_store", "connection"):
            await crash_and_wait_restart(rt.primary.refs[name])
        await rt.wait_connected(timeout=120)
        sb.contact_send(carol.jid, bot, "after")
        await events.wait_for(lambda r: "after" in texts(r))
        await rt.send_message(carol.jid, {"text": "still here"})
        assert await contact_texts(sb, carol.jid, 1) == ["still here"]
        undecryptable = [
            m for e in events.of("messages_upsert") for m in e["messages"] if m.get("undecryptable")
        ]
        assert undecryptable == []


async def test_a_group_message_reaches_the_bot_and_its_answer_the_members(autojump_clock):
    """A contact's group message (skdm + skmsg) is emitted; the bot's reply reaches members."""
    async with paired_bot() as (sb, rt, events, bot):
        carol, dave = sb.new_contact("Carol"), sb.new_contact("Dave")
        group = sb.create_group("friends", [carol.jid, dave.jid, bot])
        sb.contact_send(carol.jid, group.jid, "hi group")
        await events.wait_for(lambda r: "hi group" in texts(r))
        [message] = [m for e in events.of("messages_upsert") for m in e["messages"]]
        assert message["key"]["remote_jid"] == group.jid
        assert message["key"]["participant"] is not None
        await rt.send_message(group.jid, {"text": "hi all"})
        assert "hi all" in await contact_texts(sb, dave.jid, 2)


async def test_read_messages_sends_read_receipts_the_contact_sees(autojump_clock):
    """rt.read_messages marks a contact's message read: the contact gets a read receipt."""
    async with paired_bot() as (sb, rt, events, bot):
        carol = sb.new_contact("Carol")
        sent_id = sb.contact_send(carol.jid, bot, "read me")
        await events.wait_for(lambda r: "read me" in texts(r))
        [message] = [m for e in events.of("messages_upsert") for m in e["messages"]]
        key = MessageKey(**message["key"])
        await rt.read_messages([key])
        contact = sb.core.contacts.get(carol.jid)
        await until(lambda: any(r.id == sent_id and r.type == "read" for r in contact.receipts))


async def test_the_bot_tops_up_pre_keys_when_the_server_says_few_are_left(autojump_clock):
    """A pre-key-low notification makes new keys durable, then uploads them."""
    async with paired_bot() as (sb, rt, _events, _bot):
        before = (await rt.auth_state()).next_pre_key_id
        uploads = sb.statistics().pre_key_uploads
        [conn] = [c.conn_id for c in sb.connections() if c.state is ConnState.LOGGED_IN]
        notification = BinaryNode(
            "notification",
            {"id": "N1", "from": "s.whatsapp.net", "type": "encrypt", "t": "1"},
            [BinaryNode("count", {"value": "2"})],
        )
        sb.dispatch(sb.core.send_node(conn, notification))
        await until(lambda: sb.statistics().pre_key_uploads > uploads)
        assert (await rt.auth_state()).next_pre_key_id > before
