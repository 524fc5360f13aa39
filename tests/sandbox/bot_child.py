"""Our bot in a process of its own (so a test can SIGKILL it), driven by JSON lines.

``python -m tests.sandbox.bot_child --auth DIR --url URL --key HEX``

It runs ``runtime.open_runtime`` on a native auth folder (pairing by QR when the
folder is new) and prints one JSON object per line on stdout, flushed:

- ``{"event": "qr", "qr": ...}`` for every QR to scan;
- ``{"event": "connection_update", "connection": ..., "code"?: ..., "me"?: ...}``;
- ``{"event": "message", "id", "remote_jid", "from_me", "participant", "text",
  "push_name", "undecryptable"}`` for every message of a ``messages_upsert``;
- ``{"event": "sent", "ref", "id", "remote_jid"}`` once the server acked a send,
  ``{"event": "error", "ref", "message"}`` when it failed;
- ``{"event": "session_ended", ...}`` and other runtime events by name, JSON-safe.

Commands on stdin, one JSON object per line: ``{"op": "send", "to": JID, "text":
TEXT, "ref": R}`` (``rt.send_message``), ``{"op": "stop"}`` (an orderly stop,
exit 0). SIGKILL is the disorderly stop the tests use.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import trio

from runtime.app import AuthLocation, Config, open_runtime
from runtime.log import make_logger


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line, default=repr) + "\n")
    sys.stdout.flush()


def on_event(event: dict[str, Any]) -> None:
    """Print each runtime event as the lines the tests read."""
    for name, payload in event.items():
        if name == "messages_upsert":
            for m in payload["messages"]:
                emit(
                    {
                        "event": "message",
                        **m["key"],
                        "text": m.get("text"),
                        "push_name": m.get("push_name"),
                        "undecryptable": m.get("undecryptable"),
                    }
                )
        elif name == "connection_update" and "qr" in payload:
            emit({"event": "qr", "qr": payload["qr"]})
        elif name == "creds_update":
            continue  # key material inside; the tests do not need it
        else:
            body = payload if isinstance(payload, dict) else {"value": payload}
            emit({"event": name, **body})


async def serve_commands(rt: Any) -> None:
    """Run the stdin commands until ``stop`` or end of input."""
    stdin = trio.lowlevel.FdStream(os.dup(0))
    buffer = b""
    async with trio.open_nursery() as nursery:
        while True:
            chunk = await stdin.receive_some(65536)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            commands = [json.loads(line) for line in lines if line.strip()]
            if any(c.get("op") == "stop" for c in commands):
                nursery.cancel_scope.cancel()
                return
            for command in commands:
                if command.get("op") == "send":
                    nursery.start_soon(send, rt, command)


async def send(rt: Any, command: dict[str, Any]) -> None:
    ref = command.get("ref")
    try:
        key = await rt.send_message(command["to"], {"text": command["text"]})
    except Exception as exc:  # reported to the test, which fails on it
        emit({"event": "error", "ref": ref, "message": f"{type(exc).__name__}: {exc}"})
        return
    emit({"event": "sent", "ref": ref, "id": key.id, "remote_jid": key.remote_jid})


async def main(args: argparse.Namespace) -> None:
    config = Config(
        auth=AuthLocation(args.auth),
        ws_url=args.url,
        server_root_key=args.key,
        creds_coalesce_delay=0.0,
    )
    log = make_logger("json", sys.stderr)  # stdout carries the event lines only
    async with open_runtime(config, log=log, subscribe=on_event) as rt:
        await serve_commands(rt)
    emit({"event": "exit"})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--auth", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    trio.run(main, parser.parse_args())
