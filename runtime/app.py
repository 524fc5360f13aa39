"""The entry points: ``Config``, ``run(config)`` and ``open_runtime(config)``.

This is the one runtime module (besides the CLI) that knows about ``actors`` and
``stores``: it wires session trees under a ``DynamicSupervisor``::

    open_runtime / run
    ├── EventBus                 (subscribers live here, outside every actor)
    └── sessions (DynamicSupervisor, one_for_one)
        └── <account> (SessionSupervisor, rest_for_one): persister → signal_store → connection

``run(config)`` blocks (``trio.run`` inside) until the session ends for good
(logged out, replaced, refused) or stops (``SIGINT``/``SIGTERM``: an orderly
stop, the persister writing what is pending), and returns the ``EndReason``.
A session tree that gives up raises ``SessionFailed``.

``async with open_runtime(config) as rt`` runs the same inside a trio program.

Since 0.1.0.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from actors.connection.actor import (
    DEFAULT_URL,
    ConnectionSettings,
    QrCallback,
    default_reconnect,
)
from actors.connection.certs import WHATSAPP_ROOT, RootKey
from actors.connection.client_state import ClientState
from actors.connection.messenger import SendMessage
from actors.connection.payload import DEFAULT_VERSION, Browser, ClientIdentity
from actors.connection.transport import Transport, WebSocketTransport
from actors.errors import ConfigError, ConnectTimeout, SessionEnded, SessionError
from actors.events import EventSink, session_ended
from actors.mail import (
    CredsState,
    DurableSnapshot,
    LoadCreds,
    PersisterStatistics,
    PersisterStats,
    SendNode,
    TakeSnapshot,
)
from actors.messaging.content import Content
from actors.messaging.incoming import MessageKey, read_receipts
from actors.metrics import Metrics
from actors.persister import DEFAULT_COALESCE_DELAY
from actors.session import (
    ReopeningBackend,
    SessionPlan,
    SharedBackend,
    session_refs,
    session_spec,
)
from actors.signal_store import DEFAULT_STORE_TIMEOUT, SignalStoreFactory
from actors.status import EndReason, SessionStatus
from runtime.core import DEFAULT_MAX_RESTARTS, DEFAULT_MAX_SECONDS, SupervisorBase
from runtime.dynamic import DynamicSupervisor, open_dynamic_supervisor
from runtime.errors import ChildStartError
from runtime.events import Event, EventBus, Handler, Unsubscribe, open_event_bus
from runtime.exit import unwrap_group
from runtime.fleet import Fleet
from runtime.log import Logger, default_logger
from runtime.metrics_http import serve_metrics, valid_port
from runtime.ref import ActorRef
from runtime.registry import Registry
from runtime.reply import call_durable
from runtime.spec import Backoff
from stores.auth import (
    PersistedAuth,
    use_multi_file_auth_state,
    use_native_file_auth_state,
    use_postgres_auth_state,
    use_sqlite_auth_state,
)
from stores.backup import BackupSummary, write_backup
from stores.creds import AuthCreds
from stores.encryption import KeySource, check_key_source
from stores.errors import EncryptionKeyError
from stores.transactions import DEFAULT_CACHE_SIZE
from stores.types import Persistence

if TYPE_CHECKING:
    from runtime.fleet_runner import FleetRunner

BACKENDS = ("native", "multi-file", "sqlite", "postgres")


BACKUP_SNAPSHOT_TIMEOUT = 300.0
"""How long the persister may take to read a session's whole state for a backup."""

SEND_TIMEOUT = 180.0
"""How long ``send_message`` may take in all: queries, encryption, the server's ack."""


class SessionFailed(SessionError):
    """The session tree could not start or gave up (restart intensity); ``cause`` says why."""

    def __init__(self, account: str, cause: BaseException | None) -> None:
        super().__init__(f"session {account!r} failed: {cause!r}")
        self.account = account
        self.cause = cause


