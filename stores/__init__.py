"""Auth state for a linked device: creds, Signal keys, durable backends, migration, backup.

``stores`` knows nothing of actors: everything here works as a plain async library.

Start here: ``await use_native_file_auth_state(path)`` (or the multi-file, SQLite and
memory variants) returns a ``PersistedAuth`` with ``.state.creds``, ``.state.keys``
(a ``TransactionalStore``), ``await .save_creds(creds)`` and ``.config``.

Public names are loaded on first use, so importing one module (``stores.keys`` for
the crypto, ``stores.errors``) does not pull in every backend, trio and sqlite.

Since 0.1.0.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stores.auth import (
        AuthConfig,
        AuthState,
        PersistedAuth,
        open_auth_state,
        use_memory_auth_state,
        use_multi_file_auth_state,
        use_native_file_auth_state,
        use_postgres_auth_state,
        use_sqlite_auth_state,
    )
    from stores.backup import BackupSummary, backup_location, restore_location
    from stores.creds import AuthCreds, CredsPatch, KeyPair, SignedKeyPair, init_auth_creds
    from stores.encryption import StoreKey
    from stores.errors import (
        AlreadyInFleetError,
        BackupError,
        BackupTargetNotEmpty,
        BackupUnsupportedError,
        BackupVerificationError,
        CorruptStateError,
        DurabilityError,
        EncryptionKeyError,
        FencedError,
        InvalidValueError,
        MigrationError,
        StoreClosedError,
        StoreError,
        StoreLockedError,
        StoreReadOnlyError,
        TransactionConflict,
        UnsupportedFormatError,
        WrongBackendError,
        WrongKeyError,
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

_EXPORTS: dict[str, str] = {
    "AuthConfig": "stores.auth",
    "AuthState": "stores.auth",
    "PersistedAuth": "stores.auth",
    "open_auth_state": "stores.auth",
    "use_memory_auth_state": "stores.auth",
    "use_multi_file_auth_state": "stores.auth",
    "use_native_file_auth_state": "stores.auth",
    "use_postgres_auth_state": "stores.auth",
    "use_sqlite_auth_state": "stores.auth",
    "BackupSummary": "stores.backup",
    "backup_location": "stores.backup",
    "restore_location": "stores.backup",
    "AuthCreds": "stores.creds",
    "CredsPatch": "stores.creds",
    "KeyPair": "stores.creds",
    "SignedKeyPair": "stores.creds",
    "init_auth_creds": "stores.creds",
    "AlreadyInFleetError": "stores.errors",
    "BackupError": "stores.errors",
    "BackupTargetNotEmpty": "stores.errors",
    "BackupUnsupportedError": "stores.errors",
    "BackupVerificationError": "stores.errors",
    "StoreKey": "stores.encryption",
    "CorruptStateError": "stores.errors",
    "DurabilityError": "stores.errors",
    "EncryptionKeyError": "stores.errors",
    "FencedError": "stores.errors",
    "InvalidValueError": "stores.errors",
    "MigrationError": "stores.errors",
    "StoreClosedError": "stores.errors",
    "StoreError": "stores.errors",
    "StoreLockedError": "stores.errors",
    "StoreReadOnlyError": "stores.errors",
    "TransactionConflict": "stores.errors",
    "UnsupportedFormatError": "stores.errors",
    "WrongBackendError": "stores.errors",
    "WrongKeyError": "stores.errors",
    "MemoryBackend": "stores.memory",
    "open_memory_backend": "stores.memory",
    "MigrationSummary": "stores.migrate",
    "migrate_compat_json_to_native": "stores.migrate",
    "migrate_native_to_compat_json": "stores.migrate",
    "migrate_to_sqlite": "stores.migrate",
    "LockOrderConflict": "stores.transactions",
    "StoreTransaction": "stores.transactions",
    "TransactionalStore": "stores.transactions",
    "TransactionStatistics": "stores.transactions",
    "KEY_TYPES": "stores.types",
    "Batch": "stores.types",
    "KeyWrites": "stores.types",
    "Persistence": "stores.types",
    "SignalStore": "stores.types",
    "StoreSnapshot": "stores.types",
    "Transaction": "stores.types",
    "Value": "stores.types",
}

__all__ = [
    "KEY_TYPES",
    "AlreadyInFleetError",
    "AuthConfig",
    "AuthCreds",
    "AuthState",
    "BackupError",
    "BackupSummary",
    "BackupTargetNotEmpty",
    "BackupUnsupportedError",
    "BackupVerificationError",
    "Batch",
    "CorruptStateError",
    "CredsPatch",
    "DurabilityError",
    "EncryptionKeyError",
    "FencedError",
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
    "StoreKey",
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
    "WrongKeyError",
    "backup_location",
    "init_auth_creds",
    "migrate_compat_json_to_native",
    "migrate_native_to_compat_json",
    "migrate_to_sqlite",
    "open_auth_state",
    "open_memory_backend",
    "restore_location",
    "use_memory_auth_state",
    "use_multi_file_auth_state",
    "use_native_file_auth_state",
    "use_postgres_auth_state",
    "use_sqlite_auth_state",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stores' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
