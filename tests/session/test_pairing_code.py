"""Pairing by phone-number code, end to end over the in-memory sandbox (MockClock).

``Config(pairing_phone=...)``: a new device emits ``pairing_code`` instead of QRs; the
sandbox's phone types it; the identity (with the adv secret the code derived) is
durable before the reply; 515; login; open. A paired auth ignores the number.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import trio

from actors.cli import EXIT_USAGE, cli_commands, event_printer
from actors.errors import ConfigError
from runtime.app import Config, open_runtime
from runtime.command import Command, build_parser
from runtime.log import make_logger
from sandbox.errors import InvalidCodeError, PairingFailedError, ScanRejectedError
from stores.auth import use_memory_auth_state
from tests.session.helpers import Recorder, sandbox_config
from tests.session.memory_sandbox import MemorySandbox, open_memory_sandbox


def codes(events: Recorder) -> list[str]:
    return [payload["code"] for payload in events.of("pairing_code")]


async def next_code(events: Recorder, seen: int = 0) -> str:
    """The pairing code emitted after the first ``seen`` ones."""
    await events.wait_for(lambda r: len(codes(r)) > seen)
    return codes(events)[seen]


def code_phone(sb: MemorySandbox) -> dict[str, Any]:
    """Config overrides: pair by code as the number of the sandbox's first phone."""
    return {"pairing_phone": "+" + sb.phone.user, "on_qr": _no_qr}


def _no_qr(qr: str) -> None:
    raise AssertionError("a code pairing showed a QR")


async def test_a_new_device_pairs_by_code_and_then_logs_in_without_one(autojump_clock):
    """pairing_code event → phone types it → paired, durable, 515, open; a rerun asks nothing."""
    async with open_memory_sandbox() as sb:
        auth = await use_memory_auth_state()
        fresh_secret = auth.state.creds.adv_secret_key
        events = Recorder()
        config = sandbox_config(sb, auth, **code_phone(sb))
        async with open_runtime(config, subscribe=events) as rt:
            code = await next_code(events)
            assert len(code) == 9 and code[4] == "-"
            linked = await sb.phone.link_code(code)
            await rt.wait_connected(timeout=60)
            creds = await rt.auth_state()
        assert events.of("pairing_code") == [{"code": code, "account": "default"}]
        assert events.connection("qr") == []
        assert events.closes()[0]["code"] == 515
        assert creds.me is not None and creds.me["id"] == linked.jid
        assert linked.jid.startswith(sb.phone.user + ":")
        assert creds.registered is True
        assert creds.adv_secret_key != fresh_secret  # derived from the code exchange
        stats = sb.statistics()
        assert (stats.links, stats.logins) == (1, 1)

        again = Recorder()
        async with open_runtime(sandbox_config(sb, auth, **code_phone(sb)), subscribe=again) as rt:
            await rt.wait_connected(timeout=60)
        assert again.of("pairing_code") == []
        assert sb.statistics().links == 1


async def test_a_wrong_code_fails_on_the_phone_and_a_new_attempt_brings_a_new_code(
    autojump_clock,
):
    """Wrong code: PairingFailedError; the attempt times out (408), the next code pairs."""
    async with open_memory_sandbox() as sb:
        auth = await use_memory_auth_state()
        events = Recorder()
        async with open_runtime(sandbox_config(sb, auth, **code_phone(sb)), subscribe=events) as rt:
            code = await next_code(events)
            wrong = ("2" if code[0] != "2" else "3") + code[1:]
            with pytest.raises(PairingFailedError, match="wrong code"):
                await sb.phone.link_code(wrong)
            second = await next_code(events, seen=1)
            assert second != code
            assert events.closes()[0]["code"] == 408
            await sb.phone.link_code(second.lower())
            await rt.wait_connected(timeout=60)
            assert (await rt.auth_state()).me is not None


async def test_an_unentered_code_expires_with_its_refs_and_is_replaced(autojump_clock):
    """The code lives as long as the refs' QRs would (qr_timeout x 6), then 408 and a new one."""
    async with open_memory_sandbox() as sb:
        auth = await use_memory_auth_state()
        events = Recorder()
        config = sandbox_config(sb, auth, qr_timeout=5.0, **code_phone(sb))
        async with open_runtime(config, subscribe=events) as rt:
            await next_code(events)
            await next_code(events, seen=1)
            assert (await rt.auth_state()).me is None
        first = events.time_of(lambda e: "pairing_code" in e)
        closed = events.time_of(lambda e: e.get("connection_update", {}).get("code") == 408)
        assert closed - first == pytest.approx(30.0, abs=0.5)
        with pytest.raises(ScanRejectedError, match="no device is waiting"):
            await sb.phone.link_code(codes(events)[0])


