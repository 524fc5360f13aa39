"""The revision race: a dead connection's queued commit never shares a revision with the next.

The rule: after a connection restart, a creds commit still queued from the dead
incarnation must not share a creds revision with the new incarnation's next
snapshot. Here the real connection actor (its numbering, its first load) runs in
a persister → signal store → connection tree; the dead incarnation's pre-key
top-up is held in the signal store (behind an in-flight commit of the same
pre-key) while the connection restarts and the new incarnation saves a change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from actors.connection.actor import ConnectionActor, ConnectionSettings
from actors.errors import StaleCredsChange
from actors.mail import LoadCreds, ReadKeys, RunTransaction
from actors.session import SharedBackend
from actors.status import SessionStatus
from runtime.registry import Registry
from runtime.reply import call_durable
from runtime.spec import ChildSpec, Strategy
from runtime.supervisor import open_supervisor
from stores.creds import init_auth_creds
from stores.memory import MemoryBackend
from stores.transactions import StoreTransaction
from stores.types import Batch
from tests.session.helpers import crash_and_wait_restart
from tests.session.test_creds_revisions import store_children


class GatedBackend(MemoryBackend):
    """A memory backend whose commits wait while ``gate`` is set to an unset event."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: trio.Event | None = None

    async def commit(self, batch: Batch) -> int:
        if self.gate is not None:
            await self.gate.wait()
        return await super().commit(batch)


class Offline:
    """A transport whose connect never completes: the connection actor just waits."""

    @asynccontextmanager
    async def connect(self, url: str) -> AsyncIterator[Any]:
        await trio.sleep_forever()
        yield  # pragma: no cover - never reached


async def test_a_dead_incarnations_queued_top_up_never_shares_a_revision_with_the_next_change(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The held top-up fails StaleCredsChange, its keys never land, every durable rev is new."""
    backend = GatedBackend()
    await backend.commit(Batch(creds=init_auth_creds()))
    source = SharedBackend(backend)
    registry = Registry()
    events: list[dict[str, Any]] = []
    incarnations: list[ConnectionActor] = []
    settings = ConnectionSettings(transport=Offline(), connect_timeout=1e9)

    def connection() -> ConnectionActor:
        actor = ConnectionActor(
            settings,
            persister=registry.ref("persister"),
            signal_store=registry.ref("signal_store"),
            status=SessionStatus("race"),
            emit=events.append,
        )
        incarnations.append(actor)
        return actor

    children = [
        *store_children(source, registry, events),
        ChildSpec("connection", connection, name="connection"),
    ]
    async with (
        open_supervisor(children, strategy=Strategy.REST_FOR_ONE, registry=registry) as sup,
        trio.open_nursery() as nursery,
    ):
        dead = incarnations[0]
        first_id = str(dead.creds.next_pre_key_id)

        async def occupy(tx: StoreTransaction) -> None:
            await tx.set({"session": {"occupant": b"1"}, "pre-key": {first_id: None}})

        async def occupant() -> None:
            await call_durable(sup.ref("signal_store"), RunTransaction("o", occupy), timeout=60)

        backend.gate = trio.Event()
        nursery.start_soon(occupant)
        await trio.testing.wait_all_tasks_blocked()  # that commit is in flight, held

        outcome: list[BaseException | None] = []
        top_up_done, restarted = trio.Event(), trio.Event()

        async def dead_top_up() -> None:
            try:
                await dead.prepare_prekeys(3)
                outcome.append(None)
            except StaleCredsChange as exc:
                outcome.append(exc)
            top_up_done.set()

        async def restart() -> None:
            await crash_and_wait_restart(sup.ref("connection"))
            restarted.set()

        nursery.start_soon(dead_top_up)
        await trio.testing.wait_all_tasks_blocked()  # queued in the signal store behind it
        dead_revs = set(range(1, dead._rev + 1))  # every revision the dead one handed out

        nursery.start_soon(restart)
        await trio.testing.wait_all_tasks_blocked()  # the next incarnation is loading
        backend.gate.set()
        with trio.fail_after(60):
            await restarted.wait()
            await top_up_done.wait()
        live = incarnations[1]
        changed = live.creds.copy()
        changed.routing_info = b"live"
        await live.save_creds(changed)  # the new incarnation's next snapshot
        state = await call_durable(sup.ref("persister"), LoadCreds(), timeout=60)
        pre_keys = await sup.ref("persister").call(ReadKeys("pre-key", ("1", "2", "3")), timeout=60)
        nursery.cancel_scope.cancel()
    await source.aclose()

    revs = [e["creds_update"]["rev"] for e in events if "creds_update" in e]
    assert revs and len(revs) == len(set(revs)), f"a revision was used twice: {revs}"
    assert not dead_revs & set(revs), f"a durable change reused a dead revision: {revs}"
    assert isinstance(outcome[0], StaleCredsChange), "the dead top-up was merged"
    assert pre_keys == {}, "the dead incarnation's pre-keys landed"
    assert state.creds.routing_info == b"live" and state.rev == revs[-1]
    assert state.creds.next_pre_key_id == int(first_id)
