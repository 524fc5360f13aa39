"""Auth state for a linked device: creds, Signal keys, durable backends and migration.

``stores`` knows nothing of actors: everything here works as a plain async library.

Start here: ``await use_native_file_auth_state(path)`` (or the multi-file, SQLite and
memory variants) returns a ``PersistedAuth`` with ``.state.creds``, ``.state.keys``
(a ``TransactionalStore``), ``await .save_creds(creds)`` and ``.config``.
"""

from stores.auth import (
    AuthConfig,
    AuthState,
    PersistedAuth,
    open_auth_state,
    use_memory_auth_state,
    use_multi_file_auth_state,
    use_native_file_auth_state,
    use_sqlite_auth_state,
)
from stores.creds import AuthCreds, KeyPair, SignedKeyPair, init_auth_creds
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
from stores.memory import MemoryBackend, open_memory_backend
from stores.migrate import (
    MigrationSummary,
    migrate_compat_json_to_native,
    migrate_native_to_compat_json,
    migrate_to_sqlite,
)
from stores.transactions import (
    LockOrderConflict,
    StoreTransaction,
    TransactionalStore,
    TransactionStatistics,
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
    "AuthConfig",
    "AuthCreds",
    "AuthState",
    "Batch",
    "CorruptStateError",
    "DurabilityError",
    "InvalidValueError",
    "KeyPair",
    "KeyWrites",
    "LockOrderConflict",
    "MemoryBackend",
    "MigrationError",
    "MigrationSummary",
    "PersistedAuth",
    "Persistence",
    "SignalStore",
    "SignedKeyPair",
    "StoreClosedError",
    "StoreError",
    "StoreLockedError",
    "StoreReadOnlyError",
    "StoreSnapshot",
    "StoreTransaction",
    "Transaction",
    "TransactionConflict",
    "TransactionStatistics",
    "TransactionalStore",
    "UnsupportedFormatError",
    "Value",
    "WrongBackendError",
    "init_auth_creds",
    "migrate_compat_json_to_native",
    "migrate_native_to_compat_json",
    "migrate_to_sqlite",
    "open_auth_state",
    "open_memory_backend",
    "use_memory_auth_state",
    "use_multi_file_auth_state",
    "use_native_file_auth_state",
    "use_sqlite_auth_state",
]
