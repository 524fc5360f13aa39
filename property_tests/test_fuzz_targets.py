"""The shared fuzz targets under Hypothesis: only typed errors, no hang, bounded memory.

Every target of ``bench/fuzz_targets.py`` gets mutations of its valid seed
encodings (bit flips, byte sets, length-field edits, insertions, deletions,
truncation, splicing, plus the target's own structure-aware edits and checksum
repair), and raw bytes. The contract checked is the one each target declares:
the input is accepted or one of ``Target.allowed`` is raised, within the time
bound, and, for inputs declaring huge lengths, within the memory bound (traced
by tracemalloc). Each area's own property tests cover its model in depth; this
file checks the cross-cutting contract with one harness.

Bugs the fuzzing found in the modules under test are fixed and pinned by
regression tests at the end.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bench.fuzz import Outcome, check_input
from bench.fuzz_targets import (
    TARGETS,
    Target,
    binary_nest,
    json_grow_number,
    run_baileys_json,
)
from stores import buffer_json
from stores.errors import CorruptStateError

#: Generous per-input bound: a hang guard, not a speed check.
TIME_BOUND = 20.0

#: Bounds on generated Baileys JSON. Both former bugs (deep nesting, numeric keys past
#: Python's int digit limit) are fixed and pinned by regression tests below; these
#: bounds now only keep generated documents at a size Hypothesis shrinks quickly.
JSON_SAFE_NESTING = 2_000
JSON_SAFE_DIGITS = 6_000
_DIGITS = re.compile(rb"[0-9]+")


def within_json_size_bounds(data: bytes) -> bool:
    """Whether ``data`` stays within the generated-JSON size bounds."""
    brackets = data.count(b"[") + data.count(b"{")
    longest = max((len(m.group()) for m in _DIGITS.finditer(data)), default=0)
    return brackets <= JSON_SAFE_NESTING and longest <= JSON_SAFE_DIGITS


INTERESTING_INTS = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0xFFFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 28]
INTERESTING_BYTES = [0x00, 0x01, 0x02, 0x7F, 0x80, 0xFF, 0xF8, 0xF9, 0xFC, 0xFD, 0xFE, 0x5B, 0x7B]

SEEDS = {name: target.seeds() for name, target in TARGETS.items()}

Edit = Callable[[bytearray, int], None]
"""An edit of the input; the int is the index of a seed to splice from."""


def fits(outcome: Outcome) -> None:
    assert outcome.violation is None, (
        f"{outcome.violation.kind} violation on a {len(outcome.violation.data)}-byte input"
        f" {outcome.violation.data[:80]!r}:\n{outcome.violation.detail}"
    )


# --- strategies --------------------------------------------------------------------------


def _at(data: bytearray, position: int) -> int:
    return position % (len(data) + 1)


def blind_edits(name: str) -> st.SearchStrategy[Callable[[bytearray], None]]:
    """One mutation, its parameters drawn by Hypothesis (so failures shrink)."""
    seeds = SEEDS[name]
    positions = st.integers(0, 1 << 20)

    def flip(pos: int, bit: int) -> Callable[[bytearray], None]:
        def edit(data: bytearray) -> None:
            if data:
                data[pos % len(data)] ^= 1 << bit

        return edit

    def set_byte(pos: int, value: int) -> Callable[[bytearray], None]:
        def edit(data: bytearray) -> None:
            if data:
                data[pos % len(data)] = value

        return edit

    def length(pos: int, width: int, value: int, near: int | None) -> Callable[[bytearray], None]:
        def edit(data: bytearray) -> None:
            if len(data) < width:
                return
            n = (len(data) + near if near is not None else value) % (1 << (8 * width))
            at = pos % (len(data) - width + 1)
            data[at : at + width] = n.to_bytes(width, "big")

        return edit

    def insert(pos: int, blob: bytes) -> Callable[[bytearray], None]:
        def edit(data: bytearray) -> None:
            at = _at(data, pos)
            data[at:at] = blob

        return edit

    def delete(pos: int, n: int) -> Callable[[bytearray], None]:
        def edit(data: bytearray) -> None:
            at = _at(data, pos)
            del data[at : at + n]

        return edit

    def truncate(pos: int) -> Callable[[bytearray], None]:
        def edit(data: bytearray) -> None:
            del data[_at(data, pos) :]

        return edit

    def splice(other: bytes, pos: int, from_pos: int) -> Callable[[bytearray], None]:
        def edit(data: bytearray) -> None:
            data[_at(data, pos) :] = other[from_pos % (len(other) + 1) :]

        return edit

    return st.one_of(
        st.builds(flip, positions, st.integers(0, 7)),
        st.builds(set_byte, positions, st.sampled_from(INTERESTING_BYTES) | st.integers(0, 255)),
        st.builds(
            length,
            positions,
            st.sampled_from([1, 2, 3, 4, 8]),
            st.sampled_from(INTERESTING_INTS),
            st.none() | st.integers(-4, 4),
        ),
        st.builds(insert, positions, st.binary(min_size=1, max_size=16)),
        st.builds(delete, positions, st.integers(1, 64)),
        st.builds(truncate, positions),
        st.builds(splice, st.sampled_from(seeds), positions, positions),
    )


def json_structure_edits() -> st.SearchStrategy[Callable[[bytearray], None]]:
    """Nesting and long numbers (``mutated`` drops documents past the known bugs)."""

    def nest(depth: int, kind: int) -> Callable[[bytearray], None]:
        opener, closer = [(b"[", b"]"), (b'{"a":', b"}"), (b'{"0":', b"}")][kind]

        def edit(data: bytearray) -> None:
            data[:] = opener * depth + data + closer * depth

        return edit

    def grow(seed: int) -> Callable[[bytearray], None]:
        def edit(data: bytearray) -> None:
            grown = json_grow_number(bytes(data), random.Random(seed))
            data[:] = grown

        return edit

    return st.one_of(
        st.builds(nest, st.integers(1, 100), st.integers(0, 2)),
        st.builds(grow, st.integers(0, 1 << 16)),
    )


def structure_edits(name: str) -> st.SearchStrategy[Callable[[bytearray], None]] | None:
    if name == "baileys_json":
        return json_structure_edits()
    if name == "binary":

        def nest(seed: int) -> Callable[[bytearray], None]:
            def edit(data: bytearray) -> None:
                data[:] = binary_nest(bytes(data), random.Random(seed))

            return edit

        return st.builds(nest, st.integers(0, 1 << 16))
    assert not TARGETS[name].structure_ops, f"{name}: structure ops without a strategy"
    return None


@st.composite
def mutated(draw: st.DrawFn, name: str) -> bytes:
    """A seed of ``name`` with 1-6 edits, then (half the time) the target's fixup."""
    target = TARGETS[name]
    data = bytearray(draw(st.sampled_from(SEEDS[name])))
    edits = blind_edits(name)
    structural = structure_edits(name)
    if structural is not None:
        edits = edits | structural
    for edit in draw(st.lists(edits, min_size=1, max_size=6)):
        edit(data)
    out = bytes(data)
    if target.fixup is not None and draw(st.booleans()):
        out = target.fixup(out)
    if name == "baileys_json":
        assume(within_json_size_bounds(out))
    return out


