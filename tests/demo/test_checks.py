"""The demo's own checks can fail: what counts as lost, and how a failed stage is reported."""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

import pytest
import trio

import actors.demo
from actors.demo import DemoFailed, changed_creds, lost_keys, receipt, received
from actors.demo_command import EXIT_FAILED, run
from actors.demo_show import Record
from runtime.log import make_logger
from stores.creds import init_auth_creds


def test_identical_creds_have_no_changed_fields():
    """Two deep copies of the same creds compare as nothing changed."""
    creds = init_auth_creds()
    assert changed_creds(creds, creds.copy()) == []


def test_a_changed_identity_or_counter_is_reported_by_name():
    """A new identity key or a moved pre-key counter is a loss the demo names."""
    before = init_auth_creds()
    after = before.copy()
    after.signed_identity_key = init_auth_creds().signed_identity_key
    after.next_pre_key_id = before.next_pre_key_id + 5
    assert changed_creds(before, after) == ["next_pre_key_id", "signed_identity_key"]


def test_routing_info_may_be_refreshed_but_not_lost():
    """routing_info the server resends at login may change; dropping it counts as a loss."""
    before = init_auth_creds()
    before.routing_info = b"\x01\x02"
    refreshed = before.copy()
    refreshed.routing_info = b"\x03"
    assert changed_creds(before, refreshed) == []
    dropped = before.copy()
    dropped.routing_info = None
    assert changed_creds(before, dropped) == ["routing_info"]


def test_keys_the_conversation_adds_are_not_a_loss_but_missing_ones_are():
    """More records of a type pass; fewer (or a type gone) are named with both counts."""
    before = {"pre-key": 811, "session": 1, "received-message": 1}
    assert lost_keys(before, {**before, "received-message": 2, "sent-message": 1}) == {}
    assert lost_keys(before, {"pre-key": 811, "received-message": 1}) == {"session": (1, 0)}
    assert lost_keys(before, {**before, "pre-key": 810}) == {"pre-key": (811, 810)}


def test_the_demo_finds_a_message_and_its_receipt_by_id():
    """The conversation waits for the messages_upsert and messages_update naming an id."""
    key = {"remote_jid": "1@s.whatsapp.net", "from_me": False, "id": "A", "participant": None}
    upsert = Record("event", "messages_upsert", {"type": "notify", "messages": [{"key": key}]})
    update = Record("event", "messages_update", {"value": [{"key": {**key, "id": "B"}}]})
    assert received("A")(upsert) and not received("B")(upsert) and not received("A")(update)
    assert receipt("B")(update) and not receipt("A")(update) and not receipt("A")(upsert)


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_a_failed_stage_exits_1_with_one_line_naming_the_stage(monkeypatch, fmt):
    """A DemoFailed raised inside nurseries becomes exit 1 and a line naming stage and cause."""

    async def failing_main(show: Any, workdir: Any = None) -> None:
        show.stage("sandbox", "starting")
        async with trio.open_nursery():
            raise DemoFailed("restarted ['connection'], expected ['persister']")

    monkeypatch.setattr(actors.demo, "main", failing_main)
    out = io.StringIO()
    args = argparse.Namespace(supervision=False, log_format=fmt)
    code = run(args, make_logger(fmt, out), out=out)
    assert code == EXIT_FAILED
    last = out.getvalue().strip().splitlines()[-1]
    if fmt == "json":
        record = json.loads(last)
        assert record["event"] == "demo_failed" and record["stage"] == "sandbox"
        assert "expected ['persister']" in record["error"]
    else:
        assert last == (
            "demo FAILED at stage sandbox: restarted ['connection'], expected ['persister']"
        )
