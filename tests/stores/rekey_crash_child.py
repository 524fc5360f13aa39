"""Child process for the rekey crash tests: rekeys a store, SIGKILLing itself on cue.

Usage::

    python -m tests.stores.rekey_crash_child native DIR OLD NEW KILL_AT
    python -m tests.stores.rekey_crash_child sqlite DB OLD NEW -
    python -m tests.stores.rekey_crash_child postgres DSN OLD NEW -

``OLD`` and ``NEW`` are 64 hex digits or ``-`` (plain). Native: every file-system
operation that changes something (open for writing, write, fsync, rename, unlink,
truncate, chmod, link, mkdir) after the store is open is counted; the ``KILL_AT``-th
is where the process SIGKILLs itself, before the operation, or for a write after half
of its bytes. ``KILL_AT`` 0 runs to the end and prints ``OPS <n>``. SQLite: prints
``REKEYING`` (flushed) just before the rekey starts, so the parent can kill it at a
random moment during the transaction, and ``DONE`` after it. PostgreSQL: the same,
with a one-second lease, so the parent can open the account soon after the kill.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from stores.encryption import StoreKey
from stores.native import open_native_backend
from stores.postgres import open_postgres_backend
from stores.sqlite import open_sqlite_backend
from tests.stores.dying_fs import DyingFileSystem


def key_arg(text: str) -> StoreKey | None:
    return None if text == "-" else StoreKey.from_bytes(bytes.fromhex(text))


async def rekey_native(path: Path, old: StoreKey | None, new: StoreKey | None, at: int) -> None:
    fs = DyingFileSystem(at, armed=False)
    async with await open_native_backend(path, encryption_key=old, fs=fs) as backend:
        fs.armed = True
        await backend.rekey(new)
    print(f"OPS {fs.ops}", flush=True)


async def rekey_sqlite(path: Path, old: StoreKey | None, new: StoreKey | None) -> None:
    async with await open_sqlite_backend(path, encryption_key=old) as backend:
        print("REKEYING", flush=True)
        started = trio.current_time()
        await backend.rekey(new)
        print(f"DONE {trio.current_time() - started:.3f}", flush=True)


async def rekey_postgres(dsn: str, old: StoreKey | None, new: StoreKey | None) -> None:
    async with await open_postgres_backend(dsn, encryption_key=old, lease_ttl=1.0) as backend:
        print("REKEYING", flush=True)
        started = trio.current_time()
        await backend.rekey(new)
        print(f"DONE {trio.current_time() - started:.3f}", flush=True)


def main(argv: list[str]) -> None:
    kind, where, old, new, at = argv
    if kind == "native":
        trio.run(rekey_native, Path(where), key_arg(old), key_arg(new), int(at))
    elif kind == "sqlite":
        trio.run(rekey_sqlite, Path(where), key_arg(old), key_arg(new))
    else:
        trio.run(rekey_postgres, where, key_arg(old), key_arg(new))


if __name__ == "__main__":
    main(sys.argv[1:])
