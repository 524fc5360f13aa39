"""The native backend: opening, committing, reading back, refusing what is not ours."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import cbor2
import pytest
import trio

from stores.creds import AuthCreds, init_auth_creds
from stores.errors import (
    CorruptStateError,
    InvalidValueError,
    StoreClosedError,
    StoreLockedError,
    UnsupportedFormatError,
    WrongBackendError,
)
from stores.native import NativeBackend, open_native_backend
from stores.native_format import MAGIC, frame, log_name
from stores.types import KEY_TYPES, Batch, Persistence

LOG0 = log_name(0)


def pre_key(n: int) -> dict[str, bytes]:
    return {"private": bytes([n % 256]) * 32, "public": bytes([(n + 1) % 256]) * 32}


def session(n: int) -> dict[str, object]:
    return {"_sessions": {f"base{n}": {"chain": [n, n + 1], "root": b"\x01" * 32}}, "v": 1.5}


async def reopen(path: Path) -> NativeBackend:
    return await open_native_backend(path)


async def test_absent_directory_is_a_new_private_store(tmp_path: Path) -> None:
    """An absent path becomes a 0700 directory with a 0600 lock and log, no creds."""
    path = tmp_path / "auth"
    async with await open_native_backend(path) as backend:
        assert isinstance(backend, Persistence)
        assert backend.backend_name == "native"
        assert await backend.read_creds() is None
        assert await backend.read_keys("pre-key", ["1"]) == {}
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert sorted(os.listdir(path)) == ["LOCK", LOG0]
    for name in os.listdir(path):
        assert stat.S_IMODE((path / name).stat().st_mode) == 0o600
    assert (path / LOG0).read_bytes().startswith(MAGIC)


async def test_commit_is_read_back_after_reopen(tmp_path: Path) -> None:
    """Keys and creds committed together are there, equal, after a reopen."""
    creds = init_auth_creds()
    async with await open_native_backend(tmp_path) as backend:
        seq = await backend.commit(
            Batch(keys={"pre-key": {"1": pre_key(1)}, "session": {"a.0": session(1)}}, creds=creds)
        )
        assert seq == 1
        assert backend.statistics().records == 1
    async with await reopen(tmp_path) as backend:
        got = await backend.read_creds()
        assert got is not None and got.to_plain() == creds.to_plain()
        assert await backend.read_keys("pre-key", ["1", "2"]) == {"1": pre_key(1)}
        assert await backend.read_keys("session", ["a.0"]) == {"a.0": session(1)}
        assert backend.statistics().durable_seq == 1


async def test_none_deletes_and_missing_delete_is_a_no_op(tmp_path: Path) -> None:
    """None deletes an id; deleting an absent id changes nothing."""
    async with await open_native_backend(tmp_path) as backend:
        await backend.commit(Batch(keys={"pre-key": {"1": pre_key(1), "2": pre_key(2)}}))
        await backend.commit(Batch(keys={"pre-key": {"1": None, "99": None}}))
        assert await backend.read_keys("pre-key", ["1", "2", "99"]) == {"2": pre_key(2)}
    async with await reopen(tmp_path) as backend:
        assert await backend.read_keys("pre-key", ["1", "2", "99"]) == {"2": pre_key(2)}


async def test_reads_return_fresh_objects(tmp_path: Path) -> None:
    """Mutating a value read back (or the one committed) never changes the store."""
    value = session(3)
    async with await open_native_backend(tmp_path) as backend:
        await backend.commit(Batch(keys={"session": {"x": value}}))
        value["v"] = 99
        first = await backend.read_keys("session", ["x"])
        first["x"]["v"] = 42
        assert await backend.read_keys("session", ["x"]) == {"x": session(3)}


async def test_snapshot_holds_everything(tmp_path: Path) -> None:
    """snapshot() returns the creds and every present key, decoded."""
    creds = init_auth_creds()
    async with await open_native_backend(tmp_path) as backend:
        await backend.commit(Batch(keys={"pre-key": {"1": pre_key(1)}}, creds=creds))
        await backend.commit(Batch(keys={"sender-key": {"g::a": b"\x05" * 10}}))
        snap = await backend.snapshot()
    assert snap.creds is not None and snap.creds.to_plain() == creds.to_plain()
    assert snap.keys == {"pre-key": {"1": pre_key(1)}, "sender-key": {"g::a": b"\x05" * 10}}


async def test_latest_creds_win(tmp_path: Path) -> None:
    """A later creds commit replaces the earlier one."""
    first, second = init_auth_creds(), init_auth_creds()
    second.next_pre_key_id = 31
    async with await open_native_backend(tmp_path) as backend:
        await backend.commit(Batch(creds=first))
        await backend.commit(Batch(creds=second))
    async with await reopen(tmp_path) as backend:
        got = await backend.read_creds()
        assert got is not None and got.next_pre_key_id == 31


async def test_empty_batch_writes_nothing(tmp_path: Path) -> None:
    """An empty batch returns the durable seq without a record or an fsync."""
    async with await open_native_backend(tmp_path) as backend:
        await backend.commit(Batch(keys={"pre-key": {"1": pre_key(1)}}))
        fsyncs = backend.statistics().fsyncs
        assert await backend.commit(Batch()) == 1
        assert backend.statistics().records == 1
        assert backend.statistics().fsyncs == fsyncs


async def test_bad_values_are_refused_and_store_stays_writable(tmp_path: Path) -> None:
    """Non-plain values, bad ids, unknown types and NaN raise InvalidValueError; store goes on."""
    async with await open_native_backend(tmp_path) as backend:
        for bad in (
            {"session": {"x": {1: "int key"}}},
            {"session": {"x": object()}},
            {"session": {"x": float("nan")}},
            {"session": {1: b"x"}},
            {"session": {"": b"x"}},
            {"no-such-type": {"x": b"x"}},
        ):
            with pytest.raises(InvalidValueError):
                await backend.commit(Batch(keys=bad))  # type: ignore[arg-type]  # bad on purpose
        assert await backend.commit(Batch(keys={"session": {"x": b"ok"}})) == 1


async def test_invalid_creds_are_refused(tmp_path: Path) -> None:
    """Creds that a later open would reject are never written."""
    creds = init_auth_creds()
    creds.registration_id = -5
    async with await open_native_backend(tmp_path) as backend:
        with pytest.raises(InvalidValueError):
            await backend.commit(Batch(creds=creds))
        assert backend.statistics().records == 0


async def test_second_opener_gets_store_locked_error(tmp_path: Path) -> None:
    """A second open of a live store names the owning pid; after close it opens."""
    backend = await open_native_backend(tmp_path)
    with pytest.raises(StoreLockedError) as info:
        await open_native_backend(tmp_path)
    assert f"pid {os.getpid()}" in info.value.owner
    await backend.aclose()
    async with await reopen(tmp_path):
        pass


async def test_closed_backend_refuses_use(tmp_path: Path) -> None:
    """After aclose every operation raises StoreClosedError; aclose is idempotent."""
    backend = await open_native_backend(tmp_path)
    await backend.aclose()
    await backend.aclose()
    with pytest.raises(StoreClosedError):
        await backend.commit(Batch(keys={"session": {"x": b"1"}}))
    with pytest.raises(StoreClosedError):
        await backend.read_keys("session", ["x"])


async def test_baileys_json_directory_is_wrong_backend(tmp_path: Path) -> None:
    """A Baileys multi-file directory is refused and left untouched (no LOCK added)."""
    (tmp_path / "creds.json").write_text("{}")
    (tmp_path / "pre-key-1.json").write_text("{}")
    with pytest.raises(WrongBackendError) as info:
        await open_native_backend(tmp_path)
    assert "Baileys" in info.value.found
    assert sorted(os.listdir(tmp_path)) == ["creds.json", "pre-key-1.json"]


@pytest.mark.parametrize("key_type", KEY_TYPES)
async def test_a_baileys_key_file_of_any_type_makes_a_directory_foreign(
    tmp_path: Path, key_type: str
) -> None:
    """A lone ``<type>-<id>.json`` of every key type is recognised as Baileys', never as empty."""
    (tmp_path / f"{key_type}-1.json").write_text("{}")
    with pytest.raises(WrongBackendError) as info:
        await open_native_backend(tmp_path)
    assert "Baileys" in info.value.found


