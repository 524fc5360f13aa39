"""The runtime's entry points: run(), sessions, waits, copies, failures, QR rotation, secrets."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import pytest
import trio
import trio.testing

from actors.connection.actor import LOGGED_OUT_MARK
from actors.errors import ConnectTimeout, SessionEnded
from actors.status import EndReason
from runtime.app import AuthLocation, Config, SessionFailed, open_runtime, run
from runtime.log import make_logger
from sandbox.server import open_sandbox
from stores.auth import open_auth_state, use_memory_auth_state
from stores.errors import DurabilityError
from stores.memory import MemoryBackend
from tests.session.backends import InstrumentedBackend
from tests.session.helpers import Recorder, sandbox_config, scanning_phone
from tests.session.memory_sandbox import open_memory_sandbox


async def test_run_blocks_until_the_session_ends_and_returns_why(tmp_path):
    """run(config) in its own thread: pairs, opens, and returns REPLACED after a 440."""
    async with open_sandbox() as sb, trio.open_nursery() as nursery:
        opened = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def on_event(event: dict[str, Any]) -> None:
            update = event.get("connection_update", {})
            # Runs in run()'s own trio loop (another thread): hand over thread-safely.
            if "qr" in update:
                token.run_sync_soon(nursery.start_soon, sb.phone.scan, update["qr"])
            if update.get("connection") == "open":
                token.run_sync_soon(opened.set)

        config = Config(
            auth=AuthLocation(tmp_path / "auth"), ws_url=sb.url, server_root_key=sb.root_public_key
        )
        result: list[EndReason] = []
        done = trio.Event()

        async def in_thread() -> None:
            result.append(await trio.to_thread.run_sync(lambda: run(config, subscribe=on_event)))
            done.set()

        nursery.start_soon(in_thread)
        with trio.fail_after(60):
            await opened.wait()
            sb.faults.stream_error(440)
            await done.wait()
        assert result == [EndReason.REPLACED]
        nursery.cancel_scope.cancel()


async def test_many_accounts_run_side_by_side_and_stop_one_by_one(autojump_clock):
    """start_session twice (two phones): both open; stop_session ends one, the other stays open."""
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        alice_auth, bob_auth = await use_memory_auth_state("a"), await use_memory_auth_state("b")
        bob_phone = sb.new_phone()
        events = Recorder()
        async with open_runtime(subscribe=events) as rt:
            alice = await rt.start_session(
                sandbox_config(sb, alice_auth, account="alice", on_qr=scanning_phone(sb, nursery))
            )

            def bob_scans(qr: str) -> None:
                nursery.start_soon(bob_phone.scan, qr)

            bob = await rt.start_session(
                sandbox_config(sb, bob_auth, account="bob", on_qr=bob_scans)
            )
            await alice.wait_connected(120)
            await bob.wait_connected(120)
            assert (await alice.auth_state()).me != (await bob.auth_state()).me
            await rt.stop_session("bob")
            assert bob.end_reason is EndReason.STOPPED and bob.connection_state == "closed"
            assert alice.connection_state == "open"
            with pytest.raises(Exception, match="already runs"):
                await rt.start_session(sandbox_config(sb, alice_auth, account="alice"))
        accounts = {
            u["account"] for u in events.of("connection_update") if u.get("connection") == "open"
        }
        assert accounts == {"alice", "bob"}
        ended = [(e["account"], e["reason"]) for e in events.of("session_ended")]
        assert ended[0] == ("bob", "stopped")
        nursery.cancel_scope.cancel()


async def test_a_running_session_keeps_no_task_of_the_runtime_and_is_retired_when_it_ends(
    autojump_clock,
):
    """The runtime adds no task per session; an end still stops its tree and releases its store."""
    async with open_memory_sandbox() as sb:
        auth = await use_memory_auth_state()
        events = Recorder()
        async with open_runtime(subscribe=events) as rt:
            assert rt._nursery is not None
            before = len(rt._nursery.child_tasks)
            session = await rt.start_session(sandbox_config(sb, auth))  # nobody scans
            await trio.testing.wait_all_tasks_blocked()
            assert len(rt._nursery.child_tasks) == before
            session.status.end(EndReason.REFUSED)
            await session.closed.wait()
            assert rt.sessions == {} and rt.sessions_supervisor.which_children() == []
        assert [e["reason"] for e in events.of("session_ended")] == ["refused"]


async def test_wait_connected_times_out_and_reports_an_ended_session(autojump_clock):
    """wait_connected: ConnectTimeout naming the state; SessionEnded once it ended for good."""
    async with open_memory_sandbox() as sb:
        auth = await use_memory_auth_state()
        async with open_runtime(sandbox_config(sb, auth)) as rt:  # nobody scans
            with pytest.raises(ConnectTimeout) as caught:
                await rt.wait_connected(timeout=5)
            assert caught.value.state == "pairing"
        creds = await auth.backend.read_creds()
        assert creds is not None
        creds.extra[LOGGED_OUT_MARK] = True
        await auth.save_creds(creds)
        async with open_runtime(sandbox_config(sb, auth)) as rt:
            with pytest.raises(SessionEnded, match="logged_out"):
                await rt.wait_connected(timeout=math.inf)


async def test_auth_state_is_a_deep_copy_of_the_durable_creds(autojump_clock):
    """Mutating what auth_state() returned changes nothing in the session or on disk."""
    async with open_memory_sandbox() as sb:
        auth = await use_memory_auth_state()
        async with open_runtime(sandbox_config(sb, auth)) as rt:
            first = await rt.auth_state()
            first.account_settings["unarchiveChats"] = True
            first.next_pre_key_id = 999
            again = await rt.auth_state()
            assert again.account_settings == {"unarchiveChats": False}
            assert again.next_pre_key_id == 1


async def test_a_session_whose_store_keeps_failing_gives_up_and_reports_failure(autojump_clock):
    """Every commit fails → the persister crashes past the restart intensity → SessionFailed."""
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        backend = InstrumentedBackend(MemoryBackend())
        auth = await open_auth_state(backend)

        backend.always_fail = DurabilityError("instrumented", "fsync", OSError(28, "ENOSPC"))
        events = Recorder()
        config = sandbox_config(
            sb, auth, on_qr=scanning_phone(sb, nursery, times=10, may_fail=True)
        )
        async with open_runtime(config, subscribe=events) as rt:
            with pytest.raises(SessionFailed) as caught:
                await rt.wait_ended()
        assert "gave up" in str(caught.value)
        assert events.of("session_ended")[-1]["reason"] == "failed"
        assert len(events.of("store_error")) >= 4  # each failure reported, none retried silently
        assert sb.statistics().links == 0  # the phone never got a reply for a non-durable identity
        nursery.cancel_scope.cancel()


async def test_qr_codes_rotate_then_the_attempt_gives_up_with_408_and_retries(autojump_clock):
    """Unscanned: 6 codes (60 s, then 20 s each), then close 408 and a fresh attempt's codes."""
    async with open_memory_sandbox() as sb:
        auth = await use_memory_auth_state()
        events = Recorder()
        async with open_runtime(sandbox_config(sb, auth), subscribe=events):
            await events.wait_for(lambda r: len(r.connection("qr")) >= 7)
        updates = [u for u in events.of("connection_update") if "qr" in u]
        assert [u["qr_index"] for u in updates[:7]] == [0, 1, 2, 3, 4, 5, 0]
        assert [u["qr_ttl"] for u in updates[:6]] == [60.0, 20.0, 20.0, 20.0, 20.0, 20.0]
        assert len({u["qr"] for u in updates[:6]}) == 6
        close = events.closes()[0]
        assert (close["code"], close["reason"], close["reconnect"]) == (
            408,
            "connection_lost",
            True,
        )
        qr_times = [
            t
            for t, e in zip(events.times, events.events, strict=True)
            if "qr" in e.get("connection_update", {})
        ]
        assert qr_times[5] - qr_times[0] == pytest.approx(60 + 4 * 20)


