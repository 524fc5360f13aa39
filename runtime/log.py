"""structlog loggers for the runtime: built here, passed down, never global.

``make_logger`` wraps a stream with its own processor chain (no ``structlog.configure``),
so an embedding application keeps control of global logging. Logs go to stderr:
console rendering on a TTY, one JSON object per line otherwise; stdout is left to
what the program prints.

Lifecycle events the supervisors emit (one per change), each bound with
``supervisor`` (the supervisor path), ``child`` (the child id) and ``path``:

==================== =====================================================
event                fields
==================== =====================================================
child_started        kind, restarts, incarnation (workers: 1, 2, ...)
child_start_failed   kind, reason, exc_info
child_crashed        reason, exc_info (the traceback)
child_exited         reason (a normal or shutdown exit; a restart may follow)
child_restarting     restart_count (in the window), max_restarts, max_seconds,
                     delay (s), child_restarts (this child's total)
child_stopped        reason, killed (stopped by its supervisor)
supervisor_gave_up   max_restarts, max_seconds, child, reason
supervisor_started   children (top-level supervisors only)
supervisor_stopped   reason (top-level supervisors only)
==================== =====================================================

Since 0.1.0.
"""

from __future__ import annotations

import sys
from typing import Any, Literal, Protocol, TextIO

import structlog

LogFormat = Literal["console", "json", "auto"]


class Logger(Protocol):
    """The slice of a structlog bound logger the runtime uses."""

    def bind(self, **new_values: Any) -> Logger: ...
    def debug(self, event: str, **kw: Any) -> Any: ...
    def info(self, event: str, **kw: Any) -> Any: ...
    def warning(self, event: str, **kw: Any) -> Any: ...
    def error(self, event: str, **kw: Any) -> Any: ...


def make_logger(fmt: LogFormat = "auto", stream: TextIO | None = None) -> Logger:
    """A logger writing to ``stream`` as console text or JSON lines.

    The default stream is stderr (since 0.2.0; stdout before): stdout is for what the
    program prints, a QR from ``on_qr=print`` for one, and must not mix with logs.
    ``auto`` renders for a console when the stream is a terminal, JSON otherwise.
    """
    out = sys.stderr if stream is None else stream
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    processors: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # Tracebacks never carry frame locals: a local may hold key bytes, and secrets
    # must not reach any log line (structlog shows locals by default).
    if use_console:
        processors.append(
            structlog.dev.ConsoleRenderer(
                colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback
            )
        )
    else:
        processors += [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(default=repr),
        ]
    logger: Logger = structlog.wrap_logger(
        structlog.PrintLogger(file=out),
        processors=processors,
        wrapper_class=structlog.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return logger


def default_logger() -> Logger:
    """What the runtime uses when given no logger.

    structlog's own logger when the application configured structlog (its choice of
    stream and format wins), else ``make_logger("auto")``: on stderr, console text on
    a terminal and JSON lines otherwise (structlog's unconfigured default would print
    to stdout, among what the program prints).
    """
    if structlog.is_configured():
        configured: Logger = structlog.get_logger("runtime")
        return configured
    return make_logger("auto")
