"""The fleet's SQL: which accounts a fleet runs, its live processes, and the claim.

Knows nothing of sessions: the fleet loop (``runtime.fleet``) calls these blocking
functions on a thread with an autocommit ``psycopg`` connection of its own.

Rules (each one a statement, so PostgreSQL alone decides; there is no coordinator):

* ``add_account`` puts an account in ``baileys_fleet`` (state ``active``) with an
  expired lease row at epoch 0, so the next claim round of any process takes it. An
  account already active in the fleet is refused (``AlreadyInFleetError``); one the
  fleet retired (logged out, replaced, refused) is made active again.
* ``join`` upserts the process's row in ``baileys_fleet_members`` with an expiry of
  one TTL; every claim round renews it; ``leave`` deletes it (a clean stop).
* ``claim`` takes, in one statement, expired or released leases of active accounts
  (``FOR UPDATE SKIP LOCKED``: concurrent claimers never wait for each other and never
  take the same row), each at epoch + 1. How many: up to the process's fair share,
  ``min(capacity, ceil(active accounts / live members))``, minus what it holds; beyond
  the share only accounts nobody claimed for ``stale_after`` seconds (every other
  member is at its share or capacity), still within capacity. Oldest expiry first.
* ``balance`` tells a process holding more than its share how many leases to hand
  back, at most what the live members below their share can take.
* ``retire`` marks an account that must not run again (logged out, ...) guarded by
  the retiring owner's epoch, so a fenced former owner cannot retire it.

Fencing stays the backend's (``stores.postgres``): a claim only moves the lease;
every commit still checks its epoch.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from enum import Enum
from typing import Any

import psycopg
import trio

from stores.errors import AlreadyInFleetError, InvalidValueError, StoreError
from stores.postgres import DEFAULT_LEASE_TTL, location_of
from stores.postgres_schema import prepare

__all__ = [
    "ACTIVE",
    "AddOutcome",
    "Balance",
    "Claim",
    "FleetAccount",
    "add_account",
    "balance",
    "claim",
    "fleet_accounts",
    "join",
    "leave",
    "register_account",
    "retire",
]

ACTIVE = "active"
"""``baileys_fleet.state`` of an account the fleet runs."""


class AddOutcome(Enum):
    """What ``add_account`` found."""

    NEW = "new"
    """No data yet: the process that claims it pairs a new device."""
    EXISTING = "existing"
    """The account already holds creds or keys (migrated in): it logs in with them."""
    REACTIVATED = "reactivated"
    """The fleet had retired it; it is active again."""


@dataclass(frozen=True)
class Claim:
    """A lease the claim took: run ``account`` under ``epoch``."""

    account: str
    epoch: int
    previous_owner: str | None
    """Who held the lease before (None: nobody ever did)."""
    takeover: bool
    """The previous owner did not hand the lease back: it expired (a dead or stuck process)."""


@dataclass(frozen=True)
class Balance:
    """One process's place in the fleet, as a claim round sees it."""

    members: int
    active: int
    held: int
    share: int
    surplus: int
    """Leases to hand back now so members below their share can take them."""


@dataclass(frozen=True)
class FleetAccount:
    """An account of the fleet and its lease (for ``fleet status``, monitoring, tests)."""

    account: str
    state: str
    owner: str | None
    epoch: int
    live: bool
    """Its lease is held and unexpired."""


