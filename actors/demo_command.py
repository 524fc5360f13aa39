"""The ``demo`` command of ``baileys-trio``: the WhatsApp demo, or ``--supervision``.

Light at import time (argparse only); the demo itself (``actors.demo``: runtime,
stores and the sandbox) is imported inside ``run``. ``runtime/cli.py`` does
``COMMANDS += cli_commands(Command)``.

Since 0.1.0.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TextIO, TypeVar

from runtime.exit import unwrap_group
from runtime.log import Logger

_C = TypeVar("_C")

EXIT_OK = 0
EXIT_FAILED = 1

HELP = "pair, talk, crash and restart a WhatsApp session against the in-process sandbox (offline)"
DESCRIPTION = (
    "Start the sandbox in this process (loopback, no network), run a session on a fresh "
    "native auth directory with the real runtime, draw the pairing QR and let the "
    "simulated phone scan it, show pairing, the 515 restart, login, the pre-key upload "
    "and open; a simulated contact writes to the bot and the bot answers; then crash the "
    "connection actor and the persister on purpose in the middle of the conversation and "
    "show the supervisor bring them back with nothing lost (no message, no Signal "
    "session), and restart the whole runtime to log in without a QR and go on talking. "
    "Takes a few seconds (at most 30), exits 0, and prints the auth directory (kept) and "
    "the inspect command for it. With --supervision: the sample supervision tree instead "
    "(restarts, rest_for_one, a child giving up)."
)
EXAMPLES = (
    "baileys-trio demo",
    "baileys-trio demo --log-format json | jq -c 'select(.event == \"demo_stage\")'",
    "baileys-trio demo --supervision",
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` command's arguments."""
    parser.add_argument(
        "--supervision",
        action="store_true",
        help="run the sample supervision tree demo (no WhatsApp session) instead",
    )


def run(args: argparse.Namespace, log: Logger, *, out: TextIO | None = None) -> int:
    """Run the chosen demo in real time; 0 when every stage happened as narrated."""
    if args.supervision:
        from runtime import demo as supervision_demo

        return supervision_demo.run(args, log)
    import trio

    from actors.demo import DEMO_TIMEOUT, STAGES, DemoFailed, main
    from actors.demo_show import Show

    stream = out if out is not None else sys.stdout
    fmt = getattr(args, "log_format", "auto")
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    show = Show(fmt, stream, log, len(STAGES))
    try:
        trio.run(main, show)
    except Exception as exc:
        error = unwrap_group(exc)
        if isinstance(error, BrokenPipeError):  # the reader left (`demo | head`): stop quietly
            _silence(stream)
            return EXIT_FAILED
        if isinstance(error, DemoFailed):
            show.failed(str(error))
        elif isinstance(error, trio.TooSlowError):
            show.failed(f"the demo took longer than {DEMO_TIMEOUT:.0f} s")
        else:
            show.failed(repr(error))
            raise  # a runtime bug: its traceback goes to stderr
        return EXIT_FAILED
    return EXIT_OK


def _silence(stream: TextIO) -> None:
    """Point stdout at /dev/null so the interpreter's final flush raises no second error."""
    if stream is sys.stdout:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def cli_commands(command: Callable[..., _C]) -> list[_C]:
    """The ``demo`` command built with ``runtime.cli.Command``."""
    return [
        command(
            name="demo",
            help=HELP,
            description=DESCRIPTION,
            examples=EXAMPLES,
            configure=configure,
            run=run,
            # The demo narrates the runtime's own log lines (crashes, restarts) in order.
            logs_on_stdout=True,
        )
    ]
