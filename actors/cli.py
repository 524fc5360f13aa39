"""``baileys-trio run``: the command-line face of ``runtime.run``.

``baileys-trio run --auth PATH [--backend native|multi-file|sqlite|postgres] [--account NAME]
[--url URL] [--server-root-key HEX] [--pairing-phone NUMBER] [--log-format console|json]``

With ``--pairing-phone`` a new device asks for a pairing code for that number
instead of showing QRs: ``{"event": "pairing_code", "code": "ABCD-EFGH"}`` in JSON,
``enter this code on the phone ...`` on a console. A paired auth ignores it.

Runs one session until it ends. With ``--log-format json`` every runtime event is
one JSON object per line on stdout (``{"event": "qr", "qr": "..."}``,
``{"event": "connection_update", "connection": "open", ...}``, ...); the log lines
go to stderr (JSON too); creds updates list the changed field names and the durable
version only, never key material. With ``console`` the QR is drawn in the
terminal and a received message is one line (``message ID from NAME <JID> [in
GROUP]: TEXT``, or ``undecryptable: why``); in JSON its ``wa.Message`` is
protobuf's JSON form.

Exit codes:

=== =========================================================================
0   orderly stop (SIGINT/SIGTERM)
1   any other error (the session tree gave up, bad creds, unreachable config, a server
    certificate that does not verify under ``--server-root-key``)
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

from actors import events
from runtime.log import Logger

HELP = "run one WhatsApp session until it ends (pairs by QR or code when the location is new)"
DESCRIPTION = (
    "Open the auth location (a new device if it is empty or absent), connect, pair by QR "
    "(or by a code with --pairing-phone) or log in with the saved creds, and keep the "
    "session alive until it is stopped (SIGINT/SIGTERM), logged out or replaced. With "
    "--log-format json every event is one JSON object per line on stdout. Log lines go to "
    "stderr."
)
EXAMPLES = (
    "baileys-trio run --auth ./auth",
    "baileys-trio run --auth ./bots.db --backend sqlite --account alice --log-format json",
    "baileys-trio run --auth ./auth --url ws://127.0.0.1:8765/ws/chat --server-root-key HEX",
    "baileys-trio run --auth ./auth --pairing-phone +15551234567",
)

_C = TypeVar("_C")

PAIRING_CODE_WHERE = "Linked devices > Link a device > Link with phone number instead"

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
        choices=("native", "multi-file", "sqlite", "postgres"),
        default="native",
        help="storage format of --auth (default native; sqlite: PATH is the database file;"
        " postgres: PATH is the DSN)",
    )
    parser.add_argument(
        "--account",
        metavar="NAME",
        default=None,
        help="session name; with sqlite/postgres also the account in the database (default"
        " 'default')",
    )
    add_server_options(parser)


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """What ``run`` and ``fleet`` share: the key, the server, pairing by code, metrics."""
    parser.add_argument(
        "--key",
        metavar="KEYREF",
        default=None,
        help="encryption key of --auth: env:NAME, file:PATH or PATH (never the key itself)",
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
    parser.add_argument(
        "--pairing-phone",
        metavar="NUMBER",
        default=None,
        help="pair a new device by a code for this phone number (country code first) "
        "instead of by QR; ignored once paired",
    )
    parser.add_argument(
        "--metrics-port",
        metavar="PORT",
        type=int,
        default=None,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port, logged)",
    )
    parser.add_argument(
        "--metrics-host",
        metavar="HOST",
        default="127.0.0.1",
        help="the address the metrics endpoint listens on (default 127.0.0.1)",
    )


def server_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``Config`` fields ``add_server_options``' arguments give (only those set)."""
    options: dict[str, Any] = {}
    if args.url is not None:
        options["ws_url"] = args.url
    if args.server_root_key is not None:
        options["server_root_key"] = args.server_root_key
    if args.pairing_phone is not None:
        options["pairing_phone"] = args.pairing_phone
    if args.metrics_port is not None:
        options["metrics_port"] = args.metrics_port
        options["metrics_host"] = args.metrics_host
    return options


