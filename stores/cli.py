"""The ``inspect``, ``migrate``, ``backup``, ``restore`` and ``rekey`` commands of the CLI.

They live in ``stores`` because they are about auth locations; ``runtime/cli.py``
registers them (``INSPECT``, ``MIGRATE``, ``BACKUP``, ``RESTORE`` and ``REKEY`` carry exactly
what its ``Command`` needs: name, help, description, examples, ``configure(parser)``
and ``run(args, log) -> exit code``); ``runtime/cli.py`` does
``COMMANDS += cli_commands(Command)``. ``register_inspect_command(subparsers)`` and
``register_migrate_command(subparsers)`` add them to any argparse parser, and
``build_parser()`` / ``main()`` make a parser of just these five (tests, embedding).

This module imports only the standard library at import time, so ``--help`` stays
light; each ``run`` imports the stores modules it needs.

Exit codes (documented in docs/cli.md; the numbers mean the same as for ``run``):

== ==================================================================================
0  done; the location is intact (warnings may be printed)
1  corruption: a record failed its checksum, parse or validation (named in the output)
2  bad arguments (one line on stderr), an unusable key file or key variable
5  locked: a running owner holds the location (its pid and host are named)
6  refused: nothing there, another backend's data, an unsupported format, an empty
   source, a target that is not empty, a backend backup cannot copy online, a wrong
   or missing key; nothing was changed
7  failed: an I/O error or a failed verification; the source is untouched
== ==================================================================================

Keys (``--key``, ``--src-key``, ``--dst-key``, ``--old-key``, ``--new-key``) are
references, never key bytes: ``env:NAME`` (64 hex digits in that environment
variable), ``file:PATH`` or ``PATH`` (a 0600 file of 32 raw bytes or 64 hex digits).

Since 0.1.0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar

if TYPE_CHECKING:
    from stores.backup import BackupSummary
    from stores.inspection import AccountReport, InspectReport
    from stores.migrate import MigrationSummary

__all__ = [
    "BACKUP",
    "EXIT_CORRUPT",
    "EXIT_FAILED",
    "EXIT_LOCKED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "INSPECT",
    "MIGRATE",
    "REKEY",
    "RESTORE",
    "CommandInfo",
    "build_parser",
    "cli_commands",
    "main",
    "register_inspect_command",
    "register_migrate_command",
]

_C = TypeVar("_C")

PROG = "baileys-trio"
EXIT_OK = 0
EXIT_CORRUPT = 1
EXIT_USAGE = 2
EXIT_LOCKED = 5
EXIT_REFUSED = 6
EXIT_FAILED = 7

BACKEND_CHOICES = ("native", "multi-file", "sqlite", "postgres")
_ACCOUNT_BACKENDS = ("sqlite", "postgres")  # backends holding many accounts
LOG_FORMATS = ("console", "json", "auto")
DEFAULT_PROGRESS_AFTER = 0.5
"""Seconds a migration runs before the progress bar appears (a few thousand keys)."""


@dataclass(frozen=True)
class CommandInfo:
    """One subcommand, in the shape ``runtime.cli.Command`` takes."""

    name: str
    help: str
    description: str
    examples: tuple[str, ...]
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Any], int]


# --- inspect -------------------------------------------------------------------------


def configure_inspect(parser: argparse.ArgumentParser) -> None:
    """Add ``inspect``'s arguments to ``parser``."""
    parser.add_argument(
        "path",
        metavar="PATH",
        help="an auth directory, a SQLite database file or a postgresql:// URI",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--backend",
        choices=("auto", *BACKEND_CHOICES),
        default="auto",
        help="the backend PATH holds (default: auto-detect)",
    )
    parser.add_argument(
        "--account",
        metavar="NAME",
        help="SQLite/PostgreSQL: inspect this account (default: all)",
    )
    _key_argument(parser, "--key", "the key of an encrypted location")


def _key_argument(parser: argparse._ActionsContainer, flag: str, what: str) -> None:
    parser.add_argument(
        flag,
        metavar="KEYREF",
        help=f"{what}: env:NAME, file:PATH or PATH (never the key itself)",
    )


