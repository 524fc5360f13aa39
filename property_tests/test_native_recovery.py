"""Hypothesis: after a random commit sequence and a random cut of the log, the native
store recovers exactly the model's state after the last complete record.

The model is written from the store contract (``None`` deletes, later writes win,
the latest creds win), not from the implementation; the only thing the test takes
from the store is the log file's size after each commit (the record boundaries).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stores.creds import AuthCreds, init_auth_creds
from stores.errors import CorruptStateError
from stores.native import open_native_backend
from stores.types import Batch
from tests.stores.native_log import records_end

TYPES = ("session", "pre-key", "sender-key")
IDS = ("a", "b", "c", "d", "e")

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
# A stored value is never None at the top (None means delete).
stored_value = plain.filter(lambda v: v is not None)
writes = st.dictionaries(
    st.sampled_from(TYPES),
    st.dictionaries(st.sampled_from(IDS), st.none() | stored_value, min_size=1, max_size=3),
    min_size=1,
    max_size=2,
)


@dataclass(frozen=True)
class Step:
    keys: dict[str, dict[str, Any]]
    with_creds: bool


steps = st.lists(st.builds(Step, writes, st.booleans()), min_size=1, max_size=10)


class Model:
    """The contract: apply commits in order; None deletes; the newest creds win."""

    def __init__(self) -> None:
        self.keys: dict[str, dict[str, Any]] = {}
        self.creds_id: int | None = None

    def apply(self, index: int, step: Step) -> None:
        for type_, entries in step.keys.items():
            table = self.keys.setdefault(type_, {})
            for id_, value in entries.items():
                if value is None:
                    table.pop(id_, None)
                else:
                    table[id_] = value
        if step.with_creds:
            self.creds_id = index

    def visible(self) -> dict[str, dict[str, Any]]:
        return {t: dict(e) for t, e in self.keys.items() if e}


def creds_for(template: AuthCreds, index: int) -> AuthCreds:
    creds = template.copy()
    creds.next_pre_key_id = index + 1
    return creds


def live_log(path: Path) -> Path:
    return path / max(n for n in os.listdir(path) if n.startswith("log-"))


async def scenario(
    path: Path,
    program: list[Step],
    compact_after: int | None,
    cut_fraction: float,
    zero_fill: bool,
) -> None:
    template = init_auth_creds()
    sizes: list[int] = []
    first_in_log = 0
    async with await open_native_backend(path) as backend:
        sizes.append(records_end(live_log(path)))
        for index, step in enumerate(program):
            creds = creds_for(template, index) if step.with_creds else None
            await backend.commit(Batch(keys=step.keys, creds=creds))
            sizes.append(records_end(live_log(path)))
            if compact_after == index:
                await backend.compact()
                first_in_log = index + 1
                sizes = [records_end(live_log(path))]
    log = live_log(path)
    start, end = sizes[0], sizes[-1]
    cut = start + round((end - start) * cut_fraction)
    if zero_fill:
        # The tail inside the preallocated part, never reaching the disk: zeros.
        with log.open("r+b") as f:
            f.seek(cut)
            f.write(bytes(end - cut))
    else:
        os.truncate(log, cut)
    complete = first_in_log + sum(1 for size in sizes[1:] if size <= cut)
    model = Model()
    for index, step in enumerate(program[:complete]):
        model.apply(index, step)
    async with await open_native_backend(path) as backend:
        snap = await backend.snapshot()
        assert {t: e for t, e in snap.keys.items() if e} == model.visible()
        if model.creds_id is None:
            assert snap.creds is None
        else:
            assert snap.creds is not None
            assert snap.creds.next_pre_key_id == model.creds_id + 1
        assert backend.statistics().durable_seq == complete


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    program=steps,
    compact_after=st.none() | st.integers(min_value=0, max_value=9),
    cut_fraction=st.floats(min_value=0.0, max_value=1.0),
    zero_fill=st.booleans(),
)
def test_recovered_state_equals_model_after_last_complete_record(
    program: list[Step], compact_after: int | None, cut_fraction: float, zero_fill: bool
) -> None:
    """Any cut of the live log (truncated, or zeroed inside its preallocated tail)
    recovers exactly the commits wholly before the cut."""
    with tempfile.TemporaryDirectory() as tmp:
        args = (program, compact_after, cut_fraction, zero_fill)
        trio.run(scenario, Path(tmp) / "auth", *args)


async def flip_scenario(path: Path, program: list[Step], position: float, bit: int) -> None:
    sizes: list[int] = []
    async with await open_native_backend(path) as backend:
        sizes.append(records_end(live_log(path)))
        for step in program:
            await backend.commit(Batch(keys=step.keys))
            sizes.append(records_end(live_log(path)))
    log = live_log(path)
    data = bytearray(log.read_bytes())
    offset = sizes[0] + min(int((sizes[-1] - sizes[0]) * position), sizes[-1] - sizes[0] - 1)
    data[offset] ^= 1 << bit
    log.write_bytes(bytes(data))
    # The record holding the flipped byte: commits are sequential, one record each.
    hit = next(k for k in range(len(program)) if offset < sizes[k + 1])
    if hit < len(program) - 1:
        with pytest.raises(CorruptStateError) as info:
            await open_native_backend(path)
        assert info.value.location == str(log)
        assert info.value.offset == sizes[hit]
        assert log.read_bytes() == bytes(data)
        return
    model = Model()
    for index, step in enumerate(program[:hit]):
        model.apply(index, step)
    async with await open_native_backend(path) as backend:
        snap = await backend.snapshot()
        assert {t: e for t, e in snap.keys.items() if e} == model.visible()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    program=steps,
    position=st.floats(min_value=0.0, max_value=1.0),
    bit=st.integers(min_value=0, max_value=7),
)
def test_a_flipped_bit_is_refused_in_the_middle_and_cut_at_the_end(
    program: list[Step], position: float, bit: int
) -> None:
    """Any flipped bit: in a middle record → CorruptStateError at it; in the last → dropped."""
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(flip_scenario, Path(tmp) / "auth", program, position, bit)