async def test_sqlite_file_is_wrong_backend(tmp_path: Path) -> None:
    """A SQLite database (as the path, or inside the directory) is refused."""
    db = tmp_path / "auth.db"
    sqlite3.connect(db).execute("create table t (x)").connection.close()
    with pytest.raises(WrongBackendError) as info:
        await open_native_backend(db)
    assert "SQLite" in info.value.found
    with pytest.raises(WrongBackendError):
        await open_native_backend(tmp_path)


async def test_unknown_files_are_not_a_new_store(tmp_path: Path) -> None:
    """A directory holding files we do not know is refused, not treated as empty."""
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(WrongBackendError):
        await open_native_backend(tmp_path)


async def test_only_lock_and_temp_files_is_a_new_store(tmp_path: Path) -> None:
    """A crash during creation leaves LOCK and a temp file: still a new store, cleaned."""
    (tmp_path / "LOCK").write_text("{}")
    (tmp_path / f".{LOG0}.tmp-abcdef").write_bytes(b"half")
    async with await open_native_backend(tmp_path) as backend:
        assert await backend.read_creds() is None
    assert sorted(os.listdir(tmp_path)) == ["LOCK", LOG0]


def _header_payload(version: int, backend: str = "native") -> dict[str, object]:
    return {
        "format": "baileys-trio",
        "backend": backend,
        "version": version,
        "kind": "log",
        "generation": 0,
        "base_seq": 0,
        "created": 0.0,
    }


