"""The store contract as a reusable test suite: run it against any ``Persistence``.

Use it by providing a ``backend_kit`` fixture returning a ``BackendKit`` and
subclassing the suite classes in a test module::

    @pytest.fixture
    def backend_kit() -> BackendKit:
        return kit_from_opener("mine", durable=True, opener=open_my_backend)

    class TestMyBackend(PersistenceContract): ...
    class TestMyBackendTransactions(TransactionContract): ...

A ``SignalStore`` written from scratch (not ``TransactionalStore``) runs
``SignalStoreContract`` with a ``signal_store_kit`` fixture returning a
``SignalStoreKit``. docs/custom-stores.md walks through both.

``open(location)`` is an async context manager yielding an open backend on a path
that may not exist yet (an absent location is a new device); ``durable`` kits must
show committed data after closing and opening the same location again.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from stores.auth import enter_backend
from stores.creds import AuthCreds, CredsPatch, init_auth_creds
from stores.errors import InvalidValueError, StoreClosedError, TransactionConflict
from stores.transactions import StoreTransaction, TransactionalStore
from stores.types import (
    KEY_TYPES,
    Batch,
    KeyWrites,
    Persistence,
    SignalStore,
    StoreSnapshot,
    Transaction,
    Value,
)

__all__ = [
    "SAMPLE_VALUES",
    "BackendKit",
    "PersistenceContract",
    "SignalStoreContract",
    "SignalStoreKit",
    "TransactionContract",
    "kit_from_opener",
    "make_creds",
    "outside_writer",
    "signal_store_kit_over",
]


@dataclass(frozen=True)
class BackendKit:
    """How the contract suite opens a backend: a name, durability, and an opener."""

    name: str
    durable: bool
    open: Callable[[Path], AbstractAsyncContextManager[Persistence]]


def kit_from_opener(name: str, durable: bool, opener: Callable[[Path], Any]) -> BackendKit:
    """A kit from an opener returning either an awaitable backend or an async context manager."""

    @asynccontextmanager
    async def open_at(location: Path) -> AsyncIterator[Persistence]:
        async with AsyncExitStack() as stack:
            yield await enter_backend(stack, opener(location))

    return BackendKit(name=name, durable=durable, open=open_at)


@dataclass(frozen=True)
class SignalStoreKit:
    """How ``SignalStoreContract`` gets a fresh, empty ``SignalStore`` at a location."""

    name: str
    open: Callable[[Path], AbstractAsyncContextManager[SignalStore]]


def signal_store_kit_over(kit: BackendKit) -> SignalStoreKit:
    """The kit of ``TransactionalStore`` over a backend kit's backend."""

    @asynccontextmanager
    async def open_store(location: Path) -> AsyncIterator[SignalStore]:
        async with kit.open(location) as backend:
            yield TransactionalStore(backend.read_keys, backend.commit)

    return SignalStoreKit(name=f"transactional over {kit.name}", open=open_store)


def make_creds() -> AuthCreds:
    """Fresh, valid creds with a few fields pairing would set, to see they round-trip."""
    creds = init_auth_creds()
    creds.me = {"id": "15550001111:7@s.whatsapp.net", "lid": "99887766:7@lid", "name": "bot"}
    creds.platform = "android"
    creds.registered = True
    creds.next_pre_key_id = 31
    creds.first_unuploaded_pre_key_id = 31
    creds.routing_info = b"\x08\x01\x08\x05"
    return creds


