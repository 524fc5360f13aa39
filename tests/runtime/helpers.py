"""Sample actors and log capture shared by the runtime tests."""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio
from structlog.testing import LogCapture

from runtime import Actor, ChildSpec, ExitKind, ExitReason, Logger, Restart, StopActor


class Boom(Exception):
    """The crash the tests inject."""


@dataclass
class Journal:
    """What happened, in order: ("start", path), ("terminate", path, kind)."""

    entries: list[tuple[str, ...]] = field(default_factory=list)

    def starts(self) -> list[str]:
        return [e[1] for e in self.entries if e[0] == "start"]

    def terminates(self) -> list[tuple[str, ...]]:
        return [e[1:] for e in self.entries if e[0] == "terminate"]

    def clear(self) -> None:
        self.entries.clear()


class Probe(Actor):
    """Counts calls; crashes, stops or hangs on request; journals its lifecycle."""

    def __init__(
        self,
        journal: Journal | None = None,
        *,
        init_delay: float = 0.0,
        fail_init: bool = False,
        terminate_delay: float = 0.0,
    ) -> None:
        self.journal = journal if journal is not None else Journal()
        self.init_delay = init_delay
        self.fail_init = fail_init
        self.terminate_delay = terminate_delay
        self.count = 0

    async def init(self) -> None:
        if self.init_delay:
            await trio.sleep(self.init_delay)
        if self.fail_init:
            raise Boom(f"init of {self.ctx.path} failed")
        self.journal.entries.append(("start", self.ctx.path))

    async def handle_call(self, msg: Any) -> Any:
        match msg:
            case "get":
                return self.count
            case ("add", int(n)):
                self.count += n
                return self.count
            case "incarnation":
                return self.ctx.incarnation
            case ("sleep", float(seconds)):
                await trio.sleep(seconds)
                return "slept"
            case "crash":
                raise Boom(f"{self.ctx.path} crashed on request")
            case "stop":
                raise StopActor()
            case _:
                return await super().handle_call(msg)

    async def handle_cast(self, msg: Any) -> None:
        match msg:
            case ("add", int(n)):
                self.count += n
            case ("exit", ExitKind.CRASH):
                raise Boom(f"{self.ctx.path} crashed on request")
            case ("exit", ExitKind() as kind):
                raise StopActor(kind)
            case ("sleep", float(seconds)):
                await trio.sleep(seconds)
            case _:
                await super().handle_cast(msg)

    async def terminate(self, reason: ExitReason) -> None:
        self.journal.entries.append(("terminate", self.ctx.path, reason.kind.value))
        if self.terminate_delay:
            await trio.sleep(self.terminate_delay)


def probe_spec(
    child_id: str,
    journal: Journal,
    restart: Restart = Restart.PERMANENT,
    **kwargs: Any,
) -> ChildSpec:
    """A ChildSpec building a fresh Probe per incarnation."""
    return ChildSpec(child_id, lambda: Probe(journal, **kwargs), restart=restart)


def capture_logger() -> tuple[Logger, list[MutableMapping[str, Any]]]:
    """A logger whose events land, as dicts, in the returned list."""
    capture = LogCapture()
    log: Logger = structlog.wrap_logger(None, processors=[capture])
    return log, capture.entries


def events(entries: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    """The captured log events called ``name``."""
    return [e for e in entries if e["event"] == name]
