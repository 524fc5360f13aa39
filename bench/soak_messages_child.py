"""The bot bench/soak_messages.py kills: one session that echoes every text it receives.

``python -m bench.soak_messages_child --auth DIR --url URL --key HEX [--seconds S]``

It pairs when the folder is new (it prints the QR; the parent's in-process sandbox
scans it), logs in, and answers each received text ``T`` with ``echo:T`` to the
chat it came from. Every line is one JSON object, written and flushed from the
event subscriber before anything else happens, so whatever the parent read was
seen by the application:

- ``{"event": "qr", "qr": ...}``, ``{"event": "open", "me": <device JID>}``;
- ``{"event": "message", "id", "remote_jid", "from_me", "text", "undecryptable"}``:
  one received message, as ``messages_upsert`` gave it to the subscriber;
- ``{"event": "reply", "id": <reply id>, "of": <message id>, "to": <chat>}``: an echo
  ``send_message`` returned for (the server acked it);
- ``{"event": "send_failed", "of", "error"}``; ``{"event": "ended", "reason"}``.

Not a bench (no ``main``): bench/__main__ runs every bench module's ``main``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

import trio

ECHO = "echo:"


def emit(out: TextIO, line: dict[str, Any]) -> None:
    out.write(json.dumps(line, default=repr) + "\n")
    out.flush()


async def child(args: argparse.Namespace, out: TextIO, sink: TextIO) -> int:
    from actors.errors import SessionEnded
    from runtime.app import Config, open_runtime
    from runtime.log import make_logger

    echoes_in, echoes_out = trio.open_memory_channel[tuple[str, str, str]](100_000)

    def on_event(event: dict[str, Any]) -> None:
        upsert = event.get("messages_upsert")
        if isinstance(upsert, dict):
            for m in upsert.get("messages") or []:
                key = m.get("key") or {}
                emit(
                    out,
                    {
                        "event": "message",
                        "id": key.get("id"),
                        "remote_jid": key.get("remote_jid"),
                        "from_me": key.get("from_me"),
                        "text": m.get("text"),
                        "undecryptable": m.get("undecryptable"),
                    },
                )
                text = m.get("text")
                if not key.get("from_me") and isinstance(text, str) and not m.get("undecryptable"):
                    echoes_in.send_nowait((str(key.get("remote_jid")), str(key.get("id")), text))
        ended = event.get("session_ended")
        if isinstance(ended, dict):
            emit(out, {"event": "ended", "reason": ended.get("reason")})

    async def echo(rt: Any) -> None:
        async for chat, of, text in echoes_out:
            try:
                key = await rt.send_message(chat, {"text": ECHO + text})
            except Exception as exc:  # reported; the parent counts it, the bot goes on
                emit(
                    out, {"event": "send_failed", "of": of, "error": f"{type(exc).__name__}: {exc}"}
                )
                continue
            emit(out, {"event": "reply", "id": key.id, "of": of, "to": chat})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_signal, nursery.cancel_scope)
        config = Config(
            auth=Path(args.auth),
            ws_url=args.url,
            server_root_key=args.key,
            on_qr=lambda qr: emit(out, {"event": "qr", "qr": qr}),
        )
        emit(out, {"event": "started"})
        async with open_runtime(config, log=make_logger("json", sink), subscribe=on_event) as rt:
            try:
                await rt.wait_connected(args.seconds)
            except SessionEnded as exc:
                emit(out, {"event": "ended", "reason": str(exc)})
                nursery.cancel_scope.cancel()
                return 3
            creds = await rt.auth_state()
            emit(out, {"event": "open", "me": (creds.me or {}).get("id")})
            with trio.move_on_after(args.seconds):
                await echo(rt)
        nursery.cancel_scope.cancel()
    return 0


async def stop_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


def entry(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak_messages_child")
    parser.add_argument("--auth", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--log", default=os.devnull, help="where the runtime's JSON logs go")
    args = parser.parse_args(argv)
    with open(args.log, "a") as sink:
        code: int = trio.run(child, args, sys.stdout, sink)
    return code


if __name__ == "__main__":
    sys.exit(entry(sys.argv[1:]))