# One value per key type in the plain shape Baileys keeps (see stores.keys).
SAMPLE_VALUES: dict[str, dict[str, Value]] = {
    "pre-key": {"1": {"private": bytes(range(32)), "public": bytes(range(32, 64))}},
    "session": {
        "15550001111.0": {
            "_sessions": {
                "BQ3x9YzP0kEXAMPLEbase64==": {
                    "registrationId": 4242,
                    "currentRatchet": {"previousCounter": 0, "rootKey": "cm9vdA=="},
                    "indexInfo": {"closed": -1, "baseKeyType": 1, "used": 1700000000000},
                    "pendingPreKey": None,
                    "chains": {"BQabc": {"chainKey": {"counter": 3, "key": "a2V5"}}},
                }
            },
            "version": "v1",
        }
    },
    "sender-key": {"120363000000000000@g.us::15550001111::0": b'{"senderKeyStates":[]}'},
    "sender-key-memory": {"120363000000000000@g.us": {"15550001111:7@s.whatsapp.net": True}},
    "app-state-sync-key": {
        "AAAAAEBf": {
            "keyData": bytes(range(32)),
            "fingerprint": {"rawId": 123456, "currentIndex": 2, "deviceIndexes": [0, 2]},
            "timestamp": 1700000000123,
        }
    },
    "app-state-sync-version": {
        "regular_high": {
            "version": 17,
            "hash": bytes(128),
            "indexValueMap": {"q83vEjRWeJA=": {"valueMac": bytes(range(32))}},
        }
    },
    "lid-mapping": {"15550001111": "99887766", "99887766_reverse": "15550001111"},
    "device-list": {"15550001111": ["0", "7", "12"]},
    "tctoken": {
        "15550001111@s.whatsapp.net": {"token": b"\x01\x02\x03", "timestamp": "1700000000"}
    },
    "identity-key": {"15550001111.0": b"\x05" + bytes(range(32))},
    "received-message": {
        "15550001111.0": {
            "ids": ["3EB0AA", "3EB0BB"],
            "messages": {"3EB0AA": b"\n\x02hi", "3EB0BB": b""},
        }
    },
    "sent-message": {
        "15550001111@s.whatsapp.net": {"ids": ["3EB0CC"], "messages": {"3EB0CC": b"\n\x01x"}}
    },
}


def _all_samples() -> dict[str, dict[str, Value]]:
    return copy.deepcopy(SAMPLE_VALUES)


async def _commit_samples(backend: Persistence) -> int:
    return await backend.commit(Batch(keys=_all_samples()))


def _store_over(backend: Persistence) -> TransactionalStore:
    return TransactionalStore(backend.read_keys, backend.commit)


class _KitTest:
    """Shared helpers: a fresh location per test and reopening it."""

    @pytest.fixture
    def location(self, tmp_path: Path) -> Path:
        return tmp_path / "auth"

    @staticmethod
    def reopen_or_skip(kit: BackendKit) -> None:
        if not kit.durable:
            pytest.skip(f"{kit.name} keeps nothing across reopen, by design")


