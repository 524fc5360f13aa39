"""inspect_native: a read-only integrity report that never changes the store."""

from __future__ import annotations

import os
from pathlib import Path

from stores.creds import init_auth_creds
from stores.native import open_native_backend
from stores.native_format import log_name
from stores.native_inspect import inspect_native
from stores.types import Batch
from tests.stores.native_log import records_end, trim_log

LOG0 = log_name(0)


async def make_store(path: Path) -> list[int]:
    sizes = []
    async with await open_native_backend(path) as backend:
        await backend.commit(
            Batch(keys={"pre-key": {"1": b"a", "2": b"b"}}, creds=init_auth_creds())
        )
        sizes.append(records_end(path / LOG0))
        await backend.commit(Batch(keys={"session": {"x": {"k": 1}}}, creds=init_auth_creds()))
        sizes.append(records_end(path / LOG0))
        await backend.commit(Batch(keys={"session": {"y": b"z"}}))
        sizes.append(records_end(path / LOG0))
    trim_log(path / LOG0)  # the log ends at its last record: damage is placed from there
    return sizes


async def test_clean_store_report(tmp_path: Path) -> None:
    """A healthy store reports ok, its seq, key counts and both creds versions."""
    await make_store(tmp_path)
    report = inspect_native(tmp_path)
    assert report.ok and not report.new and report.problems == ()
    assert report.durable_seq == 3 and report.records == 3 and report.generation == 0
    assert report.keys_by_type == (("pre-key", 2), ("session", 2))
    assert report.creds_present and report.creds_valid
    assert report.creds_versions == 2 and report.valid_creds_versions == 2
    assert {f.role for f in report.files} == {"lock", "log"}
    assert report.owner is None


async def test_torn_tail_is_reported_not_cut(tmp_path: Path) -> None:
    """A torn tail is reported (offset) and the file is left as it is."""
    sizes = await make_store(tmp_path)
    os.truncate(tmp_path / LOG0, sizes[-1] - 4)
    report = inspect_native(tmp_path)
    assert report.ok and report.torn_tail is not None
    assert report.torn_tail.offset == sizes[-2]
    assert report.durable_seq == 2
    assert (tmp_path / LOG0).stat().st_size == sizes[-1] - 4


async def test_mid_log_damage_is_reported_with_offset(tmp_path: Path) -> None:
    """Damage in the middle makes the report not ok, naming file and offset; no change."""
    sizes = await make_store(tmp_path)
    log = tmp_path / LOG0
    data = bytearray(log.read_bytes())
    data[sizes[0] + 30] ^= 0x01
    log.write_bytes(bytes(data))
    report = inspect_native(tmp_path)
    assert not report.ok
    assert any(f"{log} at offset {sizes[0]}" in p for p in report.problems)
    assert report.durable_seq == 1  # the intact prefix
    assert log.read_bytes() == bytes(data)


async def test_live_owner_and_foreign_data(tmp_path: Path) -> None:
    """The report names a live owner; foreign data and absence are reported as such."""
    async with await open_native_backend(tmp_path / "a"):
        assert f"pid {os.getpid()}" in (inspect_native(tmp_path / "a").owner or "")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "creds.json").write_text("{}")
    foreign = inspect_native(tmp_path / "b")
    assert not foreign.ok and "Baileys" in foreign.problems[0]
    absent = inspect_native(tmp_path / "none")
    assert absent.ok and absent.new


async def test_loose_modes_are_reported(tmp_path: Path) -> None:
    """A log file readable by others is a reported problem."""
    await make_store(tmp_path)
    os.chmod(tmp_path / LOG0, 0o644)
    report = inspect_native(tmp_path)
    assert any("want 0600" in p for p in report.problems)
