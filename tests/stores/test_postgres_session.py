"""A runtime session on PostgreSQL: Config(backend="postgres") and the lease it holds.

These tests use the real clock: the lease is judged by the server's clock and its
renewal waits on the writer thread, which a MockClock would jump past. A short TTL
keeps them to a few seconds.
"""

from __future__ import annotations

import psycopg
import pytest
import trio

from actors.errors import ConfigError
from actors.status import EndReason
from runtime.app import AuthLocation, Config, open_runtime
from stores.postgres import open_postgres_backend
from stores.postgres_lease import read_lease
from stores.types import Batch
from tests.session.helpers import Recorder, sandbox_config
from tests.session.memory_sandbox import open_memory_sandbox
from tests.stores.postgres_server import (  # noqa: F401 (fixtures, used by name)
    postgres_dsn_fixture,
    postgres_server_fixture,
)


def _seq(dsn: str, account: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT seq FROM baileys_accounts WHERE account = %s", (account,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_config_takes_a_dsn_with_backend_postgres(postgres_dsn: str) -> None:
    """Config(auth=DSN, backend="postgres") names the session after its account."""
    config = Config(auth=postgres_dsn, backend="postgres", account="bot1")
    assert isinstance(config.auth, AuthLocation)
    assert (config.auth.backend, config.auth.account) == ("postgres", "bot1")
    located = Config(auth=AuthLocation(postgres_dsn, "postgres", "bot2", lease_ttl=3.0))
    assert located.account_name == "bot2"
    with pytest.raises(ConfigError, match="lease_ttl"):
        AuthLocation(postgres_dsn, "postgres", lease_ttl=0)


async def test_session_holds_the_lease_and_a_second_runtime_is_refused(postgres_dsn: str) -> None:
    """A running session owns its account's lease; another owner gets StoreLockedError."""
    async with open_memory_sandbox() as sb:
        config = sandbox_config(sb, postgres_dsn, backend="postgres", account="bot")
        async with open_runtime(config):
            lease = await read_lease(postgres_dsn, "bot")
            assert lease is not None and lease.expires_in > 0
            with pytest.raises(Exception, match="locked by owner"):
                await open_postgres_backend(postgres_dsn, account="bot", owner="elsewhere")
        released = await read_lease(postgres_dsn, "bot")
        assert released is not None and released.expires_in <= 0


async def test_a_taken_over_session_ends_fenced_and_writes_nothing_more(
    postgres_dsn: str,
) -> None:
    """After a takeover, the session ends with reason "fenced"; the new owner's data stays."""
    async with open_memory_sandbox() as sb:
        events = Recorder()
        location = AuthLocation(postgres_dsn, "postgres", "bot", lease_ttl=1.5)
        config = sandbox_config(sb, location)
        async with open_runtime(config, subscribe=events) as rt:
            # The runtime is paused as far as the database can tell: its lease lapses.
            with psycopg.connect(postgres_dsn, autocommit=True) as conn:
                conn.execute(
                    "UPDATE baileys_leases SET expires_at = now() - interval '1 second'"
                    " WHERE account = 'bot'"
                )
            async with await open_postgres_backend(
                postgres_dsn, account="bot", owner="new-owner"
            ) as new:
                taken_at = _seq(postgres_dsn, "bot")
                await new.commit(Batch(keys={"session": {"x": b"new"}}))
                with trio.fail_after(10):
                    reason = await rt.wait_ended()
                assert reason is EndReason.FENCED
                assert _seq(postgres_dsn, "bot") == taken_at + 1
                assert await new.read_keys("session", ["x"]) == {"x": b"new"}
        ended = events.of("session_ended")
        assert [e["reason"] for e in ended] == ["fenced"]
        assert "FencedError" in ended[0]["error"]
