"""The store contract over encrypted native and SQLite stores: encryption changes nothing."""

from __future__ import annotations

import pytest

from stores.encryption import StoreKey
from stores.native import open_native_backend
from stores.sqlite import open_sqlite_backend
from tests.stores.contract import (
    BackendKit,
    PersistenceContract,
    SignalStoreContract,
    SignalStoreKit,
    TransactionContract,
    kit_from_opener,
    signal_store_kit_over,
)


@pytest.fixture(params=["native", "sqlite"])
def backend_kit(request: pytest.FixtureRequest) -> BackendKit:
    key = StoreKey.generate()
    if request.param == "native":
        return kit_from_opener(
            "native-encrypted", True, lambda loc: open_native_backend(loc, encryption_key=key)
        )
    return kit_from_opener(
        "sqlite-encrypted", True, lambda loc: open_sqlite_backend(loc, encryption_key=key)
    )


@pytest.fixture
def signal_store_kit(backend_kit: BackendKit) -> SignalStoreKit:
    return signal_store_kit_over(backend_kit)


class TestEncryptedPersistenceContract(PersistenceContract):
    """Encrypted backends keep the Persistence contract."""


class TestEncryptedTransactionContract(TransactionContract):
    """Encrypted backends carry serializable transactions."""


class TestEncryptedSignalStoreContract(SignalStoreContract):
    """TransactionalStore over encrypted backends keeps the SignalStore contract."""