@dataclass(frozen=True)
class AuthLocation:
    """An auth location by path: ``backend`` is native, multi-file, sqlite or postgres.

    For sqlite, ``path`` is the database file and ``account`` the account in it; for
    postgres (since 0.2.0), ``path`` is the DSN and ``lease_ttl`` the account lease's
    lifetime (renewed every third of it). ``encryption_key`` (since 0.2.0: 32 bytes, a
    key file path or a sync/async callback) encrypts a native, SQLite or PostgreSQL
    location; it is fetched again at every open (each restart), so a KMS callback works.
    """

    path: str | os.PathLike[str]
    backend: str = "native"
    account: str = "default"
    lease_ttl: float = 15.0
    encryption_key: KeySource | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not str(self.path):
            raise ConfigError("auth.path", "must not be empty")
        if self.backend not in BACKENDS:
            raise ConfigError("auth.backend", f"must be one of {BACKENDS}, got {self.backend!r}")
        if not isinstance(self.account, str) or not self.account:
            raise ConfigError("auth.account", "must be a non-empty string")
        _positive("auth.lease_ttl", self.lease_ttl)
        _check_encryption_key(self.encryption_key, self.backend)

    async def open(self) -> PersistedAuth:
        """Open the location (creates fresh creds only if it is empty or absent)."""
        key = self.encryption_key
        if self.backend == "native":
            return await use_native_file_auth_state(self.path, encryption_key=key)
        if self.backend == "multi-file":
            return await use_multi_file_auth_state(self.path)
        if self.backend == "postgres":
            return await use_postgres_auth_state(
                os.fspath(self.path), self.account, lease_ttl=self.lease_ttl, encryption_key=key
            )
        return await use_sqlite_auth_state(self.path, self.account, encryption_key=key)


AuthSpec = PersistedAuth | AuthLocation


def _check_encryption_key(key: object, backend: str) -> None:
    if key is None:
        return
    if backend == "multi-file":
        raise ConfigError(
            "encryption_key", "the Baileys multi-file folder is never encrypted (Baileys reads it)"
        )
    try:
        check_key_source(key)
    except EncryptionKeyError as exc:
        raise ConfigError("encryption_key", exc.reason) from None


def _positive(name: str, value: object, *, allow_inf: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, f"must be a number of seconds, got {value!r}")
    if not value > 0 or (math.isinf(value) and not allow_inf) or math.isnan(value):
        raise ConfigError(name, f"must be a finite number > 0, got {value!r}")


def parse_root_key(value: bytes | str | RootKey | None) -> RootKey:
    """The trust anchor from 32 raw bytes, 64 hex digits, a RootKey, or None (WhatsApp's)."""
    if value is None:
        return WHATSAPP_ROOT
    if isinstance(value, RootKey):
        return value
    if isinstance(value, str):
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise ConfigError("server_root_key", "must be 64 hex digits") from None
    elif isinstance(value, bytes):
        raw = value
    else:
        raise ConfigError("server_root_key", f"must be bytes or hex, got {type(value).__name__}")
    if len(raw) != 32:
        raise ConfigError("server_root_key", f"must be 32 bytes, got {len(raw)}")
    return RootKey(raw)


PHONE_DIGITS = (7, 15)
"""How many digits a pairing phone number may have (E.164 allows 15 at most)."""


def parse_pairing_phone(value: object) -> str:
    """The digits of an international phone number (a leading ``+`` is dropped)."""
    if not isinstance(value, str):
        raise ConfigError(
            "pairing_phone", f"must be a string of digits, got {type(value).__name__}"
        )
    digits = value[1:] if value.startswith("+") else value
    if not digits.isascii() or not digits.isdigit():
        raise ConfigError(
            "pairing_phone", f"must be digits only (country code first), got {value!r}"
        )
    if digits.startswith("0"):
        raise ConfigError("pairing_phone", "must start with the country code, not 0")
    low, high = PHONE_DIGITS
    if not low <= len(digits) <= high:
        raise ConfigError(
            "pairing_phone",
            f"must be {low} to {high} digits with the country code first, got {len(digits)}",
        )
    return digits


