"""Server faults and network failures: each gets exactly the specified reaction.

=================================== ===============================================
fault                               reaction
=================================== ===============================================
515 restart required                reconnect at once, open again, no QR
440 replaced                        session ends (replaced), no reconnect attempt
401 logged out                      creds marked logged out durably, files kept,
                                    close{reason: logged_out}, session ends; the
                                    next run ends at once without connecting
500 / malformed frame / drop        reconnect after a jittered backoff, open again
stalled server                      keepalive: no traffic for interval + 5 s → 408
network down                        capped, growing, jittered backoff; open once up
stall during the handshake          408 after the connect timeout, then reconnect
=================================== ===============================================
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors.connection.actor import LOGGED_OUT_MARK
from actors.status import EndReason
from runtime.app import Runtime, open_runtime
from runtime.spec import Backoff
from stores.auth import PersistedAuth, use_memory_auth_state
from tests.session.helpers import Recorder, sandbox_config, scanning_phone
from tests.session.memory_sandbox import MemorySandbox, open_memory_sandbox

KEEPALIVE = 30.0


def is_open(event: dict[str, Any]) -> bool:
    return event.get("connection_update", {}).get("connection") == "open"


def is_close(event: dict[str, Any]) -> bool:
    return event.get("connection_update", {}).get("connection") == "close"


async def paired_runtime_test(body: Any, **overrides: Any) -> None:
    """Pair a memory-backed device on a memory sandbox, then run ``body(sb, rt, events, auth)``."""
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        auth = await use_memory_auth_state()
        events = Recorder()
        config = sandbox_config(sb, auth, on_qr=scanning_phone(sb, nursery), **overrides)
        async with open_runtime(config, subscribe=events) as rt:
            await rt.wait_connected(timeout=120)
            await events.wait_for(lambda r: r.opens() == 1)
            await body(sb, rt, events, auth)
        nursery.cancel_scope.cancel()


async def test_515_reconnects_at_once_and_opens_without_qr(autojump_clock):
    """515 on an open connection → close{code 515, delay 0} → open again, no new QR."""

    async def body(sb: MemorySandbox, rt: Runtime, events: Recorder, auth: PersistedAuth) -> None:
        qrs = len(events.connection("qr"))
        sb.faults.stream_error(515)
        await events.wait_for(lambda r: r.opens() == 2)
        close = events.closes()[-1]
        assert (close["code"], close["reason"], close["reconnect"], close["delay"]) == (
            515,
            "restart_required",
            True,
            0.0,
        )
        assert events.time_of(is_open, 1) == events.time_of(is_close, 1)  # no wait at all
        assert len(events.connection("qr")) == qrs

    await paired_runtime_test(body)


async def test_440_replaced_ends_the_session_without_a_reconnect_loop(autojump_clock):
    """440 (conflict) → close{reason replaced, reconnect false}; no further connection, ever."""

    async def body(sb: MemorySandbox, rt: Runtime, events: Recorder, auth: PersistedAuth) -> None:
        connects = sb.transport.connects
        sb.faults.stream_error(440)
        assert await rt.wait_ended() is EndReason.REPLACED
        await trio.sleep(3600)
        assert sb.transport.connects == connects
        close = events.closes()[-1]
        assert (close["reason"], close["code"], close["reconnect"]) == ("replaced", 440, False)

    await paired_runtime_test(body)


async def test_401_marks_creds_logged_out_keeps_the_data_and_stops_for_good(autojump_clock):
    """401 → creds marked logged out durably, keys kept, close{logged_out}; next run ends."""
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        auth = await use_memory_auth_state()
        events = Recorder()
        config = sandbox_config(sb, auth, on_qr=scanning_phone(sb, nursery))
        async with open_runtime(config, subscribe=events) as rt:
            await rt.wait_connected(timeout=120)
            sb.faults.failure(401)
            assert await rt.wait_ended() is EndReason.LOGGED_OUT
        close = events.closes()[-1]
        assert (close["reason"], close["code"], close["reconnect"]) == ("logged_out", 401, False)
        durable = await auth.backend.read_creds()
        assert durable is not None and durable.extra[LOGGED_OUT_MARK] is True
        assert durable.me is not None  # identity kept, not wiped
        assert len(await auth.backend.read_keys("pre-key", ["1", "812"])) == 2
        connects = sb.transport.connects
        again = Recorder()
        async with open_runtime(config, subscribe=again) as rt:
            assert await rt.wait_ended() is EndReason.LOGGED_OUT
        assert sb.transport.connects == connects
        assert again.closes()[0]["reason"] == "logged_out"
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(lambda sb: sb.faults.stream_error(500), id="500"),
        pytest.param(lambda sb: sb.faults.stream_error(503), id="503"),
        pytest.param(lambda sb: sb.faults.stream_error(428), id="428"),
        pytest.param(lambda sb: sb.faults.malformed_frame(), id="malformed"),
        pytest.param(lambda sb: sb.faults.undecryptable_frame(), id="undecryptable"),
        pytest.param(lambda sb: sb.faults.drop(), id="network-drop"),
    ],
)
async def test_recoverable_faults_reconnect_after_a_backoff_and_open_again(autojump_clock, fault):
    """500/503/428, malformed or undecryptable frames, a dropped socket → backoff → open again."""

    async def body(sb: MemorySandbox, rt: Runtime, events: Recorder, auth: PersistedAuth) -> None:
        qrs = len(events.connection("qr"))
        fault(sb)
        await events.wait_for(lambda r: r.opens() == 2)
        close = events.closes()[-1]
        assert close["reconnect"] is True
        assert 0.5 <= close["delay"] <= 1.0  # first retry: 1 s, jittered down by up to half
        waited = events.time_of(is_open, 1) - events.time_of(is_close, 1)
        assert waited == pytest.approx(close["delay"])
        assert len(events.connection("qr")) == qrs

    await paired_runtime_test(body)


async def test_stalled_server_is_detected_by_keepalive_within_interval_plus_5s(autojump_clock):
    """A silent server is declared lost (408) at most interval + 5 s after its last word."""

    async def body(sb: MemorySandbox, rt: Runtime, events: Recorder, auth: PersistedAuth) -> None:
        stalled_at = trio.current_time()
        sb.faults.stall()
        await events.wait_for(lambda r: len(r.closes()) == 2)
        close = events.closes()[-1]
        assert (close["code"], close["reason"]) == (408, "connection_lost")
        lost_at = events.time_of(is_close, 1)
        assert lost_at - stalled_at <= KEEPALIVE + 5.0
        await events.wait_for(lambda r: r.opens() == 2)

    await paired_runtime_test(body, keepalive_interval=KEEPALIVE)


async def test_keepalive_pings_keep_an_idle_connection_open(autojump_clock):
    """An idle but healthy connection stays open for an hour: pings every interval are answered."""

    async def body(sb: MemorySandbox, rt: Runtime, events: Recorder, auth: PersistedAuth) -> None:
        pings = sb.statistics().pings
        await trio.sleep(3600)
        assert events.opens() == 1 and len(events.closes()) == 1  # only the pairing 515
        assert sb.statistics().pings - pings == pytest.approx(3600 / KEEPALIVE, abs=1)

    await paired_runtime_test(body, keepalive_interval=KEEPALIVE)


async def test_network_down_backs_off_growing_capped_and_jittered_then_opens(autojump_clock):
    """Refused connects retry after growing, capped delays; open once the network is back."""
    backoff = Backoff(initial=1.0, factor=2.0, max_delay=8.0, jitter=0.5)

    async def body(sb: MemorySandbox, rt: Runtime, events: Recorder, auth: PersistedAuth) -> None:
        sb.transport.refuse = True
        sb.faults.drop()
        await events.wait_for(lambda r: len(r.closes()) >= 9)
        delays = [c["delay"] for c in events.closes()[1:9]]
        for n, delay in enumerate(delays, start=1):
            cap = min(8.0, 2.0 ** (n - 1))
            assert cap * 0.5 <= delay <= cap
        assert all(c["code"] == 428 for c in events.closes()[2:9])
        sb.transport.refuse = False
        await events.wait_for(lambda r: r.opens() == 2)

    await paired_runtime_test(body, reconnect=backoff)


async def test_stall_during_the_handshake_times_out_after_connect_timeout(autojump_clock):
    """A server that never answers the ClientHello → 408 after connect_timeout → reconnect."""

    async def body(sb: MemorySandbox, rt: Runtime, events: Recorder, auth: PersistedAuth) -> None:
        sb.faults.stall_new_connections = True
        sb.faults.drop()
        await events.wait_for(lambda r: len(r.closes()) == 3)
        close = events.closes()[-1]
        assert (close["code"], close["detail"]) == (408, "connect timed out during the handshake")
        connecting = [
            t
            for t, e in zip(events.times, events.events, strict=True)
            if e.get("connection_update", {}).get("connection") == "connecting"
        ]
        assert events.time_of(is_close, 2) - connecting[-1] == pytest.approx(20.0)
        sb.faults.stall_new_connections = False
        await events.wait_for(lambda r: r.opens() == 2)

    await paired_runtime_test(body, connect_timeout=20.0)


async def test_515_on_every_login_is_not_a_hot_loop(autojump_clock):
    """Logins answered with 515 again and again: 3 immediate reconnects, then backoff."""

    async def body(sb: MemorySandbox, rt: Runtime, events: Recorder, auth: PersistedAuth) -> None:
        me = (await rt.auth_state()).me
        assert me is not None
        sb.faults.refuse_logins(me["id"], 515)
        sb.faults.stream_error(515)
        await events.wait_for(lambda r: len(r.closes()) >= 7)
        delays = [c["delay"] for c in events.closes()[1:7]]
        assert delays[:3] == [0.0, 0.0, 0.0]  # the kick and two refusals: at once
        assert all(d > 0 for d in delays[3:])  # the third refusal in a row backs off
        sb.faults.allow_logins(me["id"])
        await events.wait_for(lambda r: r.opens() == 2)

    await paired_runtime_test(body)


@pytest.mark.parametrize("code", [403, 411])
async def test_403_and_411_refuse_the_device_and_end_the_session(autojump_clock, code):
    """403 forbidden / 411 multi-device mismatch → close{reconnect false}, session ends refused."""

    async def body(sb: MemorySandbox, rt: Runtime, events: Recorder, auth: PersistedAuth) -> None:
        connects = sb.transport.connects
        sb.faults.stream_error(code)
        assert await rt.wait_ended() is EndReason.REFUSED
        await trio.sleep(600)
        assert sb.transport.connects == connects
        assert (events.closes()[-1]["code"], events.closes()[-1]["reconnect"]) == (code, False)

    await paired_runtime_test(body)
