"""The floor under one PostgreSQL commit, measured from psycopg beside the store's figures.

A client/server commit costs a round trip plus the server's own WAL flush, so one
writer of the PostgreSQL backend can at best commit as fast as the smallest durable
statement the server answers. Measured on a fresh database of the same server, at
``synchronous_commit = on`` (durability is not negotiable), one writer, no store code:

* ``SELECT 1``: the round trip alone (nothing to flush);
* ``INSERT`` of one 1 KiB row as one autocommit statement: one round trip and one WAL
  flush, what one store commit costs at best (the backend's commit is one statement);
* ``BEGIN; INSERT; COMMIT``: the same in three round trips, as a commit made of
  separate statements costs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Floor", "measure_floor"]

SECONDS = 1.5
"""Per measurement."""


@dataclass(frozen=True)
class Floor:
    select_one_us: float
    """Mean latency of ``SELECT 1`` (µs)."""
    insert_per_s: float
    """One-row INSERTs a second, each its own durable transaction (one round trip)."""
    begin_insert_commit_per_s: float
    """``BEGIN; INSERT; COMMIT`` a second (three round trips)."""


def _rate(step: Callable[[int], object], seconds: float) -> float:
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        step(count)
        count += 1
    return count / (time.perf_counter() - start)


def measure_floor(dsn: str, seconds: float = SECONDS) -> Floor:
    """The three figures of the module docstring, on the database of ``dsn``."""
    import psycopg

    value = os.urandom(1024)
    insert = "INSERT INTO floor (id, value) VALUES (%s, %s)"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET synchronous_commit TO on")
        conn.execute("CREATE TABLE floor (id bigint PRIMARY KEY, value bytea NOT NULL)")
        select_rate = _rate(lambda n: conn.execute("SELECT 1").fetchone(), seconds / 3)
        insert_rate = _rate(lambda n: conn.execute(insert, (n, value)), seconds)
        offset = 1 << 40

        def three(n: int) -> Any:
            conn.execute("BEGIN")
            conn.execute(insert, (offset + n, value))
            return conn.execute("COMMIT")

        three_rate = _rate(three, seconds)
    return Floor(
        select_one_us=1e6 / select_rate if select_rate else 0.0,
        insert_per_s=insert_rate,
        begin_insert_commit_per_s=three_rate,
    )