@dataclass(frozen=True)
class Config:
    """Everything a session needs; invalid values raise ``ConfigError`` naming the field.

    See docs/configuration.md for every field.
    """

    auth: AuthSpec | str | os.PathLike[str] | None = None
    backend: str | None = None
    account: str | None = None
    transport: Transport | None = None
    ws_url: str = DEFAULT_URL
    server_root_key: bytes | str | RootKey | None = None
    on_qr: QrCallback | None = None
    browser: Browser = field(default_factory=Browser)
    version: tuple[int, int, int] = DEFAULT_VERSION
    keepalive_interval: float = 30.0
    qr_timeout: float | None = None
    connect_timeout: float = 20.0
    query_timeout: float = 60.0
    reconnect: Backoff = field(default_factory=default_reconnect)
    max_restarts: int = DEFAULT_MAX_RESTARTS
    max_seconds: float = DEFAULT_MAX_SECONDS
    restart_backoff: Backoff | None = None
    signal_store: SignalStoreFactory | None = None
    signal_store_options: Mapping[str, Any] = field(default_factory=dict)
    cache_size: int | None = DEFAULT_CACHE_SIZE
    creds_coalesce_delay: float = DEFAULT_COALESCE_DELAY
    store_timeout: float = DEFAULT_STORE_TIMEOUT
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    pairing_phone: str | None = None
    fleet: Fleet | None = None
    encryption_key: KeySource | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.backend is not None and self.backend not in BACKENDS:
            raise ConfigError("backend", f"must be one of {BACKENDS}, got {self.backend!r}")
        self._check_auth_or_fleet()
        if self.fleet is not None:
            # The fleet opens every account it claims under this key.
            _check_encryption_key(self.encryption_key, "postgres")
        auth = self.auth
        if auth is None:
            pass  # a fleet template: each claimed account gets its auth
        elif isinstance(auth, (str, os.PathLike)):
            auth = AuthLocation(
                auth,
                self.backend or "native",
                self.account or "default",
                encryption_key=self.encryption_key,
            )
            object.__setattr__(self, "auth", auth)
        elif isinstance(auth, (PersistedAuth, AuthLocation)):
            if self.backend is not None:
                raise ConfigError("backend", "only with a path in auth (the auth object has one)")
            self._merge_encryption_key(auth)
        else:
            raise ConfigError(
                "auth", f"must be a PersistedAuth, AuthLocation or path, got {type(auth).__name__}"
            )
        if self.account is not None and (
            not isinstance(self.account, str) or not self.account or "/" in self.account
        ):
            raise ConfigError("account", "must be a non-empty string without '/'")
        if self.transport is not None and not isinstance(self.transport, Transport):
            raise ConfigError("transport", "must have connect(url) -> async context manager")
        if not isinstance(self.ws_url, str) or not self.ws_url.startswith(("ws://", "wss://")):
            raise ConfigError("ws_url", f"must start with ws:// or wss://, got {self.ws_url!r}")
        parse_root_key(self.server_root_key)
        if self.on_qr is not None and not callable(self.on_qr):
            raise ConfigError("on_qr", "must be callable (qr string) -> None or awaitable")
        if not isinstance(self.browser, Browser) or not self.browser.name or not self.browser.os:
            raise ConfigError("browser", "must be a Browser with a name and an OS")
        try:
            ClientIdentity(version=self.version, browser=self.browser)
        except Exception as exc:
            raise ConfigError("version", str(exc)) from None
        if self.pairing_phone is not None:
            object.__setattr__(self, "pairing_phone", parse_pairing_phone(self.pairing_phone))
        _positive("keepalive_interval", self.keepalive_interval)
        if self.qr_timeout is not None:
            _positive("qr_timeout", self.qr_timeout)
        _positive("connect_timeout", self.connect_timeout)
        _positive("query_timeout", self.query_timeout)
        _positive("store_timeout", self.store_timeout)
        if not isinstance(self.reconnect, Backoff):
            raise ConfigError("reconnect", f"must be a runtime.Backoff, got {self.reconnect!r}")
        if (
            isinstance(self.max_restarts, bool)
            or not isinstance(self.max_restarts, int)
            or self.max_restarts < 0
        ):
            raise ConfigError("max_restarts", f"must be an int >= 0, got {self.max_restarts!r}")
        _positive("max_seconds", self.max_seconds)
        if self.restart_backoff is not None and not isinstance(self.restart_backoff, Backoff):
            raise ConfigError("restart_backoff", "must be a runtime.Backoff or None")
        if self.signal_store is not None and not callable(self.signal_store):
            raise ConfigError("signal_store", "must be a factory (read, commit, options) -> store")
        if not isinstance(self.signal_store_options, Mapping):
            raise ConfigError("signal_store_options", "must be a mapping")
        if self.cache_size is not None and (
            isinstance(self.cache_size, bool)
            or not isinstance(self.cache_size, int)
            or self.cache_size < 0
        ):
            raise ConfigError("cache_size", f"must be an int >= 0 or None, got {self.cache_size!r}")
        if (
            isinstance(self.creds_coalesce_delay, bool)
            or not isinstance(self.creds_coalesce_delay, (int, float))
            or not 0 <= self.creds_coalesce_delay < 10
        ):
            raise ConfigError("creds_coalesce_delay", "must be a number of seconds in [0, 10)")
        if self.metrics_port is not None and not valid_port(self.metrics_port):
            raise ConfigError(
                "metrics_port", f"must be a port 0-65535 or None, got {self.metrics_port!r}"
            )
        if not isinstance(self.metrics_host, str) or not self.metrics_host:
            raise ConfigError("metrics_host", "must be a host name or address to listen on")

    def _check_auth_or_fleet(self) -> None:
        if self.fleet is None:
            if self.auth is None:
                raise ConfigError("auth", "required (a PersistedAuth, AuthLocation or path)")
            return
        if not isinstance(self.fleet, Fleet):
            raise ConfigError("fleet", f"must be a runtime.Fleet, got {type(self.fleet).__name__}")
        for name in ("auth", "backend", "account"):
            if getattr(self, name) is not None:
                raise ConfigError(
                    name, "leave it unset with fleet=: each claimed account has its own"
                )
        if self.pairing_phone is not None:
            raise ConfigError(
                "pairing_phone",
                "not in a fleet template (every account would ask a code for one number);"
                " set it per account with Fleet(account_config=...)",
            )

    def _merge_encryption_key(self, auth: PersistedAuth | AuthLocation) -> None:
        """``encryption_key`` goes into an ``AuthLocation``; an open one was keyed already."""
        if self.encryption_key is None:
            return
        if isinstance(auth, PersistedAuth):
            raise ConfigError(
                "encryption_key", "only with a path or AuthLocation (a PersistedAuth is open)"
            )
        if auth.encryption_key is not None and auth.encryption_key is not self.encryption_key:
            raise ConfigError("encryption_key", "given twice (here and in the AuthLocation)")
        object.__setattr__(
            self, "auth", dataclasses.replace(auth, encryption_key=self.encryption_key)
        )

    @property
    def account_name(self) -> str:
        """The session's name: ``account``, else the database account, else ``default``."""
        if self.account is not None:
            return self.account
        if isinstance(self.auth, AuthLocation) and self.auth.backend in ("sqlite", "postgres"):
            return self.auth.account.replace("/", "_")
        return "default"

    def connection_settings(self) -> ConnectionSettings:
        return ConnectionSettings(
            url=self.ws_url,
            root=parse_root_key(self.server_root_key),
            identity=ClientIdentity(version=self.version, browser=self.browser),
            transport=self.transport if self.transport is not None else WebSocketTransport(),
            keepalive_interval=self.keepalive_interval,
            connect_timeout=self.connect_timeout,
            query_timeout=self.query_timeout,
            qr_timeout=self.qr_timeout,
            reconnect=self.reconnect,
            store_timeout=self.store_timeout,
            on_qr=self.on_qr,
            pairing_phone=self.pairing_phone,
        )


