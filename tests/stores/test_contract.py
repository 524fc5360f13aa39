"""The store contract run over every backend, and transactions through each of them."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest

from stores.memory import MemoryBackend
from tests.stores.contract import (
    BackendKit,
    PersistenceContract,
    SignalStoreContract,
    SignalStoreKit,
    TransactionContract,
    kit_from_opener,
    signal_store_kit_over,
)


def _memory(_location: Path) -> MemoryBackend:
    return MemoryBackend()


def _module_or_skip(name: str) -> Any:
    # Only while another helper's backend module is still absent from the tree.
    try:
        return importlib.import_module(f"stores.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"stores.{name}":
            raise
        pytest.skip(f"stores.{name} is not in the tree yet")


def _kit(name: str) -> BackendKit:
    if name == "memory":

        async def open_memory(location: Path) -> MemoryBackend:
            return _memory(location)

        return kit_from_opener("memory", False, open_memory)
    if name == "native":
        native = _module_or_skip("native")
        return kit_from_opener("native", True, lambda loc: native.open_native_backend(loc))
    if name == "multi_file":
        multi = _module_or_skip("multi_file")
        return kit_from_opener("multi_file", True, lambda loc: multi.open_multi_file_backend(loc))
    sqlite = _module_or_skip("sqlite")
    return kit_from_opener("sqlite", True, lambda loc: sqlite.open_sqlite_backend(loc))


@pytest.fixture(params=["memory", "native", "multi_file", "sqlite"])
def backend_kit(request: pytest.FixtureRequest) -> BackendKit:
    return _kit(request.param)


@pytest.fixture
def signal_store_kit(backend_kit: BackendKit) -> SignalStoreKit:
    return signal_store_kit_over(backend_kit)


class TestPersistenceContract(PersistenceContract):
    """Every backend keeps the Persistence contract."""


class TestTransactionContract(TransactionContract):
    """Every backend carries serializable transactions."""


class TestSignalStoreContract(SignalStoreContract):
    """TransactionalStore over every backend keeps the SignalStore contract."""
