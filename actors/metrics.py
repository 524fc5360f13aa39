"""A runtime's metrics: Prometheus families on a registry of its own.

One ``Metrics`` per runtime. Most figures come from the events every session
already emits (``observe_event``: logins, reconnects and their causes, messages
in, decrypt failures, store errors, session ends); the rest from the places that
know them: the persister (commit latency, group-commit batch sizes), the
connection (pre-key uploads, messages out), ``stores.fsio`` (fsync time, for
the whole process) and, read at scrape time, the session supervisors
(restarts per actor).

Label sets are bounded, because an unbounded label is a memory leak in every
scraper: ``account`` takes at most ``max_accounts`` distinct values (later
accounts share ``OVERFLOW``), ``reason`` only the names in ``actors.connection``'s
``DisconnectReason`` and ``EndReason`` (others are ``other``), ``actor`` only the
three session actors.

Since 0.2.0.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from actors.connection.client_state import DisconnectReason
from actors.events import CONNECTION_UPDATE, MESSAGES_UPSERT, SESSION_ENDED, STORE_ERROR
from actors.recorder import SessionMetrics
from actors.status import EndReason
from stores.fsio import observe_fsyncs

NAMESPACE: Final = "baileys_trio"
OVERFLOW: Final = "_other"
"""The ``account`` label of every account past ``max_accounts``."""
DEFAULT_MAX_ACCOUNTS: Final = 10_000
ACTORS: Final = ("persister", "signal_store", "connection")

CLOSE_REASONS: Final = frozenset(r.name.lower() for r in DisconnectReason) | {"other"}
END_REASONS: Final = frozenset(r.value for r in EndReason) | {"stopped", "other"}

# Commits are fsync-bound: from ~50 µs (tmpfs) to seconds (a sick disk).
SECONDS_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
LOGIN_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256)

RestartCounts = Callable[[], Mapping[str, int]]
"""Restarts per actor of one live session tree, read at scrape time."""


class Metrics:
    """Every family of one runtime, on ``registry`` (never the process-global one)."""

    def __init__(self, *, max_accounts: int = DEFAULT_MAX_ACCOUNTS) -> None:
        if isinstance(max_accounts, bool) or not isinstance(max_accounts, int) or max_accounts < 1:
            raise ValueError(f"max_accounts must be an int >= 1, got {max_accounts!r}")
        self.max_accounts = max_accounts
        self.registry = CollectorRegistry(auto_describe=True)
        self._accounts: set[str] = set()
        self._login_started: dict[str, float] = {}
        self._lock = threading.Lock()  # fsyncs are observed from writer threads
        self._restarts = _RestartCollector()
        self.registry.register(self._restarts)
        self._families(self.registry)
        self._stop_fsyncs: Callable[[], None] | None = None

    def _families(self, r: CollectorRegistry) -> None:
        account = ("account",)
        # Histograms are process-wide: a series per bucket per account would cost an idle
        # session more memory than its key store, and the disk they time is shared.
        self.commit_seconds = Histogram(
            "commit_seconds",
            "Time of one durable backend commit (a persister's).",
            namespace=NAMESPACE,
            registry=r,
            buckets=SECONDS_BUCKETS,
        )
        self.commit_batches = Histogram(
            "commit_batch_size",
            "Transactions written by one group commit.",
            namespace=NAMESPACE,
            registry=r,
            buckets=BATCH_BUCKETS,
        )
        self.fsync_seconds = Histogram(
            "fsync_seconds",
            "Time of one fsync of a store file or directory (this process).",
            namespace=NAMESPACE,
            registry=r,
            buckets=SECONDS_BUCKETS,
        )
        self.login_seconds = Histogram(
            "login_seconds",
            "From the start of a connection attempt to an open connection.",
            namespace=NAMESPACE,
            registry=r,
            buckets=LOGIN_BUCKETS,
        )
        self.connection_closes = Counter(
            "connection_closes",
            "Connections that closed, by cause and whether one follows.",
            ("account", "reason", "reconnect"),
            namespace=NAMESPACE,
            registry=r,
        )
        self.connected = Gauge(
            "connected",
            "1 while the account's connection is open.",
            account,
            namespace=NAMESPACE,
            registry=r,
        )
        self.prekeys_uploaded = Counter(
            "prekeys_uploaded",
            "One-time pre-keys the server accepted.",
            account,
            namespace=NAMESPACE,
            registry=r,
        )
        self.messages_received = Counter(
            "messages_received",
            "Messages that reached the bot decrypted.",
            account,
            namespace=NAMESPACE,
            registry=r,
        )
        self.decrypt_failures = Counter(
            "decrypt_failures",
            "Messages that reached the bot undecryptable.",
            account,
            namespace=NAMESPACE,
            registry=r,
        )
        self.messages_sent = Counter(
            "messages_sent",
            "Messages the server acked after send_message.",
            account,
            namespace=NAMESPACE,
            registry=r,
        )
        self.messages_duplicate = Counter(
            "messages_duplicate",
            "Stanzas delivered again after their message was handled and its kept copy"
            " dropped: answered with receipt and ack, no event.",
            account,
            namespace=NAMESPACE,
            registry=r,
        )
        self.store_errors = Counter(
            "store_errors",
            "Backend commits that failed.",
            account,
            namespace=NAMESPACE,
            registry=r,
        )
        self.sessions_ended = Counter(
            "sessions_ended",
            "Session trees that stopped, by reason.",
            ("account", "reason"),
            namespace=NAMESPACE,
            registry=r,
        )

    # --- lifetime --------------------------------------------------------------------

    def start_fsync_timing(self) -> None:
        """Observe every fsync of this process's stores until ``stop_fsync_timing``."""
        if self._stop_fsyncs is None:
            self._stop_fsyncs = observe_fsyncs(self.fsync_seconds.observe)

    def stop_fsync_timing(self) -> None:
        stop, self._stop_fsyncs = self._stop_fsyncs, None
        if stop is not None:
            stop()

    def render(self) -> bytes:
        """The text exposition format, as the endpoint serves it."""
        return generate_latest(self.registry)

    # --- labels ----------------------------------------------------------------------

    def account_label(self, account: str) -> str:
        """``account`` while fewer than ``max_accounts`` were seen, else ``OVERFLOW``."""
        with self._lock:
            if account in self._accounts:
                return account
            if len(self._accounts) < self.max_accounts:
                self._accounts.add(account)
                return account
        return OVERFLOW

    def session(self, account: str) -> SessionMetrics:
        """The recorder the actors of ``account``'s session tree use."""
        label = self.account_label(account)
        return SessionMetrics(
            commit_seconds=self.commit_seconds,
            commit_batches=self.commit_batches,
            prekeys=self.prekeys_uploaded.labels(label),
            sent=self.messages_sent.labels(label),
            duplicates=self.messages_duplicate.labels(label),
        )

    # --- sessions ----------------------------------------------------------------------

    def track_restarts(self, account: str, counts: RestartCounts) -> None:
        """Read ``counts()`` at every scrape while the session tree lives."""
        self._restarts.track(self.account_label(account), counts)

    def retire_restarts(self, account: str) -> None:
        """The session tree stopped: keep its last counts in the totals."""
        self._restarts.retire(self.account_label(account))

    def observe_event(self, account: str, event: Mapping[str, Any]) -> None:
        """Count what one emitted event says (the runtime calls this for each)."""
        label = self.account_label(account)
        for name, payload in event.items():
            if name == CONNECTION_UPDATE and isinstance(payload, Mapping):
                self._connection_update(label, payload)
            elif name == MESSAGES_UPSERT and isinstance(payload, Mapping):
                self._messages(label, payload.get("messages", ()))
            elif name == STORE_ERROR:
                self.store_errors.labels(label).inc()
            elif name == SESSION_ENDED and isinstance(payload, Mapping):
                reason = str(payload.get("reason"))
                reason = reason if reason in END_REASONS else "other"
                self.sessions_ended.labels(label, reason).inc()
                self.connected.labels(label).set(0)
                self._login_started.pop(label, None)

    def _connection_update(self, label: str, update: Mapping[str, Any]) -> None:
        state = update.get("connection")
        if state == "connecting" and "attempt" in update:
            self._login_started[label] = time.monotonic()
        elif state == "open":
            started = self._login_started.pop(label, None)
            if started is not None:
                self.login_seconds.observe(time.monotonic() - started)
            self.connected.labels(label).set(1)
        elif state == "close":
            reason = str(update.get("reason"))
            reconnect = "true" if update.get("reconnect") else "false"
            self.connection_closes.labels(
                label, reason if reason in CLOSE_REASONS else "other", reconnect
            ).inc()
            self.connected.labels(label).set(0)

    def _messages(self, label: str, entries: Iterable[Any]) -> None:
        for entry in entries:
            if isinstance(entry, Mapping) and entry.get("undecryptable") is not None:
                self.decrypt_failures.labels(label).inc()
            else:
                self.messages_received.labels(label).inc()


