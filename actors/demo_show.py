"""What ``baileys-trio demo`` prints, and what it watches while the session runs.

``Show`` writes the demo's stages: readable headed lines on a console (the QR
drawn by the same printer as ``baileys-trio run``), one JSON object per line
otherwise (``{"event": "demo_stage", "stage": ..., ...}`` through the JSON
logger, next to the runtime's own log lines and event lines). ``Journal`` keeps
every runtime event and log record in order so the demo can wait for each stage
and show the supervisor's own lines for a crash. ``TapLogger`` is the logger the
runtime is given: it shows each record to the journal, then forwards it (JSON) or
drops it (console, where the demo narrates instead).

Since 0.1.0.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import trio

from actors.cli import event_printer  # the `run` command's printer: one import line
from actors.events import CONNECTION_UPDATE
from runtime.log import Logger

#: Keys of a log record that are never shown in console notes (tracebacks, noise).
_HIDDEN = frozenset({"exc_info", "path", "supervisor"})


@dataclass(frozen=True)
class Record:
    """One thing the runtime said: a log record (``kind="log"``) or an event (``"event"``)."""

    kind: str
    name: str
    fields: dict[str, Any]


class Journal:
    """Every event and log record of the runtime, in arrival order, with waiting."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self._changed = trio.Event()
        self._token = trio.lowlevel.current_trio_token()

    def add(self, record: Record) -> None:
        self.records.append(record)
        try:
            trio.lowlevel.current_task()
        except RuntimeError:  # a record from a worker thread: wake waiters from trio
            self._token.run_sync_soon(self._wake)
            return
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def on_event(self, event: dict[str, Any]) -> None:
        """A bus subscriber: one record per ``{name: payload}`` entry."""
        for name, payload in event.items():
            fields = dict(payload) if isinstance(payload, dict) else {"value": payload}
            self.add(Record("event", name, fields))

    def mark(self) -> int:
        """A position: ``since(mark)`` returns what arrived after it."""
        return len(self.records)

    def since(self, mark: int) -> list[Record]:
        return self.records[mark:]

    def find(self, predicate: Callable[[Record], bool], start: int = 0) -> Record | None:
        for record in self.records[start:]:
            if predicate(record):
                return record
        return None

    async def wait_for(self, predicate: Callable[[Record], bool], start: int = 0) -> Record:
        """The first record from ``start`` on satisfying ``predicate`` (waits for it)."""
        while True:
            found = self.find(predicate, start)
            if found is not None:
                return found
            await self._changed.wait()


def connection(key: str, value: Any = None) -> Callable[[Record], bool]:
    """A predicate: a ``connection_update`` event carrying ``key`` (equal to ``value``)."""

    def match(record: Record) -> bool:
        if record.kind != "event" or record.name != CONNECTION_UPDATE:
            return False
        return key in record.fields and (value is None or record.fields[key] == value)

    return match


def logged(name: str, **fields: Any) -> Callable[[Record], bool]:
    """A predicate: a log record named ``name`` whose fields include ``fields``."""

    def match(record: Record) -> bool:
        return (
            record.kind == "log"
            and record.name == name
            and all(record.fields.get(k) == v for k, v in fields.items())
        )

    return match


class TapLogger:
    """A runtime Logger that shows every record to ``journal`` and forwards it to ``inner``."""

    def __init__(
        self, journal: Journal, inner: Logger | None, context: dict[str, Any] | None = None
    ) -> None:
        self._journal = journal
        self._inner = inner
        self._context = dict(context or {})

    def bind(self, **new_values: Any) -> Logger:
        inner = self._inner.bind(**new_values) if self._inner is not None else None
        return TapLogger(self._journal, inner, {**self._context, **new_values})

    def _record(self, level: str, event: str, kw: dict[str, Any]) -> None:
        self._journal.add(Record("log", event, {**self._context, **kw, "level": level}))

    def debug(self, event: str, **kw: Any) -> Any:
        self._record("debug", event, kw)
        return self._inner.debug(event, **kw) if self._inner is not None else None

    def info(self, event: str, **kw: Any) -> Any:
        self._record("info", event, kw)
        return self._inner.info(event, **kw) if self._inner is not None else None

    def warning(self, event: str, **kw: Any) -> Any:
        self._record("warning", event, kw)
        return self._inner.warning(event, **kw) if self._inner is not None else None

    def error(self, event: str, **kw: Any) -> Any:
        self._record("error", event, kw)
        return self._inner.error(event, **kw) if self._inner is not None else None


class Show:
    """The demo's output: headed stage lines on a console, JSON lines otherwise."""

    def __init__(self, fmt: str, out: TextIO, log: Logger, stages: int) -> None:
        self.json = fmt == "json"
        self.out = out
        self.log = log.bind(component="demo")
        self.stages = stages
        self.count = 0
        self.stage_name = "start"
        self._events = event_printer("json" if self.json else "console", out)

    @property
    def runtime_log(self) -> Logger | None:
        """What the runtime's records are forwarded to: all of them in JSON, none on a console."""
        return self.log if self.json else None

    def _write(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def stage(self, name: str, title: str, **facts: Any) -> None:
        """Head a new stage."""
        self.count += 1
        self.stage_name = name
        if self.json:
            self.log.info("demo_stage", stage=name, n=self.count, title=title, **facts)
            return
        self._write("")
        self._write(f"==> [{self.count}/{self.stages}] {name}: {title}")

    def note(self, text: str, **facts: Any) -> None:
        """One detail line of the current stage (``text`` on a console, ``facts`` in JSON)."""
        if self.json:
            self.log.info("demo_note", stage=self.stage_name, text=text, **facts)
            return
        self._write(f"    {text}")

    def event(self, event: dict[str, Any]) -> None:
        """A runtime event map: a JSON line (as ``baileys-trio run`` prints it) in JSON mode."""
        if self.json:
            self._events(event)

    def qr(self, update: dict[str, Any]) -> None:
        """Draw a QR ``connection_update`` on a console (block QR and the raw string)."""
        if not self.json:
            self._events({CONNECTION_UPDATE: update})

    def supervisor_lines(self, records: list[Record]) -> None:
        """Show the supervisor's lifecycle records among ``records`` as notes."""
        for record in records:
            if record.kind != "log" or not record.name.startswith(("child_", "supervisor_")):
                continue
            if self.json:
                continue  # the record itself was already printed as a JSON log line
            shown = {k: v for k, v in record.fields.items() if k not in _HIDDEN | {"level"}}
            child = shown.pop("child", "?")
            rest = " ".join(f"{k}={_short(v)}" for k, v in shown.items())
            self._write(f"    supervisor: {record.name} {child} {rest}".rstrip())

    def failed(self, message: str) -> None:
        if self.json:
            self.log.error("demo_failed", stage=self.stage_name, error=message)
            return
        self._write("")
        self._write(f"demo FAILED at stage {self.stage_name}: {message}")


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=repr)
    return text if len(text) <= 100 else text[:97] + "..."
