"""The ``baileys-trio`` command line (also ``python -m runtime``).

Commands are entries of ``COMMANDS``: a name, help text, examples, a ``configure``
function adding the command's arguments, and a ``run(args, log) -> exit code``
function. To add one, write it in its own small module and append a ``Command`` to
``COMMANDS``. This module imports nothing WhatsApp-specific; a command that needs
``actors``/``stores`` imports them inside its ``run``, so ``--help`` and the other
commands stay light.

Every command takes ``--log-format console|json|auto``. Bad arguments print one line
and exit 2.

Since 0.1.0.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from actors.cli import cli_commands as run_commands
from actors.demo_command import cli_commands as demo_commands
from runtime.log import Logger, make_logger
from sandbox.cli import cli_commands as sandbox_commands
from stores.cli import cli_commands as stores_commands

PROG = "baileys-trio"
EXIT_USAGE = 2
LOG_FORMATS = ("console", "json", "auto")


@dataclass(frozen=True)
class Command:
    """One subcommand of the CLI."""

    name: str
    help: str
    description: str
    examples: tuple[str, ...]
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Logger], int]


COMMANDS: list[Command] = []
COMMANDS += demo_commands(Command)
COMMANDS += run_commands(Command)
COMMANDS += sandbox_commands(Command)
COMMANDS += stores_commands(Command)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _examples(lines: Sequence[str]) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _add_log_format(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=default,
        help="console (human), json (one object per line) or auto (console on a TTY)",
    )


def build_parser(commands: Sequence[Command] = COMMANDS) -> argparse.ArgumentParser:
    """The full parser: common options plus one subparser per command."""
    parser = _Parser(
        prog=PROG,
        description="A Trio runtime for long-lived WhatsApp-Web bots, as a supervision tree.",
        epilog=_examples([ex for command in commands for ex in command.examples]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_log_format(parser, "auto")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in commands:
        child = sub.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            epilog=_examples(command.examples),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        # SUPPRESS: an option given before the command is not reset by the subparser.
        _add_log_format(child, argparse.SUPPRESS)
        command.configure(child)
        child.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``baileys-trio`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    log = make_logger(args.log_format)
    try:
        code: int = args._run(args, log)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
