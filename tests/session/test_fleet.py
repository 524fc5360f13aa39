"""A runtime in a fleet (Config(fleet=Fleet(...))): claims, pairing, release and retirement.

Real clock and a short lease TTL, as in test_postgres_session.py: leases are judged
by the server's clock.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
import trio

from actors import events
from actors.errors import ConfigError
from runtime.app import Config, Fleet, Runtime, open_runtime
from sandbox.core import LOGGED_OUT
from stores.auth import use_postgres_auth_state
from stores.errors import WrongKeyError
from stores.postgres_fleet import AddOutcome, fleet_accounts, register_account
from tests.session.helpers import Recorder
from tests.session.memory_sandbox import MemorySandbox, open_memory_sandbox
from tests.stores.postgres_server import (  # noqa: F401 (fixtures, used by name)
    postgres_dsn_fixture,
    postgres_server_fixture,
)

TTL = 2.0


def _sql(dsn: str, statement: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(statement).fetchall()


def _template(sb: MemorySandbox, dsn: str, **fleet: Any) -> Config:
    return Config(
        fleet=Fleet(dsn, **{"capacity": 10, "lease_ttl": TTL, **fleet}),
        transport=sb.transport,
        ws_url=sb.url,
        server_root_key=sb.root_public_key,
        creds_coalesce_delay=0.0,
    )


def _pairing_phone(sb: MemorySandbox, nursery: trio.Nursery, recorder: Recorder) -> Any:
    """A subscriber that records events and has the phone scan each account's first QR."""
    scanned: set[str] = set()

    def on_event(event: dict[str, Any]) -> None:
        recorder(event)
        update = event.get(events.CONNECTION_UPDATE)
        if isinstance(update, dict) and "qr" in update and update["account"] not in scanned:
            scanned.add(update["account"])
            nursery.start_soon(sb.phone.scan, update["qr"])

    return on_event


async def _until_open(rt: Runtime, recorder: Recorder, accounts: set[str]) -> None:
    def all_open(_: Recorder) -> bool:
        return {a for a, s in rt.sessions.items() if s.connection_state == "open"} == accounts

    with trio.fail_after(30):
        await recorder.wait_for(all_open)


def test_a_fleet_config_takes_no_auth_and_a_valid_fleet() -> None:
    """Config(fleet=...) is a template: auth, backend and account are the fleet's to fill."""
    fleet = Fleet("postgresql://bots@db/bots", capacity=3)
    assert Config(fleet=fleet).fleet is fleet
    with pytest.raises(ConfigError, match=r"Config\.auth: leave it unset with fleet="):
        Config(auth="./auth", fleet=fleet)
    with pytest.raises(ConfigError, match=r"Config\.account"):
        Config(account="a", fleet=fleet)
    with pytest.raises(ConfigError, match=r"Config\.pairing_phone: .*account_config"):
        Config(pairing_phone="15551234567", fleet=fleet)
    with pytest.raises(ConfigError, match=r"Config\.auth: required"):
        Config()
    with pytest.raises(ConfigError, match=r"fleet\.capacity"):
        Fleet("postgresql://bots@db/bots", capacity=0)
    with pytest.raises(ConfigError, match=r"fleet\.lease_ttl"):
        Fleet("postgresql://bots@db/bots", capacity=1, lease_ttl=-1)
    with pytest.raises(ConfigError, match=r"fleet\.dsn"):
        Fleet("host=db port", capacity=1)
    assert Fleet("postgresql://x/y", capacity=1, lease_ttl=6).interval == 2


@asynccontextmanager
async def _open_fleet(
    sb: MemorySandbox, nursery: trio.Nursery, dsn: str, recorder: Recorder, accounts: set[str]
) -> AsyncIterator[Runtime]:
    """A fleet runtime on ``sb`` whose phone pairs every QR; yields once ``accounts`` are open."""
    subscriber = _pairing_phone(sb, nursery, recorder)
    async with open_runtime(_template(sb, dsn), subscribe=subscriber) as rt:
        await _until_open(rt, recorder, accounts)
        yield rt


