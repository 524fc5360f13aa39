"""Rotating the encryption key of an auth location, crash-safely (``baileys-trio rekey``).

``await rekey(location, old_key=..., new_key=...)`` re-seals everything at an
existing native directory, or one account of a SQLite database or PostgreSQL store,
under ``new_key``; either key may be ``None`` (a plain store: encrypt it, or store it
plain again). The old key must open the location first (``WrongKeyError`` otherwise,
and nothing changes).

Crash safety, per backend:

* native: one compaction writes the next generation under the new key; before its
  snapshot's rename the store opens with the old key only, after it with the new key
  only (the rest of the switch is finished by the next open);
* SQLite and PostgreSQL: one transaction re-seals every row of the account and its
  encryption row together.

So a SIGKILL at any point leaves the location readable with the old key or the new
one, never neither. The multi-file folder is never encrypted (``EncryptionKeyError``).

Since 0.2.0.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from stores.encryption import KeySource, StoreKey, multi_file_key_error, resolve_key
from stores.errors import WrongBackendError
from stores.inspection import detect_backend

__all__ = ["RekeySummary", "rekey"]


@dataclass(frozen=True)
class RekeySummary:
    """What ``rekey`` did: where, and from which key id to which (``None``: plain)."""

    location: str
    backend: str
    account: str | None
    old_key_id: str | None
    new_key_id: str | None


async def rekey(
    location: str | os.PathLike[str],
    *,
    old_key: KeySource | None,
    new_key: KeySource | None,
    backend: str = "auto",
    account: str = "default",
) -> RekeySummary:
    """Re-seal the auth state at ``location`` from ``old_key`` to ``new_key``.

    Refuses (``WrongBackendError``) an absent or empty location, an account that holds
    nothing, and another backend's data than ``backend``; takes the location's lock
    or lease like any owner (``StoreLockedError`` while a runtime uses it).
    """
    old = await resolve_key(old_key, "old key")
    new = await resolve_key(new_key, "new key")
    where = os.fspath(location)
    found = await trio.to_thread.run_sync(detect_backend, where)
    if found is None:
        raise WrongBackendError(where, "an auth location", "an empty directory (nothing to rekey)")
    if backend != "auto" and backend != found:
        raise WrongBackendError(where, backend, found)
    if found == "multi-file":
        raise multi_file_key_error("rekey")
    if found == "native":
        await _rekey_native(Path(where), old, new)
        return RekeySummary(where, found, None, _id(old), _id(new))
    if found == "sqlite":
        await _rekey_sqlite(Path(where), account, old, new)
    else:
        await _rekey_postgres(where, account, old, new)
    return RekeySummary(where, found, account, _id(old), _id(new))


def _id(key: StoreKey | None) -> str | None:
    return None if key is None else key.key_id


async def _rekey_native(path: Path, old: StoreKey | None, new: StoreKey | None) -> None:
    native = importlib.import_module("stores.native")
    async with await native.open_native_backend(path, encryption_key=old) as backend:
        await backend.rekey(new)


async def _rekey_sqlite(
    path: Path, account: str, old: StoreKey | None, new: StoreKey | None
) -> None:
    sqlite = importlib.import_module("stores.sqlite")
    async with await sqlite.open_sqlite_backend(
        path, account=account, encryption_key=old
    ) as backend:
        await _refuse_empty(backend, f"{path} account {account!r}")
        await backend.rekey(new)


async def _rekey_postgres(
    location: str, account: str, old: StoreKey | None, new: StoreKey | None
) -> None:
    postgres = importlib.import_module("stores.postgres")
    dsn, account = postgres.parse_location(location, account)
    if not await postgres.account_holds_data(dsn, account):
        # Opening would create tables and take a lease on an account that is not there.
        raise WrongBackendError(
            postgres.location_of(dsn, account), f"account {account!r}", "no such account"
        )
    async with await postgres.open_postgres_backend(
        dsn, account=account, encryption_key=old
    ) as backend:
        await backend.rekey(new)


async def _refuse_empty(backend: Any, where: str) -> None:
    if await backend.is_empty():
        raise WrongBackendError(where, "an account with data", "no such account (nothing to rekey)")
