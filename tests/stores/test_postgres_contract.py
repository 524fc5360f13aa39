"""The store contract suites, run against the PostgreSQL backend on a real server."""

from __future__ import annotations

from pathlib import Path

import pytest

from stores.postgres import open_postgres_backend
from tests.stores.contract import (
    BackendKit,
    PersistenceContract,
    SignalStoreContract,
    SignalStoreKit,
    TransactionContract,
    kit_from_opener,
    signal_store_kit_over,
)
from tests.stores.postgres_server import (  # noqa: F401 (fixtures, used by name)
    postgres_dsn_fixture,
    postgres_server_fixture,
)


@pytest.fixture
def backend_kit(postgres_dsn: str) -> BackendKit:
    # One fresh database per test; a location's last path part names its account.
    return kit_from_opener(
        "postgres", True, lambda loc: open_postgres_backend(postgres_dsn, account=Path(loc).name)
    )


@pytest.fixture
def signal_store_kit(backend_kit: BackendKit) -> SignalStoreKit:
    return signal_store_kit_over(backend_kit)


class TestPostgresPersistenceContract(PersistenceContract):
    """The PostgreSQL backend keeps the Persistence contract."""


class TestPostgresTransactionContract(TransactionContract):
    """The PostgreSQL backend carries serializable transactions."""


class TestPostgresSignalStoreContract(SignalStoreContract):
    """TransactionalStore over the PostgreSQL backend keeps the SignalStore contract."""