async def test_the_phone_refuses_text_that_is_not_a_code(autojump_clock):
    """InvalidCodeError before anything is sent: the server sees no phone hello."""
    async with open_memory_sandbox() as sb:
        with pytest.raises(InvalidCodeError, match="8 characters"):
            await sb.phone.link_code("ABC")
        with pytest.raises(ScanRejectedError, match="no device is waiting"):
            await sb.phone.link_code("ABCD-EFGH")


async def test_a_number_the_server_does_not_know_closes_the_attempt_saying_so(autojump_clock):
    """companion_hello for an unknown number: the server refuses it; the close names why."""
    async with open_memory_sandbox() as sb:
        auth = await use_memory_auth_state()
        events = Recorder()
        config = sandbox_config(sb, auth, pairing_phone="4915112345678", on_qr=_no_qr)
        async with open_runtime(config, subscribe=events):
            await events.wait_for(lambda r: r.closes())
        close = events.closes()[0]
        assert close["code"] == 500 and "refused the pairing code" in close["detail"]
        assert "404" in close["detail"] and events.of("pairing_code") == []


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("1555-1234567", "digits only"),
        ("++15551234567", "digits only"),
        ("123456", "7 to 15 digits"),
        ("1234567890123456", "7 to 15 digits"),
        ("05551234567", "country code"),
        (15551234567, "string"),
    ],
)
def test_a_pairing_phone_that_is_not_a_number_is_a_config_error_naming_it(
    value: object, says: str
) -> None:
    """ConfigError naming pairing_phone and what is wrong with it."""
    with pytest.raises(ConfigError, match=f"pairing_phone.*{says}"):
        Config(auth="/tmp/unused", pairing_phone=value)  # type: ignore[arg-type]  # wrong on purpose


def test_a_leading_plus_is_dropped() -> None:
    """'+15551234567' is kept as its digits."""
    assert Config(auth="/tmp/unused", pairing_phone="+15551234567").pairing_phone == "15551234567"


async def test_a_paired_auth_ignores_the_pairing_phone(autojump_clock):
    """Paired by QR first: a later run with pairing_phone logs in, asks for no code."""
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        auth = await use_memory_auth_state()

        def scan(qr: str) -> None:
            nursery.start_soon(sb.phone.scan, qr)

        async with open_runtime(sandbox_config(sb, auth, on_qr=scan)) as rt:
            await rt.wait_connected(timeout=60)
        events = Recorder()
        async with open_runtime(sandbox_config(sb, auth, **code_phone(sb)), subscribe=events) as rt:
            await rt.wait_connected(timeout=60)
        assert events.of("pairing_code") == []
        assert sb.statistics().links == 1


def test_run_prints_the_code_on_a_console_and_as_a_json_line() -> None:
    """Console: one line saying where to type it; JSON: {"event": "pairing_code", ...}."""
    event = {"pairing_code": {"code": "ABCD-EFGH", "account": "default"}}
    console, lines = io.StringIO(), io.StringIO()
    event_printer("console", console)(event)
    event_printer("json", lines)(event)
    assert console.getvalue() == (
        "enter this code on the phone (Linked devices > Link a device > "
        "Link with phone number instead): ABCD-EFGH\n"
    )
    assert json.loads(lines.getvalue()) == {
        "event": "pairing_code",
        "code": "ABCD-EFGH",
        "account": "default",
    }
    fleet = io.StringIO()
    event_printer("console", fleet, name_account=True)(event)
    assert fleet.getvalue().startswith("enter this code on the phone of account default (")


def test_run_refuses_a_bad_pairing_phone_with_exit_2_naming_it(tmp_path, capsys) -> None:
    """`run --pairing-phone 12`: exit 2, one stderr line naming pairing_phone, nothing created."""
    (command,) = cli_commands(Command)
    args = build_parser([command]).parse_args(
        ["run", "--auth", str(tmp_path / "auth"), "--pairing-phone", "12"]
    )
    assert command.run(args, make_logger("json")) == EXIT_USAGE
    assert "pairing_phone" in capsys.readouterr().err
    assert not (tmp_path / "auth").exists()
