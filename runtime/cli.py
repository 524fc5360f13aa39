"""The ``baileys-trio`` command line (also ``python -m runtime``).

This is the one place the command line is composed: ``COMMANDS`` gathers the
commands each package offers (``cli_commands(Command)``). A ``Command``
(``runtime/command.py``) is a name, help text, examples, a ``configure`` function
adding the command's arguments, and a ``run(args, log) -> exit code`` function. To
add one, write it in its own small module and append it to ``COMMANDS``. The
packages' command modules are light: a command that needs ``actors``/``stores``
imports them inside its ``run``, so ``--help`` and the other commands stay light.
Nothing imports this module back (``runtime/command.py`` serves a package's own
``python -m`` entry point), so the command line makes no import circle.

Every command takes ``--log-format console|json|auto``. Bad arguments print one line
and exit 2.

Since 0.1.0.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from actors.cli import cli_commands as run_commands
from actors.demo_command import cli_commands as demo_commands
from actors.fleet_command import cli_commands as fleet_commands
from runtime.command import PROG, Command
from runtime.command import build_parser as build_command_parser
from runtime.log import make_logger
from sandbox.cli import cli_commands as sandbox_commands
from stores.cli import cli_commands as stores_commands

COMMANDS: list[Command] = []
COMMANDS += demo_commands(Command)
COMMANDS += run_commands(Command)
COMMANDS += fleet_commands(Command)
COMMANDS += sandbox_commands(Command)
COMMANDS += stores_commands(Command)


def build_parser(commands: Sequence[Command] = COMMANDS) -> argparse.ArgumentParser:
    """The full parser (every command by default): common options plus one subparser each."""
    return build_command_parser(commands)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``baileys-trio`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    command = next(c for c in COMMANDS if c.name == args.command)
    log = make_logger(args.log_format, sys.stdout if command.logs_on_stdout else sys.stderr)
    try:
        code: int = args._run(args, log)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
