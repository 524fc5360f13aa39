"""The demo's own checks can fail: what counts as lost, and how a failed stage is reported."""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

import pytest
import trio

import actors.demo
from actors.demo import DemoFailed, changed_creds
from actors.demo_command import EXIT_FAILED, run
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
