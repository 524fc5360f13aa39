"""Runtime overhead: ActorRef.call vs a bare trio channel round trip, and restart latency.

Figures are printed side by side from one run, so the ratio is what counts (the
target in TARGETS.md: call >= 0.5 x bare; restart p99 <= 5 ms with no backoff).
Run it as `python -m bench runtime` (as a script its name would shadow the package).
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:
    # Run as a script (python bench/runtime.py): bench/ heads sys.path, where this file
    # shadows the `runtime` package. Run it as the module it is instead.
    import os
    import runpy
    import sys

    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runpy.run_module("bench.runtime", run_name="__main__", alter_sys=True)
    sys.exit(0)

import os
import platform
import statistics
import time
from contextlib import suppress
from typing import Any

import trio

from runtime import Actor, ActorDown, ChildSpec, Logger, make_logger, open_supervisor

ROUND_TRIPS = 20_000
ROUNDS = 3
RESTARTS = 1_000


class Echo(Actor):
    async def handle_call(self, msg: Any) -> Any:
        if msg == "crash":
            raise RuntimeError("crash on purpose")
        return msg


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(samples_ns: list[int], elapsed: float) -> dict[str, float]:
    us = [s / 1000 for s in samples_ns]
    return {
        "ops_per_s": len(samples_ns) / elapsed,
        "p50_us": _percentile(us, 0.50),
        "p99_us": _percentile(us, 0.99),
        "mean_us": statistics.fmean(us),
    }


async def bare_round_trips(n: int) -> dict[str, float]:
    """Request/reply over two trio memory channels, one server task."""
    req_send, req_recv = trio.open_memory_channel[int](64)
    resp_send, resp_recv = trio.open_memory_channel[int](64)

    async def server() -> None:
        async for item in req_recv:
            await resp_send.send(item)

    samples: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        clock = time.perf_counter_ns
        start = time.perf_counter()
        for i in range(n):
            t0 = clock()
            await req_send.send(i)
            await resp_recv.receive()
            samples.append(clock() - t0)
        elapsed = time.perf_counter() - start
        await req_send.aclose()
    return _summary(samples, elapsed)


async def actor_round_trips(n: int, log: Logger) -> dict[str, float]:
    """The same request/reply through ActorRef.call to a supervised actor."""
    async with open_supervisor([ChildSpec("echo", Echo)], log=log) as sup:
        ref = sup.ref("echo")
        samples: list[int] = []
        clock = time.perf_counter_ns
        start = time.perf_counter()
        for i in range(n):
            t0 = clock()
            await ref.call(i)
            samples.append(clock() - t0)
        elapsed = time.perf_counter() - start
    return _summary(samples, elapsed)


async def restart_latency(n: int, log: Logger) -> dict[str, float]:
    """Crash -> the restarted actor answering again (no backoff, JSON logs to /dev/null)."""
    samples: list[int] = []
    async with open_supervisor(
        [ChildSpec("echo", Echo)],
        max_restarts=n + 1,
        max_seconds=3600.0,
        log=log,
    ) as sup:
        ref = sup.ref("echo")
        start = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter_ns()
            with suppress(ActorDown):
                await ref.call("crash")
            await ref.call("ping")
            samples.append(time.perf_counter_ns() - t0)
        elapsed = time.perf_counter() - start
    return _summary(samples, elapsed)


async def measure(log: Logger) -> dict[str, Any]:
    bare: list[dict[str, float]] = []
    actor: list[dict[str, float]] = []
    await bare_round_trips(1_000)  # warm-up
    await actor_round_trips(1_000, log)
    for _ in range(ROUNDS):  # interleaved so drift hits both alike
        bare.append(await bare_round_trips(ROUND_TRIPS))
        actor.append(await actor_round_trips(ROUND_TRIPS, log))
    best_bare = max(bare, key=lambda r: r["ops_per_s"])
    best_actor = max(actor, key=lambda r: r["ops_per_s"])
    restart = await restart_latency(RESTARTS, log)
    return {
        "bare_channel": best_bare,
        "actor_call": best_actor,
        "call_vs_bare_throughput": best_actor["ops_per_s"] / best_bare["ops_per_s"],
        "restart": restart,
        "round_trips": ROUND_TRIPS,
        "rounds": ROUNDS,
        "restarts": RESTARTS,
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "trio": trio.__version__,
        },
    }


def main() -> dict[str, Any]:
    """Run, print a table, return the figures."""
    # Lifecycle logs are rendered as JSON, as in production, into /dev/null.
    with open(os.devnull, "w") as sink:
        result = trio.run(measure, make_logger("json", sink))
    m = result["machine"]
    print(f"machine: {m['cores']} cores, Python {m['python']}, trio {m['trio']}, {m['platform']}")
    print(f"{'':28} {'ops/s':>10} {'p50 us':>9} {'p99 us':>9}")
    for label, key in (
        ("bare channel round trip", "bare_channel"),
        ("ActorRef.call", "actor_call"),
    ):
        r = result[key]
        print(f"{label:28} {r['ops_per_s']:>10.0f} {r['p50_us']:>9.1f} {r['p99_us']:>9.1f}")
    print(
        f"ActorRef.call / bare throughput: {result['call_vs_bare_throughput']:.2f} (target >= 0.5)"
    )
    r = result["restart"]
    print(
        f"crash -> serving again ({RESTARTS}x): p50 {r['p50_us'] / 1000:.3f} ms, "
        f"p99 {r['p99_us'] / 1000:.3f} ms (target p99 <= 5 ms)"
    )
    return result


if __name__ == "__main__":
    main()