class PersistenceContract(_KitTest):
    """What every backend promises: plain get/set/delete, atomic commits, durability."""

    async def test_implements_persistence(self, backend_kit: BackendKit, location: Path) -> None:
        """The backend satisfies stores.Persistence and names itself."""
        async with backend_kit.open(location) as backend:
            assert isinstance(backend, Persistence)
            assert backend.backend_name
            assert backend.location

    async def test_empty_location_is_a_new_device(
        self, backend_kit: BackendKit, location: Path
    ) -> None:
        """An absent location opens with no creds, no keys and an empty snapshot."""
        async with backend_kit.open(location) as backend:
            assert await backend.read_creds() is None
            for type_ in KEY_TYPES:
                assert await backend.read_keys(type_, ["1", "x"]) == {}
            assert await backend.snapshot() == StoreSnapshot(creds=None, keys={})

    @pytest.mark.parametrize("type_", KEY_TYPES)
    async def test_values_round_trip_exactly(
        self, backend_kit: BackendKit, location: Path, type_: str
    ) -> None:
        """Every key type's plain value shape reads back equal, with the same types inside."""
        async with backend_kit.open(location) as backend:
            await backend.commit(Batch(keys={type_: copy.deepcopy(SAMPLE_VALUES[type_])}))
            got = await backend.read_keys(type_, list(SAMPLE_VALUES[type_]))
        assert got == SAMPLE_VALUES[type_]
        assert _shape(got) == _shape(SAMPLE_VALUES[type_])

    async def test_get_returns_only_present_ids(
        self, backend_kit: BackendKit, location: Path
    ) -> None:
        """read_keys leaves absent ids out; asking twice for one id is harmless."""
        async with backend_kit.open(location) as backend:
            await backend.commit(Batch(keys={"session": {"a": b"1", "b": b"2"}}))
            assert await backend.read_keys("session", ["a", "zz", "a"]) == {"a": b"1"}
            assert await backend.read_keys("session", []) == {}
            assert await backend.read_keys("sender-key", ["a"]) == {}

    async def test_set_overwrites_and_none_deletes(
        self, backend_kit: BackendKit, location: Path
    ) -> None:
        """A later value replaces an earlier one; None deletes; deleting an absent id is a no-op."""
        async with backend_kit.open(location) as backend:
            await backend.commit(Batch(keys={"session": {"a": b"1", "b": b"2"}}))
            await backend.commit(Batch(keys={"session": {"a": b"3", "b": None}}))
            await backend.commit(Batch(keys={"pre-key": {"404": None}}))
            assert await backend.read_keys("session", ["a", "b"]) == {"a": b"3"}
            assert await backend.read_keys("pre-key", ["404"]) == {}
            assert (await backend.snapshot()).keys == {"session": {"a": b"3"}}

    async def test_commit_returns_increasing_sequence_numbers(
        self, backend_kit: BackendKit, location: Path
    ) -> None:
        """Each commit returns a durable sequence number larger than the previous one."""
        async with backend_kit.open(location) as backend:
            seqs = [
                await backend.commit(Batch(keys={"session": {str(i): bytes([i])}}))
                for i in range(5)
            ]
        assert seqs == sorted(seqs) and len(set(seqs)) == 5

    async def test_creds_and_keys_commit_together(
        self, backend_kit: BackendKit, location: Path
    ) -> None:
        """A batch with creds and keys makes both visible together."""
        creds = make_creds()
        async with backend_kit.open(location) as backend:
            await backend.commit(Batch(keys={"pre-key": SAMPLE_VALUES["pre-key"]}, creds=creds))
            assert await backend.read_creds() == creds
            assert await backend.read_keys("pre-key", ["1"]) == SAMPLE_VALUES["pre-key"]
            snap = await backend.snapshot()
        assert snap.creds == creds
        assert snap.keys == {"pre-key": SAMPLE_VALUES["pre-key"]}

    async def test_creds_round_trip_exactly(self, backend_kit: BackendKit, location: Path) -> None:
        """Creds read back equal to what was committed, field by field."""
        creds = make_creds()
        async with backend_kit.open(location) as backend:
            await backend.commit(Batch(creds=creds))
            back = await backend.read_creds()
        assert back == creds

    async def test_concurrent_commits_all_land(
        self, backend_kit: BackendKit, location: Path
    ) -> None:
        """Many concurrent commits (a group-commit workload) are all applied."""
        async with backend_kit.open(location) as backend:
            async with trio.open_nursery() as nursery:
                for i in range(16):
                    batch = Batch(keys={"session": {f"s{i}": bytes([i]) * 64}})
                    nursery.start_soon(backend.commit, batch)
            got = await backend.read_keys("session", [f"s{i}" for i in range(16)])
        assert got == {f"s{i}": bytes([i]) * 64 for i in range(16)}

    async def test_snapshot_equals_the_committed_state(
        self, backend_kit: BackendKit, location: Path
    ) -> None:
        """After a series of commits, snapshot() equals a model applying them in order."""
        model: dict[str, dict[str, Value]] = {}
        creds = make_creds()
        batches = [
            Batch(keys=_all_samples(), creds=creds),
            Batch(keys={"session": {"15550001111.0": None, "new": b"n"}}),
            Batch(keys={"pre-key": {"2": {"private": b"p" * 32, "public": b"q" * 32}}}),
            Batch(keys={"device-list": {"15550001111": None}, "lid-mapping": {"1": "2"}}),
        ]
        async with backend_kit.open(location) as backend:
            for batch in batches:
                await backend.commit(batch)
                _apply(model, batch)
            snap = await backend.snapshot()
        assert snap == StoreSnapshot(creds=creds, keys=model)

    async def test_reopen_shows_committed_data(
        self, backend_kit: BackendKit, location: Path
    ) -> None:
        """Closing and reopening a durable location shows every committed key and the creds."""
        self.reopen_or_skip(backend_kit)
        creds = make_creds()
        async with backend_kit.open(location) as backend:
            await _commit_samples(backend)
            await backend.commit(Batch(keys={"session": {"gone": b"x"}}, creds=creds))
            await backend.commit(Batch(keys={"session": {"gone": None}}))
            before = await backend.snapshot()
        async with backend_kit.open(location) as backend:
            assert await backend.read_creds() == creds
            assert await backend.snapshot() == before
            for type_, values in SAMPLE_VALUES.items():
                assert await backend.read_keys(type_, list(values)) == values

    async def test_sequence_continues_after_reopen(
        self, backend_kit: BackendKit, location: Path
    ) -> None:
        """Sequence numbers keep increasing across a reopen."""
        self.reopen_or_skip(backend_kit)
        async with backend_kit.open(location) as backend:
            first = await backend.commit(Batch(keys={"session": {"a": b"1"}}))
        async with backend_kit.open(location) as backend:
            second = await backend.commit(Batch(keys={"session": {"b": b"2"}}))
        assert second > first

    async def test_stored_values_do_not_alias_caller_objects(
        self, backend_kit: BackendKit, location: Path
    ) -> None:
        """Mutating a committed or a returned value does not change what the backend holds."""
        value: dict[str, Value] = {"list": [1, 2], "map": {"k": b"v"}}
        async with backend_kit.open(location) as backend:
            await backend.commit(Batch(keys={"session": {"a": value}}))
            value["list"].append(3)
            got = await backend.read_keys("session", ["a"])
            got["a"]["map"]["k"] = b"changed"
            assert await backend.read_keys("session", ["a"]) == {
                "a": {"list": [1, 2], "map": {"k": b"v"}}
            }

    async def test_unknown_key_type_is_refused(
        self, backend_kit: BackendKit, location: Path
    ) -> None:
        """A batch with an unknown key type raises InvalidValueError and changes nothing."""
        async with backend_kit.open(location) as backend:
            await backend.commit(Batch(keys={"session": {"a": b"1"}}))
            with pytest.raises(InvalidValueError, match="'no-such-type' is not one of"):
                await backend.commit(
                    Batch(keys={"session": {"a": b"2"}, "no-such-type": {"x": b"1"}})
                )
            assert await backend.read_keys("session", ["a"]) == {"a": b"1"}

    async def test_an_unmerged_creds_patch_is_refused(
        self, backend_kit: BackendKit, location: Path
    ) -> None:
        """A batch holding a creds patch (the owner merges those) raises and changes nothing."""
        async with backend_kit.open(location) as backend:
            before = await backend.read_creds()
            patch = CredsPatch.of(routing_info=b"patched")
            with pytest.raises(InvalidValueError):
                await backend.commit(Batch(keys={"session": {"a": b"1"}}, patch=patch))
            assert await backend.read_keys("session", ["a"]) == {}
            assert await backend.read_creds() == before

    async def test_closed_backend_refuses_commits(
        self, backend_kit: BackendKit, location: Path
    ) -> None:
        """After aclose, commit raises StoreClosedError."""
        async with backend_kit.open(location) as backend:
            await backend.aclose()
            with pytest.raises(StoreClosedError):
                await backend.commit(Batch(keys={"session": {"a": b"1"}}))