# --- the contract, per target ---------------------------------------------------------------

FAST = settings(
    max_examples=350,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
FEW = settings(FAST, max_examples=120)


def mutated_inputs_keep_the_contract(name: str, data: bytes) -> None:
    fits(check_input(TARGETS[name], data, bound=TIME_BOUND))


@FAST
@given(mutated("framing"))
def test_framing_mutated_streams_keep_the_contract(data: bytes) -> None:
    """Mutated framed streams, cut anywhere: frames as the rule says or RemoteProtocolError."""
    mutated_inputs_keep_the_contract("framing", data)


@FAST
@pytest.mark.usefixtures("each_reader")
@given(mutated("noise"))
def test_noise_mutated_transport_streams_keep_the_contract(data: bytes) -> None:
    """Mutated encrypted streams into a fresh transport: frames or RemoteProtocolError only."""
    mutated_inputs_keep_the_contract("noise", data)


@FAST
@pytest.mark.usefixtures("each_reader")
@given(mutated("binary"))
def test_binary_mutated_frames_keep_the_contract(data: bytes) -> None:
    """Mutated realistic node frames (and deep nestings) decode or raise DecodeError only."""
    mutated_inputs_keep_the_contract("binary", data)


@FAST
@given(mutated("native"))
def test_native_mutated_logs_keep_the_contract(data: bytes) -> None:
    """Mutated native logs and snapshots (checksums often repaired) scan or raise store errors."""
    mutated_inputs_keep_the_contract("native", data)


@FEW
@given(mutated("native_dir"))
def test_native_dir_recovery_of_mutated_logs_keeps_the_contract(data: bytes) -> None:
    """A directory holding one mutated log loads (strict and salvaging) or raises store errors."""
    mutated_inputs_keep_the_contract("native_dir", data)


@FAST
@given(mutated("baileys_json"))
def test_baileys_json_mutated_files_keep_the_contract(data: bytes) -> None:
    """Mutated creds.json and key files parse or raise CorruptStateError only."""
    mutated_inputs_keep_the_contract("baileys_json", data)


@FAST
@given(mutated("multi_file_journal"))
def test_multi_file_journal_mutated_journals_keep_the_contract(data: bytes) -> None:
    """Mutated commit journals (checksum often repaired) decode or raise store errors only."""
    mutated_inputs_keep_the_contract("multi_file_journal", data)


@FEW
@given(st.sampled_from(sorted(TARGETS)), st.binary(max_size=600))
def test_raw_bytes_keep_every_targets_contract(name: str, data: bytes) -> None:
    """Arbitrary bytes into any target: accepted or its typed error, nothing else."""
    mutated_inputs_keep_the_contract(name, data)


@settings(FAST, max_examples=300)
@given(st.sampled_from(sorted(TARGETS)), st.binary(max_size=40), st.data())
def test_raw_bytes_after_a_valid_prefix_keep_the_contract(
    name: str, tail: bytes, data: st.DataObject
) -> None:
    """A valid seed cut anywhere and followed by arbitrary bytes: the typed error or success."""
    seed = data.draw(st.sampled_from(SEEDS[name]))
    cut = data.draw(st.integers(0, len(seed)))
    mutated_inputs_keep_the_contract(name, seed[:cut] + tail)


# --- memory: declared lengths beyond the input --------------------------------------------

HUGE = [(name, i, data) for name, t in TARGETS.items() for i, data in enumerate(t.huge_lengths())]


@pytest.fixture(scope="module", autouse=True)
def warm_targets() -> None:
    """Run every seed once so lazy set-up (handshake, imports) is not traced as input cost."""
    for name, target in TARGETS.items():
        for seed in SEEDS[name]:
            fits(check_input(target, seed, bound=TIME_BOUND))


@pytest.mark.parametrize(("name", "index", "data"), HUGE, ids=[f"{n}-{i}" for n, i, _ in HUGE])
def test_huge_declared_lengths_are_refused_within_the_memory_bound(
    name: str, index: int, data: bytes
) -> None:
    """An input declaring a length far beyond its size is refused before that much is allocated."""
    target = TARGETS[name]
    outcome = check_input(target, data, bound=TIME_BOUND, memory=True)
    fits(outcome)
    assert outcome.peak is not None and outcome.peak <= target.memory_bound(len(data))


def test_every_target_declares_its_contract() -> None:
    """Each target names its typed errors, has valid seeds and crafted huge-length inputs."""
    for name, target in TARGETS.items():
        assert target.allowed and all(issubclass(e, Exception) for e in target.allowed), name
        assert SEEDS[name] and target.huge_lengths(), name
        assert target.doc and target.run.__doc__ and "Allowed:" in target.run.__doc__, name


@pytest.mark.parametrize(
    "name", ["framing", "noise", "binary", "baileys_json", "multi_file_journal"]
)
def test_valid_seeds_are_accepted(name: str) -> None:
    """The seed corpus is made of valid encodings: every seed goes through without an error."""
    for seed in SEEDS[name]:
        outcome = check_input(TARGETS[name], seed, bound=TIME_BOUND)
        fits(outcome)
        if name != "baileys_json":  # key files are not creds.json: that parser refuses them
            assert outcome.kind is None, (name, outcome.kind)


def test_native_log_seeds_are_accepted_by_directory_recovery() -> None:
    """Every valid native log seed (torn tail included) loads through recovery without error."""
    target: Target = TARGETS["native_dir"]
    assert len(SEEDS["native_dir"]) >= 3
    for seed in SEEDS["native_dir"]:
        assert check_input(target, seed, bound=TIME_BOUND).kind is None


# --- bugs the fuzzing found in buffer_json (fixed; kept as regression tests) ----------------


def test_deeply_nested_buffer_json_raises_corrupt_state() -> None:
    """Balanced JSON nested 600 deep is refused with CorruptStateError, not RecursionError."""
    doc = b"[" * 600 + b"]" * 600
    with pytest.raises(CorruptStateError):
        buffer_json.loads(doc, "creds.json")


def test_numeric_key_beyond_the_int_digit_limit_raises_corrupt_state() -> None:
    """An object key of 5,000 digits reads as a string key or is refused with CorruptStateError."""
    doc = b'{"' + b"1" * 5_000 + b'":1}'
    try:
        buffer_json.loads(doc, "creds.json")
    except CorruptStateError:
        pass


@pytest.mark.parametrize(
    "doc", [b'{"a":' * 700 + b"1" + b"}" * 700, b'{"0":{"' + b"2" * 4_400 + b'":7}}']
)
def test_baileys_json_readers_refuse_the_bug_triggers_with_a_typed_error(doc: bytes) -> None:
    """The creds and key-file parsers meet these documents with CorruptStateError only."""
    try:
        run_baileys_json(doc)
    except CorruptStateError:
        pass
