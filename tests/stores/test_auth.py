"""The user-facing entry points: open a location, get creds and keys, save, close."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

import stores
from stores.auth import AuthConfig, PersistedAuth, enter_backend, open_auth_state
from stores.errors import (
    CorruptStateError,
    DurabilityError,
    StoreClosedError,
    StoreError,
    StoreLockedError,
    WrongBackendError,
)
from stores.memory import MemoryBackend
from stores.transactions import TransactionalStore
from stores.types import Batch

Opener = Callable[[Path], Awaitable[PersistedAuth]]

DURABLE_OPENERS: dict[str, Opener] = {
    "native": lambda p: stores.use_native_file_auth_state(p),
    "multi_file": lambda p: stores.use_multi_file_auth_state(p),
    "sqlite": lambda p: stores.use_sqlite_auth_state(p / "auth.db"),
}


def test_public_names_exist() -> None:
    """Every name in stores.__all__ is importable from the package."""
    missing = [name for name in stores.__all__ if not hasattr(stores, name)]
    assert missing == []
    for name in ("use_native_file_auth_state", "TransactionalStore", "PersistedAuth"):
        assert name in stores.__all__


async def test_memory_auth_state_is_a_new_device() -> None:
    """use_memory_auth_state starts with fresh, valid creds and an empty key store."""
    async with await stores.use_memory_auth_state() as auth:
        assert auth.backend.backend_name == "memory"
        assert 0 < auth.state.creds.registration_id < 1 << 14
        assert not auth.state.creds.registered
        assert isinstance(auth.state.keys, TransactionalStore)
        assert await auth.state.keys.get("pre-key", ["1"]) == {}
        assert await auth.backend.read_creds() == auth.state.creds


@pytest.mark.parametrize("name", sorted(DURABLE_OPENERS))
async def test_new_device_creds_are_durable_before_return(tmp_path: Path, name: str) -> None:
    """An absent location gets fresh creds committed durably: reopening finds the same ones."""
    open_auth = DURABLE_OPENERS[name]
    auth = await open_auth(tmp_path)
    created = auth.state.creds
    await auth.aclose()
    async with await open_auth(tmp_path) as again:
        assert again.state.creds == created


@pytest.mark.parametrize("name", sorted(DURABLE_OPENERS))
async def test_keys_and_saved_creds_survive_reopen(tmp_path: Path, name: str) -> None:
    """Keys written through state.keys and creds saved with save_creds are there after reopen."""
    open_auth = DURABLE_OPENERS[name]
    async with await open_auth(tmp_path) as auth:
        async with auth.keys.transaction("upload") as tx:
            await tx.set({"pre-key": {"1": {"private": b"a" * 32, "public": b"b" * 32}}})
            auth.state.creds.next_pre_key_id = 2
            tx.set_creds(auth.state.creds)
        creds = auth.state.creds.copy()
        creds.platform = "smba"
        seq = await auth.save_creds(creds)
        assert seq > 0 and auth.state.creds is creds
    async with await open_auth(tmp_path) as auth:
        assert auth.state.creds == creds
        assert auth.state.creds.next_pre_key_id == 2
        assert await auth.state.keys.get("pre-key", ["1"]) == {
            "1": {"private": b"a" * 32, "public": b"b" * 32}
        }


async def test_second_owner_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    """Opening a location a live owner holds raises StoreLockedError and leaves it alone."""
    async with await stores.use_native_file_auth_state(tmp_path / "auth") as auth:
        before = sorted(os.listdir(tmp_path / "auth"))
        with pytest.raises(StoreLockedError):
            await stores.use_native_file_auth_state(tmp_path / "auth")
        assert sorted(os.listdir(tmp_path / "auth")) == before
        assert await auth.backend.read_creds() == auth.state.creds


async def test_foreign_data_is_an_error_not_a_new_device(tmp_path: Path) -> None:
    """A Baileys directory opened as native raises WrongBackendError and writes nothing."""
    async with await stores.use_multi_file_auth_state(tmp_path / "baileys") as auth:
        created = auth.state.creds
    listing = sorted(os.listdir(tmp_path / "baileys"))
    with pytest.raises(WrongBackendError):
        await stores.use_native_file_auth_state(tmp_path / "baileys")
    assert sorted(os.listdir(tmp_path / "baileys")) == listing
    async with await stores.use_multi_file_auth_state(tmp_path / "baileys") as auth:
        assert auth.state.creds == created


async def test_sqlite_accounts_are_separate_devices(tmp_path: Path) -> None:
    """Two accounts in one SQLite file get their own creds and keys."""
    db = tmp_path / "bots.db"
    async with (
        await stores.use_sqlite_auth_state(db, account="one") as one,
        await stores.use_sqlite_auth_state(db, account="two") as two,
    ):
        assert one.state.creds != two.state.creds
        await one.state.keys.set({"session": {"a": b"1"}})
        assert await two.state.keys.get("session", ["a"]) == {}


async def test_keys_without_creds_never_become_a_new_device() -> None:
    """open_auth_state refuses a backend that holds keys but no creds, and commits nothing."""
    backend = MemoryBackend()
    await backend.commit(Batch(keys={"session": {"a": b"live"}}))
    seq = backend.seq
    with pytest.raises(CorruptStateError, match="keys but no creds"):
        await open_auth_state(backend, close_backend=False)
    assert backend.seq == seq and await backend.read_creds() is None


async def test_open_auth_state_on_a_custom_backend_reuses_its_creds() -> None:
    """A backend that already holds creds is opened as is, with no new creds committed."""
    backend = MemoryBackend()
    async with await open_auth_state(backend, close_backend=False) as first:
        created = first.state.creds
    seq = backend.seq
    async with await open_auth_state(backend) as second:
        assert second.state.creds == created
        assert backend.seq == seq
    with pytest.raises(StoreClosedError):
        await backend.read_creds()


async def test_failed_new_device_commit_raises_and_closes_backend() -> None:
    """If the fresh creds cannot be made durable, opening fails and the backend is closed."""

    class FailingBackend(MemoryBackend):
        async def commit(self, batch: Batch) -> int:
            raise DurabilityError(self.location, "fsync")

    backend = FailingBackend()
    with pytest.raises(DurabilityError):
        await open_auth_state(backend)
    with pytest.raises(StoreClosedError):
        await backend.read_creds()


async def test_config_wires_a_store_over_the_same_backend() -> None:
    """config names the backend and builds a transaction layer committing through a given call."""
    commits: list[Batch] = []
    async with await stores.use_memory_auth_state() as auth:
        config = auth.config
        assert isinstance(config, AuthConfig)
        assert config.backend is auth.backend
        assert config.backend_name == "memory" and config.location == auth.backend.location
        assert config.creds == auth.state.creds

        async def via_persister(batch: Batch) -> int:
            commits.append(batch)
            return await auth.backend.commit(batch)

        actor_store = config.make_signal_store(via_persister)
        await actor_store.set({"session": {"a": b"1"}})
        assert len(commits) == 1
        assert await auth.backend.read_keys("session", ["a"]) == {"a": b"1"}
        newer = auth.state.creds.copy()
        newer.platform = "smbi"
        await auth.save_creds(newer)
        assert auth.config.creds is newer  # the runtime starts from the newest saved creds


async def test_a_location_used_only_through_its_backend_holds_no_transaction_layer() -> None:
    """backend and config (what a runtime session uses) make no key store; state makes one."""
    async with await stores.use_memory_auth_state() as auth:
        assert auth.config.backend is auth.backend
        assert auth._store is None and auth._state is None
        creds = auth.config.creds
        assert auth.state.creds is creds and auth.state.keys is auth.keys
        assert isinstance(auth._store, TransactionalStore)


async def test_aclose_waits_closes_and_is_idempotent() -> None:
    """aclose closes the backend (later use raises StoreClosedError); a second aclose is a no-op."""
    auth = await stores.use_memory_auth_state()
    await auth.aclose()
    await auth.aclose()
    with pytest.raises(StoreClosedError):
        await auth.backend.commit(Batch(keys={"session": {"a": b"1"}}))
    with pytest.raises(StoreClosedError):
        await auth.state.keys.get("session", ["a"])


async def test_enter_backend_accepts_awaitables_and_context_managers() -> None:
    """enter_backend opens both opener shapes and closes the backend with the exit stack."""
    plain = MemoryBackend("plain")
    managed = MemoryBackend("managed")

    async def awaitable() -> MemoryBackend:
        await trio.lowlevel.checkpoint()
        return plain

    @asynccontextmanager
    async def context() -> AsyncIterator[MemoryBackend]:
        async with managed:
            yield managed

    async with AsyncExitStack() as stack:
        assert await enter_backend(stack, awaitable()) is plain
        assert await enter_backend(stack, context()) is managed
    for backend in (plain, managed):
        with pytest.raises(StoreClosedError):
            await backend.read_creds()


async def test_enter_backend_refuses_non_backends() -> None:
    """An opener yielding something that is not a Persistence raises StoreError."""

    async def not_a_backend() -> object:
        await trio.lowlevel.checkpoint()
        return object()

    async with AsyncExitStack() as stack:
        with pytest.raises(StoreError, match="Persistence"):
            await enter_backend(stack, not_a_backend())


async def test_save_creds_burst_costs_few_disk_commits(tmp_path: Path) -> None:
    """10,000 concurrent save_creds: <= 100 disk commits, <= 2 after the last call, newest kept."""
    auth = await stores.use_native_file_auth_state(tmp_path)
    base = auth.state.creds
    groups_before = auth.backend.statistics().groups  # type: ignore[attr-defined]  # native
    groups_at_last: list[int] = []
    issued = 0
    newest = base.copy()

    async def save() -> None:
        nonlocal issued, newest
        issued += 1
        creds = base.copy()
        creds.account_sync_counter = issued
        if issued == 10_000:
            newest = creds
            groups_at_last.append(auth.backend.statistics().groups)  # type: ignore[attr-defined]
        await auth.save_creds(creds)

    async with auth, trio.open_nursery() as nursery:
        for _ in range(10_000):
            nursery.start_soon(save)
    groups = auth.backend.statistics().groups  # type: ignore[attr-defined]
    assert groups - groups_before <= 100
    assert groups - groups_at_last[0] <= 2
    assert auth.state.creds is newest  # the newest acknowledged snapshot, whatever woke last
    async with await stores.use_native_file_auth_state(tmp_path) as again:
        assert again.state.creds.account_sync_counter == 10_000


async def test_save_creds_failure_reaches_every_caller_not_yet_durable() -> None:
    """A failing commit fails the saves it carried; state.creds keeps the last durable one."""

    class FailingOnce(MemoryBackend):
        fail = False

        async def commit(self, batch: Batch) -> int:
            if self.fail:
                raise DurabilityError(self.location, "injected fsync")
            return await super().commit(batch)

    backend = FailingOnce()
    auth = await open_auth_state(backend)
    durable = auth.state.creds
    backend.fail = True
    errors: list[BaseException] = []

    async def save(n: int) -> None:
        creds = durable.copy()
        creds.account_sync_counter = n
        try:
            await auth.save_creds(creds)
        except DurabilityError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for n in range(1, 51):
            nursery.start_soon(save, n)
    assert len(errors) == 50
    assert auth.state.creds is durable
    assert await backend.read_creds() == durable
    await auth.aclose()


def test_importing_one_stores_module_stays_light() -> None:
    """`import stores.keys` loads no backend, no trio and no sqlite (names load on first use)."""
    import subprocess
    import sys

    probe = (
        "import sys, stores.keys, stores.errors\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('trio', 'sqlite3')"
        " or m in ('stores.auth', 'stores.native', 'stores.sqlite', 'stores.multi_file')]\n"
        "print(','.join(sorted(bad)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_public_stores_name_resolves_lazily() -> None:
    """Each name in stores.__all__ resolves; an unknown one is an AttributeError."""
    import pytest

    import stores

    assert [n for n in stores.__all__ if getattr(stores, n, None) is None] == []
    with pytest.raises(AttributeError):
        _ = stores.not_a_name  # type: ignore[attr-defined]  # the point of the test


async def test_a_transaction_patch_merges_into_the_library_creds_in_order() -> None:
    """As a library, PersistedAuth owns creds: a patch keeps a field saved before it."""
    async with await stores.use_memory_auth_state() as auth:
        saved = auth.state.creds.copy()
        saved.routing_info = b"saved"
        await auth.save_creds(saved)
        async with auth.keys.transaction("receipt") as tx:
            await tx.set({"pre-key": {"5": {"private": b"a" * 32, "public": b"b" * 32}}})
            tx.patch_creds(stores.CredsPatch.of(next_pre_key_id=6))
        durable = await auth.backend.read_creds()
        assert durable is not None
        assert (durable.routing_info, durable.next_pre_key_id) == (b"saved", 6)
        assert auth.state.creds.next_pre_key_id == 6
