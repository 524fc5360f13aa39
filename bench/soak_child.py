"""The process bench/soak.py kills: one runtime session against a sandbox, writing all the time.

``python -m bench.soak_child --auth DIR --url URL --key HEX --run N [--seed S]``

It pairs when the folder is new (the sandbox's phone scans the first QR through the
control channel), logs in (the pre-key upload follows a pairing), then runs key
transactions through the session's signal-store actor until it is killed. Every
acknowledged commit is printed as one JSON line, flushed, BEFORE anything else happens,
so whatever the parent read was acknowledged:

- ``{"ack": "keys", "type": T, "ids": [...], "run": N, "i": I}``: a transaction whose
  receipt resolved (durable); each id now holds ``value(N, I)``;
- ``{"ack": "creds", "version": SEQ, "rev": R, "changed": [...], "fields": {...}}``: a
  ``creds_update`` (emitted only after the commit is durable), with the scalar fields
  the soak checks (``next_pre_key_id``, ``first_unuploaded_pre_key_id``,
  ``registered``, ``me``).

Other lines: ``{"event": "qr"}``, ``{"event": "open"}``, ``{"event": "ended", "reason": R}``.
Exit 3 when the session ended for good (logged out: a pairing the phone never saw
completed); 0 after SIGINT/SIGTERM (an orderly stop) or once ``--seconds`` passed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

import trio

KEY_TYPE = "sender-key"
ID_POOL = 64
VALUE_SIZE = 1024
CHECKED_FIELDS = ("next_pre_key_id", "first_unuploaded_pre_key_id", "registered", "me")


def value(run: int, i: int) -> bytes:
    """The 1 KiB value written by transaction ``i`` of run ``run`` (its header says which)."""
    head = f"soak:{run}:{i}:".encode()
    return head + b"." * (VALUE_SIZE - len(head))


def parse_value(raw: object) -> tuple[int, int] | None:
    """(run, i) of a value written by ``value``; None for anything else."""
    if not isinstance(raw, (bytes, bytearray)) or not raw.startswith(b"soak:"):
        return None
    parts = bytes(raw).split(b":")
    try:
        return int(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        return None


def emit(out: TextIO, line: dict[str, Any]) -> None:
    out.write(json.dumps(line, default=repr) + "\n")
    out.flush()


def creds_line(update: dict[str, Any]) -> dict[str, Any]:
    delta = update.get("delta") or {}
    fields: dict[str, Any] = {}
    for name in CHECKED_FIELDS:
        if name in delta:
            item = delta[name]
            fields[name] = item.get("id") if name == "me" and isinstance(item, dict) else item
    return {
        "ack": "creds",
        "version": update.get("version"),
        "rev": update.get("rev"),
        "changed": update.get("changed"),
        "fields": fields,
    }


async def child(args: argparse.Namespace, out: TextIO, sink: TextIO) -> int:
    from actors.errors import SessionEnded
    from actors.mail import RunTransaction
    from runtime.app import Config, open_runtime
    from runtime.log import make_logger
    from runtime.reply import call_durable
    from sandbox.control import scan_via_control

    rng = random.Random(args.seed * 1_000_003 + args.run)

    def on_event(event: dict[str, Any]) -> None:
        update = event.get("creds_update")
        if isinstance(update, dict):
            emit(out, creds_line(update))
        conn = event.get("connection_update")
        if isinstance(conn, dict) and conn.get("connection") == "open":
            emit(out, {"event": "open"})
        ended = event.get("session_ended")
        if isinstance(ended, dict):
            emit(out, {"event": "ended", "reason": ended.get("reason")})

    async with trio.open_nursery() as nursery:
        scanned: list[str] = []
        # SIGINT/SIGTERM stop the session in order (open_runtime installs no handler;
        # a KeyboardInterrupt landing inside an actor task would be taken for a crash).
        nursery.start_soon(stop_on_signal, nursery.cancel_scope)

        async def scan(qr: str) -> None:
            try:
                await scan_via_control(args.url, qr, link_timeout=20)
            except Exception as exc:  # the parent reads the outcome from the sandbox
                emit(out, {"event": "scan_failed", "error": type(exc).__name__})

        def on_qr(qr: str) -> None:
            emit(out, {"event": "qr"})
            if not scanned:
                scanned.append(qr)
                nursery.start_soon(scan, qr)

        config = Config(
            auth=Path(args.auth),
            ws_url=args.url,
            server_root_key=args.key,
            on_qr=on_qr,
        )
        async with open_runtime(config, log=make_logger("json", sink), subscribe=on_event) as rt:
            try:
                await rt.wait_connected(args.seconds)
            except SessionEnded as exc:
                emit(out, {"event": "ended", "reason": str(exc)})
                nursery.cancel_scope.cancel()
                return 3
            store = rt.primary.refs["signal_store"]
            i = 0
            with trio.move_on_after(args.seconds):
                while True:
                    ids = sorted(
                        {f"soak-{rng.randrange(ID_POOL)}" for _ in range(rng.randint(1, 8))}
                    )
                    data = value(args.run, i)

                    async def write(tx: Any, ids: list[str] = ids, data: bytes = data) -> None:
                        await tx.get(KEY_TYPE, ids)  # read-modify-write, as sessions do
                        await tx.set({KEY_TYPE: dict.fromkeys(ids, data)})

                    await call_durable(store, RunTransaction("soak", write), timeout=30)
                    emit(
                        out, {"ack": "keys", "type": KEY_TYPE, "ids": ids, "run": args.run, "i": i}
                    )
                    i += 1
        nursery.cancel_scope.cancel()
    return 0


async def stop_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


def entry(argv: list[str]) -> int:
    """Not ``main``: bench/__main__ runs every bench module's ``main``; this is no bench."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak_child")
    parser.add_argument("--auth", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--run", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=120.0)
    args = parser.parse_args(argv)
    with open(os.devnull, "w") as sink:  # runtime logs: the parent reads acks only
        code: int = trio.run(child, args, sys.stdout, sink)
    return code


if __name__ == "__main__":
    sys.exit(entry(sys.argv[1:]))
