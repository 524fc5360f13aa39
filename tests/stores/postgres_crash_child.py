"""Child process for the PostgreSQL crash test: commits until it is SIGKILLed.

Usage: ``python -m tests.stores.postgres_crash_child <dsn> <account> <first_n>``.

Prints ``OPEN <seq> <epoch>`` once the backend is open (its lease taken), then
``ACK <n> <seq>`` (flushed) after each commit returns, i.e. only once commit ``n`` is
durable. Commits are those of ``tests.stores.crash_child`` (four keys, all or nothing;
creds every fifth). Bounded by ``MAX_COMMITS`` and ``MAX_SECONDS``.
"""

from __future__ import annotations

import sys
import time

import trio

from stores.creds import init_auth_creds
from stores.postgres import open_postgres_backend
from tests.stores.crash_child import MAX_COMMITS, MAX_SECONDS, WORKERS, batch_for


async def main(dsn: str, account: str, first: int) -> None:
    backend = await open_postgres_backend(dsn, account=account)
    stats = backend.statistics()
    print(f"OPEN {stats.seq} {stats.epoch}", flush=True)
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
    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
