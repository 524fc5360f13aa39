"""Fuzz soak: every target of ``bench/fuzz_targets.py`` under a fast random mutator.

``python -m bench.fuzz [--target NAME ...] [--inputs N] [--seconds S]`` runs each
target on ``N`` inputs (default 1,000,000: the soak) or until ``S`` seconds pass,
whichever comes first, then, when ``atheris`` is importable, the same targets
under atheris (coverage-guided) in a child process each. ``main()`` is the short
variant ``make bench`` runs (a few thousand inputs per target).

Inputs come from a seed corpus built in code from valid encodings, mutated by bit
flips, interesting bytes, length-field edits, insertions, deletions,
duplications, truncation and splicing; a target's ``fixup`` (checksums) is applied
to half of them. An input whose typed error is of a kind not seen before joins the
corpus (a crude, cheap stand-in for coverage feedback).

Invariants checked on every input: only the target's typed errors escape, and no
input runs longer than ``--time-bound`` (a SIGALRM timer interrupts it). Every
crafted input declaring huge lengths, and one mutated input in ``MEMORY_EVERY``,
runs under tracemalloc: its peak must stay within the target's memory bound. A
violation prints its traceback and writes the input to
``bench/results/fuzz-<target>-<kind>-<digest>.bin``; ``--reproduce FILE`` runs one
file through a target again.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import time
import traceback
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from bench.fuzz_targets import TARGETS, StructureOp, Target

RESULTS = Path(__file__).resolve().parent / "results"
SOAK_INPUTS = 1_000_000
#: Per-input time bound in seconds: far above any input's real cost (< 50 ms).
TIME_BOUND = 5.0
#: One mutated input in this many also runs under tracemalloc.
MEMORY_EVERY = 2048
#: At most this many reproducers per target (one per distinct violation).
MAX_REPRODUCERS = 20
CORPUS_LIMIT = 4096

# Tag bytes of the node codec, CBOR major-type heads, JSON punctuation, edges.
_INTERESTING_BYTES: tuple[int, ...] = (
    *(0x00, 0x01, 0x02, 0x7F, 0x80, 0xFF, 0xEC, 0xF5, 0xF7, 0xF8, 0xF9, 0xFA),
    *(0xFB, 0xFC, 0xFD, 0xFE, 0x5B, 0x7B, 0x9B, 0xBB, 0x22, 0x5C, 0x7D, 0x5D),
)
_INTERESTING_INTS: tuple[int, ...] = (
    *(0, 1, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0xFFFFFF, 0x1000000),
    *(0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 28, (1 << 28) + 1),
)


class Hang(BaseException):
    """Raised by the SIGALRM handler inside an input that ran past the time bound.

    A BaseException so no ``except Exception`` in the code under test swallows it.
    """


# --- the mutator -------------------------------------------------------------------


class Mutator:
    """Random structure-blind mutations of corpus entries, plus the target's fixup."""

    def __init__(
        self,
        corpus: list[bytes],
        rng: random.Random,
        fixup: Callable[[bytes], bytes] | None = None,
        structure_ops: tuple[StructureOp, ...] = (),
    ) -> None:
        if not corpus:
            raise ValueError("a mutator needs at least one seed")
        self.corpus = list(corpus)
        self.rng = rng
        self.fixup = fixup
        self.structure_ops = structure_ops
        self._ops: tuple[Callable[[bytearray], None], ...] = (
            self._flip_bit,
            self._flip_bit,
            self._interesting_byte,
            self._random_byte,
            self._length_edit,
            self._length_edit,
            self._insert,
            self._delete,
            self._duplicate,
            self._truncate,
            self._splice,
        )

    def add(self, data: bytes) -> None:
        """Keep ``data`` as a seed (oldest additions make way past the limit)."""
        if len(self.corpus) >= CORPUS_LIMIT:
            self.corpus.pop(self.rng.randrange(len(self.corpus)))
        self.corpus.append(data)

    def next(self) -> bytes:
        rng = self.rng
        if rng.random() < 0.05:
            return rng.randbytes(rng.randrange(64))
        data = bytearray(rng.choice(self.corpus))
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
            rng.choice(self._ops)(data)
        out = bytes(data)
        if self.structure_ops and rng.random() < 0.2:
            out = rng.choice(self.structure_ops)(out, rng)
        if self.fixup is not None and rng.random() < 0.5:
            out = self.fixup(out)
        return out

    def _pos(self, data: bytearray) -> int:
        return self.rng.randrange(len(data) + 1)

    def _flip_bit(self, data: bytearray) -> None:
        if data:
            at = self.rng.randrange(len(data))
            data[at] ^= 1 << self.rng.randrange(8)

    def _interesting_byte(self, data: bytearray) -> None:
        if data:
            data[self.rng.randrange(len(data))] = self.rng.choice(_INTERESTING_BYTES)

    def _random_byte(self, data: bytearray) -> None:
        if data:
            data[self.rng.randrange(len(data))] = self.rng.randrange(256)

    def _length_edit(self, data: bytearray) -> None:
        """Overwrite 1-8 bytes with a big-endian length: an edge value or near the size."""
        rng = self.rng
        width = rng.choice((1, 2, 3, 3, 4, 4, 8))
        if len(data) < width:
            return
        value = rng.choice(
            (
                rng.choice(_INTERESTING_INTS),
                len(data) + rng.randrange(-4, 5),
                rng.randrange(1 << 16),
            )
        )
        value %= 1 << (8 * width)
        at = rng.randrange(len(data) - width + 1)
        data[at : at + width] = value.to_bytes(width, "big")

    def _insert(self, data: bytearray) -> None:
        at = self._pos(data)
        data[at:at] = self.rng.randbytes(self.rng.choice((1, 1, 2, 4, 8, 32)))

    def _delete(self, data: bytearray) -> None:
        if data:
            at = self.rng.randrange(len(data))
            del data[at : at + self.rng.choice((1, 1, 2, 4, 16, 64))]

    def _duplicate(self, data: bytearray) -> None:
        if data:
            at = self.rng.randrange(len(data))
            chunk = data[at : at + self.rng.choice((1, 4, 16, 64, 256))]
            where = self._pos(data)
            data[where:where] = chunk

    def _truncate(self, data: bytearray) -> None:
        del data[self._pos(data) :]

    def _splice(self, data: bytearray) -> None:
        other = self.rng.choice(self.corpus)
        cut = self._pos(data)
        data[cut:] = other[self.rng.randrange(len(other) + 1) :]


