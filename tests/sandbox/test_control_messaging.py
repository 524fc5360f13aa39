"""Contacts and groups through the control channel and `baileys-trio sandbox contact|group`."""

from __future__ import annotations

import argparse
import io
import json

import pytest
import trio

from sandbox import control
from sandbox.cli import configure_sandbox, run_sandbox
from sandbox.errors import UnknownTargetError
from sandbox.server import Sandbox, open_sandbox
from tests.sandbox.fake_client import FakeDevice
from tests.sandbox.ws_client import ws_client

BOUND = 15


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_sandbox(parser)
    return parser.parse_args(argv)


async def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    args = _args(*argv)
    code = await trio.to_thread.run_sync(lambda: run_sandbox(args, out=out))
    return code, out.getvalue()


async def _pair(sb: Sandbox, device: FakeDevice) -> None:
    async with ws_client(sb.url, device, sb.core.identity.root) as client:
        await client.handshake(device.registration_payload())
        iq = await client.receive()
        ref = iq.require_child("pair-device").children("ref")[0].require_bytes().decode()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sb.phone.scan, device.qr(ref))
            await client.send(device.sign_pair_success(await client.receive()))


async def test_contacts_talk_to_each_other_through_the_control_channel() -> None:
    """contact_add, contact_send to another contact, contact_messages reports the text."""
    with trio.fail_after(BOUND):
        async with open_sandbox() as sb:
            ann = await control.add_contact_via_control(sb.url, name="Ann")
            ben = await control.add_contact_via_control(sb.url)
            msg_id = await control.contact_send_via_control(sb.url, ann, "hi Ben", to=ben)
            (message,) = await control.contact_messages_via_control(sb.url, ben)
            assert (message["id"], message["chat"], message["author"], message["text"]) == (
                msg_id,
                ann,
                ann,
                "hi Ben",
            )
            assert message["error"] is None
            assert sb.core.contacts.get(ann).name == "Ann"
            group = await control.create_group_via_control(sb.url, "Pair", [ann, ben])
            await control.contact_send_via_control(sb.url, ben, "to the group", to=group)
            texts = [
                (m["chat"], m["text"])
                for m in await control.contact_messages_via_control(sb.url, ann)
            ]
            assert texts == [(group, "to the group")]


async def test_a_contact_send_reaches_the_first_phones_logged_in_device_by_default() -> None:
    """Without 'to' the contact writes to the first phone's account: its device gets a pkmsg."""
    with trio.fail_after(BOUND):
        async with open_sandbox() as sb:
            device = FakeDevice()
            await _pair(sb, device)
            ann = sb.new_contact("Ann")
            async with ws_client(sb.url, device, sb.core.identity.root) as client:
                await client.handshake(device.login_payload())
                tags = [(await client.receive()).tag for _ in range(3)]
                assert tags == ["success", "ib", "ib"]
                msg_id = await control.contact_send_via_control(sb.url, ann.jid, "hello")
                node = await client.receive()
                assert (node.tag, node.attr("id"), node.attr("from")) == (
                    "message",
                    msg_id,
                    ann.jid,
                )
                assert node.require_child("enc").attr("type") == "pkmsg"


async def test_control_errors_name_the_sandbox_error() -> None:
    """An unknown contact comes back as UnknownTargetError; a malformed request as ControlError."""
    with trio.fail_after(BOUND):
        async with open_sandbox() as sb:
            with pytest.raises(UnknownTargetError):
                await control.contact_send_via_control(sb.url, "19999999999@s.whatsapp.net", "x")
            with pytest.raises(UnknownTargetError):
                await control.create_group_via_control(sb.url, "G", ["19999999999@s.whatsapp.net"])
            reply = await control.request_control(sb.url, {"op": "statistics"})
            assert reply["statistics"]["contacts"] == 0
            with pytest.raises(control.errors.ControlError, match="'text'"):
                await control.request_control(sb.url, {"op": "contact_send", "jid": "x"})


async def test_the_cli_adds_contacts_sends_lists_and_creates_groups() -> None:
    """`sandbox contact add|send|messages` and `sandbox group create` print JIDs, ids, lines."""
    with trio.fail_after(BOUND):
        async with open_sandbox() as sb:
            code, out = await _cli("contact", "add", "--name", "Ann", "--sandbox", sb.url)
            assert code == 0
            ann = out.strip()
            assert sb.core.contacts.get(ann).name == "Ann"
            code, out = await _cli("contact", "add", "--sandbox", sb.url)
            ben = out.strip()
            code, out = await _cli(
                "contact", "send", ann, "hi\nBen", "--to", ben, "--sandbox", sb.url
            )
            assert code == 0
            msg_id = out.strip()
            code, out = await _cli("contact", "messages", ben, "--sandbox", sb.url)
            assert (code, out) == (0, f"{msg_id}\t{ann}\t{ann}\thi Ben\n")
            code, out = await _cli("contact", "messages", ben, "--json", "--sandbox", sb.url)
            assert json.loads(out)["text"] == "hi\nBen"
            code, out = await _cli("group", "create", "Team", ann, ben, "--sandbox", sb.url)
            assert code == 0
            group = sb.core.groups.get(out.strip())
            assert group is not None and group.participants == [ann, ben]


async def test_the_cli_exits_1_naming_why_the_sandbox_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`sandbox contact messages` of an unknown contact: exit 1, UnknownTargetError on stderr."""
    with trio.fail_after(BOUND):
        async with open_sandbox() as sb:
            unknown = "19999999999@s.whatsapp.net"
            code, out = await _cli("contact", "messages", unknown, "--sandbox", sb.url)
    assert (code, out) == (1, "")
    assert "UnknownTargetError" in capsys.readouterr().err


def test_the_contact_commands_plug_into_the_baileys_trio_cli() -> None:
    """runtime.cli parses `sandbox contact send JID TEXT --sandbox URL` and still serves bare."""
    from runtime.cli import build_parser

    parser = build_parser()
    url = "ws://127.0.0.1:1/ws/chat"
    args = parser.parse_args(["sandbox", "contact", "send", "J", "T", "--sandbox", url])
    assert (args.sandbox_command, args.contact_action, args.jid, args.text) == (
        "contact",
        "send",
        "J",
        "T",
    )
    assert args._run is run_sandbox
    assert parser.parse_args(["sandbox", "--port", "1"]).sandbox_command is None
    with pytest.raises(SystemExit):
        parser.parse_args(["sandbox", "contact", "add"])  # --sandbox is required
