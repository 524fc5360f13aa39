"""The ``sandbox`` and ``phone scan`` commands of ``baileys-trio``.

Each command is a pair ``configure(parser)`` / ``run(args, log) -> exit code``,
the shape of ``runtime.cli.Command``; heavy imports happen inside ``run``.

- ``baileys-trio sandbox [--host H] [--port P] [--root-key HEX]`` prints the
  websocket URL on its first line and the root public key (hex) on its second,
  flushed, then serves until SIGINT/SIGTERM (exit 0). On stderr it prints one line
  per connection opened or closed, pairing and login, with the time (UTC), unless
  ``--quiet``.
- ``baileys-trio sandbox contact add|send|messages ...`` and ``baileys-trio
  sandbox group create ...`` (0.2.0) talk to a running sandbox through its
  control channel (``--sandbox URL``): ``contact add [--name N]`` prints the new
  contact's JID; ``contact send JID TEXT [--to JID]`` has that contact send TEXT
  (to the sandbox's first phone's account by default) and prints the message id;
  ``contact messages JID [--json]`` prints what it received, one line each
  (``id<TAB>chat<TAB>author<TAB>text``); ``group create SUBJECT JID...`` prints
  the group's JID. Exit 0, or 1 with one stderr line when the sandbox refused.
- ``baileys-trio phone scan "<qr>" --sandbox URL [--user N] [--timeout S]`` has
  the sandbox's phone scan the QR through the control channel; it prints the
  linked device's JID and exits 0 once the sandbox paired it, 1 when the sandbox
  refused or the link failed (one line on stderr saying why).
- ``baileys-trio phone link-code CODE --sandbox URL [--user N] [--timeout S]``
  (0.2.0) has the phone of account N (default: the sandbox's first) type the
  pairing code a device asked for with that number; the same output and exit codes.

Since 0.1.0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from typing import TextIO, TypeVar

_C = TypeVar("_C")

SANDBOX_HELP = "serve a loopback WhatsApp-protocol server with a simulated phone"
SANDBOX_DESCRIPTION = (
    "Serve the sandbox: a WhatsApp-protocol websocket server on loopback with its own "
    "certificate root and a simulated phone. Prints its websocket URL and its root public "
    "key (hex) on the first two lines, then serves until interrupted."
)
SANDBOX_EXAMPLES = (
    "baileys-trio sandbox",
    "baileys-trio sandbox --port 8765",
    "baileys-trio sandbox contact add --name Ann --sandbox ws://127.0.0.1:8765/ws/chat",
    "baileys-trio sandbox contact send 15550100001@s.whatsapp.net 'hello' "
    "--sandbox ws://127.0.0.1:8765/ws/chat",
)
PHONE_HELP = "act as the sandbox's phone: scan a pairing QR string or type a pairing code"
PHONE_DESCRIPTION = (
    "Hand a pairing QR string (scan) or a pairing code (link-code) to the sandbox's "
    "simulated phone, as a person would show it to their phone or type it there. "
    "Exits 0 once the sandbox linked the device."
)
PHONE_EXAMPLES = (
    'baileys-trio phone scan "https://wa.me/settings/linked_devices#..." '
    "--sandbox ws://127.0.0.1:8765/ws/chat",
    "baileys-trio phone link-code ABCD-EFGH --sandbox ws://127.0.0.1:8765/ws/chat",
)

EXIT_OK = 0
EXIT_FAILED = 1


def configure_sandbox(parser: argparse.ArgumentParser) -> None:
    """Add the ``sandbox`` command's arguments (and its ``contact`` / ``group`` subcommands)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: any free)")
    parser.add_argument(
        "--root-key",
        metavar="HEX",
        default=None,
        help="the root private key as 64 hex digits (default: a fresh one per run)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="print no line per connection, pairing and login on stderr",
    )
    sub = parser.add_subparsers(dest="sandbox_command", metavar="{contact,group}")
    contact = sub.add_parser("contact", help="simulated contacts of a running sandbox")
    actions = contact.add_subparsers(dest="contact_action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="create a contact; prints its JID")
    add.add_argument("--name", default=None, help="its push name (default: Contact N)")
    send = actions.add_parser("send", help="have a contact send a text; prints the message id")
    send.add_argument("jid", help="the contact that sends")
    send.add_argument("text", help="what it says")
    send.add_argument(
        "--to", default=None, help="recipient user or group JID (default: the first phone's)"
    )
    messages = actions.add_parser("messages", help="print what a contact received")
    messages.add_argument("jid", help="the contact")
    messages.add_argument("--json", action="store_true", help="one JSON object per line")
    group = sub.add_parser("group", help="groups of a running sandbox")
    group_actions = group.add_subparsers(dest="group_action", required=True, metavar="ACTION")
    create = group_actions.add_parser("create", help="create a group; prints its JID")
    create.add_argument("subject", help="the group's subject")
    create.add_argument("participants", nargs="+", metavar="JID", help="members; the first creates")
    for child in (add, send, messages, create):
        child.add_argument("--sandbox", required=True, metavar="URL", help="the sandbox's URL")
        child.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (10)")


def run_sandbox(args: argparse.Namespace, log: object = None, *, out: TextIO | None = None) -> int:
    """Serve until SIGINT or SIGTERM; print URL and root key first (or run a subcommand)."""
    if getattr(args, "sandbox_command", None) is not None:
        return _run_control(args, out if out is not None else sys.stdout)
    import trio

    from sandbox.identity import ServerIdentity
    from sandbox.server import open_sandbox
    from stores.creds import KeyPair
    from stores.keys import public_from_private

    stream = out if out is not None else sys.stdout
    identity = None
    if args.root_key is not None:
        try:
            private = bytes.fromhex(args.root_key)
            root = KeyPair(private=private, public=public_from_private(private))
        except ValueError as exc:
            print(f"baileys-trio sandbox: --root-key: {exc}", file=sys.stderr)
            return 2
        identity = ServerIdentity.generate(root_key=root)

    async def serve() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with open_sandbox(
                args.host,
                args.port,
                identity=identity,
                on_event=None if args.quiet else _event_printer(sys.stderr),
            ) as sb:
                print(sb.url, file=stream)
                print(sb.root_public_key.hex(), file=stream, flush=True)
                async for _ in signals:
                    return

    trio.run(serve)
    return EXIT_OK


def _event_printer(stream: TextIO) -> Callable[[str], None]:
    """Print each sandbox event as one line, its UTC time first, for a person watching."""

    def show(line: str) -> None:
        print(f"{time.strftime('%H:%M:%S', time.gmtime())} {line}", file=stream, flush=True)

    return show


def _run_control(args: argparse.Namespace, stream: TextIO) -> int:
    """``sandbox contact ...`` / ``sandbox group ...`` through the control channel."""
    import json

    import trio

    from sandbox import control
    from sandbox.errors import SandboxError

    url = args.sandbox

    async def act() -> list[str]:
        with trio.fail_after(args.timeout):
            if args.sandbox_command == "group":
                return [
                    await control.create_group_via_control(url, args.subject, args.participants)
                ]
            if args.contact_action == "add":
                return [await control.add_contact_via_control(url, name=args.name)]
            if args.contact_action == "send":
                return [
                    await control.contact_send_via_control(url, args.jid, args.text, to=args.to)
                ]
            found = await control.contact_messages_via_control(url, args.jid)
            if args.json:
                return [json.dumps(m) for m in found]
            return [_message_line(m) for m in found]

    try:
        lines = trio.run(act)
    except (SandboxError, trio.TooSlowError) as exc:
        what = (
            f"{args.sandbox_command} {getattr(args, 'contact_action', None) or args.group_action}"
        )
        print(f"baileys-trio sandbox {what}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for line in lines:
        print(line, file=stream)
    stream.flush()
    return EXIT_OK


def _message_line(message: dict[str, object]) -> str:
    text = message.get("text")
    shown = text if isinstance(text, str) else f"(undecryptable: {message.get('error')})"
    fields = [str(message.get("id")), str(message.get("chat")), str(message.get("author"))]
    return "\t".join([*fields, shown.replace("\n", " ")])


def configure_phone(parser: argparse.ArgumentParser) -> None:
    """Add the ``phone`` command's arguments (``phone scan QR|link-code CODE --sandbox URL``)."""
    parser.add_argument(
        "action",
        choices=["scan", "link-code"],
        help="scan a QR string, or type a pairing code",
    )
    parser.add_argument(
        "text", metavar="QR|CODE", help="the QR string or the pairing code the client showed"
    )
    parser.add_argument("--sandbox", required=True, metavar="URL", help="the sandbox's URL")
    parser.add_argument("--user", default=None, help="the account (phone number) that scans")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (30)")


def run_phone(args: argparse.Namespace, log: object = None, *, out: TextIO | None = None) -> int:
    """Scan or type the code through the control channel; 0 once linked, 1 with a reason."""
    import trio

    from sandbox.control import link_code_via_control, scan_via_control
    from sandbox.errors import SandboxError
    from sandbox.phone import LinkedDevice

    stream = out if out is not None else sys.stdout

    link = link_code_via_control if args.action == "link-code" else scan_via_control

    async def act() -> LinkedDevice:
        with trio.fail_after(args.timeout + 10):
            return await link(args.sandbox, args.text, user=args.user, link_timeout=args.timeout)

    try:
        linked = trio.run(act)
    except (SandboxError, trio.TooSlowError) as exc:
        print(f"baileys-trio phone {args.action}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(linked.jid, file=stream, flush=True)
    return EXIT_OK


def cli_commands(command: Callable[..., _C]) -> list[_C]:
    """The ``sandbox`` and ``phone`` commands, built with ``runtime.cli.Command``.

    Taking the class as an argument keeps this module free of runtime imports;
    ``runtime/cli.py`` does ``COMMANDS += cli_commands(Command)``.
    """
    return [
        command(
            name="sandbox",
            help=SANDBOX_HELP,
            description=SANDBOX_DESCRIPTION,
            examples=SANDBOX_EXAMPLES,
            configure=configure_sandbox,
            run=run_sandbox,
        ),
        command(
            name="phone",
            help=PHONE_HELP,
            description=PHONE_DESCRIPTION,
            examples=PHONE_EXAMPLES,
            configure=configure_phone,
            run=run_phone,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the two commands without the rest of the CLI (``python -m sandbox.cli``)."""
    parser = argparse.ArgumentParser(prog="sandbox.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    sandbox_parser = sub.add_parser("sandbox", help=SANDBOX_HELP)
    configure_sandbox(sandbox_parser)
    sandbox_parser.set_defaults(run=run_sandbox)
    phone_parser = sub.add_parser("phone", help=PHONE_HELP)
    configure_phone(phone_parser)
    phone_parser.set_defaults(run=run_phone)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
