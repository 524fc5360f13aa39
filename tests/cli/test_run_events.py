"""`baileys-trio run` prints received messages and receipts: readable lines, complete JSON."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

from actors.cli import event_printer
from actors.connection.binary.node import BinaryNode
from actors.connection.proto import wa_pb2
from actors.messaging.incoming import MessageKey
from actors.messaging.receive import ReceivedMessage
from actors.messaging.service import message_event, receipt_event
from tests.docs.sandbox_bot import Bot, run_bot

BIN = Path(sys.executable).parent
ANN = "15550100001@s.whatsapp.net"
GROUP = "120363000000000001@g.us"


def printed(fmt: str, *events: dict[str, Any]) -> list[str]:
    """What the `run` printer writes for ``events``, line by line."""
    out = io.StringIO()
    printer = event_printer(fmt, out)
    for event in events:
        printer(event)
    return out.getvalue().splitlines()


def text_from_ann(text: str = "hello bot") -> dict[str, Any]:
    message = wa_pb2.Message(conversation=text)
    return message_event(ReceivedMessage(MessageKey(ANN, False, "3EB0A1"), message, "Ann", 1700))


def group_message_with_sender_key() -> dict[str, Any]:
    distribution = wa_pb2.Message.SenderKeyDistributionMessage(
        groupId=GROUP, axolotlSenderKeyDistributionMessage=b"\x33chain-key-secret"
    )
    message = wa_pb2.Message(
        extendedTextMessage=wa_pb2.Message.ExtendedTextMessage(text="hi team"),
        senderKeyDistributionMessage=distribution,
    )
    key = MessageKey(GROUP, False, "3EB0B2", "15550100001:0@s.whatsapp.net")
    return message_event(ReceivedMessage(key, message, "Ann", 1701))


def undecryptable() -> dict[str, Any]:
    why = "part 0 (msg): NoSessionError: no session with 15550100001.0"
    return message_event(ReceivedMessage(MessageKey(ANN, False, "3EB0C3"), None, "Ann", 1702, why))


def read_receipt() -> dict[str, Any]:
    node = BinaryNode(
        "receipt",
        {"id": "3EB0D4", "from": ANN, "type": "read", "t": "1703"},
        [BinaryNode("list", {}, [BinaryNode("item", {"id": "3EB0D5"})])],
    )
    return receipt_event(node)


def test_console_shows_who_wrote_in_which_chat_and_the_text():
    """One line per message: id, push name and author, the group if any, the text."""
    assert printed("console", text_from_ann(), group_message_with_sender_key()) == [
        f"message 3EB0A1 from Ann <{ANN}>: hello bot",
        f"message 3EB0B2 from Ann <15550100001:0@s.whatsapp.net> in {GROUP}: hi team",
    ]


def test_console_names_our_own_copies_and_messages_without_text():
    """A copy from our phone reads `from me ... to CHAT`; a non-text message names its fields."""
    copy = message_event(
        ReceivedMessage(MessageKey(ANN, True, "3EB0E6"), wa_pb2.Message(conversation="hi"), None, 1)
    )
    sticker_like = wa_pb2.Message(
        deviceSentMessage=wa_pb2.Message.DeviceSentMessage(destinationJid=ANN)
    )
    other = message_event(ReceivedMessage(MessageKey(ANN, False, "3EB0F7"), sticker_like, "Ann", 2))
    assert printed("console", copy, other) == [
        f"message 3EB0E6 from me (another device of this account) to {ANN}: hi",
        f"message 3EB0F7 from Ann <{ANN}>: (no text: deviceSentMessage)",
    ]


def test_console_says_why_a_message_did_not_decrypt():
    """An undecryptable message reads `undecryptable: reason` instead of a text."""
    [line] = printed("console", undecryptable())
    assert line == (
        f"message 3EB0C3 from Ann <{ANN}>: "
        "undecryptable: part 0 (msg): NoSessionError: no session with 15550100001.0"
    )


def test_console_shows_each_receipt_for_what_we_sent():
    """A read receipt for two of our messages is two lines naming the chat and status."""
    assert printed("console", read_receipt()) == [
        f"message 3EB0D4 to {ANN}: read",
        f"message 3EB0D5 to {ANN}: read",
    ]


def test_json_message_is_the_protobuf_json_without_key_material():
    """The wa.Message is protobuf's JSON form; the sender-key distribution is left out."""
    lines = printed("json", text_from_ann(), group_message_with_sender_key(), undecryptable())
    records = [json.loads(line) for line in lines]
    assert [r["event"] for r in records] == ["messages_upsert"] * 3
    first = records[0]["messages"][0]
    assert first == {
        "key": {"remote_jid": ANN, "from_me": False, "id": "3EB0A1", "participant": None},
        "message": {"conversation": "hello bot"},
        "text": "hello bot",
        "push_name": "Ann",
        "timestamp": 1700,
    }
    group = records[1]["messages"][0]
    assert group["message"] == {"extendedTextMessage": {"text": "hi team"}}
    assert "chain-key" not in lines[1] and "senderKey" not in lines[1]
    broken = records[2]["messages"][0]
    assert broken["message"] is None and broken["undecryptable"].startswith("part 0 (msg)")


def test_json_receipts_are_one_line_with_every_update():
    """messages_update prints as one object whose `updates` list every receipt."""
    [line] = printed("json", read_receipt())
    record = json.loads(line)
    assert record["event"] == "messages_update"
    assert [(u["key"]["id"], u["update"]["status"]) for u in record["updates"]] == [
        ("3EB0D4", "read"),
        ("3EB0D5", "read"),
    ]


def run_command(fmt: str) -> Any:
    def command(sb: Any) -> list[str]:
        return [
            str(BIN / "baileys-trio"),
            "run",
            "--auth",
            "auth",
            "--url",
            sb.url,
            "--server-root-key",
            sb.root_public_key.hex(),
            "--log-format",
            fmt,
        ]

    return command


async def test_run_prints_a_contacts_message_as_a_json_line(tmp_path):
    """`run --log-format json` against the sandbox: a contact's text is a parseable line."""

    async def converse(bot: Bot) -> None:
        ann = bot.sb.new_contact("Ann")
        bot.sb.contact_send(ann.jid, bot.user_jid, "hello run")
        await bot.wait_line(lambda line: "messages_upsert" in line and "hello run" in line)

    bot = await run_bot(run_command("json"), tmp_path, converse)
    assert bot.stopped_by_sigint and bot.returncode == 0, bot.output
    [line] = [line for line in bot.lines if '"messages_upsert"' in line]
    [message] = json.loads(line)["messages"]
    assert message["message"] == {"conversation": "hello run"}
    assert message["push_name"] == "Ann" and message["key"]["from_me"] is False


async def test_run_prints_a_contacts_message_as_a_readable_console_line(tmp_path):
    """`run --log-format console`: the message is one line with its author and text."""

    async def converse(bot: Bot) -> None:
        ann = bot.sb.new_contact("Ann")
        bot.sb.contact_send(ann.jid, bot.user_jid, "hello console")
        await bot.wait_line(lambda line: line.endswith("hello console"))

    bot = await run_bot(run_command("console"), tmp_path, converse)
    assert bot.stopped_by_sigint and bot.returncode == 0, bot.output
    [line] = [line for line in bot.lines if line.endswith("hello console")]
    assert line.startswith("message 3EB0") and " from Ann <15550100001@s.whatsapp.net>: " in line