def run_inspect(args: argparse.Namespace, log: object = None) -> int:
    """Inspect ``args.path``; print the report; return the exit code."""
    from stores.errors import StoreError
    from stores.inspection import detect_backend, inspect_location

    out = _Output("inspect", args)
    try:
        if args.account is not None:
            found = detect_backend(args.path) if args.backend == "auto" else args.backend
            if found not in _ACCOUNT_BACKENDS:
                return out.usage(f"--account is for SQLite and PostgreSQL; {args.path} is {found}")
        key = _key(args.key, "--key")
        report = inspect_location(args.path, args.backend, account=args.account, key=key)
    except StoreError as exc:
        return out.fail(exc)
    except OSError as exc:
        return out.fail_message(EXIT_FAILED, "OSError", f"{args.path}: {exc}")
    if args.json:
        print(json.dumps(report.to_json(), sort_keys=True))
    else:
        print(format_report(report))
    return EXIT_OK if report.ok else EXIT_CORRUPT


def format_report(report: InspectReport) -> str:
    """The human-readable form of an ``InspectReport``."""
    backend = report.backend or "none (empty directory)"
    if report.format_version is not None:
        backend += f" (format version {report.format_version})"
    elif report.backend == "multi-file":
        backend += " (Baileys JSON, unversioned)"
    lines = [f"location   {report.location}", f"backend    {backend}"]
    for account in report.accounts:
        if account.name is not None:
            lines.append(f"account    {account.name!r}")
        lines.append(f"  id       {_account_id(account)}")
        lines.append(f"  creds    {'present' if account.creds_present else 'absent'}")
        lines.append(f"  keys     {_counts_line(account.key_counts)}")
        if account.durable_seq is not None:
            lines.append(f"  durable  seq {account.durable_seq}")
        if account.key_id is not None:
            lines.append(f"  key      encrypted with key {account.key_id}")
        lines.append(f"  lock     {account.lock_owner or 'free (no running owner)'}")
    if report.ok:
        lines.append(f"integrity ok: {report.records_checked} records read and checked")
    else:
        lines.append(f"integrity CORRUPT: {len(report.problems)} problem(s)")
        lines += [f"  - {problem}" for problem in report.problems]
    if report.warnings:
        lines.append("warnings")
        lines += [f"  - {warning}" for warning in report.warnings]
    return "\n".join(lines)


def _account_id(account: AccountReport) -> str:
    if account.account_id is not None:
        return account.account_id
    return "unknown (the creds do not read)" if account.creds_valid is False else "unpaired"


def _counts_line(counts: Mapping[str, int]) -> str:
    if not counts:
        return "0"
    parts = ", ".join(f"{t} {n}" for t, n in counts.items())
    return f"{sum(counts.values())} ({parts})"


# --- migrate -------------------------------------------------------------------------


