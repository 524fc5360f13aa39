"""Crashing actors on purpose: the tree restarts them, they reload durable state, nothing is lost.

Every test pairs a device first, then crashes one actor and checks that the
session is open again *without a new pairing* (no QR, no new link at the sandbox)
and that the durable creds are the ones from before.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from actors.mail import RunTransaction
from runtime.app import Runtime, open_runtime
from runtime.errors import ReplyAbandoned
from runtime.reply import call_durable
from stores.auth import PersistedAuth
from stores.errors import DurabilityError
from stores.memory import MemoryBackend
from stores.transactions import TransactionalStore
from stores.types import Batch
from tests.session.backends import InstrumentedBackend
from tests.session.helpers import Recorder, crash_and_wait_restart, sandbox_config, scanning_phone
from tests.session.memory_sandbox import MemorySandbox, open_memory_sandbox


async def instrumented_auth() -> tuple[PersistedAuth, InstrumentedBackend]:
    """A PersistedAuth over an instrumented memory backend (fresh creds)."""
    from stores.auth import open_auth_state

    backend = InstrumentedBackend(MemoryBackend())
    auth = await open_auth_state(backend)
    return auth, backend


async def paired(body: Any, **overrides: Any) -> None:
    """Pair on a memory sandbox, then run ``body(sb, rt, events, backend)``."""
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        auth, backend = await instrumented_auth()
        events = Recorder()
        config = sandbox_config(sb, auth, on_qr=scanning_phone(sb, nursery), **overrides)
        async with open_runtime(config, subscribe=events) as rt:
            await rt.wait_connected(timeout=120)
            await body(sb, rt, events, backend)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("victim", "restarted"),
    [
        ("connection", ["connection"]),
        ("signal_store", ["signal_store", "connection"]),
        ("persister", ["persister", "signal_store", "connection"]),
    ],
)
async def test_crashed_actor_is_restarted_rest_for_one_and_the_session_opens_again(
    autojump_clock, victim, restarted
):
    """A crash restarts the victim and the actors after it; open again, no re-pairing, no loss."""

    async def body(sb: MemorySandbox, rt: Runtime, events: Recorder, backend: Any) -> None:
        before = await rt.auth_state()
        links, qrs = sb.statistics().links, len(events.connection("qr"))
        refs = rt.primary.refs
        incarnations = {name: ref.statistics().incarnations for name, ref in refs.items()}
        await crash_and_wait_restart(refs[victim])
        await rt.wait_connected(timeout=60)
        await events.wait_for(lambda r: r.opens() == 2)
        grew = [n for n, ref in refs.items() if ref.statistics().incarnations > incarnations[n]]
        assert sorted(grew) == sorted(restarted)
        after = await rt.auth_state()
        assert after.me == before.me and after.next_pre_key_id == before.next_pre_key_id
        assert sb.statistics().links == links and len(events.connection("qr")) == qrs

    await paired(body)


async def test_signal_store_crash_mid_transaction_commits_nothing_and_restarts_clean(
    autojump_clock,
):
    """A transaction in flight when the signal store dies: caller told, nothing durable."""

    async def body(sb: MemorySandbox, rt: Runtime, events: Recorder, backend: Any) -> None:
        store = rt.primary.refs["signal_store"]
        hold = trio.Event()

        async def slow(tx: Any) -> None:
            await tx.set({"session": {"half": {"written": True}}})
            await hold.wait()

        receipt = await store.call(RunTransaction("k", slow))
        await trio.testing.wait_all_tasks_blocked()
        await crash_and_wait_restart(store)
        with pytest.raises(ReplyAbandoned):
            await receipt.wait(5)
        assert await backend.read_keys("session", ["half"]) == {}

        async def write(tx: Any) -> str:
            await tx.set({"session": {"whole": {"written": True}}})
            return "done"

        assert await call_durable(store, RunTransaction("k", write), timeout=5) == "done"
        assert await backend.read_keys("session", ["whole"]) == {"whole": {"written": True}}

    await paired(body)


async def test_persister_failing_mid_prekey_commit_restarts_tree_and_loses_nothing(
    autojump_clock,
):
    """DurabilityError while committing pre-keys: tree restarts, the upload is redone durably."""
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        auth, backend = await instrumented_auth()
        backend.fail_when = lambda batch: "pre-key" in batch.keys
        backend.fail_with = DurabilityError("instrumented", "fsync", OSError(5, "EIO"))
        events = Recorder()
        config = sandbox_config(sb, auth, on_qr=scanning_phone(sb, nursery))
        async with open_runtime(config, subscribe=events) as rt:
            await rt.wait_connected(timeout=120)
            creds = await rt.auth_state()
            assert creds.next_pre_key_id == 813
            assert rt.primary.refs["persister"].statistics().incarnations == 2
            assert len(await backend.read_keys("pre-key", ["1", "812"])) == 2
        assert [e["error"] for e in events.of("store_error")] == ["DurabilityError"]
        assert sb.statistics().pre_key_uploads == 1  # never uploaded keys that were not durable
        assert sb.statistics().links == 1
        nursery.cancel_scope.cancel()


async def test_prekeys_and_counters_are_durable_before_the_upload_is_sent(autojump_clock):
    """The network dies right after the pre-key commit: keys 1..812 and counters are durable."""
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        auth, backend = await instrumented_auth()
        seen: list[Any] = []

        def cut_network_after_prekeys(batch: Batch) -> None:
            if "pre-key" in batch.keys and not seen:
                seen.append(batch)
                assert sb.statistics().pre_key_uploads == 0  # not sent yet
                sb.faults.drop()

        backend.after_commit = cut_network_after_prekeys
        config = sandbox_config(sb, auth, on_qr=scanning_phone(sb, nursery))
        async with open_runtime(config) as rt:
            await rt.wait_connected(timeout=120)
        batch = seen[0]
        assert batch.creds is not None  # ONE atomic commit: keys and counters together
        assert (batch.creds.next_pre_key_id, batch.creds.first_unuploaded_pre_key_id) == (813, 813)
        assert sorted(map(int, batch.keys["pre-key"])) == list(range(1, 813))
        assert len(await backend.read_keys("pre-key", [str(i) for i in range(1, 813)])) == 812
        nursery.cancel_scope.cancel()


async def test_custom_signal_store_factory_is_used_instead_of_the_built_in(autojump_clock):
    """Config.signal_store builds the store; pairing and the pre-key top-up go through it."""
    built: list[Any] = []

    class RecordingStore(TransactionalStore):
        def __init__(self, read: Any, commit: Any, options: Any) -> None:
            super().__init__(read, commit)
            self.options = options
            self.batches = 0
            built.append(self)

        async def commit_batch(self, batch: Batch) -> int | None:
            self.batches += 1
            return await super().commit_batch(batch)

    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        auth, _backend = await instrumented_auth()
        config = sandbox_config(
            sb,
            auth,
            on_qr=scanning_phone(sb, nursery),
            signal_store=RecordingStore,
            signal_store_options={"flavour": "test"},
        )
        async with open_runtime(config) as rt:
            await rt.wait_connected(timeout=120)
        assert built and built[0].options == {"flavour": "test"}
        assert built[0].batches == 1  # the pre-key top-up
        nursery.cancel_scope.cancel()
