"""Recovery of the native log: a torn tail is cut exactly, damage in the middle is refused."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cbor2
import pytest

from stores.creds import init_auth_creds
from stores.errors import CorruptStateError
from stores.native import open_native_backend
from stores.native_format import encode_record, encode_record_body, log_name
from stores.types import Batch
from tests.stores.native_log import records_end, trim_log

LOG0 = log_name(0)


def batch(n: int) -> Batch:
    """Commit n writes three keys that must appear all together."""
    return Batch(
        keys={"session": {f"c{n}-{j}": {"n": n, "j": j, "pad": b"x" * n} for j in range(3)}}
    )


def state_after(n: int) -> dict[str, dict[str, object]]:
    return {
        f"c{i}-{j}": {"n": i, "j": j, "pad": b"x" * i} for i in range(1, n + 1) for j in range(3)
    }


def truncate(path: Path, size: int) -> None:
    os.truncate(path, size)


def append(path: Path, data: bytes) -> None:
    """Append right after the records (the zero tail cut first)."""
    trim_log(path)
    with path.open("ab") as f:
        f.write(data)


ALL_IDS = [f"c{i}-{j}" for i in range(1, 20) for j in range(3)]


async def build(path: Path, commits: int) -> list[int]:
    """Commit 1..commits one by one; return the records' end after each (record boundaries).

    The log is left ending at its last record (its zero tail trimmed), so tests can
    cut and damage it by offset from the end.
    """
    sizes = []
    async with await open_native_backend(path) as backend:
        sizes.append(records_end(path / LOG0))
        for n in range(1, commits + 1):
            await backend.commit(batch(n))
            sizes.append(records_end(path / LOG0))
    trim_log(path / LOG0)
    return sizes


async def read_sessions(path: Path) -> tuple[dict[str, object], object]:
    async with await open_native_backend(path) as backend:
        return await backend.read_keys("session", ALL_IDS), backend.recovery


async def test_truncation_at_every_offset_of_last_record_drops_exactly_it(tmp_path: Path) -> None:
    """Cutting the log anywhere inside the last record opens with the first four commits."""
    master = tmp_path / "master"
    sizes = await build(master, 5)
    start, end = sizes[-2], sizes[-1]
    for cut in range(start, end):
        work = tmp_path / f"cut{cut}"
        shutil.copytree(master, work)
        truncate(work / LOG0, cut)
        sessions, recovery = await read_sessions(work)
        assert sessions == state_after(4), cut
        if cut > start:
            assert recovery.torn_tail is not None  # type: ignore[attr-defined]
            assert recovery.torn_tail.offset == start  # type: ignore[attr-defined]
        assert (work / LOG0).stat().st_size == start
        shutil.rmtree(work)
    # The complete log still opens with all five.
    sessions, _ = await read_sessions(master)
    assert sessions == state_after(5)


async def test_appends_after_a_torn_tail_continue_the_sequence(tmp_path: Path) -> None:
    """After cutting a torn tail, the next commit gets the next seq and survives reopen."""
    sizes = await build(tmp_path, 3)
    truncate(tmp_path / LOG0, sizes[-1] - 5)
    async with await open_native_backend(tmp_path) as backend:
        assert await backend.commit(batch(7)) == 3
    sessions, recovery = await read_sessions(tmp_path)
    assert recovery.torn_tail is None  # type: ignore[attr-defined]
    assert sessions == {
        **state_after(2),
        **{f"c7-{j}": {"n": 7, "j": j, "pad": b"x" * 7} for j in range(3)},
    }


@pytest.mark.parametrize("where", ["marker", "length", "digest", "payload", "last byte"])
async def test_bit_flip_in_a_middle_record_is_corruption(tmp_path: Path, where: str) -> None:
    """A flipped bit in any middle record raises CorruptStateError naming file and offset."""
    master = tmp_path / "master"
    sizes = await build(master, 5)
    for record in range(4):  # records 1..4; record 5 is the tail
        start, end = sizes[record], sizes[record + 1]
        pos = {"marker": 1, "length": 6, "digest": 12, "payload": 30, "last byte": end - start - 1}
        work = tmp_path / f"flip{record}"
        shutil.copytree(master, work)
        log = work / LOG0
        data = bytearray(log.read_bytes())
        data[start + pos[where]] ^= 0x10
        log.write_bytes(bytes(data))
        with pytest.raises(CorruptStateError) as info:
            await open_native_backend(work)
        assert info.value.location == str(log)
        assert info.value.offset == start
        assert log.read_bytes() == bytes(data), "nothing may be cut on corruption"
        shutil.rmtree(work)


async def test_bit_flip_in_the_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    """A bad checksum in the last record (never fully written) drops exactly that record."""
    sizes = await build(tmp_path, 4)
    log = tmp_path / LOG0
    data = bytearray(log.read_bytes())
    data[sizes[-2] + 40] ^= 0x01
    log.write_bytes(bytes(data))
    sessions, recovery = await read_sessions(tmp_path)
    assert sessions == state_after(3)
    assert recovery.torn_tail.offset == sizes[-2]  # type: ignore[attr-defined]


def _append_group(log: Path, first: int, count: int, damage_index: int | None) -> list[int]:
    """Append `count` records written as one group, optionally damaging one; return offsets."""
    offsets = []
    data = bytearray(log.read_bytes())
    for i in range(count):
        n = first + i
        keys = {
            "session": {
                f"c{n}-{j}": cbor2.dumps({"n": n, "j": j, "pad": b"x" * n}) for j in range(3)
            }
        }
        rec = bytearray(encode_record(n, first, encode_record_body(keys, None)))
        if i == damage_index:
            rec[30] ^= 0x04
        offsets.append(len(data))
        data += rec
    log.write_bytes(bytes(data))
    return offsets


async def test_damage_inside_the_last_write_group_is_a_torn_tail(tmp_path: Path) -> None:
    """A bad record followed only by records of its own (unacknowledged) group is cut there."""
    await build(tmp_path, 2)
    offsets = _append_group(tmp_path / LOG0, 3, 4, damage_index=1)
    sessions, recovery = await read_sessions(tmp_path)
    assert sessions == state_after(3)
    assert recovery.torn_tail.offset == offsets[1]  # type: ignore[attr-defined]
    assert recovery.torn_tail.dropped_records == 2  # type: ignore[attr-defined]


async def test_damage_before_a_later_group_is_corruption(tmp_path: Path) -> None:
    """A bad record followed by a record of a later write group is damage, not a tear."""
    await build(tmp_path, 2)
    offsets = _append_group(tmp_path / LOG0, 3, 2, damage_index=1)
    _append_group(tmp_path / LOG0, 5, 1, damage_index=None)
    with pytest.raises(CorruptStateError) as info:
        await open_native_backend(tmp_path)
    assert info.value.offset == offsets[1]


async def test_trailing_zeros_end_the_log_and_are_kept(tmp_path: Path) -> None:
    """A zero-filled tail (preallocated, or extended by a crash) is the log's clean end."""
    sizes = await build(tmp_path, 3)
    append(tmp_path / LOG0, b"\x00" * 4096)
    sessions, recovery = await read_sessions(tmp_path)
    assert sessions == state_after(3)
    assert recovery.torn_tail is None  # type: ignore[attr-defined]
    assert (tmp_path / LOG0).stat().st_size >= sizes[-1] + 4096
    async with await open_native_backend(tmp_path) as backend:
        assert await backend.commit(batch(4)) == 4
    assert (await read_sessions(tmp_path))[0] == state_after(4)