def add_account(conn: Any, account: str, ttl: float) -> AddOutcome:
    """Register ``account`` with the fleet (one transaction); see the module rules."""
    with conn.transaction():
        row = conn.execute(
            "SELECT state FROM baileys_fleet WHERE account = %s FOR UPDATE", (account,)
        ).fetchone()
        if row is not None and row[0] == ACTIVE:
            raise AlreadyInFleetError(account)
        conn.execute(
            "INSERT INTO baileys_accounts (account, seq) VALUES (%s, 0)"
            " ON CONFLICT (account) DO NOTHING",
            (account,),
        )
        conn.execute(
            "INSERT INTO baileys_leases (account, owner, host, pid, epoch, ttl, expires_at,"
            " acquired_at, released) VALUES (%s, '', '', 0, 0, %s::interval, now(), now(), true)"
            " ON CONFLICT (account) DO NOTHING",
            (account, f"{ttl} seconds"),
        )
        if row is not None:
            conn.execute(
                "UPDATE baileys_fleet SET state = %s, detail = NULL, changed_at = now()"
                " WHERE account = %s",
                (ACTIVE, account),
            )
            return AddOutcome.REACTIVATED
        conn.execute(
            "INSERT INTO baileys_fleet (account, state, added_at, changed_at)"
            " VALUES (%s, %s, now(), now())",
            (account, ACTIVE),
        )
        has_data = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM baileys_creds WHERE account = %s)"
            " OR EXISTS (SELECT 1 FROM baileys_keys WHERE account = %s)",
            (account, account),
        ).fetchone()[0]
    return AddOutcome.EXISTING if has_data else AddOutcome.NEW


async def register_account(
    dsn: str, account: str, lease_ttl: float = DEFAULT_LEASE_TTL
) -> AddOutcome:
    """``fleet add``: connect, create or migrate the tables, ``add_account``.

    Raises ``InvalidValueError`` for a bad name (nothing is touched),
    ``AlreadyInFleetError``, and ``StoreError`` when the server cannot be reached.
    """
    if not isinstance(account, str) or not account or len(account) > 200:
        raise InvalidValueError("account", f"{account!r} is not a name of 1 to 200 characters")
    if "\0" in account or "/" in account:
        raise InvalidValueError("account", f"{account!r} holds NUL or '/'")
    location = location_of(dsn, account)

    def add() -> AddOutcome:
        try:
            conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise StoreError(f"{location}: cannot connect: {exc}") from exc
        with conn:
            prepare(conn, location)
            return add_account(conn, account, lease_ttl)

    return await trio.to_thread.run_sync(add)


def join(conn: Any, owner: str, capacity: int, ttl: float) -> None:
    """Say this process is alive for one more ``ttl`` (inserting its member row first).

    Rows of processes dead for a day (killed: they never left) are deleted on the way.
    """
    conn.execute("DELETE FROM baileys_fleet_members WHERE expires_at < now() - interval '1 day'")
    conn.execute(
        "INSERT INTO baileys_fleet_members"
        " (owner, host, pid, capacity, ttl, expires_at, joined_at)"
        " VALUES (%s, %s, %s, %s, %s::interval, now() + %s::interval, now())"
        " ON CONFLICT (owner) DO UPDATE SET capacity = excluded.capacity,"
        " ttl = excluded.ttl, expires_at = excluded.expires_at",
        (owner, socket.gethostname(), os.getpid(), capacity, f"{ttl} seconds", f"{ttl} seconds"),
    )


def leave(conn: Any, owner: str) -> None:
    """This process stops: its member row goes (its leases are released by their backends)."""
    conn.execute("DELETE FROM baileys_fleet_members WHERE owner = %s", (owner,))


# The fair share counts live members and active accounts; ``held`` is what this
# owner holds unexpired. Claimable: active accounts whose lease expired or was released.
_COUNTS = """
    counts AS (
        SELECT
            (SELECT count(*) FROM baileys_fleet_members WHERE expires_at > now()) AS members,
            (SELECT count(*) FROM baileys_fleet WHERE state = 'active') AS active,
            (SELECT count(*) FROM baileys_leases l JOIN baileys_fleet f USING (account)
             WHERE l.owner = %(owner)s AND l.expires_at > now() AND f.state = 'active') AS held
    ),
    shares AS (
        SELECT members, active, held,
            LEAST(%(capacity)s, ceil(active::numeric / GREATEST(members, 1)))::int AS share
        FROM counts
    )"""