class Session:
    """One account's running session tree (from ``Runtime.start_session``)."""

    def __init__(
        self,
        account: str,
        status: SessionStatus,
        refs: dict[str, ActorRef],
        source: SharedBackend | ReopeningBackend,
        store_timeout: float,
        encryption_key: KeySource | None = None,
    ) -> None:
        self.account = account
        self.status = status
        self.refs = refs
        self.source = source
        self._store_timeout = store_timeout
        self._encryption_key = encryption_key
        self.closed = trio.Event()

    def __repr__(self) -> str:
        return f"Session({self.account!r}, state={self.status.state.value})"

    @property
    def connection_state(self) -> str:
        """connecting, handshaking, pairing, logging_in, open or closed."""
        return self.status.state.value

    @property
    def end_reason(self) -> EndReason | None:
        return self.status.end_reason

    async def auth_state(self) -> AuthCreds:
        """A deep copy of the durable creds (pending snapshots are written first)."""
        state: CredsState = await call_durable(
            self.refs["persister"], LoadCreds(), timeout=self._store_timeout
        )
        return state.creds.copy()

    async def persister_statistics(self) -> PersisterStatistics:
        stats: PersisterStatistics = await self.refs["persister"].call(
            PersisterStats(), timeout=self._store_timeout
        )
        return stats

    async def backup(
        self, out: str | os.PathLike[str], *, encryption_key: KeySource | None = None
    ) -> BackupSummary:
        """Back up the session's auth state into ``out`` (absent or empty) while it runs.

        The persister provides the point: the committed state between two commits,
        so the copy holds exactly the commits up to ``summary.seq``, for every backend.
        The copy is a native backup directory, verified with ``inspect`` before this
        returns (see docs/backup.md; errors as ``stores.backup_location``). A store
        encrypted at rest is backed up sealed under its key: ``encryption_key``, by
        default the one the session's ``AuthLocation`` was opened with. Since 0.2.0.
        """
        point: DurableSnapshot = await self.refs["persister"].call(
            TakeSnapshot(), timeout=max(self._store_timeout, BACKUP_SNAPSHOT_TIMEOUT)
        )
        return await write_backup(
            point.snapshot,
            point.seq,
            out,
            source=point.location,
            source_backend=point.backend,
            key_id=point.key_id,
            encryption_key=encryption_key or self._encryption_key,
        )

    async def wait_connected(self, timeout: float = math.inf) -> None:  # noqa: ASYNC109 - issue 5 fixes this signature
        """Return once the connection is open; ``ConnectTimeout`` or ``SessionEnded`` otherwise."""
        with trio.move_on_after(timeout):
            while self.status.state is not ClientState.OPEN:
                if self.status.ended.is_set():
                    reason = self.status.end_reason
                    error = self.status.error
                    raise SessionEnded(
                        self.account,
                        reason.value if reason else "ended",
                        None if error is None else str(error),
                    )
                await self.status.wait_changed()
            return
        raise ConnectTimeout(self.account, timeout, self.status.state.value)

    async def wait_ended(self) -> EndReason:
        """Wait until the session ended for good and its tree has stopped."""
        await self.closed.wait()
        return self.status.end_reason or EndReason.STOPPED

    async def send_message(self, jid: str, content: Content) -> MessageKey:
        """Send ``{"text": ...}`` or a ``wa_pb2.Message`` to a user or group JID.

        Returns the ``MessageKey`` once the server acked the stanza; every session
        change the encryption made is durable before the stanza leaves. Raises
        ``NotConnected`` without an open connection. Since 0.2.0.
        """
        key: MessageKey = await call_durable(
            self.refs["connection"], SendMessage(jid, content), timeout=SEND_TIMEOUT
        )
        return key

    async def read_messages(self, keys: Sequence[MessageKey]) -> None:
        """Send read receipts for received messages (one per chat and author). Since 0.2.0."""
        for receipt in read_receipts(keys, int(time.time())):
            await call_durable(
                self.refs["connection"], SendNode(receipt), timeout=self._store_timeout
            )


