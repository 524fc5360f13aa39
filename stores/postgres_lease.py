"""Leases of the PostgreSQL backend: who owns an account, at which epoch, until when.

A lease row per account (``baileys_leases``: owner id, host, pid, epoch, ttl,
expiry) says which process may write the account. ``take_lease`` takes it at
epoch + 1 when it is free (no row, expired by the server's clock, or released) and
otherwise raises ``StoreLockedError`` naming the live owner. The backend fences every
commit on the epoch (``stores.postgres``).

Renewal is per process, not per account: one statement renews every lease one owner
id holds in a database, and the backends of one process on one database share its
result through a ``RenewalBoard`` (one per database, owner and Trio run), so a process
owning 1,000 accounts sends one renewal a period, not 1,000.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from typing import Any

import psycopg
import trio

from stores.errors import StoreLockedError

__all__ = [
    "LeaseInfo",
    "RenewalBoard",
    "adopt_lease",
    "join_board",
    "lease_info",
    "leave_board",
    "process_owner_id",
    "read_lease",
    "take_lease",
]

_CONNECT_TIMEOUT = 10

_owner: tuple[int, str] | None = None


def process_owner_id() -> str:
    """This process's lease owner id: ``host:pid:random`` (a fork gets a new one)."""
    global _owner
    pid = os.getpid()
    if _owner is None or _owner[0] != pid:
        _owner = (pid, f"{socket.gethostname()}:{pid}:{secrets.token_hex(4)}")
    return _owner[1]


@dataclass(frozen=True)
class LeaseInfo:
    """A lease row as read from the database."""

    account: str
    owner: str
    host: str
    pid: int
    epoch: int
    expires_in: float
    """Seconds until it expires by the server's clock (negative: expired)."""

    def describe(self) -> str:
        state = (
            f"expires in {self.expires_in:.1f} s"
            if self.expires_in > 0
            else f"expired {-self.expires_in:.1f} s ago"
        )
        return f"owner {self.owner} (pid {self.pid} on {self.host}), epoch {self.epoch}, {state}"


def lease_info(account: str, row: Any) -> LeaseInfo:
    """A ``LeaseInfo`` from ``(owner, host, pid, epoch, seconds until expiry)``."""
    return LeaseInfo(account, str(row[0]), str(row[1]), int(row[2]), int(row[3]), float(row[4]))


class RenewalBoard:
    """The newest renewal of one process's leases in one database, shared by its backends.

    One per (database, owner, trio run). ``wanted`` holds the (account, epoch) of every
    open, unfenced backend: the renewal statement renews exactly those, so a lease
    whose backend closed or was fenced is never kept alive by a sibling's renewal.
    The last backend to leave removes the board.
    """

    def __init__(self, key: tuple[str, str, object]) -> None:
        self.key = key
        self.wanted: dict[str, int] = {}
        self.sent_at: float | None = None  # trio time the newest statement was sent
        self.held: dict[str, int] = {}
        self.in_flight: trio.Event | None = None

    def drop(self, account: str, epoch: int) -> None:
        """Stop renewing ``account`` (its backend closed or lost the lease)."""
        if self.wanted.get(account) == epoch:
            del self.wanted[account]


_renewals: dict[tuple[str, str, object], RenewalBoard] = {}


def join_board(conninfo: str, owner: str, account: str, epoch: int) -> RenewalBoard:
    """The board of this process, database and trio run, with ``account`` wanted on it."""
    key = (conninfo, owner, trio.lowlevel.current_trio_token())
    board = _renewals.get(key)
    if board is None:
        board = _renewals[key] = RenewalBoard(key)
    board.wanted[account] = epoch
    return board


def leave_board(board: RenewalBoard, account: str, epoch: int) -> None:
    board.drop(account, epoch)
    if not board.wanted and _renewals.get(board.key) is board:
        del _renewals[board.key]


def take_lease(conn: Any, location: str, account: str, owner: str, ttl: float) -> int:
    """Take the lease at epoch + 1, or raise ``StoreLockedError`` naming the live owner."""
    host, pid = socket.gethostname(), os.getpid()
    interval = f"{ttl} seconds"
    with conn.transaction():
        conn.execute(
            "INSERT INTO baileys_accounts (account, seq) VALUES (%s, 0)"
            " ON CONFLICT (account) DO NOTHING",
            (account,),
        )
        row = conn.execute(
            "SELECT owner, host, pid, epoch, extract(epoch FROM expires_at - now())"
            " FROM baileys_leases WHERE account = %s FOR UPDATE",
            (account,),
        ).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO baileys_leases"
                " (account, owner, host, pid, epoch, ttl, expires_at, acquired_at)"
                " VALUES (%s, %s, %s, %s, 1, %s::interval, now() + %s::interval, now())",
                (account, owner, host, pid, interval, interval),
            )
            return 1
        live = lease_info(account, row)
        if live.expires_in > 0:
            raise StoreLockedError(location, live.describe())
        epoch = live.epoch + 1
        conn.execute(
            "UPDATE baileys_leases SET owner = %s, host = %s, pid = %s, epoch = %s,"
            " ttl = %s::interval, expires_at = now() + %s::interval, acquired_at = now(),"
            " released = false WHERE account = %s",
            (owner, host, pid, epoch, interval, interval, account),
        )
        return epoch


def adopt_lease(conn: Any, location: str, account: str, owner: str, ttl: float, epoch: int) -> int:
    """Take up the lease ``owner`` already claimed at ``epoch`` (a fleet's claim), renewed.

    Raises ``StoreLockedError`` when the claim is no longer ours (it expired and was
    taken, or released): nothing may be written under it.
    """
    with conn.transaction():
        row = conn.execute(
            "UPDATE baileys_leases SET expires_at = now() + %s::interval"
            " WHERE account = %s AND owner = %s AND epoch = %s AND expires_at > now()"
            " RETURNING epoch",
            (f"{ttl} seconds", account, owner, epoch),
        ).fetchone()
        if row is not None:
            return epoch
        live = conn.execute(
            "SELECT owner, host, pid, epoch, extract(epoch FROM expires_at - now())"
            " FROM baileys_leases WHERE account = %s",
            (account,),
        ).fetchone()
    found = "no lease row" if live is None else lease_info(account, live).describe()
    raise StoreLockedError(location, f"the claim at epoch {epoch} is no longer ours: {found}")


async def read_lease(dsn: str, account: str) -> LeaseInfo | None:
    """The lease row of ``account`` (for ``inspect`` and tests), or None."""

    def read() -> LeaseInfo | None:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=_CONNECT_TIMEOUT) as conn:
            found = conn.execute("SELECT to_regclass('baileys_leases')").fetchone()
            if found is None or found[0] is None:
                return None
            row = conn.execute(
                "SELECT owner, host, pid, epoch, extract(epoch FROM expires_at - now())"
                " FROM baileys_leases WHERE account = %s",
                (account,),
            ).fetchone()
        return None if row is None else lease_info(account, row)

    return await trio.to_thread.run_sync(read)