_CLAIM = f"""
    WITH {_COUNTS},
    quota AS (
        SELECT GREATEST(0, LEAST(
            %(capacity)s - held,
            GREATEST(
                share - held,
                (SELECT count(*) FROM baileys_leases l JOIN baileys_fleet f USING (account)
                 WHERE f.state = 'active'
                   AND l.expires_at <= now() - %(stale)s::interval)::int
            )
        )) AS n FROM shares
    ),
    candidates AS (
        SELECT l.account, l.owner AS previous, l.released FROM baileys_leases l
        JOIN baileys_fleet f USING (account)
        WHERE f.state = 'active' AND l.expires_at <= now()
          AND NOT (l.account = ANY(%(avoid)s::text[]))
        ORDER BY l.expires_at, l.account
        LIMIT (SELECT n FROM quota)
        FOR UPDATE OF l SKIP LOCKED
    )
    UPDATE baileys_leases l SET owner = %(owner)s, host = %(host)s, pid = %(pid)s,
        epoch = l.epoch + 1, ttl = %(ttl)s::interval, expires_at = now() + %(ttl)s::interval,
        acquired_at = now(), released = false
    FROM candidates c WHERE l.account = c.account
    RETURNING l.account, l.epoch, c.previous, c.released
"""


def claim(
    conn: Any,
    owner: str,
    capacity: int,
    ttl: float,
    stale_after: float,
    avoid: list[str] | None = None,
) -> list[Claim]:
    """One claim round's statement: the leases this process took (see the module rules).

    ``avoid``: accounts this process will not take now (one that just failed here).
    """
    rows = conn.execute(
        _CLAIM,
        {
            "owner": owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "capacity": capacity,
            "ttl": f"{ttl} seconds",
            "stale": f"{stale_after} seconds",
            "avoid": list(avoid or ()),
        },
    ).fetchall()
    claims = [
        Claim(
            account=str(account),
            epoch=int(epoch),
            previous_owner=str(previous) or None,
            takeover=bool(previous) and not released,
        )
        for account, epoch, previous, released in rows
    ]
    return sorted(claims, key=lambda c: c.account)


_BALANCE = f"""
    WITH {_COUNTS},
    deficit AS (
        SELECT COALESCE(sum(GREATEST(0, LEAST(m.capacity, s.share) - (
            SELECT count(*) FROM baileys_leases l JOIN baileys_fleet f USING (account)
            WHERE l.owner = m.owner AND l.expires_at > now() AND f.state = 'active'
        ))), 0)::int AS n
        FROM baileys_fleet_members m, shares s
        WHERE m.expires_at > now() AND m.owner <> %(owner)s
    )
    SELECT members, active, held, share, (SELECT n FROM deficit) FROM shares
"""


def balance(conn: Any, owner: str, capacity: int) -> Balance:
    """This process's share, and how many leases it should hand back (see the rules)."""
    members, active, held, share, deficit = conn.execute(
        _BALANCE, {"owner": owner, "capacity": capacity}
    ).fetchone()
    surplus = max(0, min(int(held) - int(share), int(deficit)))
    return Balance(int(members), int(active), int(held), int(share), surplus)


def retire(conn: Any, account: str, epoch: int, state: str, detail: str | None) -> bool:
    """Mark ``account`` as not to run again (``state``: why), if ``epoch`` is still its lease's.

    Returns False (nothing changed) when another owner took the account since.
    """
    row = conn.execute(
        "UPDATE baileys_fleet f SET state = %s, detail = %s, changed_at = now()"
        " FROM baileys_leases l WHERE f.account = %s AND l.account = f.account"
        " AND l.epoch = %s RETURNING f.account",
        (state, detail, account, epoch),
    ).fetchone()
    return row is not None


def fleet_accounts(conn: Any) -> list[FleetAccount]:
    """Every account of the fleet with its lease, by name."""
    rows = conn.execute(
        "SELECT f.account, f.state, l.owner, COALESCE(l.epoch, 0),"
        " COALESCE(l.expires_at > now() AND NOT l.released, false)"
        " FROM baileys_fleet f LEFT JOIN baileys_leases l USING (account) ORDER BY f.account"
    ).fetchall()
    return [
        FleetAccount(str(a), str(state), str(owner) if owner else None, int(epoch), bool(live))
        for a, state, owner, epoch, live in rows
    ]
