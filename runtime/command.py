"""What a subcommand of the ``baileys-trio`` command line is, and the parser built from some.

Generic and WhatsApp-free: ``runtime/cli.py`` composes the full command line from
the commands each package offers (``cli_commands(Command)``); a package's own
``python -m`` entry point builds a parser of its commands with ``build_parser``
here, never by importing ``runtime.cli`` back (that would be an import circle).

Every command takes ``--log-format console|json|auto``. Bad arguments print one line
and exit 2.

Since 0.2.0.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from runtime.log import Logger

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
    logs_on_stdout: bool = False
    """Log lines go to stderr, apart from stdout's output; True for a command whose
    output narrates the log (the demo shows the runtime's crash and restart lines)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def parse_args(  # type: ignore[override]  # the one signature this CLI calls
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """Parse; an unknown option is reported under the subcommand it was given to."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(parsed, "command", None)
            prog = f"{self.prog} {command}" if command else self.prog
            self.exit(EXIT_USAGE, f"{prog}: error: unrecognized arguments: {' '.join(extras)}\n")
        return parsed


def _examples(lines: Sequence[str]) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _add_log_format(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=default,
        help="console (human), json (one object per line) or auto (console on a TTY)",
    )


def build_parser(commands: Sequence[Command]) -> argparse.ArgumentParser:
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


__all__ = ["EXIT_USAGE", "LOG_FORMATS", "PROG", "Command", "build_parser"]
