"""baileys-trio fleet add: registers an account once; a refused add changes nothing."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import psycopg

from tests.cli.stores_helpers import ROOT, Done
from tests.stores.postgres_server import (  # noqa: F401 (fixtures, used by name)
    postgres_dsn_fixture,
    postgres_server_fixture,
)


def run_cli(*argv: str) -> Done:
    """``baileys-trio ARGV`` in a fresh interpreter (``python -m runtime``)."""
    done = subprocess.run(
        [sys.executable, "-m", "runtime", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    return Done(done.returncode, done.stdout, done.stderr)


def _rows(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT f.account, f.state, l.epoch, l.owner FROM baileys_fleet f"
            " JOIN baileys_leases l USING (account) ORDER BY f.account"
        ).fetchall()


def test_fleet_add_registers_then_refuses_a_second_add(postgres_dsn: str) -> None:
    """The first add prints what it found and exits 0; the second exits 6, rows unchanged."""
    done = run_cli("fleet", "add", "--dsn", postgres_dsn, "alice")
    assert done.code == 0, done.err
    assert (
        done.out
        == "added alice to the fleet (a new device: it pairs on the process that claims it)\n"
    )
    before = _rows(postgres_dsn)
    assert before == [("alice", "active", 0, "")]
    again = run_cli("fleet", "add", "--dsn", postgres_dsn, "alice")
    assert again.code == 6
    assert "'alice' is already in the fleet; nothing was changed" in again.err
    assert _rows(postgres_dsn) == before


def test_fleet_bad_arguments_exit_2_naming_the_command(postgres_dsn: str) -> None:
    """A name with '/', a capacity of 0, or no --dsn: one line naming the command, exit 2."""
    bad_name = run_cli("fleet", "add", "--dsn", postgres_dsn, "a/b")
    assert (bad_name.code, bad_name.err.count("\n")) == (2, 1)
    assert bad_name.err.startswith("baileys-trio fleet add: error:")
    no_capacity = run_cli("fleet", "--dsn", postgres_dsn, "--capacity", "0")
    assert no_capacity.code == 2 and "fleet.capacity" in no_capacity.err
    no_dsn = run_cli("fleet", "--capacity", "3")
    assert no_dsn.code == 2 and "--dsn and --capacity are required" in no_dsn.err
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('baileys_fleet')").fetchone() == (None,)


def test_fleet_on_an_unreachable_database_exits_1_in_one_line() -> None:
    """No server at the DSN: one line naming it, exit 1, no traceback."""
    done = run_cli("fleet", "--dsn", "postgresql://nobody@127.0.0.1:1/none", "--capacity", "3")
    assert done.code == 1
    assert "cannot join the fleet" in done.err and "Traceback" not in done.err
