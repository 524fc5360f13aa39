"""The fleet loop: one process's claim rounds, its sessions and their leases.

``runtime.fleet`` says what a fleet member does; this module does it. It is imported
only when a runtime joins a fleet (it needs psycopg, the optional ``postgres``
extra).

Since 0.2.0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
import trio

from actors import events
from actors.status import EndReason
from runtime.fleet import Fleet
from runtime.log import Logger
from stores.auth import PersistedAuth, use_postgres_auth_state
from stores.encryption import KeySource
from stores.errors import StoreError
from stores.postgres import describe_dsn, process_owner_id
from stores.postgres_fleet import Claim, balance, claim, join, leave, retire
from stores.postgres_schema import prepare

if TYPE_CHECKING:
    from runtime.app import Config, Runtime, Session

__all__ = ["RETIRING", "FleetRunner", "FleetStatistics", "fleet_config", "start_fleet"]

RETIRING = frozenset(
    {EndReason.LOGGED_OUT, EndReason.REPLACED, EndReason.REFUSED, EndReason.UNTRUSTED_SERVER}
)
"""Ends after which no process should run the account again until it is added anew."""

_STATEMENT_TIMEOUT_MS = 10_000
_CONNECT_TIMEOUT = 10
_STOP_TIMEOUT = 30.0  # a session tree that does not stop in this long loses its lease anyway


@dataclass(frozen=True)
class FleetStatistics:
    """What this fleet member did since it joined (``FleetRunner.statistics()``)."""

    owner: str
    rounds: int
    held: int
    """Accounts this process runs now."""
    claimed: int
    takeovers: int
    released: int
    retired: int
    round_errors: int
    """Claim rounds that failed (database unreachable, ...); the next round retries."""


@dataclass
class _Held:
    claim: Claim
    auth: PersistedAuth
    session: Session
    reason: str = ""


class FleetRunner:
    """Runs one process's part of a fleet inside a ``Runtime`` (``Runtime.fleet``)."""

    def __init__(
        self,
        fleet: Fleet,
        rt: Runtime,
        config_for: Callable[[str, PersistedAuth], Config],
        log: Logger,
        encryption_key: KeySource | None = None,
    ) -> None:
        self.fleet = fleet
        self.owner = process_owner_id()
        self._rt = rt
        self._config_for = config_for
        self._encryption_key = encryption_key
        self._log = log.bind(fleet=describe_dsn(fleet.dsn), owner=self.owner)
        self._conn: Any = None
        self._lock = trio.Lock()  # one statement at a time on the one connection
        self._leaving = False
        self._held: dict[str, _Held] = {}
        self._avoid: dict[str, float] = {}  # account -> trio time until which it is not taken
        self._rounds = self._claimed = self._takeovers = 0
        self._released = self._retired = self._round_errors = 0
        self.changed = trio.Event()
        """Set (and replaced) after every claim round and every release."""

    def statistics(self) -> FleetStatistics:
        return FleetStatistics(
            owner=self.owner,
            rounds=self._rounds,
            held=len(self._held),
            claimed=self._claimed,
            takeovers=self._takeovers,
            released=self._released,
            retired=self._retired,
            round_errors=self._round_errors,
        )

    @property
    def accounts(self) -> list[str]:
        """The accounts this process runs now."""
        return sorted(self._held)

    async def run(
        self, *, task_status: trio.TaskStatus[FleetRunner] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Join, then claim rounds until cancelled; on the way out release and leave."""
        fleet = self.fleet
        try:
            await self._sql(lambda c: join(c, self.owner, fleet.capacity, fleet.lease_ttl))
        except psycopg.Error as exc:
            self._drop_connection()
            raise StoreError(f"{describe_dsn(fleet.dsn)}: cannot join the fleet: {exc}") from exc
        self._log.info("fleet_joined", capacity=fleet.capacity)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(self)
                while True:
                    await trio.sleep(self.fleet.interval)
                    await self._round(nursery)
        finally:
            with trio.CancelScope(shield=True):
                await self._leave()

    async def leave(self) -> None:
        """Stop claiming and delete the member row (the runtime then stops the sessions).

        Leaving before the leases are handed back lets the other processes count one
        member less when they claim them, so they take them in their next round.
        """
        if self._leaving:
            await trio.lowlevel.checkpoint()
            return
        self._leaving = True
        with trio.move_on_after(_CONNECT_TIMEOUT):
            try:
                await self._sql(lambda c: leave(c, self.owner))
            except (psycopg.Error, StoreError) as exc:
                self._log.warning("fleet_leave_failed", error=repr(exc))

    # -- one round --------------------------------------------------------------------

    async def _round(self, nursery: trio.Nursery) -> None:
        if self._leaving:
            await trio.lowlevel.checkpoint()
            return
        now = trio.current_time()
        self._avoid = {a: t for a, t in self._avoid.items() if t > now}
        try:
            # Shielded (each statement is bounded by its timeouts): the leases a claim
            # statement took must reach _start, which opens them or, once the runtime
            # stops, hands them back. A round that waited behind leave() for the
            # connection used to claim as the runtime stopped and be cancelled before
            # _start: those leases stayed live for a TTL after a clean stop.
            with trio.CancelScope(shield=True):
                claims, surplus = await self._claim()
        except (psycopg.Error, StoreError) as exc:
            self._round_errors += 1
            self._log.warning("fleet_round_failed", error=repr(exc))
            self._drop_connection()
            return
        self._rounds += 1
        for taken in claims:  # in parallel: every claim's lease runs out one TTL from now
            nursery.start_soon(self._start, taken, nursery)
        if surplus:
            self._shed(surplus)
        self._bump()

    async def _claim(self) -> tuple[list[Claim], int]:
        """Renew membership, claim, and ask how many leases to hand back (``balance``)."""
        fleet = self.fleet
        avoid = sorted(self._avoid)

        def claim_unless_leaving(conn: Any) -> list[Claim]:
            # Read when the statement runs: leave() may have had the connection first.
            if self._leaving:
                return []
            return claim(conn, self.owner, fleet.capacity, fleet.lease_ttl, fleet.lease_ttl, avoid)

        await self._sql(lambda c: join(c, self.owner, fleet.capacity, fleet.lease_ttl))
        claims: list[Claim] = await self._sql(claim_unless_leaving)
        surplus = 0
        if fleet.rebalance:
            try:
                found = await self._sql(lambda c: balance(c, self.owner, fleet.capacity))
            except (psycopg.Error, StoreError) as exc:
                # The claims stand: their leases are ours and must be taken up.
                self._log.warning("fleet_balance_failed", error=repr(exc))
                self._drop_connection()
            else:
                surplus = found.surplus
        return claims, surplus

    async def _start(self, taken: Claim, nursery: trio.Nursery) -> None:
        fleet = self.fleet
        # Shielded: a claim is always taken up (then handed back if need be), never
        # left to hold its account until the lease runs out.
        with trio.CancelScope(shield=True):
            try:
                auth = await use_postgres_auth_state(
                    fleet.dsn,
                    taken.account,
                    lease_ttl=fleet.lease_ttl,
                    lease_epoch=taken.epoch,
                    encryption_key=self._encryption_key,
                )
            except StoreError as exc:
                self._log.warning("fleet_open_failed", account=taken.account, error=repr(exc))
                return
            if self._leaving:  # the runtime stops: the claim is handed back at once
                await auth.aclose()
                return
        try:
            session = await self._rt.start_session(self._config_for(taken.account, auth))
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await auth.aclose()
            if not isinstance(exc, Exception):
                raise
            self._avoid[taken.account] = trio.current_time() + fleet.lease_ttl
            self._log.warning("fleet_start_failed", account=taken.account, error=repr(exc))
            self._emit(events.fleet_released(taken.account, taken.epoch, "failed", False))
            return
        held = self._held[taken.account] = _Held(taken, auth, session)
        if taken.takeover:
            self._takeovers += 1
            event = events.fleet_takeover
        else:
            self._claimed += 1
            event = events.fleet_claimed
        self._emit(event(taken.account, taken.epoch, self.owner, taken.previous_owner))
        nursery.start_soon(self._watch, held)

    def _shed(self, surplus: int) -> None:
        """Stop up to ``surplus`` open sessions: their leases go back to the fleet."""
        ready = [
            h for h in self._held.values() if not h.reason and h.session.connection_state == "open"
        ]
        # Only open sessions: a pairing (its QR on someone's screen) is never interrupted.
        for held in sorted(ready, key=lambda h: h.claim.account)[:surplus]:
            held.reason = "rebalanced"
            self._avoid[held.claim.account] = trio.current_time() + self.fleet.lease_ttl
            held.session.status.end(EndReason.STOPPED)

    async def _watch(self, held: _Held) -> None:
        """Once the session ended: release the lease (retire the account if it must not run).

        Cancelled before that (the runtime stops), ``_leave`` releases it instead.
        """
        await held.session.closed.wait()
        with trio.CancelScope(shield=True):
            await self._release(held)

    async def _release(self, held: _Held) -> None:
        account, epoch = held.claim.account, held.claim.epoch
        if self._held.get(account) is not held:
            await trio.lowlevel.checkpoint()
            return
        del self._held[account]
        reason = held.session.end_reason or EndReason.STOPPED
        retired = False
        if reason in RETIRING:
            detail = None if held.session.status.error is None else str(held.session.status.error)
            try:
                retired = await self._sql(lambda c: retire(c, account, epoch, reason.value, detail))
            except (psycopg.Error, StoreError) as exc:
                self._log.warning("fleet_retire_failed", account=account, error=repr(exc))
        elif reason is EndReason.FAILED:
            self._avoid[account] = trio.current_time() + self.fleet.lease_ttl
        with trio.move_on_after(_CONNECT_TIMEOUT * 3):
            await held.auth.aclose()
        self._released += 1
        self._retired += retired
        self._emit(events.fleet_released(account, epoch, held.reason or reason.value, retired))
        self._bump()

    async def _leave(self) -> None:
        for held in list(self._held.values()):
            held.session.status.end(EndReason.STOPPED)
        for held in list(self._held.values()):
            with trio.move_on_after(_STOP_TIMEOUT):
                await held.session.closed.wait()
            await self._release(held)
        self._leaving = False  # the member row goes whether or not leave() ran
        await self.leave()
        self._drop_connection()
        self._log.info("fleet_left")

    # -- plumbing ---------------------------------------------------------------------

    async def _sql(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(connection)`` on a thread (one statement at a time, 10 s at most)."""
        async with self._lock:
            return await trio.to_thread.run_sync(self._on_connection, fn)

    def _on_connection(self, fn: Callable[[Any], Any]) -> Any:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(
                self.fleet.dsn,
                autocommit=True,
                connect_timeout=_CONNECT_TIMEOUT,
                options=f"-c statement_timeout={_STATEMENT_TIMEOUT_MS}",
            )
            prepare(self._conn, describe_dsn(self.fleet.dsn))
        return fn(self._conn)

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass  # it is broken: nothing to close cleanly

    def _emit(self, event: dict[str, Any]) -> None:
        self._rt.emit(event)

    def _bump(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


def fleet_config(template: Config, account: str, auth: PersistedAuth) -> Config:
    """The config of one claimed account: the template with its auth and name."""
    assert template.fleet is not None
    # The auth is open already (under the template's encryption key, if any).
    config = dataclasses.replace(
        template, auth=auth, account=account, fleet=None, encryption_key=None
    )
    hook = template.fleet.account_config
    return config if hook is None else hook(account, config)


async def start_fleet(
    rt: Runtime, template: Config, log: Logger, nursery: trio.Nursery
) -> FleetRunner:
    """Start the fleet member of ``template.fleet`` in ``nursery``; ready when it returns."""
    assert template.fleet is not None
    runner = FleetRunner(
        template.fleet,
        rt,
        lambda a, auth: fleet_config(template, a, auth),
        log,
        template.encryption_key,
    )
    started: FleetRunner = await nursery.start(runner.run)
    return started