async def test_added_accounts_pair_on_the_fleet_and_a_stop_hands_every_lease_back(
    postgres_dsn: str,
) -> None:
    """Two added accounts are claimed, pair through QR events naming them, open; stop releases."""
    assert await register_account(postgres_dsn, "alice") is AddOutcome.NEW
    assert await register_account(postgres_dsn, "bob") is AddOutcome.NEW
    recorder = Recorder()
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        async with _open_fleet(sb, nursery, postgres_dsn, recorder, {"alice", "bob"}) as rt:
            assert rt.fleet is not None
            owner = rt.fleet.owner
            qr_accounts = {u["account"] for u in recorder.of("connection_update") if "qr" in u}
            assert qr_accounts == {"alice", "bob"}
            claimed = recorder.of(events.FLEET_CLAIMED)
            assert sorted((c["account"], c["epoch"], c["owner"]) for c in claimed) == [
                ("alice", 1, owner),
                ("bob", 1, owner),
            ]
            assert _sql(postgres_dsn, "SELECT owner FROM baileys_fleet_members") == [(owner,)]
        nursery.cancel_scope.cancel()
    released = recorder.of(events.FLEET_RELEASED)
    assert sorted((r["account"], r["reason"], r["retired"]) for r in released) == [
        ("alice", "stopped", False),
        ("bob", "stopped", False),
    ]
    leases = _sql(postgres_dsn, "SELECT released, expires_at <= now() FROM baileys_leases")
    assert leases == [(True, True), (True, True)]
    assert _sql(postgres_dsn, "SELECT count(*) FROM baileys_fleet_members") == [(0,)]


async def test_the_templates_encryption_key_seals_every_account(postgres_dsn: str) -> None:
    """Config(fleet=..., encryption_key=K): accounts are stored under K; without it, refused."""
    await register_account(postgres_dsn, "alice")
    key = bytes(range(32))
    recorder = Recorder()
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        template = dataclasses.replace(_template(sb, postgres_dsn), encryption_key=key)
        async with open_runtime(template, subscribe=_pairing_phone(sb, nursery, recorder)) as rt:
            await _until_open(rt, recorder, {"alice"})
        nursery.cancel_scope.cancel()
    with pytest.raises(WrongKeyError):
        await use_postgres_auth_state(postgres_dsn, "alice")
    async with await use_postgres_auth_state(postgres_dsn, "alice", encryption_key=key) as auth:
        assert auth.state.creds.me is not None  # the paired identity, read under the key


async def test_a_restarted_member_logs_in_with_the_saved_creds(postgres_dsn: str) -> None:
    """A handed-back account is claimed again at the next epoch and opens without a QR."""
    await register_account(postgres_dsn, "alice")
    first, again = Recorder(), Recorder()
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        async with _open_fleet(sb, nursery, postgres_dsn, first, {"alice"}):
            pass
        async with _open_fleet(sb, nursery, postgres_dsn, again, {"alice"}):
            pass
        nursery.cancel_scope.cancel()
    assert [c["epoch"] for c in again.of(events.FLEET_CLAIMED)] == [2]
    assert [c["previous_owner"] for c in again.of(events.FLEET_CLAIMED)] == [
        first.of(events.FLEET_CLAIMED)[0]["owner"]
    ]
    assert not [u for u in again.of("connection_update") if "qr" in u]


async def test_a_logged_out_account_is_retired_and_not_claimed_again(postgres_dsn: str) -> None:
    """A 401 ends the session; the fleet retires the account (state logged_out) for good."""
    await register_account(postgres_dsn, "alice")
    recorder = Recorder()
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        async with _open_fleet(sb, nursery, postgres_dsn, recorder, {"alice"}) as rt:
            assert rt.fleet is not None
            sb.faults.failure(LOGGED_OUT)
            with trio.fail_after(10):
                while rt.fleet.statistics().retired < 1:
                    await rt.fleet.changed.wait()
            await trio.sleep(TTL)  # claim rounds pass: nobody takes it
            assert rt.fleet.accounts == []
        nursery.cancel_scope.cancel()
    (released,) = recorder.of(events.FLEET_RELEASED)
    assert (released["reason"], released["retired"]) == ("logged_out", True)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        assert [(a.account, a.state) for a in fleet_accounts(conn)] == [("alice", "logged_out")]
    assert await register_account(postgres_dsn, "alice") is AddOutcome.REACTIVATED


async def test_a_claim_that_returns_as_the_runtime_is_cancelled_is_handed_back(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runtime is cancelled while a claim statement runs: the lease it took is released.

    The statement's thread cannot be cancelled; it returns the claim after the stop has
    begun, and the stop must still hand that lease back (it used to stay live a TTL).
    """
    import runtime.fleet_runner as fleet_runner

    await register_account(postgres_dsn, "carol")
    claiming, cancelled = threading.Event(), threading.Event()
    real_claim = fleet_runner.claim

    def claim(conn: Any, *args: Any) -> Any:
        claiming.set()
        cancelled.wait(10)
        return real_claim(conn, *args)

    monkeypatch.setattr(fleet_runner, "claim", claim)
    async with open_memory_sandbox() as sb:
        with trio.CancelScope() as scope:
            async with open_runtime(_template(sb, postgres_dsn, claim_interval=0.1)):
                await trio.to_thread.run_sync(claiming.wait, 10)
                scope.cancel()
                cancelled.set()
                await trio.sleep_forever()
    leases = _sql(postgres_dsn, "SELECT account, epoch, released FROM baileys_leases")
    assert leases == [("carol", 1, True)]