# --- running one input --------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """An input that broke an invariant, and how."""

    target: str
    kind: str  # "untyped", "oracle", "hang", "memory"
    detail: str
    data: bytes = field(repr=False)

    @property
    def signature(self) -> str:
        """Kind, the innermost source line and the exception type: one per distinct bug."""
        lines = self.detail.strip().splitlines()
        where = [line.strip() for line in lines if line.strip().startswith("File ")]
        last = lines[-1].partition(":")[0] if lines else ""
        return f"{self.kind} {where[-1] if where else ''} {last}".strip()


@contextmanager
def time_bound(seconds: float) -> Iterator[None]:
    """Raise Hang in the current code if the block runs longer than ``seconds``.

    Main thread only (signals); elsewhere the bound is not enforced.
    """
    if seconds <= 0 or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"input ran longer than {seconds} s")

    try:
        previous = signal.signal(signal.SIGALRM, on_alarm)
    except ValueError:  # not the main thread
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


_QUOTED = re.compile(r"b?'[^']*'|b?\"[^\"]*\"")
# Any word with a digit (offsets, sizes), and words of hex pairs (bytes shown as hex).
_NUMBER = re.compile(r"[^\s:,()]*[0-9][^\s:,()]*|\b(?:[0-9a-f]{2})+\b")


def error_kind(exc: BaseException) -> str:
    """A typed error's kind: its type and reason, quoted values and numbers blurred."""
    reason = getattr(exc, "reason", None)
    text = reason if isinstance(reason, str) else str(exc)
    text = _NUMBER.sub("#", _QUOTED.sub("'…'", text))
    return f"{type(exc).__name__}: {text[:100]}"


@dataclass(frozen=True)
class Outcome:
    """One input's result: the typed error's kind (None if accepted), a violation, the peak."""

    kind: str | None
    violation: Violation | None
    peak: int | None = None
    """Peak traced bytes, when run under tracemalloc."""


def check_input(
    target: Target, data: bytes, *, bound: float = TIME_BOUND, memory: bool = False
) -> Outcome:
    """Run one input against the target's contract."""
    kind: str | None = None
    violation: Violation | None = None
    if memory:
        tracemalloc.start()
    try:
        with time_bound(bound):
            target.run(data)
    except target.allowed as exc:
        kind = error_kind(exc)
    except Hang:
        violation = Violation(target.name, "hang", f"input ran longer than {bound} s", data)
    except AssertionError:
        violation = Violation(target.name, "oracle", traceback.format_exc(limit=-6), data)
    except Exception:
        violation = Violation(target.name, "untyped", traceback.format_exc(limit=-6), data)
    peak = None
    if memory:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        limit = target.memory_bound(len(data))
        if violation is None and peak > limit:
            detail = f"peak {peak} bytes traced for a {len(data)}-byte input, bound {limit}"
            violation = Violation(target.name, "memory", detail, data)
    return Outcome(kind, violation, peak)


# --- one target ---------------------------------------------------------------------


