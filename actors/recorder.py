"""``SessionMetrics``: what one session's actors record, bound to its account's series.

The actors import this small module, never ``actors.metrics`` (which imports the
connection package to know its reasons): a recorder is handed to them, built by
``Metrics.session``. ``NO_METRICS`` records nothing.

Since 0.2.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol


class Observes(Protocol):
    def observe(self, amount: float) -> None: ...


class Counts(Protocol):
    def inc(self, amount: float = 1) -> None: ...


@dataclass(frozen=True)
class SessionMetrics:
    """One account's series of the families the actors feed (None: not recorded)."""

    commit_seconds: Observes | None = None
    commit_batches: Observes | None = None
    prekeys: Counts | None = None
    sent: Counts | None = None
    duplicates: Counts | None = None

    def commit(self, seconds: float, batches: int) -> None:
        """One durable backend commit of ``batches`` transactions took ``seconds``."""
        if self.commit_seconds is not None:
            self.commit_seconds.observe(seconds)
        if self.commit_batches is not None:
            self.commit_batches.observe(batches)

    def prekeys_uploaded(self, count: int) -> None:
        """The server accepted ``count`` one-time pre-keys."""
        if self.prekeys is not None:
            self.prekeys.inc(count)

    def message_sent(self) -> None:
        """The server acked one message we sent."""
        if self.sent is not None:
            self.sent.inc()

    def message_duplicate(self) -> None:
        """A stanza came again after its kept copy was dropped: receipt and ack, no event."""
        if self.duplicates is not None:
            self.duplicates.inc()


NO_METRICS: Final = SessionMetrics()
"""The recorder of a session in a runtime without metrics."""


__all__ = ["NO_METRICS", "Counts", "Observes", "SessionMetrics"]
