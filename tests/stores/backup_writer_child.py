"""Child process for the backup kill test: commits one change after another until killed.

Usage: ``python -m tests.stores.backup_writer_child <store dir> <ack file>``.

Opens (or creates) a native store with a tiny compaction threshold, so backups race
compactions too. Commit ``n`` writes ``session/s<n>`` and ``session/last = {"n": n}``,
deletes ``session/s<n - WINDOW>`` (the store stays small: the ids present after commit
``n`` are exactly the last ``WINDOW``), and, when ``n % 7 == 0``, writes creds with
``next_pre_key_id = n``; one commit at a time, so commit order is ``n`` order. After
each commit returns (durable), ``n`` is appended to the ack file as one line. After a
restart it goes on from the store's ``last``.
Bounded: it stops by itself after ``MAX_SECONDS`` so a lost parent never leaves it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import trio

from stores.creds import AuthCreds, init_auth_creds
from stores.native import open_native_backend
from stores.types import Batch

COMPACT_MIN_BYTES = 4096
MAX_SECONDS = 120.0
ME_ID = "15551234567:3@s.whatsapp.net"
CREDS_EVERY = 7
WINDOW = 200


def batch_for(n: int, creds: AuthCreds) -> Batch:
    session: dict[str, object] = {f"s{n}": {"n": n, "pad": bytes([n % 251]) * 40}}
    session["last"] = {"n": n}
    if n > WINDOW:
        session[f"s{n - WINDOW}"] = None
    keys = {"session": session}
    if n % CREDS_EVERY:
        return Batch(keys=keys)
    changed = creds.copy()
    changed.next_pre_key_id = n
    return Batch(keys=keys, creds=changed)


async def main(path: Path, ack_file: Path) -> None:
    deadline = time.monotonic() + MAX_SECONDS
    backend = await open_native_backend(path, compact_min_bytes=COMPACT_MIN_BYTES)
    creds = await backend.read_creds()
    if creds is None:
        creds = init_auth_creds()
        creds.me = {"id": ME_ID, "name": "writer"}
        await backend.commit(Batch(creds=creds))
    last = (await backend.read_keys("session", ["last"])).get("last")
    n = 0 if last is None else int(last["n"])
    acks = os.open(ack_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    while time.monotonic() < deadline:
        n += 1
        await backend.commit(batch_for(n, creds))
        os.write(acks, f"{n}\n".encode())
    await backend.aclose()


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]), Path(sys.argv[2]))