async def test_unknown_version_is_unsupported(tmp_path: Path) -> None:
    """A log declaring format version 2 raises UnsupportedFormatError and is kept."""
    data = MAGIC + frame(cbor2.dumps(_header_payload(2)))
    (tmp_path / LOG0).write_bytes(data)
    with pytest.raises(UnsupportedFormatError) as info:
        await open_native_backend(tmp_path)
    assert info.value.version == 2
    assert (tmp_path / LOG0).read_bytes() == data


async def test_other_backend_header_is_wrong_backend(tmp_path: Path) -> None:
    """A header naming another backend raises WrongBackendError."""
    (tmp_path / LOG0).write_bytes(MAGIC + frame(cbor2.dumps(_header_payload(1, "sqlite"))))
    with pytest.raises(WrongBackendError):
        await open_native_backend(tmp_path)


@pytest.mark.parametrize("damage", ["empty", "bad magic", "bad header checksum"])
async def test_damaged_header_never_opens_as_new(tmp_path: Path, damage: str) -> None:
    """A creds-bearing store whose log header is damaged raises CorruptStateError, unchanged."""
    async with await open_native_backend(tmp_path) as backend:
        await backend.commit(Batch(creds=init_auth_creds()))
    log = tmp_path / LOG0
    data = bytearray(log.read_bytes())
    if damage == "empty":
        data = bytearray()
    elif damage == "bad magic":
        data[0] ^= 0xFF
    else:
        data[len(MAGIC) + 30] ^= 0x01
    log.write_bytes(bytes(data))
    with pytest.raises(CorruptStateError) as info:
        await open_native_backend(tmp_path)
    assert info.value.location == str(log)
    assert log.read_bytes() == bytes(data)


async def test_concurrent_commits_share_fsyncs(tmp_path: Path) -> None:
    """64 concurrent commits are made durable with far fewer fsyncs, each its own seq."""
    seqs: list[int] = []
    async with await open_native_backend(tmp_path) as backend:

        async def one(i: int) -> None:
            seqs.append(await backend.commit(Batch(keys={"session": {f"s{i}": session(i)}})))

        async with trio.open_nursery() as nursery:
            for i in range(64):
                nursery.start_soon(one, i)
        stats = backend.statistics()
    assert sorted(seqs) == list(range(1, 65))
    assert stats.commits == 64 and stats.records == 64
    assert stats.fsyncs <= 8
    async with await reopen(tmp_path) as backend:
        got = await backend.read_keys("session", [f"s{i}" for i in range(64)])
        assert got == {f"s{i}": session(i) for i in range(64)}


