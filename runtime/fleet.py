"""A fleet: many runtime processes sharing the accounts of one PostgreSQL database.

``Config(fleet=Fleet(dsn, capacity=N))`` (or ``baileys-trio fleet``) makes a runtime a
member of the fleet. Every claim round (each ``claim_interval``, default a third of
the lease TTL) the process:

1. renews its member row (``baileys_fleet_members``: the fleet's count of live
   processes, from which each one's fair share is computed);
2. claims, in one SQL statement, expired or released leases of active accounts up to
   its fair share and capacity (``stores.postgres_fleet.claim``), and starts a session
   per claim under that lease's epoch (``fleet_claimed`` / ``fleet_takeover``);
3. with ``rebalance``, hands back leases above its share that members below their
   share can take: sessions that are open are stopped first, one pairing is never
   interrupted (``fleet_released`` with reason ``rebalanced``).

A session that ends releases its lease at once (``fleet_released``); a logged-out,
replaced or refused one is retired from the fleet (``baileys-trio fleet add`` makes
it active again) so no process claims it round after round. A failed one is left
for the next round, not retaken by this process for one lease TTL. Stopping the
runtime stops every session in order, which releases every lease, and deletes the
member row: the other processes claim the accounts in their next round. A killed
process's leases expire after the TTL and are taken over then; its backends' epochs
fence any write a stuck former owner still tries.

The first claim waits one round after joining, so processes started together see
each other before they claim.

Since 0.2.0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from actors.errors import ConfigError

if TYPE_CHECKING:
    from runtime.app import Config

__all__ = ["Fleet"]


@dataclass(frozen=True)
class Fleet:
    """Membership of a fleet on the PostgreSQL database at ``dsn``. Since 0.2.0.

    ``capacity``: the most accounts this process runs. ``lease_ttl``: every account
    lease's and the member row's lifetime (renewed every third of it); a dead process's
    accounts are taken over after it, plus a claim round and a login.
    ``claim_interval``: seconds between claim rounds (default ``lease_ttl / 3``).
    ``rebalance``: hand back accounts above the fair share when others can take them.
    ``account_config``: ``(account, config) -> config``, called for each claimed
    account with the template made for it (auth and account filled in); return it
    changed (``dataclasses.replace``) for per-account settings.
    """

    dsn: str
    capacity: int
    lease_ttl: float = 15.0
    claim_interval: float | None = None
    rebalance: bool = True
    account_config: Callable[[str, Config], Config] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.dsn, str) or not self.dsn:
            raise ConfigError("fleet.dsn", "must be a PostgreSQL connection string")
        _check_dsn(self.dsn)
        if (
            isinstance(self.capacity, bool)
            or not isinstance(self.capacity, int)
            or self.capacity < 1
        ):
            raise ConfigError("fleet.capacity", f"must be an int >= 1, got {self.capacity!r}")
        _seconds("fleet.lease_ttl", self.lease_ttl)
        if self.claim_interval is not None:
            _seconds("fleet.claim_interval", self.claim_interval)
        if self.account_config is not None and not callable(self.account_config):
            raise ConfigError("fleet.account_config", "must be callable (account, config)")

    @property
    def interval(self) -> float:
        """Seconds between claim rounds."""
        return self.claim_interval if self.claim_interval is not None else self.lease_ttl / 3


def _seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(name, f"must be a number of seconds, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(name, f"must be a finite number > 0, got {value!r}")


def _check_dsn(dsn: str) -> None:
    try:
        # Imported here: psycopg is the optional ``postgres`` extra.
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict
    except ModuleNotFoundError:
        raise ConfigError("fleet", "needs psycopg: pip install 'baileys-trio[postgres]'") from None
    try:
        conninfo_to_dict(dsn)
    except ProgrammingError as exc:
        raise ConfigError("fleet.dsn", f"not a PostgreSQL connection string: {exc}") from None