class TransactionContract(_KitTest):
    """Transaction semantics of the one transaction layer, over this backend."""

    async def test_transaction_commits_reads_and_writes(
        self, backend_kit: BackendKit, location: Path
    ) -> None:
        """A transaction sees its own writes and its commit reaches the backend."""
        async with backend_kit.open(location) as backend:
            store = _store_over(backend)
            async with store.transaction("k") as tx:
                await tx.set({"session": {"a": b"1"}, "pre-key": {"1": None}})
                assert await tx.get("session", ["a"]) == {"a": b"1"}
            assert await backend.read_keys("session", ["a"]) == {"a": b"1"}

    async def test_discarded_transaction_leaves_backend_untouched(
        self, backend_kit: BackendKit, location: Path
    ) -> None:
        """An exception in the block leaves the backend exactly as before."""
        async with backend_kit.open(location) as backend:
            await _commit_samples(backend)
            before = await backend.snapshot()
            store = _store_over(backend)
            with pytest.raises(KeyError):
                async with store.transaction("k") as tx:
                    await tx.set({"session": {"15550001111.0": None, "b": b"2"}})
                    raise KeyError("abort")
            assert await backend.snapshot() == before

    async def test_creds_and_keys_in_one_transaction_survive_reopen(
        self, backend_kit: BackendKit, location: Path
    ) -> None:
        """Pre-keys and the creds counters committed in one transaction are read back together."""
        creds = make_creds()
        pre_keys = {
            str(i): {"private": bytes([i]) * 32, "public": bytes([i + 1]) * 32}
            for i in range(31, 41)
        }
        async with backend_kit.open(location) as backend:
            store = _store_over(backend)
            async with store.transaction("pre-key-upload") as tx:
                await tx.set({"pre-key": pre_keys})
                creds.next_pre_key_id = 41
                tx.set_creds(creds)
            if not backend_kit.durable:
                assert await backend.read_creds() == creds
                assert await backend.read_keys("pre-key", list(pre_keys)) == pre_keys
                return
        async with backend_kit.open(location) as backend:
            assert await backend.read_creds() == creds
            assert await backend.read_keys("pre-key", list(pre_keys)) == pre_keys

    async def test_concurrent_increments_are_serializable(
        self, backend_kit: BackendKit, location: Path
    ) -> None:
        """Concurrent read-modify-write callbacks on different keys lose no update."""

        async def bump(tx: StoreTransaction) -> None:
            found = await tx.get("sender-key-memory", ["counter"])
            n = found.get("counter", {"n": 0})["n"]
            await trio.lowlevel.checkpoint()
            await tx.set({"sender-key-memory": {"counter": {"n": n + 1}}})

        async with backend_kit.open(location) as backend:
            store = _store_over(backend)
            async with trio.open_nursery() as nursery:
                for i in range(6):
                    nursery.start_soon(store.run_transaction, f"k{i}", bump)
            assert await backend.read_keys("sender-key-memory", ["counter"]) == {
                "counter": {"n": 6}
            }

    async def test_conflict_raised_from_context_form(
        self, backend_kit: BackendKit, location: Path
    ) -> None:
        """A read overwritten by another commit before exit raises TransactionConflict."""
        async with backend_kit.open(location) as backend:
            store = _store_over(backend)
            await store.set({"session": {"a": b"1"}})
            async with outside_writer(store) as write:
                with pytest.raises(TransactionConflict):
                    async with store.transaction("k") as tx:
                        await tx.get("session", ["a"])
                        await write({"session": {"a": b"2"}})
                        await tx.set({"session": {"b": b"derived"}})
            assert await backend.read_keys("session", ["a", "b"]) == {"a": b"2"}


