"""``baileys-trio run``: the command-line face of ``runtime.run``.

``baileys-trio run --auth PATH [--backend native|multi-file|sqlite] [--account NAME]
[--url URL] [--server-root-key HEX] [--log-format console|json]``

Runs one session until it ends. With ``--log-format json`` every runtime event is
one JSON object per line on stdout (``{"event": "qr", "qr": "..."}``,
``{"event": "connection_update", "connection": "open", ...}``, ...), among the
JSON log lines; creds updates list the changed field names and the durable
version only, never key material. With ``console`` the QR is drawn in the
terminal.

Exit codes:

=== =========================================================================
0   orderly stop (SIGINT/SIGTERM)
1   any other error (the session tree gave up, bad creds, unreachable config)
2   bad arguments (from the CLI parser)
3   logged out (401): the device was removed; the creds are marked, files kept
4   replaced (440): another client took over the session
5   the auth location is locked by another live runtime (StoreLockedError)
6   the server refuses this device (403 forbidden, 411 multi-device mismatch)
=== =========================================================================

This module imports only ``argparse`` and the standard library at import time;
``runtime.app`` (and so ``actors``/``stores``) is imported inside ``run``.

Since 0.1.0.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO, TypeVar

from runtime.log import Logger

HELP = "run one WhatsApp session until it ends (pairs by QR when the auth location is new)"
DESCRIPTION = (
    "Open the auth location (a new device if it is empty or absent), connect, pair by QR "
    "or log in with the saved creds, and keep the session alive until it is stopped "
    "(SIGINT/SIGTERM), logged out or replaced. With --log-format json every event is one "
    "JSON object per line on stdout."
)
EXAMPLES = (
    "baileys-trio run --auth ./auth",
    "baileys-trio run --auth ./bots.db --backend sqlite --account alice --log-format json",
    "baileys-trio run --auth ./auth --url ws://127.0.0.1:8765/ws/chat --server-root-key HEX",
)

_C = TypeVar("_C")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_LOGGED_OUT = 3
EXIT_REPLACED = 4
EXIT_STORE_LOCKED = 5
EXIT_REFUSED = 6


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``run`` command's arguments."""
    parser.add_argument("--auth", required=True, metavar="PATH", help="the auth location")
    parser.add_argument(
        "--backend",
        choices=("native", "multi-file", "sqlite"),
        default="native",
        help="storage format of --auth (default native; sqlite: PATH is the database file)",
    )
    parser.add_argument(
        "--account",
        metavar="NAME",
        default=None,
        help="session name; with sqlite also the account inside the database (default 'default')",
    )
    parser.add_argument(
        "--url", metavar="URL", default=None, help="server websocket URL (default WhatsApp's)"
    )
    parser.add_argument(
        "--server-root-key",
        metavar="HEX",
        default=None,
        help="the server's certificate root public key, 64 hex digits (default WhatsApp's)",
    )


def json_event_lines(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON objects printed for one event map (secrets left out)."""
    lines: list[dict[str, Any]] = []
    for name, payload in event.items():
        body = dict(payload) if isinstance(payload, dict) else {"value": payload}
        if name == "connection_update" and "qr" in body:
            lines.append({"event": "qr", **body})
            continue
        if name == "creds_update":
            body = {k: body[k] for k in ("version", "rev", "changed", "account") if k in body}
        lines.append({"event": name, **body})
    return lines


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return repr(value)


def event_printer(fmt: str, out: TextIO) -> Callable[[dict[str, Any]], None]:
    """A bus subscriber printing events as JSON lines, or readably (QR drawn) on a console."""

    def print_json(event: dict[str, Any]) -> None:
        for line in json_event_lines(event):
            out.write(json.dumps(line, default=_json_default, sort_keys=False) + "\n")
        out.flush()

    def print_console(event: dict[str, Any]) -> None:
        for line in json_event_lines(event):
            name = line.pop("event")
            if name == "qr":
                _draw_qr(str(line["qr"]), out)
                out.write(f"scan this QR with WhatsApp (code {line.get('qr_index', 0) + 1})\n")
            elif name == "connection_update" and line.get("connection") == "close":
                out.write(_describe_close(line) + "\n")
            else:
                shown = " ".join(f"{k}={v}" for k, v in line.items() if k != "delta")
                out.write(f"{name}: {shown}\n")
        out.flush()

    return print_json if fmt == "json" else print_console


def _describe_close(line: dict[str, Any]) -> str:
    """A closed connection as a person reads it: why, and what happens next."""
    why = f"connection closed ({line.get('code')} {line.get('reason')})"
    if line.get("detail"):
        why += f": {line['detail']}"
    if line.get("reconnect"):
        delay = line.get("delay")
        when = "now" if not delay else f"in {float(delay):.1f} s"
        return f"{why}; reconnecting {when}"
    return f"{why}; not reconnecting"


def _draw_qr(qr: str, out: TextIO) -> None:
    try:
        import segno

        segno.make(qr, error="l").terminal(out=out, compact=True)
    except Exception:  # drawing is a convenience: the string below always works
        pass
    out.write(qr + "\n")


def run(args: argparse.Namespace, log: Logger, *, out: TextIO | None = None) -> int:
    """Run the session; returns the exit code (see the module docstring)."""
    from actors.errors import ConfigError
    from actors.messages import EndReason
    from runtime.app import AuthLocation, Config, SessionFailed
    from runtime.app import run as run_session
    from stores.errors import StoreError, StoreLockedError

    stream = out if out is not None else sys.stdout
    try:
        location = AuthLocation(args.auth, args.backend, args.account or "default")
        options: dict[str, Any] = {"auth": location, "account": args.account}
        if args.url is not None:
            options["ws_url"] = args.url
        if args.server_root_key is not None:
            options["server_root_key"] = args.server_root_key
        config = Config(**options)
    except ConfigError as exc:
        print(f"baileys-trio run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    fmt = getattr(args, "log_format", "auto")
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    try:
        reason = run_session(config, log=log, subscribe=event_printer(fmt, stream))
    except StoreLockedError as exc:
        print(f"baileys-trio run: {exc}", file=sys.stderr)
        return EXIT_STORE_LOCKED
    except (SessionFailed, StoreError) as exc:
        print(f"baileys-trio run: {exc}", file=sys.stderr)
        return EXIT_ERROR
    codes = {
        EndReason.STOPPED: EXIT_OK,
        EndReason.LOGGED_OUT: EXIT_LOGGED_OUT,
        EndReason.REPLACED: EXIT_REPLACED,
        EndReason.REFUSED: EXIT_REFUSED,
        EndReason.FAILED: EXIT_ERROR,
        EndReason.FENCED: EXIT_STORE_LOCKED,
    }
    return codes[reason]


def cli_commands(command: Callable[..., _C]) -> list[_C]:
    """The ``run`` command built with ``runtime.command.Command``.

    ``runtime/cli.py`` does ``COMMANDS += cli_commands(Command)``; taking the class
    as an argument keeps this module free of a cycle with the CLI.
    """
    return [
        command(
            name="run",
            help=HELP,
            description=DESCRIPTION,
            examples=EXAMPLES,
            configure=configure,
            run=run,
        )
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m actors.cli run ...``: the command without the full CLI."""
    from runtime.command import Command, build_parser
    from runtime.log import make_logger

    (command,) = cli_commands(Command)
    args = build_parser([command]).parse_args(argv)
    code: int = command.run(args, make_logger(args.log_format))
    return code


if __name__ == "__main__":
    sys.exit(main())