class Runtime:
    """A running runtime (from ``open_runtime``); the first session is the primary one."""

    def __init__(self, bus: EventBus, sessions: DynamicSupervisor, registry: Registry, log: Logger):
        self.bus = bus
        self.sessions_supervisor = sessions
        self.registry = registry
        self.log = log
        self.sessions: dict[str, Session] = {}
        self._primary: Session | None = None
        self._nursery: trio.Nursery | None = None
        self._stopping = False
        self.stopped = trio.Event()
        self.metrics = Metrics()
        self.metrics_address: tuple[str, int] | None = None
        """Where the metrics endpoint listens (``Config.metrics_port``), else None."""
        self.fleet: FleetRunner | None = None  # set by open_runtime
        """This process's part of a fleet (``Config(fleet=...)``), else None. Since 0.2.0."""

    # --- events -------------------------------------------------------------------

    def subscribe_raw(self, handler: Handler) -> Unsubscribe:
        """Every later event map to ``handler`` (sync or async); returns unsubscribe."""
        return self.bus.subscribe_raw(handler)

    # --- the primary session -------------------------------------------------------

    @property
    def primary(self) -> Session:
        if self._primary is None:
            raise SessionError("no session was started")
        return self._primary

    @property
    def connection_state(self) -> str:
        return self.primary.connection_state

    async def auth_state(self) -> AuthCreds:
        return await self.primary.auth_state()

    async def wait_connected(self, timeout: float = math.inf) -> None:  # noqa: ASYNC109 - issue 5 fixes this signature
        await self.primary.wait_connected(timeout)

    async def wait_ended(self) -> EndReason:
        """Until the primary session ended (or the runtime stopped)."""
        primary = self.primary
        async with trio.open_nursery() as nursery:

            async def on_stop() -> None:
                await self.stopped.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(on_stop)
            await primary.closed.wait()
            nursery.cancel_scope.cancel()
        if primary.status.end_reason is EndReason.FAILED:
            raise SessionFailed(primary.account, primary.status.error)
        return primary.status.end_reason or EndReason.STOPPED

    async def send_message(self, jid: str, content: Content) -> MessageKey:
        """``send_message`` on the primary session. Since 0.2.0."""
        return await self.primary.send_message(jid, content)

    async def read_messages(self, keys: Sequence[MessageKey]) -> None:
        """``read_messages`` on the primary session. Since 0.2.0."""
        await self.primary.read_messages(keys)

    async def backup(self, account: str, out: str | os.PathLike[str]) -> BackupSummary:
        """``Session.backup(out)`` of the running session ``account``. Since 0.2.0."""
        session = self.sessions.get(account)
        if session is None:
            raise SessionError(f"no session {account!r}")
        return await session.backup(out)

    # --- sessions -------------------------------------------------------------------

    async def start_session(self, config: Config) -> Session:
        """Open the auth location and start its session tree; ready when this returns.

        Raises ``StoreLockedError`` at once when another owner holds the location.
        """
        if self._nursery is None or self._stopping:
            raise SessionError("the runtime is not running")
        if config.fleet is not None:
            raise ConfigError(
                "fleet", "a fleet config runs with open_runtime(config) or run(config)"
            )
        account = config.account_name
        if account in self.sessions:
            raise ConfigError("account", f"a session {account!r} already runs")
        status = SessionStatus(account)
        source = await _open_source(config, self._lease_watch(status))
        plan = SessionPlan(
            account=account,
            source=source,
            connection=config.connection_settings(),
            status=status,
            emit=self._emitter(account),
            signal_store=config.signal_store,
            signal_store_options=config.signal_store_options,
            cache_size=config.cache_size,
            coalesce_delay=config.creds_coalesce_delay,
            store_timeout=config.store_timeout,
            max_restarts=config.max_restarts,
            max_seconds=config.max_seconds,
            restart_backoff=config.restart_backoff,
            metrics=self.metrics.session(account),
        )
        key = config.auth.encryption_key if isinstance(config.auth, AuthLocation) else None
        session = Session(
            account, status, session_refs(plan, self.registry), source, config.store_timeout, key
        )
        try:
            await self.sessions_supervisor.start_child(session_spec(plan, self.registry, self.log))
        except ChildStartError as exc:
            await source.aclose()
            cause = exc.reason.error
            if cause is not None:
                raise unwrap_group(cause) from exc
            raise SessionFailed(account, exc) from exc
        except BaseException:
            await source.aclose()
            raise
        self._track_restarts(account)
        self.sessions[account] = session
        if self._primary is None:
            self._primary = session
        # A callback, not a task parked on ``ended``: an idle session keeps no task here.
        session.status.when_ended(partial(self._nursery.start_soon, self._retire, session))
        return session

    async def stop_session(self, account: str) -> None:
        """Stop one session in order (connection, signal store, persister) and close its store."""
        session = self.sessions.get(account)
        if session is None:
            raise SessionError(f"no session {account!r}")
        session.status.end(EndReason.STOPPED)
        await session.closed.wait()

    async def stop(self) -> None:
        """Stop every session in order; the runtime stays open until its block exits."""
        self._stopping = True
        with trio.CancelScope(shield=True):
            if self.fleet is not None:
                await self.fleet.leave()  # no more claims; the others may take over
            for session in list(self.sessions.values()):
                session.status.end(EndReason.STOPPED)
            for session in list(self.sessions.values()):
                await session.closed.wait()
        self.stopped.set()

    async def _retire(self, session: Session) -> None:
        """The session ended for good: stop its tree and release its store."""
        with trio.CancelScope(shield=True):
            try:
                if session.account in {c.id for c in self.sessions_supervisor.which_children()}:
                    await self.sessions_supervisor.terminate_child(session.account)
            except Exception as exc:
                self.log.warning("session_stop_failed", account=session.account, error=repr(exc))
            await session.source.aclose()
            reason = session.status.end_reason
            ended = session_ended(
                session.account,
                reason.value if reason else "stopped",
                repr(session.status.error) if session.status.error else None,
            )
            self.metrics.retire_restarts(session.account)
            self.metrics.observe_event(session.account, ended)
            self._emit_now(ended)
            self.sessions.pop(session.account, None)
            session.closed.set()

    def _lease_watch(self, status: SessionStatus) -> Callable[[Persistence], None]:
        """Ends the session (``fenced``) once a backend with a lease (PostgreSQL) loses it."""

        def watch(backend: Persistence) -> None:
            lost = getattr(backend, "lease_lost", None)
            if isinstance(lost, trio.Event) and self._nursery is not None:
                self._nursery.start_soon(_end_when_lease_lost, backend, lost, status)

        return watch

    def _emitter(self, account: str) -> EventSink:
        def emit(event: Event) -> None:
            self.metrics.observe_event(account, event)
            tagged = {name: _tag(payload, account) for name, payload in event.items()}
            self._emit_now(tagged)

        return emit

    def _track_restarts(self, account: str) -> None:
        """Restarts per actor of the session tree just started, read at each scrape."""
        for info in self.sessions_supervisor.which_children():
            if info.id == account and info.supervisor is not None:
                self.metrics.track_restarts(account, partial(_restarts, info.supervisor))

    async def serve_metrics(
        self,
        port: int,
        host: str = "127.0.0.1",
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve ``GET /metrics`` (Prometheus text) until cancelled; ``metrics_address`` set."""
        async with trio.open_nursery() as nursery:
            address = await nursery.start(
                partial(serve_metrics, self.metrics.render, port, host=host, log=self.log)
            )
            self.metrics_address = address
            task_status.started(address)

    def emit(self, event: Event) -> None:
        """Publish ``event`` to every subscriber (dropped once the bus is closed)."""
        self._emit_now(event)

    def _emit_now(self, event: Event) -> None:
        try:
            self.bus.emit(event)
        except Exception as exc:  # a closed bus at shutdown must not crash an actor
            self.log.debug("event_not_emitted", error=repr(exc))


async def _end_when_lease_lost(
    backend: Persistence, lost: trio.Event, status: SessionStatus
) -> None:
    async with trio.open_nursery() as nursery:

        async def session_over() -> None:
            await status.ended.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(session_over)
        await lost.wait()
        status.end(EndReason.FENCED, getattr(backend, "fenced", None))
        nursery.cancel_scope.cancel()


def _restarts(tree: SupervisorBase) -> dict[str, int]:
    return {child.id: child.restarts for child in tree.which_children()}


def _tag(payload: Any, account: str) -> Any:
    """The payload with its account: a map gets the key, and so does each map of a list."""
    if isinstance(payload, dict):
        return {**payload, "account": account}
    if isinstance(payload, list):
        return [
            {**item, "account": account} if isinstance(item, dict) else item for item in payload
        ]
    return payload


async def _open_source(
    config: Config, watch: Callable[[Persistence], None]
) -> SharedBackend | ReopeningBackend:
    auth = config.auth
    if isinstance(auth, PersistedAuth):
        watch(auth.config.backend)
        return SharedBackend(auth.config.backend)
    assert isinstance(auth, AuthLocation)  # Config normalised it
    location = auth

    async def open_watched() -> PersistedAuth:
        opened = await location.open()
        watch(opened.backend)
        return opened

    first = await open_watched()
    return ReopeningBackend(first, open_watched)


@asynccontextmanager
async def open_runtime(
    config: Config | None = None,
    *,
    log: Logger | None = None,
    subscribe: Handler | None = None,
    max_sessions: int | None = None,
    metrics_port: int | None = None,
    metrics_host: str | None = None,
) -> AsyncIterator[Runtime]:
    """Run the runtime for the block; with ``config``, its session is started (and primary).

    With ``config.fleet``, the runtime joins the fleet instead (``rt.fleet``): it claims
    accounts and runs a session for each, ``config`` being the template of every one.

    ``subscribe`` is subscribed before the session starts, so it sees every event
    (``rt.subscribe_raw`` inside the block sees those after it). Leaving the block
    stops every session in order. With ``metrics_port`` (else ``config.metrics_port``)
    the runtime serves its metrics there (``rt.metrics_address``) before any session
    starts.
    """
    if metrics_port is None and config is not None:
        metrics_port = config.metrics_port
    if metrics_host is None:
        metrics_host = config.metrics_host if config is not None else "127.0.0.1"
    if metrics_port is not None and not valid_port(metrics_port):
        raise ConfigError("metrics_port", f"must be a port 0-65535, got {metrics_port!r}")
    logger = log if log is not None else default_logger()
    registry = Registry()
    async with open_event_bus(log=logger) as bus:
        async with open_dynamic_supervisor(
            name="sessions", registry=registry, log=logger, max_children=max_sessions
        ) as sessions:
            rt = Runtime(bus, sessions, registry, logger)
            if subscribe is not None:
                rt.subscribe_raw(subscribe)
            async with trio.open_nursery() as nursery:
                rt._nursery = nursery
                rt.metrics.start_fsync_timing()
                try:
                    if metrics_port is not None:
                        await nursery.start(rt.serve_metrics, metrics_port, metrics_host)
                    if config is not None and config.fleet is not None:
                        from runtime.fleet_runner import start_fleet  # needs psycopg

                        rt.fleet = await start_fleet(rt, config, logger, nursery)
                    elif config is not None:
                        await rt.start_session(config)
                    yield rt
                finally:
                    await rt.stop()
                    rt.metrics.stop_fsync_timing()
                    nursery.cancel_scope.cancel()
            # Let subscribers see the last events before the bus closes.
            with trio.move_on_after(1.0):
                await bus.wait_idle()


def run(
    config: Config,
    *,
    log: Logger | None = None,
    subscribe: Handler | None = None,
) -> EndReason:
    """Run one session until it ends; blocking. Ctrl-C or SIGTERM stop it in order.

    With ``config.fleet``, run this process's part of the fleet until Ctrl-C or SIGTERM
    (every session stopped, every lease handed back), and return ``STOPPED``.

    Returns why it ended (``STOPPED``, ``LOGGED_OUT``, ``REPLACED``, ``REFUSED``);
    raises ``StoreLockedError`` (location held elsewhere), ``SessionFailed``.
    """
    reason: EndReason = trio.run(_run, config, log, subscribe)
    return reason


async def _run(config: Config, log: Logger | None, subscribe: Handler | None) -> EndReason:
    async with open_runtime(config, log=log, subscribe=subscribe) as rt:
        async with trio.open_nursery() as nursery:
            if threading.current_thread() is threading.main_thread():
                nursery.start_soon(_stop_on_signal, rt)
            if config.fleet is not None:
                await rt.stopped.wait()  # a fleet runs until it is stopped
                reason = EndReason.STOPPED
            else:
                reason = await rt.wait_ended()
            nursery.cancel_scope.cancel()
    return reason


async def _stop_on_signal(rt: Runtime) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            rt.log.info("signal_received", signal=signal.Signals(signum).name)
            await rt.stop()
            return


__all__ = [
    "BACKENDS",
    "AuthLocation",
    "Config",
    "Fleet",
    "Runtime",
    "Session",
    "SessionFailed",
    "open_runtime",
    "parse_root_key",
    "run",
]