async def test_recover_salvages_the_prefix_and_keeps_the_damaged_log(tmp_path: Path) -> None:
    """recover=True opens a mid-log-damaged store with the intact prefix, keeping the damage."""
    sizes = await build(tmp_path, 5)
    log = tmp_path / LOG0
    data = bytearray(log.read_bytes())
    data[sizes[2] + 30] ^= 0x01  # damage record 3
    log.write_bytes(bytes(data))
    async with await open_native_backend(tmp_path, recover=True) as backend:
        assert await backend.read_keys("session", ALL_IDS) == state_after(2)
        kept = backend.recovery.damaged_log_kept
        assert kept is not None
        assert backend.statistics().generation == 1
        assert await backend.commit(batch(9)) == 3
    assert (tmp_path / kept).read_bytes() == bytes(data)
    sessions, recovery = await read_sessions(tmp_path)
    assert recovery.damaged_log_kept is None  # type: ignore[attr-defined]
    assert set(sessions) == set(state_after(2)) | {f"c9-{j}" for j in range(3)}


async def test_invalid_latest_creds_refuse_open_and_recover_falls_back(tmp_path: Path) -> None:
    """Latest creds that fail validation raise CorruptStateError; recover=True uses the previous."""
    good = init_auth_creds()
    async with await open_native_backend(tmp_path) as backend:
        await backend.commit(Batch(creds=good))
    bad_plain = good.to_plain()
    bad_plain["registration_id"] = "not a number"
    log = tmp_path / LOG0
    offset = records_end(log)
    append(log, encode_record(2, 2, encode_record_body({}, cbor2.dumps(bad_plain))))
    with pytest.raises(CorruptStateError) as info:
        await open_native_backend(tmp_path)
    assert info.value.offset == offset
    assert "creds" in info.value.reason
    async with await open_native_backend(tmp_path, recover=True) as backend:
        assert backend.recovery.creds_fallback is not None
        assert backend.recovery.creds_fallback.seq == 1
        got = await backend.read_creds()
        assert got is not None and got.to_plain() == good.to_plain()
    async with await open_native_backend(tmp_path) as backend:
        got = await backend.read_creds()
        assert got is not None and got.to_plain() == good.to_plain()
    assert log.exists()