def configure_migrate(parser: argparse.ArgumentParser) -> None:
    """Add ``migrate``'s arguments to ``parser``."""
    parser.add_argument(
        "src",
        metavar="SRC",
        help="the auth location to copy from (not changed); PostgreSQL: a postgresql:// URI",
    )
    parser.add_argument("dst", metavar="DST", help="an absent or empty location to create")
    parser.add_argument(
        "--from",
        dest="src_backend",
        choices=BACKEND_CHOICES,
        help="the backend of SRC (default: auto-detect)",
    )
    parser.add_argument(
        "--to",
        dest="dst_backend",
        choices=BACKEND_CHOICES,
        default=None,
        help="the backend to write at DST (default: postgres for a URI, else native)",
    )
    parser.add_argument(
        "--src-account", metavar="A", help="SQLite/PostgreSQL source: the account to read"
    )
    parser.add_argument(
        "--dst-account", metavar="B", help="SQLite/PostgreSQL target: the account to write"
    )
    _key_argument(parser, "--src-key", "the key of an encrypted source")
    _key_argument(parser, "--dst-key", "encrypt the copy with this key")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument(
        "--no-progress", action="store_true", help="never show the progress bar on stderr"
    )
    parser.add_argument(
        "--progress-after",
        type=_seconds,
        default=DEFAULT_PROGRESS_AFTER,
        metavar="S",
        help="show the progress bar once a migration has run S seconds (default %(default)s)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def run_migrate(args: argparse.Namespace, log: object = None) -> int:
    """Migrate ``args.src`` to ``args.dst``; print the summary; return the exit code."""
    import trio

    from stores.errors import StoreError
    from stores.inspection import detect_backend

    out = _Output("migrate", args)
    try:
        src_backend = args.src_backend or detect_backend(args.src)
    except StoreError as exc:
        return out.fail(exc)
    if src_backend is None:
        return out.fail_message(
            EXIT_REFUSED, "MigrationError", f"{args.src}: the source is empty, nothing to migrate"
        )
    if args.dst_backend is None:
        uri = str(args.dst).startswith(("postgres://", "postgresql://"))
        args.dst_backend = "postgres" if uri else "native"
    if args.src_account is not None and src_backend not in _ACCOUNT_BACKENDS:
        return out.usage(
            f"--src-account is for a SQLite source (or PostgreSQL); {args.src} is {src_backend}"
        )
    if args.dst_account is not None and args.dst_backend not in _ACCOUNT_BACKENDS:
        return out.usage(
            f"--dst-account is for a SQLite target (or PostgreSQL), not {args.dst_backend}"
        )
    try:
        keys = (_key(args.src_key, "--src-key"), _key(args.dst_key, "--dst-key"))
    except StoreError as exc:
        return out.fail(exc)
    progress = _Progress(
        sys.stderr,
        _cheap_key_count(args.src, src_backend, args.src_account),
        json_lines=getattr(args, "log_format", None) == "json",
    )
    try:
        summary = trio.run(_migrate, args, src_backend, progress, keys)
    except StoreError as exc:
        progress.abandon()
        return out.fail(exc)
    except OSError as exc:
        progress.abandon()
        return out.fail_message(EXIT_FAILED, "OSError", str(exc))
    if args.json:
        print(json.dumps(summary_json(summary), sort_keys=True))
    else:
        print(format_summary(summary))
    return EXIT_OK


async def _migrate(
    args: argparse.Namespace, src_backend: str, progress: _Progress, keys: tuple[Any, Any]
) -> MigrationSummary:
    import trio

    from stores.migrate import migrate

    summary: MigrationSummary | None = None
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        if not args.no_progress:
            nursery.start_soon(progress.run, args.progress_after)
        try:
            summary = await migrate(
                src_backend,
                args.src,
                args.dst_backend,
                args.dst,
                src_account=args.src_account or "default",
                dst_account=args.dst_account or "default",
                src_key=keys[0],
                dst_key=keys[1],
            )
        except Exception as exc:
            # Raised after the nursery, unwrapped: an error inside it would come out
            # as an ExceptionGroup.
            failure = exc
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    assert summary is not None
    progress.finish(summary.total_keys)
    return summary


def summary_json(summary: MigrationSummary) -> dict[str, Any]:
    """A JSON-ready dict of a ``MigrationSummary`` (what ``migrate --json`` prints)."""
    return {
        "src_backend": summary.src_backend,
        "src": summary.src,
        "src_account": summary.src_account,
        "dst_backend": summary.dst_backend,
        "dst": summary.dst,
        "dst_account": summary.dst_account,
        "account_id": summary.account_id,
        "key_counts": dict(summary.key_counts),
        "total_keys": summary.total_keys,
    }


def format_summary(summary: MigrationSummary) -> str:
    """The human-readable summary of a migration."""
    src = summary.src + (f" account {summary.src_account!r}" if summary.src_account else "")
    dst = summary.dst + (f" account {summary.dst_account!r}" if summary.dst_account else "")
    lines = [
        f"migrated   {summary.src_backend} {src}",
        f"      to   {summary.dst_backend} {dst} (read back and verified)",
        f"account    {summary.account_id or 'unpaired'}",
        f"keys       {summary.total_keys}",
    ]
    width = max((len(t) for t in summary.key_counts), default=0)
    lines += [f"  {t:<{width}}  {n}" for t, n in summary.key_counts.items()]
    return "\n".join(lines)


def _cheap_key_count(src: str, backend: str, account: str | None) -> int | None:
    """The source's key count when it costs no full read (for the progress bar), else None."""
    import os
    import sqlite3
    from pathlib import Path

    from stores import _multi_file_layout as layout

    try:
        if backend == "multi-file":
            return sum(1 for n in os.listdir(src) if layout.parse_key_file_name(n))
        if backend == "sqlite":
            uri = f"{Path(os.path.abspath(src)).as_uri()}?mode=ro&immutable=1"
            conn = sqlite3.connect(uri, uri=True)
            try:
                row = conn.execute(
                    "SELECT count(*) FROM keys WHERE account = ?", (account or "default",)
                ).fetchone()
            finally:
                conn.close()
            return int(row[0])
    except (OSError, sqlite3.Error):
        return None
    return None


class _Progress:
    """A progress bar on stderr for a migration that takes a while.

    ``stores.migrate.migrate`` reports no progress, so the bar shows activity (a
    moving block), the elapsed time and the number of keys when it is cheap to know,
    and turns full when the migration is done. On a terminal it redraws one line;
    elsewhere it prints a start line and an end line (JSON objects with
    ``--log-format json``: ``migrate_progress`` then ``migrate_done``).
    """

    WIDTH = 24

    def __init__(self, stream: TextIO, total: int | None, *, json_lines: bool = False) -> None:
        self._stream = stream
        self._total = total
        self._json = json_lines
        self._tty = stream.isatty() and not json_lines
        self._started = time.monotonic()
        self._shown = False

    async def run(self, after: float) -> None:
        import trio

        await trio.sleep(after)
        self._shown = True
        if self._json:
            self._line({"event": "migrate_progress", "keys": self._total, "state": "running"})
            return
        if not self._tty:
            self._stream.write(f"migrating {self._what()}...\n")
            self._stream.flush()
            return
        frame = 0
        while True:
            self._draw(render_bar(frame, self.WIDTH), f"migrating {self._what()}")
            frame += 1
            await trio.sleep(0.1)

    def finish(self, total: int) -> None:
        if not self._shown:
            return
        elapsed = time.monotonic() - self._started
        if self._json:
            self._line({"event": "migrate_done", "keys": total, "seconds": round(elapsed, 3)})
            return
        line = f"migrated {total} keys in {elapsed:.1f} s"
        if self._tty:
            self._stream.write(f"\r[{'=' * self.WIDTH}] {line}\x1b[K\n")
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def abandon(self) -> None:
        if self._shown and self._tty:
            self._stream.write("\n")
            self._stream.flush()

    def _line(self, obj: dict[str, Any]) -> None:
        self._stream.write(json.dumps(obj) + "\n")
        self._stream.flush()

    def _what(self) -> str:
        return "keys" if self._total is None else f"{self._total} keys"

    def _draw(self, bar: str, label: str) -> None:
        elapsed = time.monotonic() - self._started
        self._stream.write(f"\r[{bar}] {label} {elapsed:5.1f} s\x1b[K")
        self._stream.flush()


def render_bar(frame: int, width: int, block: int = 6) -> str:
    """An indeterminate bar: a block of ``=`` bouncing across ``width`` cells."""
    span = max(width - block, 1)
    step = frame % (2 * span)
    start = step if step < span else 2 * span - step
    return " " * start + "=" * block + " " * (width - block - start)


# --- backup and restore ----------------------------------------------------------------


def configure_backup(parser: argparse.ArgumentParser) -> None:
    """Add ``backup``'s arguments to ``parser``."""
    parser.add_argument(
        "--auth",
        metavar="LOC",
        required=True,
        help="the auth location to back up: a native directory, a SQLite database or a "
        "postgresql:// URI",
    )
    parser.add_argument("out", metavar="OUT", help="an absent or empty directory for the backup")
    parser.add_argument(
        "--backend",
        choices=("auto", *BACKEND_CHOICES),
        default="auto",
        help="the backend LOC holds (default: auto-detect)",
    )
    parser.add_argument(
        "--account",
        metavar="NAME",
        default="default",
        help="SQLite/PostgreSQL: the account to back up (default: default)",
    )
    _key_argument(parser, "--key", "the key LOC is encrypted under (the backup is sealed by it)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def run_backup(args: argparse.Namespace, log: object = None) -> int:
    """Back up ``args.auth`` into ``args.out``; print the summary; return the exit code."""
    import trio

    from stores.backup import backup_location

    out = _Output("backup", args)
    return _run_copy(
        out,
        args,
        lambda: trio.run(
            partial(
                backup_location,
                args.auth,
                args.out,
                backend=args.backend,
                account=args.account,
                encryption_key=_key(args.key, "--key"),
            )
        ),
        "backed up",
    )


def configure_restore(parser: argparse.ArgumentParser) -> None:
    """Add ``restore``'s arguments to ``parser``."""
    parser.add_argument("backup", metavar="OUT", help="a backup directory made by backup")
    parser.add_argument(
        "location", metavar="LOC", help="an absent or empty directory to restore into"
    )
    _key_argument(parser, "--key", "the key an encrypted backup is sealed under")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def run_restore(args: argparse.Namespace, log: object = None) -> int:
    """Restore ``args.backup`` into ``args.location``; print the summary; return the exit code."""
    import trio

    from stores.backup import restore_location

    out = _Output("restore", args)
    return _run_copy(
        out,
        args,
        lambda: trio.run(
            partial(
                restore_location,
                args.backup,
                args.location,
                encryption_key=_key(args.key, "--key"),
            )
        ),
        "restored",
    )


def _run_copy(
    out: _Output, args: argparse.Namespace, copy: Callable[[], BackupSummary], verb: str
) -> int:
    from stores.errors import StoreError

    try:
        summary = copy()
    except StoreError as exc:
        return out.fail(exc)
    except OSError as exc:
        return out.fail_message(EXIT_FAILED, "OSError", str(exc))
    if args.json:
        print(json.dumps(summary.to_json(), sort_keys=True))
    else:
        print(format_backup(summary, verb))
    return EXIT_OK


def format_backup(summary: BackupSummary, verb: str) -> str:
    """The human-readable summary of a backup or a restore."""
    lines = [
        f"{verb:<10} {summary.source_backend} {summary.source}",
        f"      to   {summary.target} (inspected and verified)",
        f"point      seq {summary.seq}",
        f"account    {summary.account_id or 'unpaired'}",
        f"keys       {summary.total_keys}",
    ]
    width = max((len(t) for t in summary.key_counts), default=0)
    lines += [f"  {t:<{width}}  {n}" for t, n in summary.key_counts.items()]
    return "\n".join(lines)


# --- rekey ---------------------------------------------------------------------------


def configure_rekey(parser: argparse.ArgumentParser) -> None:
    """Add ``rekey``'s arguments to ``parser``."""
    parser.add_argument(
        "--auth",
        required=True,
        metavar="LOC",
        help="a native directory, a SQLite database file or a postgresql:// URI",
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "native", "sqlite", "postgres"),
        default="auto",
        help="the backend LOC holds (default: auto-detect)",
    )
    parser.add_argument(
        "--account", metavar="NAME", help="SQLite/PostgreSQL: the account (default: default)"
    )
    _key_argument(parser, "--old-key", "the key LOC is encrypted with now (omit if plain)")
    target = parser.add_mutually_exclusive_group(required=True)
    _key_argument(target, "--new-key", "the key to encrypt LOC with")
    target.add_argument(
        "--decrypt", action="store_true", help="store LOC plain (no encryption) from now on"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def run_rekey(args: argparse.Namespace, log: object = None) -> int:
    """Re-seal ``args.auth`` under the new key; print what was done; return the exit code."""
    import trio

    from stores.errors import StoreError
    from stores.rekey import rekey

    out = _Output("rekey", args)
    try:
        old = _key(args.old_key, "--old-key")
        new = None if args.decrypt else _key(args.new_key, "--new-key")
        summary = trio.run(
            partial(
                rekey,
                args.auth,
                old_key=old,
                new_key=new,
                backend=args.backend,
                account=args.account or "default",
            )
        )
    except StoreError as exc:
        return out.fail(exc)
    except OSError as exc:
        return out.fail_message(EXIT_FAILED, "OSError", f"{args.auth}: {exc}")
    fields = {
        "location": summary.location,
        "backend": summary.backend,
        "account": summary.account,
        "old_key_id": summary.old_key_id,
        "new_key_id": summary.new_key_id,
    }
    if args.json:
        print(json.dumps(fields, sort_keys=True))
    else:
        where = summary.location + (f" account {summary.account!r}" if summary.account else "")
        print(f"rekeyed    {summary.backend} {where}")
        print(f"  from     {summary.old_key_id or 'plain'}")
        print(f"  to       {summary.new_key_id or 'plain'}")
    return EXIT_OK


def _key(ref: str | None, flag: str) -> Any:
    """The ``StoreKey`` a ``KEYREF`` argument names, or ``None`` when it was not given."""
    if ref is None:
        return None
    from stores.encryption import key_from_ref

    return key_from_ref(ref, flag)


# --- output and errors ---------------------------------------------------------------


class _Output:
    """Error lines on stderr: one line each, plain or JSON (``--log-format json``)."""

    def __init__(self, command: str, args: argparse.Namespace) -> None:
        self._command = command
        self._json = getattr(args, "log_format", "console") == "json"

    def usage(self, message: str) -> int:
        return self.fail_message(EXIT_USAGE, "UsageError", message)

    def fail(self, exc: Exception) -> int:
        return self.fail_message(exit_code_for(exc), type(exc).__name__, str(exc))

    def fail_message(self, code: int, kind: str, message: str) -> int:
        if self._json:
            line = json.dumps(
                {
                    "level": "error",
                    "event": f"{self._command}_failed",
                    "error": kind,
                    "message": message,
                    "exit_code": code,
                }
            )
        else:
            line = f"{PROG} {self._command}: error: {message}"
        print(line, file=sys.stderr)
        return code


def exit_code_for(exc: Exception) -> int:
    """The documented exit code of a stores error."""
    from stores import errors

    if isinstance(exc, errors.StoreLockedError):
        return EXIT_LOCKED
    if isinstance(exc, errors.WrongKeyError):
        return EXIT_REFUSED
    if isinstance(exc, errors.EncryptionKeyError):
        return EXIT_USAGE
    if isinstance(exc, errors.BackupError):
        return EXIT_FAILED if isinstance(exc, errors.BackupVerificationError) else EXIT_REFUSED
    if isinstance(exc, errors.CorruptStateError):
        return EXIT_CORRUPT
    refused = (errors.MigrationError, errors.WrongBackendError, errors.UnsupportedFormatError)
    if isinstance(exc, refused):
        # A read-back that differs is a migration failure, not a refusal.
        return EXIT_FAILED if "read-back differs" in str(exc) else EXIT_REFUSED
    return EXIT_FAILED


# --- registration --------------------------------------------------------------------

INSPECT = CommandInfo(
    name="inspect",
    help="check an auth location: backend, account, key counts, lock owner, integrity",
    description=(
        "Read every record of an auth location (native directory, Baileys multi-file "
        "directory, SQLite database or PostgreSQL URI) and report its backend, format "
        "version, account "
        "id, key counts per type, last durable sequence number, the live lock owner if "
        "any, and whether every record is intact. Never writes, never creates a file, "
        "never takes the lock: safe on a location a runtime is using. Exits 1 when "
        "anything is corrupt, naming the file (and offset or row)."
    ),
    examples=(
        "baileys-trio inspect auth/",
        "baileys-trio inspect baileys_auth_info --json | jq .accounts",
        "baileys-trio inspect bots.db --account bot1",
        "baileys-trio inspect 'postgresql://bot@db/auth#account=bot1'",
    ),
    configure=configure_inspect,
    run=run_inspect,
)

MIGRATE = CommandInfo(
    name="migrate",
    help="copy an auth location into another backend, verified, never touching the source",
    description=(
        "Copy the creds and every Signal key of SRC into DST (absent or empty), read the "
        "copy back, compare it with the source, and only then publish it. The source is "
        "never modified; a running owner of SRC is refused. Prints a summary (account "
        "id, key counts per type) and, when it takes a while, a progress bar on stderr."
    ),
    examples=(
        "baileys-trio migrate baileys_auth_info auth/",
        "baileys-trio migrate auth/ baileys_auth_info --to multi-file",
        "baileys-trio migrate auth/ bots.db --to sqlite --dst-account bot1",
        "baileys-trio migrate bots.db auth2/ --src-account bot1 --json",
        "baileys-trio migrate auth/ 'postgresql://bot@db/auth' --dst-account bot1",
    ),
    configure=configure_migrate,
    run=run_migrate,
)


BACKUP = CommandInfo(
    name="backup",
    help="copy an auth location at a consistent point while its owner runs, verified",
    description=(
        "Copy the creds and every Signal key of LOC, as they were after one durable "
        "commit (the point), into OUT (absent or empty), without stopping a runtime that "
        "owns LOC and without writing to it. Works for native directories, SQLite "
        "databases and PostgreSQL accounts; the backup is a native directory holding one "
        "checksummed snapshot, "
        "checked with inspect before the command reports success."
    ),
    examples=(
        "baileys-trio backup --auth auth/ backups/2026-12-06",
        "baileys-trio backup --auth bots.db --account bot1 bot1-backup/ --json",
        "baileys-trio backup --auth 'postgresql://bot@db/auth#account=bot1' bot1-backup/",
    ),
    configure=configure_backup,
    run=run_backup,
)

RESTORE = CommandInfo(
    name="restore",
    help="restore a backup into an absent or empty location, whole or not at all",
    description=(
        "Write the backup OUT into LOC as a native store. LOC must be absent or empty and "
        "not in use; a non-empty or locked LOC is refused and left as it was. The copy "
        "appears in LOC by one rename, so an interrupted restore leaves LOC empty, never "
        "half a store. Run the bot with --auth LOC afterwards (or migrate LOC to another "
        "backend)."
    ),
    examples=(
        "baileys-trio restore backups/2026-12-06 auth/",
        "baileys-trio restore bot1-backup/ restored/ && baileys-trio inspect restored/",
    ),
    configure=configure_restore,
    run=run_restore,
)


REKEY = CommandInfo(
    name="rekey",
    help="re-encrypt an auth location under a new key, crash-safely (or encrypt, or decrypt)",
    description=(
        "Re-seal every record of a native directory, or of one SQLite/PostgreSQL "
        "account, under a new encryption key. --old-key must open the location (omit "
        "it for a plain one); --new-key names the new key, --decrypt stores it plain. "
        "Keys are references (env:NAME, file:PATH or PATH), never key bytes. A kill at "
        "any moment leaves the location readable with the old key or the new one. A "
        "running owner of the location is refused; the Baileys multi-file folder is "
        "never encrypted."
    ),
    examples=(
        "baileys-trio rekey --auth auth/ --new-key /etc/bot/auth.key",
        "baileys-trio rekey --auth auth/ --old-key file:old.key --new-key env:NEW_AUTH_KEY",
        "baileys-trio rekey --auth bots.db --account bot1 --old-key old.key --decrypt",
    ),
    configure=configure_rekey,
    run=run_rekey,
)


def cli_commands(command: Callable[..., _C]) -> list[_C]:
    """``inspect``, ``migrate``, ``backup``, ``restore`` and ``rekey`` built with
    ``runtime.cli.Command`` (passed in, so this module never imports ``runtime``)."""
    return [
        command(
            name=info.name,
            help=info.help,
            description=info.description,
            examples=info.examples,
            configure=info.configure,
            run=info.run,
        )
        for info in (INSPECT, MIGRATE, BACKUP, RESTORE, REKEY)
    ]


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line on stderr and exit 2."""

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


def _add_command(subparsers: Any, info: CommandInfo, log_default: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        info.name,
        help=info.help,
        description=info.description,
        epilog="examples:\n" + "\n".join(f"  {e}" for e in info.examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=log_default,
        help="console (human), json (one object per line) or auto (console on a TTY)",
    )
    info.configure(parser)
    parser.set_defaults(_run=info.run)
    return parser


def register_inspect_command(
    subparsers: Any, *, log_default: str = "auto"
) -> argparse.ArgumentParser:
    """Add ``inspect`` (with ``--log-format``) to an ``add_subparsers()`` object."""
    return _add_command(subparsers, INSPECT, log_default)


def register_migrate_command(
    subparsers: Any, *, log_default: str = "auto"
) -> argparse.ArgumentParser:
    """Add ``migrate`` (with ``--log-format``) to an ``add_subparsers()`` object."""
    return _add_command(subparsers, MIGRATE, log_default)


def build_parser() -> argparse.ArgumentParser:
    """A parser of just the stores commands (``runtime.cli`` has them all)."""
    parser = _Parser(
        prog=PROG,
        description="Inspect, migrate, back up, restore and rekey baileys-trio auth locations.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register_inspect_command(sub)
    register_migrate_command(sub)
    for info in (BACKUP, RESTORE, REKEY):
        _add_command(sub, info, "auto")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` with ``build_parser()`` and run the command; return the exit code."""
    args = build_parser().parse_args(argv)
    code: int = args._run(args, None)
    return code


if __name__ == "__main__":
    sys.exit(main())