def json_event_lines(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON objects printed for one event map (secrets left out, every value JSON)."""
    lines: list[dict[str, Any]] = []
    for name, payload in event.items():
        if name == events.MESSAGES_UPDATE and isinstance(payload, list):
            lines.append({"event": name, "updates": [_plain(u) for u in payload]})
            continue
        body = dict(payload) if isinstance(payload, dict) else {"value": payload}
        if name == events.CONNECTION_UPDATE and "qr" in body:
            lines.append({"event": events.QR_LINE, **body})
            continue
        if name == events.CREDS_UPDATE:
            body = {k: body[k] for k in ("version", "rev", "changed", "account") if k in body}
        if name == events.MESSAGES_UPSERT and isinstance(body.get("messages"), list):
            body["messages"] = [_message_entry(m) for m in body["messages"]]
        lines.append({"event": name, **body})
    return lines


def _message_entry(entry: object) -> object:
    """A received message with its ``wa.Message`` as protobuf JSON (key material left out)."""
    if not isinstance(entry, dict):
        return _plain(entry)
    return {k: message_json(v) if k == "message" else _plain(v) for k, v in entry.items()}


def message_json(message: object) -> object:
    """A ``wa.Message`` in protobuf's JSON form (bytes as base64), or None.

    The sender-key distribution a group message carries is dropped: it holds the
    sender's chain key, which must never reach a log.
    """
    if message is None:
        return None
    from google.protobuf import json_format
    from google.protobuf.message import Message

    if not isinstance(message, Message):
        return _plain(message)
    shown = type(message)()
    shown.CopyFrom(message)
    if shown.DESCRIPTOR.fields_by_name.get("senderKeyDistributionMessage") is not None:
        shown.ClearField("senderKeyDistributionMessage")
    as_dict: dict[str, Any] = json_format.MessageToDict(shown)
    return as_dict


def _plain(value: object) -> object:
    """``value`` made of JSON types: containers walked, bytes as their length, others repr."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return _json_default(value)


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return repr(value)


def event_printer(
    fmt: str, out: TextIO, *, name_account: bool = False
) -> Callable[[dict[str, Any]], None]:
    """A bus subscriber printing events as JSON lines, or readably (QR drawn) on a console.

    ``name_account``: the console's QR line says which account it pairs (a fleet).
    """

    def print_json(event: dict[str, Any]) -> None:
        for line in json_event_lines(event):
            out.write(json.dumps(line, default=_json_default, sort_keys=False) + "\n")
        out.flush()

    def print_console(event: dict[str, Any]) -> None:
        for line in json_event_lines(event):
            name = line.pop("event")
            if name == events.QR_LINE:
                _draw_qr(str(line["qr"]), out)
                whose = f" for account {line.get('account')}" if name_account else ""
                code = line.get("qr_index", 0) + 1
                out.write(f"scan this QR with WhatsApp{whose} (code {code})\n")
            elif name == events.PAIRING_CODE:
                whose = f" of account {line.get('account')}" if name_account else ""
                out.write(
                    f"enter this code on the phone{whose} ({PAIRING_CODE_WHERE}):"
                    f" {line.get('code')}\n"
                )
            elif name == events.CONNECTION_UPDATE and line.get("connection") == "close":
                out.write(_describe_close(line) + "\n")
            elif name == events.MESSAGES_UPSERT:
                for message in line.get("messages") or ():
                    out.write(describe_message(message) + "\n")
            elif name == events.MESSAGES_UPDATE:
                for update in line.get("updates") or ():
                    out.write(describe_update(update) + "\n")
            else:
                shown = " ".join(f"{k}={v}" for k, v in line.items() if k != "delta")
                out.write(f"{name}: {shown}\n")
        out.flush()

    return print_json if fmt == "json" else print_console


def describe_message(entry: Any) -> str:
    """A received message as a person reads it: who, in which chat, and what it says."""
    if not isinstance(entry, dict):
        return f"message: {entry!r}"
    key = _mapping(entry.get("key"))
    chat = key.get("remote_jid") or "?"
    if key.get("from_me"):
        who = "me (another device of this account)"
    else:
        author = key.get("participant") or chat
        name = entry.get("push_name")
        who = f"{name} <{author}>" if name else str(author)
    if str(chat).endswith("@g.us"):
        where = f" in {chat}"
    else:
        where = f" to {chat}" if key.get("from_me") else ""
    if entry.get("undecryptable"):
        said = f"undecryptable: {entry['undecryptable']}"
    elif entry.get("text") is not None:
        said = str(entry["text"])
    else:
        shown = entry.get("message")
        fields = sorted(shown) if isinstance(shown, dict) else []
        said = f"(no text: {', '.join(fields) or 'empty message'})"
    return f"message {key.get('id', '?')} from {who}{where}: {said}"


def describe_update(update: Any) -> str:
    """A receipt for a message we sent: which message, in which chat, what became of it."""
    if not isinstance(update, dict):
        return f"message update: {update!r}"
    key = _mapping(update.get("key"))
    change = _mapping(update.get("update"))
    by = f" by {key['participant']}" if key.get("participant") else ""
    status = change.get("status", "?")
    return f"message {key.get('id', '?')} to {key.get('remote_jid', '?')}: {status}{by}"


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


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
    from actors.status import EndReason
    from runtime.app import AuthLocation, Config, SessionFailed
    from runtime.app import run as run_session
    from stores.encryption import key_from_ref
    from stores.errors import EncryptionKeyError, StoreError, StoreLockedError

    stream = out if out is not None else sys.stdout
    try:
        ref = getattr(args, "key", None)
        key = None if ref is None else key_from_ref(ref, "--key")
    except EncryptionKeyError as exc:
        print(f"baileys-trio run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        location = AuthLocation(
            args.auth, args.backend, args.account or "default", encryption_key=key
        )
        options: dict[str, Any] = {"auth": location, "account": args.account}
        options.update(server_options(args))
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
        EndReason.UNTRUSTED_SERVER: EXIT_ERROR,
    }
    if reason is EndReason.UNTRUSTED_SERVER:
        print(
            "baileys-trio run: the server's certificate does not verify under the root key"
            " (--server-root-key; unset, it is WhatsApp's own root: against a sandbox pass"
            " the key it prints when it starts); not retrying",
            file=sys.stderr,
        )
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