async def test_no_key_bytes_or_qr_in_log_lines(tmp_path):
    """JSON logs of a whole pairing hold no private key, adv secret or QR string."""
    log_file = tmp_path / "log.jsonl"
    async with open_sandbox() as sb, trio.open_nursery() as nursery:
        with log_file.open("w") as stream:
            log = make_logger("json", stream)
            qrs: list[str] = []

            def on_qr(qr: str) -> None:
                qrs.append(qr)
                if len(qrs) == 1:
                    nursery.start_soon(sb.phone.scan, qr)

            config = Config(
                auth=AuthLocation(tmp_path / "auth"),
                ws_url=sb.url,
                server_root_key=sb.root_public_key,
                on_qr=on_qr,
            )
            with trio.fail_after(60):
                async with open_runtime(config, log=log) as rt:
                    await rt.wait_connected()
                    creds = await rt.auth_state()
        nursery.cancel_scope.cancel()
    text = log_file.read_text()
    assert [json.loads(line) for line in text.splitlines()]  # every line is JSON
    secrets = [
        creds.noise_key.private,
        creds.signed_identity_key.private,
        creds.signed_pre_key.key_pair.private,
        creds.pairing_ephemeral_key_pair.private,
    ]
    for secret in secrets:
        for form in (secret.hex(), base64.b64encode(secret).decode(), repr(secret)):
            assert form not in text
    assert creds.adv_secret_key not in text
    assert qrs[0] not in text


async def test_browser_identity_from_the_config_reaches_the_qr(autojump_clock):
    """Config.browser picks the QR's platform id (Edge → 2, Firefox → 3)."""
    from actors.connection.payload import Browser

    async with open_memory_sandbox() as sb:
        for name, platform_id in (("Edge", "2"), ("Firefox", "3")):
            events = Recorder()
            auth = await use_memory_auth_state()
            config = sandbox_config(sb, auth, browser=Browser("Windows", name, "10"))
            async with open_runtime(config, subscribe=events):
                await events.wait_for(lambda r: r.connection("qr"))
            assert events.connection("qr")[0].rsplit(",", 1)[1] == platform_id