async def test_repr_holds_no_key_material(tmp_path: Path) -> None:
    """The backend's repr names location and seq only."""
    async with await open_native_backend(tmp_path) as backend:
        await backend.commit(Batch(keys={"pre-key": {"1": pre_key(7)}}))
        text = repr(backend)
    assert str(tmp_path) in text and "07070707" not in text


def test_creds_round_trip_through_plain() -> None:
    """Sanity of the creds API the backend relies on: to_plain/from_plain round-trips."""
    creds = init_auth_creds()
    assert AuthCreds.from_plain(creds.to_plain(), "x").to_plain() == creds.to_plain()


async def test_open_tightens_loose_file_modes(tmp_path: Path) -> None:
    """A log file loosened to 0644 by hand is made 0600 again on open."""
    async with await open_native_backend(tmp_path) as backend:
        await backend.commit(Batch(keys={"pre-key": {"1": pre_key(1)}}))
    os.chmod(tmp_path / LOG0, 0o644)
    async with await reopen(tmp_path):
        pass
    assert stat.S_IMODE((tmp_path / LOG0).stat().st_mode) == 0o600


def test_store_held_by_another_process_is_locked(tmp_path: Path) -> None:
    """A native store opened by another process is refused, naming that pid; its death frees it."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.stores.crash_child", str(tmp_path), "1", "1048576"],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().startswith(b"OPEN")
        with pytest.raises(StoreLockedError) as info:
            trio.run(open_native_backend, tmp_path)
        assert f"pid {child.pid}" in info.value.owner
    finally:
        child.kill()
        child.communicate(timeout=30)

    async def reopen_after_death() -> None:
        async with await open_native_backend(tmp_path) as backend:
            assert backend.statistics().durable_seq >= 0

    trio.run(reopen_after_death)


async def test_tiny_compaction_threshold_is_refused(tmp_path: Path) -> None:
    """A compaction threshold that would rewrite the store on every commit is a ValueError."""
    with pytest.raises(ValueError):
        await open_native_backend(tmp_path, compact_min_bytes=10)


async def test_creds_burst_writes_only_the_newest_creds_of_each_group(tmp_path: Path) -> None:
    """2,000 concurrent creds-only commits: a few records, each ack covered, newest reopens."""
    base = init_auth_creds()
    seqs: dict[int, int] = {}
    issued = 0
    async with await open_native_backend(tmp_path) as backend:
        await backend.commit(Batch(keys={"pre-key": {"1": pre_key(1)}}))

        async def one() -> None:
            nonlocal issued
            issued += 1
            n = issued
            creds = base.copy()
            creds.account_sync_counter = n
            seqs[n] = await backend.commit(Batch(creds=creds))

        async with trio.open_nursery() as nursery:
            for _ in range(2000):
                nursery.start_soon(one)
        stats = backend.statistics()
        latest = await backend.read_creds()
    creds_groups = stats.groups - 1  # the first group held the pre-key commit
    assert creds_groups <= 3 and stats.records == stats.groups  # one creds record a group
    assert stats.coalesced == 2000 - creds_groups
    assert stats.commits == 2001
    # Acks follow call order: a later call's commit is never acked with an older seq.
    ordered = [seqs[n] for n in sorted(seqs)]
    assert ordered == sorted(ordered) and ordered[-1] == stats.durable_seq
    assert latest is not None and latest.account_sync_counter == 2000
    async with await reopen(tmp_path) as backend:
        again = await backend.read_creds()
        assert again is not None and again.account_sync_counter == 2000
        assert await backend.read_keys("pre-key", ["1"]) == {"1": pre_key(1)}
        assert backend.statistics().durable_seq == stats.durable_seq
