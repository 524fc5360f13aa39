"""``baileys-trio fleet``: run this process's part of a fleet; ``fleet add``: register an account.

``baileys-trio fleet --dsn DSN --capacity N [--lease-ttl S] [--url URL]
[--server-root-key HEX]`` joins the fleet on the PostgreSQL database at DSN and runs
the accounts it claims until SIGINT/SIGTERM (every session stopped, every lease
handed back). Events are printed as ``run`` prints them, each naming its account;
the fleet's own are ``fleet_claimed``, ``fleet_takeover`` and ``fleet_released``.

``baileys-trio fleet add --dsn DSN ACCOUNT`` puts an account in the fleet: a new one
pairs (its QR printed) on whichever process claims it; one already holding data
(migrated in) logs in with it; one the fleet retired is made active again.

Exit codes: 0 stopped by a signal / added; 1 any other error (the database cannot
be reached); 2 bad arguments; 6 refused (``fleet add`` of an account already in the
fleet: nothing was changed).

This module imports only the standard library and ``actors.cli`` at import time.

Since 0.2.0.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TextIO, TypeVar

from actors.cli import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    add_server_options,
    event_printer,
    server_options,
)
from runtime.log import Logger

_C = TypeVar("_C")

HELP = "run this process's share of the accounts of a fleet on PostgreSQL (or add one)"
DESCRIPTION = (
    "Join the fleet on the PostgreSQL database at --dsn: claim unowned or expired "
    "accounts up to --capacity (an even share of them when other processes run) and run "
    "a session for each until SIGINT/SIGTERM, which hands every lease back. "
    "'fleet add --dsn DSN ACCOUNT' registers an account; a new one pairs (its QR "
    "printed, naming the account) on whichever process claims it."
)
EXAMPLES = (
    "baileys-trio fleet --dsn postgresql://bots@db/bots --capacity 200",
    "baileys-trio fleet add --dsn postgresql://bots@db/bots alice",
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``fleet`` command's arguments and its ``add`` subcommand."""
    parser.add_argument("--dsn", default=None, help="the fleet's PostgreSQL connection string")
    parser.add_argument(
        "--capacity",
        type=int,
        default=None,
        metavar="N",
        help="the most accounts this process runs",
    )
    parser.add_argument(
        "--lease-ttl",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="lease lifetime (default 15): a dead process's accounts move after it",
    )
    add_server_options(parser)
    sub = parser.add_subparsers(dest="fleet_command", metavar="add")
    add = sub.add_parser("add", help="register an account with the fleet")
    add.add_argument("--dsn", required=True, help="the fleet's PostgreSQL connection string")
    add.add_argument("account", metavar="ACCOUNT", help="the account's name")


def run(args: argparse.Namespace, log: Logger, *, out: TextIO | None = None) -> int:
    """``fleet`` or ``fleet add``; returns the exit code (see the module docstring)."""
    stream = out if out is not None else sys.stdout
    if getattr(args, "fleet_command", None) == "add":
        return _add(args, stream)
    return _run_fleet(args, log, stream)


def _usage(problem: str, command: str = "fleet") -> int:
    print(f"baileys-trio {command}: error: {problem}", file=sys.stderr)
    return EXIT_USAGE


def _run_fleet(args: argparse.Namespace, log: Logger, stream: TextIO) -> int:
    from actors.errors import ConfigError
    from runtime.app import Config, Fleet
    from runtime.app import run as run_runtime
    from stores.encryption import key_from_ref
    from stores.errors import EncryptionKeyError, StoreError

    if args.dsn is None or args.capacity is None:
        return _usage("--dsn and --capacity are required (or: fleet add --dsn DSN ACCOUNT)")
    try:
        key = None if args.key is None else key_from_ref(args.key, "--key")
        fleet = Fleet(args.dsn, capacity=args.capacity, lease_ttl=args.lease_ttl)
        config = Config(fleet=fleet, encryption_key=key, **server_options(args))
    except (ConfigError, EncryptionKeyError) as exc:
        return _usage(str(exc))
    fmt = getattr(args, "log_format", "auto")
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    try:
        run_runtime(config, log=log, subscribe=event_printer(fmt, stream, name_account=True))
    except StoreError as exc:
        print(f"baileys-trio fleet: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _add(args: argparse.Namespace, stream: TextIO) -> int:
    import trio

    from stores.errors import AlreadyInFleetError, InvalidValueError, StoreError
    from stores.postgres_fleet import register_account

    try:
        outcome = trio.run(register_account, args.dsn, args.account)
    except InvalidValueError as exc:
        return _usage(str(exc), "fleet add")
    except AlreadyInFleetError as exc:
        print(f"baileys-trio fleet add: {exc}; nothing was changed", file=sys.stderr)
        return EXIT_REFUSED
    except StoreError as exc:
        print(f"baileys-trio fleet add: {exc}", file=sys.stderr)
        return EXIT_ERROR
    what = {
        "new": "a new device: it pairs on the process that claims it",
        "existing": "it holds creds or keys: it logs in with them",
        "reactivated": "the fleet had retired it: it runs again",
    }[outcome.value]
    stream.write(f"added {args.account} to the fleet ({what})\n")
    stream.flush()
    return EXIT_OK


def cli_commands(command: Callable[..., _C]) -> list[_C]:
    """The ``fleet`` command built with ``runtime.command.Command``."""
    return [
        command(
            name="fleet",
            help=HELP,
            description=DESCRIPTION,
            examples=EXAMPLES,
            configure=configure,
            run=run,
        )
    ]