@dataclass
class Report:
    """What one target's run saw."""

    target: str
    inputs: int = 0
    seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    memory_checks: int = 0
    max_memory_ratio: float = 0.0
    slowest: float = 0.0
    """Seconds taken by the slowest input."""
    violations: list[Violation] = field(default_factory=list)
    reproducers: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "seconds": round(self.seconds, 3),
            "inputs_per_s": round(self.rate, 1),
            "accepted": self.accepted,
            "typed_errors": sum(self.errors.values()),
            "typed_error_kinds": len(self.errors),
            "memory_checks": self.memory_checks,
            "max_memory_over_bound": round(self.max_memory_ratio, 3),
            "slowest_input_ms": round(self.slowest * 1000, 2),
            "violations": len(self.violations),
            "violation_kinds": sorted({v.signature for v in self.violations}),
            "reproducers": self.reproducers,
        }


def fuzz_target(
    target: Target,
    *,
    inputs: int,
    seconds: float | None,
    seed: int = 0,
    bound: float = TIME_BOUND,
    results: Path = RESULTS,
    quiet: bool = False,
) -> Report:
    """Seeds, crafted huge lengths (under tracemalloc), then mutated inputs."""
    report = Report(target.name)
    seeds = target.seeds()
    mutator = Mutator(seeds, random.Random(seed), target.fixup, target.structure_ops)
    seen: set[str] = set()
    started = time.perf_counter()

    def record(data: bytes, memory: bool) -> None:
        began = time.perf_counter()
        outcome = check_input(target, data, bound=bound, memory=memory)
        report.slowest = max(report.slowest, time.perf_counter() - began)
        report.inputs += 1
        kind = outcome.kind
        if kind is None and outcome.violation is None:
            report.accepted += 1
        if kind is not None:
            report.errors[kind] += 1
            if kind not in seen:
                seen.add(kind)
                mutator.add(data)
        if outcome.peak is not None:
            report.memory_checks += 1
            ratio = outcome.peak / target.memory_bound(len(data))
            report.max_memory_ratio = max(report.max_memory_ratio, ratio)
        if outcome.violation is not None:
            _keep(report, outcome.violation, results, quiet)

    for data in seeds:  # also warms every cache, so memory checks measure the input only
        record(data, memory=False)
    for data in target.huge_lengths():
        record(data, memory=True)
    deadline = None if seconds is None else started + seconds
    while report.inputs < inputs:
        if deadline is not None and report.inputs % 64 == 0 and time.perf_counter() > deadline:
            break
        record(mutator.next(), memory=report.inputs % MEMORY_EVERY == 0)
    report.seconds = time.perf_counter() - started
    return report


def _keep(report: Report, violation: Violation, results: Path, quiet: bool) -> None:
    first = violation.signature not in {v.signature for v in report.violations}
    report.violations.append(violation)
    if not first or len(report.reproducers) >= MAX_REPRODUCERS:
        return
    digest = hashlib.sha256(violation.data).hexdigest()[:12]
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"fuzz-{violation.target}-{violation.kind}-{digest}.bin"
    path.write_bytes(violation.data)
    report.reproducers.append(str(path))
    if not quiet:
        print(
            f"\n!! {violation.target}: {violation.kind} violation, input of"
            f" {len(violation.data)} bytes -> {path}\n{violation.detail}",
            flush=True,
        )


# --- atheris -------------------------------------------------------------------------


def atheris_available() -> bool:
    return importlib.util.find_spec("atheris") is not None


def run_atheris(name: str, inputs: int, seconds: float | None, bound: float) -> int:
    """Run one target under atheris in a child process; its exit status (0: no crash)."""
    cmd = [
        sys.executable,
        "-m",
        "bench.fuzz",
        "--atheris-child",
        name,
        "--inputs",
        str(inputs),
        "--time-bound",
        str(bound),
    ]
    if seconds is not None:
        cmd += ["--seconds", str(seconds)]
    limit = None if seconds is None else seconds + 120
    return subprocess.run(cmd, timeout=limit, check=False).returncode


def _atheris_child(name: str, inputs: int, seconds: float | None, bound: float) -> None:
    # Optional and untyped here: imported by name so the module loads without it.
    atheris: Any = importlib.import_module("atheris")

    # The targets' modules are already imported (by bench.fuzz_targets): instrument
    # every loaded function for coverage feedback rather than instrumenting imports.
    atheris.instrument_all()
    target = TARGETS[name]

    def one_input(data: bytes) -> None:
        try:
            target.run(data)
        except target.allowed:
            pass

    corpus = RESULTS / f"atheris-corpus-{name}"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(target.seeds()):
        (corpus / f"seed-{i}").write_bytes(seed)
    args = [
        sys.argv[0],
        str(corpus),
        f"-runs={inputs}",
        f"-timeout={max(1, int(bound))}",
        "-rss_limit_mb=2048",
        "-max_len=65536",
        f"-artifact_prefix={RESULTS}/atheris-{name}-",
    ]
    if seconds is not None:
        args.append(f"-max_total_time={int(seconds)}")
    atheris.Setup(args, one_input)
    atheris.Fuzz()


