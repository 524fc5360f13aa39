"""Child process for the crash test: commits transactions until it is SIGKILLed.

Usage: ``python -m tests.stores.crash_child <dir> <first_n> <compact_min_bytes>``.

Prints ``OPEN <seq>`` once the store is open, then ``ACK <n> <seq>`` (flushed) after
each commit returns, i.e. only once commit ``n`` is durable. Commit ``n`` writes the
keys ``c<n>-0`` .. ``c<n>-3`` (all-or-nothing) and, when ``n % 5 == 0``, creds with
``next_pre_key_id = n``. Bounded: it stops by itself after ``MAX_COMMITS`` or
``MAX_SECONDS`` so a lost parent never leaves it running.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import trio

from stores.creds import AuthCreds, init_auth_creds
from stores.native import open_native_backend
from stores.types import Batch

KEYS_PER_COMMIT = 4
WORKERS = 4
MAX_COMMITS = 20_000
MAX_SECONDS = 20.0


def value(n: int, j: int) -> dict[str, object]:
    return {"n": n, "j": j, "blob": bytes([n % 251]) * 48}


def batch_for(n: int, template: AuthCreds) -> Batch:
    keys = {"session": {f"c{n}-{j}": value(n, j) for j in range(KEYS_PER_COMMIT)}}
    if n % 5:
        return Batch(keys=keys)
    creds = template.copy()
    creds.next_pre_key_id = n
    return Batch(keys=keys, creds=creds)


async def main(path: Path, first: int, compact_min_bytes: int) -> None:
    backend = await open_native_backend(path, compact_min_bytes=compact_min_bytes)
    print(f"OPEN {backend.statistics().durable_seq}", flush=True)
    template = init_auth_creds()
    counter = iter(range(first, first + MAX_COMMITS))
    deadline = time.monotonic() + MAX_SECONDS

    async def worker() -> None:
        for n in counter:
            if time.monotonic() > deadline:
                return
            seq = await backend.commit(batch_for(n, template))
            print(f"ACK {n} {seq}", flush=True)

    async with trio.open_nursery() as nursery:
        for _ in range(WORKERS):
            nursery.start_soon(worker)
    await backend.aclose()


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
