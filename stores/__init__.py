"""Auth state for a linked device: creds, Signal keys, durable backends and migration.

``stores`` knows nothing of actors: everything here works as a plain async library.
"""

from stores.errors import (
    CorruptStateError,
    DurabilityError,
    InvalidValueError,
    MigrationError,
    StoreClosedError,
    StoreError,
    StoreLockedError,
    StoreReadOnlyError,
    TransactionConflict,
    UnsupportedFormatError,
    WrongBackendError,
)
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
    "KEY_TYPES",
    "Batch",
    "CorruptStateError",
    "DurabilityError",
    "InvalidValueError",
    "KeyWrites",
    "MigrationError",
    "Persistence",
    "SignalStore",
    "StoreClosedError",
    "StoreError",
    "StoreLockedError",
    "StoreReadOnlyError",
    "StoreSnapshot",
    "Transaction",
    "TransactionConflict",
    "UnsupportedFormatError",
    "Value",
    "WrongBackendError",
]
