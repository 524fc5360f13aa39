"""`baileys-trio run --metrics-port`: the running bot serves its metrics over HTTP."""

from __future__ import annotations

import json
import re
from typing import Any

import trio

from tests.cli.test_run_events import run_command
from tests.docs.sandbox_bot import Bot, run_bot


def metrics_command(sb: Any) -> list[str]:
    command: list[str] = run_command("json")(sb)
    return [*command, "--metrics-port", "0"]


def served_port(line: str) -> int | None:
    """The port of the ``metrics_serving`` log line (any free one: --metrics-port 0)."""
    if "metrics_serving" not in line:
        return None
    try:
        return int(json.loads(line)["port"])
    except (ValueError, KeyError):
        found = re.search(r"port=(\d+)", line)
        return int(found.group(1)) if found else None


async def get_metrics(port: int) -> str:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: bot\r\n\r\n")
        answer = bytearray()
        while chunk := await stream.receive_some(65536):
            answer += chunk
    head, _, body = bytes(answer).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK"), head
    return body.decode()


async def test_run_serves_metrics_that_count_the_bots_messages(tmp_path):
    scraped: list[str] = []

    async def converse(bot: Bot) -> None:
        line = await bot.wait_line(lambda line: served_port(line) is not None)
        port = served_port(line)
        assert port is not None
        ann = bot.sb.new_contact("Ann")
        bot.sb.contact_send(ann.jid, bot.user_jid, "count me")
        await bot.wait_line(lambda line: "messages_upsert" in line and "count me" in line)
        await bot.wait_line(lambda line: '"connection": "open"' in line)
        scraped.append(await get_metrics(port))

    bot = await run_bot(metrics_command, tmp_path, converse)
    assert bot.stopped_by_sigint and bot.returncode == 0, bot.output
    [text] = scraped
    assert 'baileys_trio_messages_received_total{account="default"} 1.0' in text
    assert 'baileys_trio_connected{account="default"} 1.0' in text
    assert re.search(r'baileys_trio_login_seconds_count [1-9]', text)