class _RestartCollector(Collector):
    """``actor_restarts_total``: the live trees' counts plus those of stopped ones."""

    def __init__(self) -> None:
        self._live: dict[str, RestartCounts] = {}
        self._retired: dict[tuple[str, str], int] = {}

    def track(self, label: str, counts: RestartCounts) -> None:
        self.retire(label)
        self._live[label] = counts

    def retire(self, label: str) -> None:
        counts = self._live.pop(label, None)
        if counts is not None:
            for actor, n in _read(counts).items():
                self._retired[(label, actor)] = self._retired.get((label, actor), 0) + n

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            f"{NAMESPACE}_actor_restarts",
            "Restarts of a session's actors by their supervisor.",
            labels=("account", "actor"),
        )
        totals = dict(self._retired)
        for label, counts in list(self._live.items()):
            for actor, n in _read(counts).items():
                totals[(label, actor)] = totals.get((label, actor), 0) + n
        for (label, actor), n in sorted(totals.items()):
            family.add_metric((label, actor), n)
        yield family


def _read(counts: RestartCounts) -> dict[str, int]:
    return {actor: n for actor, n in counts().items() if actor in ACTORS}


__all__ = [
    "ACTORS",
    "DEFAULT_MAX_ACCOUNTS",
    "NAMESPACE",
    "OVERFLOW",
    "Metrics",
    "RestartCounts",
]