@asynccontextmanager
async def outside_writer(
    store: SignalStore,
) -> AsyncIterator[Callable[[KeyWrites], Awaitable[None]]]:
    """A writer task started outside any transaction, for making concurrent commits on cue.

    Child tasks inherit the spawning task's transaction; this one is spawned before.
    """
    send, receive = trio.open_memory_channel[tuple[KeyWrites, trio.Event]](0)

    async def serve() -> None:
        async for data, done in receive:
            await store.set(data)
            done.set()

    async def write(data: KeyWrites) -> None:
        done = trio.Event()
        await send.send((data, done))
        await done.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        yield write
        await send.aclose()


async def _bump(tx: Transaction) -> int:
    found = await tx.get("sender-key-memory", ["counter"])
    n = int(found.get("counter", {"n": 0})["n"])
    await trio.lowlevel.checkpoint()
    await tx.set({"sender-key-memory": {"counter": {"n": n + 1}}})
    return n


class SignalStoreContract(_KitTest):
    """What any SignalStore promises, whatever its implementation (fixture: signal_store_kit)."""

    async def test_is_a_signal_store(
        self, signal_store_kit: SignalStoreKit, location: Path
    ) -> None:
        """The store satisfies the stores.SignalStore protocol."""
        async with signal_store_kit.open(location) as store:
            assert isinstance(store, SignalStore)

    async def test_get_set_delete(self, signal_store_kit: SignalStoreKit, location: Path) -> None:
        """get returns only present ids; None deletes; deleting an absent pre-key is a no-op."""
        async with signal_store_kit.open(location) as store:
            await store.set(_all_samples())
            for type_, values in SAMPLE_VALUES.items():
                assert await store.get(type_, [*values, "absent"]) == values
            await store.set({"session": {"15550001111.0": None}, "pre-key": {"404": None}})
            assert await store.get("session", ["15550001111.0"]) == {}
            assert await store.get("pre-key", ["1", "404"]) == SAMPLE_VALUES["pre-key"]

    async def test_transaction_reads_its_writes_and_hides_them(
        self, signal_store_kit: SignalStoreKit, location: Path
    ) -> None:
        """Inside: the transaction's own writes; outside: the committed value until exit."""
        async with signal_store_kit.open(location) as store:
            await store.set({"session": {"a": b"old"}})
            async with trio.open_nursery() as nursery:
                seen: list[dict[str, Value]] = []
                opened = trio.Event()
                release = trio.Event()

                async def writer() -> None:
                    async with store.transaction("k") as tx:
                        await tx.set({"session": {"a": b"new"}})
                        assert await tx.get("session", ["a"]) == {"a": b"new"}
                        assert store.in_transaction()
                        opened.set()
                        await release.wait()

                nursery.start_soon(writer)
                await opened.wait()
                assert not store.in_transaction()
                seen.append(await store.get("session", ["a"]))
                release.set()
            assert seen == [{"a": b"old"}]
            assert await store.get("session", ["a"]) == {"a": b"new"}

    async def test_exception_discards_the_transaction(
        self, signal_store_kit: SignalStoreKit, location: Path
    ) -> None:
        """An exception leaving the block discards all its writes."""
        async with signal_store_kit.open(location) as store:
            with pytest.raises(LookupError):
                async with store.transaction("k") as tx:
                    await tx.set({"session": {"a": b"1"}, "pre-key": SAMPLE_VALUES["pre-key"]})
                    raise LookupError("abort")
            assert await store.get("session", ["a"]) == {}
            assert await store.get("pre-key", ["1"]) == {}

    async def test_nested_same_key_joins(
        self, signal_store_kit: SignalStoreKit, location: Path
    ) -> None:
        """A nested transaction on the same key sees and commits with the outer one."""
        async with signal_store_kit.open(location) as store:
            async with store.transaction("k") as outer:
                await outer.set({"session": {"outer": b"1"}})
                async with store.transaction("k") as inner:
                    assert await inner.get("session", ["outer"]) == {"outer": b"1"}
                    await inner.set({"session": {"inner": b"2"}})
                assert await outer.get("session", ["inner"]) == {"inner": b"2"}
            assert await store.get("session", ["outer", "inner"]) == {
                "outer": b"1",
                "inner": b"2",
            }

    async def test_run_transaction_loses_no_update(
        self, signal_store_kit: SignalStoreKit, location: Path
    ) -> None:
        """Concurrent read-modify-write callbacks on different keys all take effect."""
        async with signal_store_kit.open(location) as store:
            async with trio.open_nursery() as nursery:
                for i in range(8):
                    nursery.start_soon(store.run_transaction, f"k{i}", _bump)
            assert await store.get("sender-key-memory", ["counter"]) == {"counter": {"n": 8}}

    async def test_context_form_is_serializable(
        self, signal_store_kit: SignalStoreKit, location: Path
    ) -> None:
        """Two interleaved increments either both land or one raises TransactionConflict."""
        async with signal_store_kit.open(location) as store:
            landed = 0

            async def once(key: str) -> None:
                nonlocal landed
                try:
                    async with store.transaction(key) as tx:
                        await _bump(tx)
                        await trio.lowlevel.checkpoint()
                    landed += 1
                except TransactionConflict:
                    pass

            async with trio.open_nursery() as nursery:
                nursery.start_soon(once, "a")
                nursery.start_soon(once, "b")
            assert landed >= 1
            assert await store.get("sender-key-memory", ["counter"]) == {"counter": {"n": landed}}


def _apply(model: dict[str, dict[str, Value]], batch: Batch) -> None:
    for type_, entries in batch.keys.items():
        for id_, value in entries.items():
            if value is None:
                model.get(type_, {}).pop(id_, None)
            else:
                model.setdefault(type_, {})[id_] = copy.deepcopy(value)
    for type_ in [t for t, ids in model.items() if not ids]:
        del model[type_]


def _shape(value: Value) -> Any:
    """The value with every leaf replaced by its type: equality must not hide int vs str."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__
