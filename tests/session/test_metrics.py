"""The metrics endpoint: scraped while a session runs, its numbers move as the session does.

The session runs on a native store (fsyncs to time), so on the real clock: the
store fsyncs in worker threads, which MockClock's autojump would take for idleness.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from actors.connection.binary.jid import Jid
from actors.errors import ConfigError
from actors.metrics import OVERFLOW, Metrics
from runtime.app import AuthLocation, Config, open_runtime
from runtime.metrics_http import CLIENT_TIMEOUT, MAX_HEAD, serve_metrics
from tests.session.helpers import Recorder, crash_and_wait_restart, sandbox_config, scanning_phone
from tests.session.memory_sandbox import open_memory_sandbox

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def http_get(address: tuple[str, int], request: bytes) -> bytes:
    """Send ``request`` raw and read the whole answer (the server closes after one)."""
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(request)
        answer = bytearray()
        while chunk := await stream.receive_some(65536):
            answer += chunk
    return bytes(answer)


async def scrape(address: tuple[str, int]) -> Samples:
    answer = await http_get(address, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"text/plain; version=0.0.4" in head
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels`` (0 if the series does not exist yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str) -> float:
    """The sum of every series of ``name`` (whatever their labels)."""
    return sum(v for (n, _), v in samples.items() if n == name)


async def until_scraped(address: tuple[str, int], condition: Any) -> Samples:
    """Scrape until ``condition(samples)`` holds: scraping is what a Prometheus server does."""
    with trio.fail_after(30):
        for _ in range(1500):
            samples = await scrape(address)
            if condition(samples):
                return samples
            await trio.sleep(0.02)
    raise AssertionError("the condition never held in a scrape")


async def test_scraped_numbers_move_as_the_session_does(tmp_path):
    """Login, commits, fsyncs, pre-keys, messages both ways, a crash: each shows in a scrape."""
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        events = Recorder()
        config = sandbox_config(
            sb,
            AuthLocation(tmp_path / "auth"),
            on_qr=scanning_phone(sb, nursery),
            account="alice",
            metrics_port=0,
        )
        async with open_runtime(config, subscribe=events) as rt:
            assert rt.metrics_address is not None
            await rt.wait_connected(timeout=60)
            a = await until_scraped(
                rt.metrics_address, lambda s: value(s, "baileys_trio_connected", account="alice")
            )
            assert value(a, "baileys_trio_login_seconds_count") == 1
            assert value(a, "baileys_trio_prekeys_uploaded_total", account="alice") == 812
            closes = dict(account="alice", reason="restart_required", reconnect="true")
            assert value(a, "baileys_trio_connection_closes_total", **closes) == 1
            assert value(a, "baileys_trio_commit_seconds_count") >= 2
            assert value(a, "baileys_trio_commit_batch_size_count") >= 2
            assert value(a, "baileys_trio_fsync_seconds_count") >= 2
            assert (
                value(a, "baileys_trio_actor_restarts_total", account="alice", actor="connection")
                == 0
            )

            me = (await rt.auth_state()).me
            assert me is not None
            bot = str(Jid.parse(me["id"]).user_jid())
            carol = sb.new_contact("Carol")
            sb.contact_send(carol.jid, bot, "hello")
            b = await until_scraped(
                rt.metrics_address,
                lambda s: value(s, "baileys_trio_messages_received_total", account="alice") == 1,
            )
            assert value(b, "baileys_trio_commit_seconds_count") > value(
                a, "baileys_trio_commit_seconds_count"
            )
            assert value(b, "baileys_trio_fsync_seconds_count") > value(
                a, "baileys_trio_fsync_seconds_count"
            )
            await rt.send_message(carol.jid, {"text": "hello carol"})
            await crash_and_wait_restart(rt.primary.refs["connection"])
            await rt.wait_connected(timeout=60)
            c = await until_scraped(
                rt.metrics_address,
                lambda s: value(s, "baileys_trio_login_seconds_count") == 2,
            )
            assert value(c, "baileys_trio_messages_sent_total", account="alice") == 1
            restarts = dict(account="alice", actor="connection")
            assert value(c, "baileys_trio_actor_restarts_total", **restarts) == 1
            assert (
                value(c, "baileys_trio_actor_restarts_total", account="alice", actor="persister")
                == 0
            )
            assert value(c, "baileys_trio_decrypt_failures_total", account="alice") == 0
            await rt.stop_session("alice")
            d = await scrape(rt.metrics_address)
            ended = dict(account="alice", reason="stopped")
            assert value(d, "baileys_trio_sessions_ended_total", **ended) == 1
            assert value(d, "baileys_trio_connected", account="alice") == 0
            # The counts of a stopped tree stay in the totals.
            assert value(d, "baileys_trio_actor_restarts_total", **restarts) == 1
        nursery.cancel_scope.cancel()


def test_the_account_label_is_bounded_and_unknown_reasons_are_other():
    """Past max_accounts every account shares one series; only known reasons become labels."""
    metrics = Metrics(max_accounts=2)
    for account in ("a", "b", "c", "d"):
        metrics.observe_event(account, {"messages_upsert": {"messages": [{"text": "x"}]}})
    metrics.observe_event(
        "a",
        {"connection_update": {"connection": "close", "reason": "code_4711", "reconnect": True}},
    )
    metrics.observe_event(
        "a",
        {
            "messages_upsert": {
                "messages": [{"text": None, "undecryptable": "BadMac"}, {"text": "y"}]
            }
        },
    )
    samples: Samples = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    received = {
        dict(labels)["account"]: v
        for (name, labels), v in samples.items()
        if name == "baileys_trio_messages_received_total"
    }
    assert received == {"a": 2, "b": 1, OVERFLOW: 2}
    other = dict(account="a", reason="other", reconnect="true")
    assert value(samples, "baileys_trio_connection_closes_total", **other) == 1
    assert value(samples, "baileys_trio_decrypt_failures_total", account="a") == 1
    with pytest.raises(ValueError, match="max_accounts"):
        Metrics(max_accounts=0)


def test_metrics_port_must_be_a_port():
    for bad in (-1, 65536, "9100", True, 1.5):
        with pytest.raises(ConfigError, match="metrics_port"):
            Config(auth="/tmp/nowhere", metrics_port=bad)
    with pytest.raises(ConfigError, match="metrics_host"):
        Config(auth="/tmp/nowhere", metrics_port=0, metrics_host="")


async def test_the_endpoint_answers_only_get_metrics_and_survives_bad_clients(autojump_clock):
    """404 elsewhere, 405 for other methods, 400 for garbage or endless heads; HEAD: no body."""
    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve_metrics, lambda: b"up 1\n", 0)
        get = await http_get(address, b"GET /metrics HTTP/1.0\r\n\r\n")
        assert get.startswith(b"HTTP/1.1 200 OK") and get.endswith(b"\r\n\r\nup 1\n")
        head = await http_get(address, b"HEAD /metrics HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(
            b"Content-Length: 5\r\nConnection: close\r\n\r\n"
        )
        assert (await http_get(address, b"GET /other HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
        assert (await http_get(address, b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(
            b"HTTP/1.1 405"
        )
        assert (await http_get(address, b"hello\r\n\r\n")).startswith(b"HTTP/1.1 400")
        endless = b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"y" * (MAX_HEAD + 10)
        assert (await http_get(address, endless)).startswith(b"HTTP/1.1 400")
        # A client that never finishes its request is dropped after CLIENT_TIMEOUT;
        # meanwhile others are served.
        silent = await trio.open_tcp_stream(*address)
        await silent.send_all(b"GET /metr")
        assert (await http_get(address, b"GET / HTTP/1.1\r\n\r\n")).endswith(b"up 1\n")
        start = trio.current_time()
        assert await silent.receive_some(100) == b""
        assert trio.current_time() - start == pytest.approx(CLIENT_TIMEOUT, abs=0.5)
        await silent.aclose()
        nursery.cancel_scope.cancel()
