"""actors/events.py: the constructors build the shapes docs/events.md documents, and no
other module of the packages spells an event name or defines its own event sink."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

from actors import events
from actors.connection.binary.node import BinaryNode
from actors.connection.proto import wa_pb2
from actors.messaging.incoming import MessageKey
from actors.messaging.receive import ReceivedMessage
from actors.messaging.service import message_event, receipt_event

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGES = ("runtime", "actors", "stores", "sandbox")
EVENTS_MODULE = ROOT / "actors" / "events.py"
ANN = "15550100001@s.whatsapp.net"


def same(built: dict[str, Any], expected: dict[str, Any]) -> None:
    """Equal, key order included (the JSON lines of `baileys-trio run` keep it)."""
    assert built == expected
    assert json.dumps(built, default=repr) == json.dumps(expected, default=repr)


def test_connection_updates_have_the_documented_shapes() -> None:
    same(
        events.connection_connecting(2),
        {"connection_update": {"connection": "connecting", "attempt": 2}},
    )
    same(
        events.connection_qr("https://wa.me/settings/linked_devices#ref,n,i,a,p", 0, 60),
        {
            "connection_update": {
                "connection": "connecting",
                "qr": "https://wa.me/settings/linked_devices#ref,n,i,a,p",
                "qr_index": 0,
                "qr_ttl": 60,
            }
        },
    )
    same(
        events.connection_paired("1555:3@s.whatsapp.net"),
        {"connection_update": {"is_new_login": True, "me": "1555:3@s.whatsapp.net"}},
    )
    same(
        events.connection_open("1555:3@s.whatsapp.net"),
        {"connection_update": {"connection": "open", "me": "1555:3@s.whatsapp.net"}},
    )
    closing = {
        "connection": "close",
        "reason": "connection_lost",
        "code": 408,
        "detail": "keepalive",
        "reconnect": True,
    }
    same(
        events.connection_close(
            reason="connection_lost", code=408, detail="keepalive", reconnect=True, delay=1.5
        ),
        {"connection_update": {**closing, "delay": 1.5}},
    )
    same(
        events.connection_close(
            reason="logged_out", code=401, detail="logged out", reconnect=False
        ),
        {
            "connection_update": {
                **closing,
                "reason": "logged_out",
                "code": 401,
                "detail": "logged out",
                "reconnect": False,
            }
        },
    )


def test_creds_update_lists_sorted_names_and_copies_the_values() -> None:
    value = {"id": "1555:3@s.whatsapp.net"}
    built = events.creds_update(7, 3, {"registered": True, "me": value})
    same(
        built,
        {
            "creds_update": {
                "version": 7,
                "rev": 3,
                "changed": ["me", "registered"],
                "delta": {"registered": True, "me": {"id": "1555:3@s.whatsapp.net"}},
            }
        },
    )
    assert built["creds_update"]["delta"]["me"] is not value


def test_store_error_and_session_ended_have_the_documented_shapes() -> None:
    same(
        events.store_error("/tmp/auth", "native", "DurabilityError", "fsync failed"),
        {
            "store_error": {
                "location": "/tmp/auth",
                "backend": "native",
                "error": "DurabilityError",
                "message": "fsync failed",
            }
        },
    )
    same(
        events.session_ended("bot1", "failed", "RuntimeError('x')"),
        {"session_ended": {"account": "bot1", "reason": "failed", "error": "RuntimeError('x')"}},
    )
    same(
        events.session_ended("default", "stopped", None),
        {"session_ended": {"account": "default", "reason": "stopped", "error": None}},
    )


def test_message_events_have_the_documented_shapes() -> None:
    message = wa_pb2.Message(conversation="hi")
    key = {"remote_jid": ANN, "from_me": False, "id": "3EB0A1", "participant": None}
    entry = {
        "key": key,
        "message": message,
        "text": "hi",
        "push_name": "Ann",
        "timestamp": 1700,
    }
    same(
        message_event(ReceivedMessage(MessageKey(ANN, False, "3EB0A1"), message, "Ann", 1700)),
        {"messages_upsert": {"type": "notify", "messages": [entry]}},
    )
    same(
        message_event(
            ReceivedMessage(MessageKey(ANN, False, "3EB0A1"), None, "Ann", 1700, "no session")
        ),
        {
            "messages_upsert": {
                "type": "notify",
                "messages": [
                    {**entry, "message": None, "text": None, "undecryptable": "no session"}
                ],
            }
        },
    )
    receipt = BinaryNode(
        "receipt",
        {"id": "A1", "from": ANN, "type": "read", "t": "1700000000"},
        [BinaryNode("list", {}, [BinaryNode("item", {"id": "A2"})])],
    )
    same(
        receipt_event(receipt),
        {
            "messages_update": [
                {
                    "key": {"remote_jid": ANN, "from_me": True, "id": mid, "participant": None},
                    "update": {"status": "read", "timestamp": 1700000000},
                }
                for mid in ("A1", "A2")
            ]
        },
    )
    delivery = BinaryNode("receipt", {"id": "A3", "from": ANN})
    same(
        receipt_event(delivery),
        {
            "messages_update": [
                {
                    "key": {"remote_jid": ANN, "from_me": True, "id": "A3", "participant": None},
                    "update": {"status": "delivery", "timestamp": None},
                }
            ]
        },
    )


def test_fleet_events_have_the_documented_shapes() -> None:
    """fleet_claimed / fleet_takeover / fleet_released carry what docs/events.md lists."""
    same(
        events.fleet_claimed("alice", 3, "h:1:ab", None),
        {
            "fleet_claimed": {
                "account": "alice",
                "epoch": 3,
                "owner": "h:1:ab",
                "previous_owner": None,
            }
        },
    )
    same(
        events.fleet_takeover("alice", 4, "h:2:cd", "h:1:ab"),
        {
            "fleet_takeover": {
                "account": "alice",
                "epoch": 4,
                "owner": "h:2:cd",
                "previous_owner": "h:1:ab",
            }
        },
    )
    same(
        events.fleet_released("alice", 4, "logged_out", True),
        {
            "fleet_released": {
                "account": "alice",
                "epoch": 4,
                "reason": "logged_out",
                "retired": True,
            }
        },
    )


def test_the_table_names_every_event_docs_events_md_documents() -> None:
    documented = set(
        re.findall(r"^## `(\w+)`$", (ROOT / "docs" / "events.md").read_text(), re.MULTILINE)
    )
    assert documented == set(events.EVENTS)
    table = re.findall(r"^(\w+) {2,}\S", events.__doc__ or "", re.MULTILINE)
    assert table == ["event", *events.EVENTS]
    assert all(meaning.strip() for meaning in events.EVENTS.values())


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if p != EVENTS_MODULE)


def test_no_other_module_spells_an_event_name() -> None:
    """Emitters use the constructors, readers the constants: a string literal equal to an
    event name anywhere else in the packages (docstrings aside) is a second spelling."""
    names = set(events.EVENTS)
    found = []
    for path in _modules():
        if path.is_relative_to(ROOT / "stores"):
            # stores may not import actors, so no string there is an event: its
            # "pairing_code" is the creds field of that name (Baileys' pairingCode).
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert found == []


def test_event_sink_is_defined_once() -> None:
    found = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = list(node.targets)
            elif isinstance(node, ast.AnnAssign):
                targets = [node.target]
            if any(isinstance(t, ast.Name) and t.id == "EventSink" for t in targets):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []
    assert "EventSink" in events.__all__