# --- the table -----------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def print_table(reports: list[Report]) -> None:
    head = f"{'target':<13} {'inputs':>10} {'seconds':>8} {'inputs/s':>9} {'accepted':>9}"
    head += f" {'typed err':>10} {'kinds':>6} {'mem chk':>8} {'mem/bound':>9} {'max ms':>7}"
    head += f" {'violations':>10}"
    print(head)
    for r in reports:
        print(
            f"{r.target:<13} {r.inputs:>10} {r.seconds:>8.1f} {r.rate:>9.0f} {r.accepted:>9}"
            f" {sum(r.errors.values()):>10} {len(r.errors):>6} {r.memory_checks:>8}"
            f" {r.max_memory_ratio:>9.2f} {r.slowest * 1000:>7.1f} {len(r.violations):>10}"
        )


def run(
    names: list[str],
    *,
    inputs: int,
    seconds: float | None,
    seed: int,
    bound: float,
    use_atheris: bool,
    show_kinds: bool = False,
) -> dict[str, Any]:
    m = machine()
    print(f"machine: {m['cores']} cores, Python {m['python']}, {m['platform']}")
    budget = "no time limit" if seconds is None else f"at most {seconds:g} s"
    print(
        f"random mutator: {inputs} inputs per target ({budget}), seed {seed}, bound {bound} s",
        flush=True,
    )
    reports = []
    for name in names:
        report = fuzz_target(TARGETS[name], inputs=inputs, seconds=seconds, seed=seed, bound=bound)
        reports.append(report)
        print(
            f"{name}: {report.inputs} inputs in {report.seconds:.1f} s,"
            f" {len(report.violations)} violations",
            flush=True,
        )
        if show_kinds:
            print(f"\n{name}: typed errors by kind")
            for kind, n in report.errors.most_common(25):
                print(f"  {n:>9}  {kind}")
    print()
    print_table(reports)
    out: dict[str, Any] = {"machine": m, "targets": {r.target: r.as_dict() for r in reports}}
    if use_atheris and atheris_available():
        statuses = {n: run_atheris(n, inputs, seconds, bound) for n in names}
        out["atheris"] = statuses
        print(f"atheris exit statuses (0 = no crash): {statuses}")
    elif use_atheris:
        out["atheris"] = "absent"
        print("atheris: not installed (optional; `pip install atheris` adds coverage-guided runs)")
    violations = sum(len(r.violations) for r in reports)
    print(f"violations: {violations}" + (" (reproducers in bench/results/)" if violations else ""))
    return out


def main() -> dict[str, Any]:
    """The short variant for ``make bench``: 3,000 inputs per target, at most 3 s each."""
    return run(list(TARGETS), inputs=3_000, seconds=3.0, seed=0, bound=TIME_BOUND, use_atheris=True)


def reproduce(name: str, path: Path) -> int:
    """Run one saved input through a target, print what happened; 1 if it violates."""
    target = TARGETS[name]
    data = path.read_bytes()
    outcome = check_input(target, data, memory=True)
    if outcome.violation is not None:
        print(f"{outcome.violation.kind} violation:\n{outcome.violation.detail}")
        return 1
    print(f"ok: {outcome.kind or 'accepted'} (peak {outcome.peak} bytes traced)")
    return 0


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), help="repeatable")
    parser.add_argument("--inputs", type=int, default=SOAK_INPUTS, help="per target")
    parser.add_argument("--seconds", type=float, default=None, help="per target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-bound", type=float, default=TIME_BOUND, help="per input")
    parser.add_argument("--no-atheris", action="store_true")
    parser.add_argument("--kinds", action="store_true", help="list typed errors by kind")
    parser.add_argument("--reproduce", type=Path, help="run one saved input (needs --target)")
    parser.add_argument("--atheris-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.atheris_child:
        _atheris_child(args.atheris_child, args.inputs, args.seconds, args.time_bound)
        return 0
    if args.reproduce is not None:
        if not args.target or len(args.target) != 1:
            parser.error("--reproduce needs exactly one --target")
        return reproduce(args.target[0], args.reproduce)
    out = run(
        args.target or list(TARGETS),
        inputs=args.inputs,
        seconds=args.seconds,
        seed=args.seed,
        bound=args.time_bound,
        use_atheris=not args.no_atheris,
        show_kinds=args.kinds,
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fuzz.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    crashed = isinstance(out.get("atheris"), dict) and any(out["atheris"].values())
    return 1 if crashed or any(t["violations"] for t in out["targets"].values()) else 0


if __name__ == "__main__":
    sys.exit(cli())
