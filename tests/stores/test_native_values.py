"""The native store keeps where values lie, not the values: reads are checked, compaction works."""

from __future__ import annotations

import random
import zlib
from pathlib import Path

import cbor2
import pytest

import stores.native_values as native_values
from stores.errors import CorruptStateError
from stores.native import open_native_backend
from stores.native_format import log_name, snapshot_name
from stores.native_values import CACHE_ENTRIES, entry_bytes
from stores.types import Batch

PRE_KEYS = {str(i): {"public": bytes([i % 256]) * 32, "private": bytes(32)} for i in range(1, 813)}


async def test_values_stay_on_disk_after_reopen(tmp_path: Path) -> None:
    """812 uploaded pre-keys reopen with none of their values held in memory."""
    async with await open_native_backend(tmp_path / "s") as backend:
        await backend.commit(Batch(keys={"pre-key": PRE_KEYS}))
    async with await open_native_backend(tmp_path / "s") as backend:
        stats = backend.statistics()
        assert (stats.keys, stats.values_in_memory, stats.values_cached) == (812, 0, 0)
        assert await backend.read_keys("pre-key", ["1", "812", "813"]) == {
            "1": PRE_KEYS["1"],
            "812": PRE_KEYS["812"],
        }


async def test_values_committed_in_this_run_are_read_from_the_log(tmp_path: Path) -> None:
    """A commit's values are placed in the log as it is written, not kept in memory."""
    async with await open_native_backend(tmp_path / "s") as backend:
        await backend.commit(Batch(keys={"pre-key": PRE_KEYS}))
        await backend.commit(Batch(keys={"session": {"a": b"x" * 300}}))
        assert backend.statistics().values_in_memory == 0
        assert await backend.read_keys("session", ["a"]) == {"a": b"x" * 300}
        assert await backend.read_keys("pre-key", ["77"]) == {"77": PRE_KEYS["77"]}


async def test_a_changed_entry_on_disk_is_corruption_naming_file_and_offset(tmp_path: Path) -> None:
    """Bytes of a value changed after open fail the read with the log's name and the offset."""
    async with await open_native_backend(tmp_path / "s") as backend:
        await backend.commit(Batch(keys={"session": {"a": b"A" * 40, "b": b"B" * 40}}))
    log = tmp_path / "s" / log_name(0)
    entry = entry_bytes("b", cbor2.dumps(b"B" * 40))
    offset = log.read_bytes().index(entry)
    async with await open_native_backend(tmp_path / "s") as backend:
        data = bytearray(log.read_bytes())
        data[offset + len(entry) - 1] ^= 0x01
        log.write_bytes(bytes(data))
        assert await backend.read_keys("session", ["a"]) == {"a": b"A" * 40}
        with pytest.raises(CorruptStateError) as info:
            await backend.read_keys("session", ["b"])
    assert (info.value.location, info.value.offset) == (str(log), offset)


async def test_cache_is_bounded_and_sees_later_commits(tmp_path: Path) -> None:
    """Recent reads are cached up to a small bound; a later commit replaces the cached value."""
    async with await open_native_backend(tmp_path / "s") as backend:
        await backend.commit(Batch(keys={"pre-key": PRE_KEYS}))
        for i in range(1, 101):
            await backend.read_keys("pre-key", [str(i)])
        assert backend.statistics().values_cached == CACHE_ENTRIES
        await backend.commit(Batch(keys={"pre-key": {"100": {"public": b"new"}, "99": None}}))
        assert await backend.read_keys("pre-key", ["100", "99"]) == {"100": {"public": b"new"}}


async def test_random_commits_compactions_and_reopens_match_a_model(tmp_path: Path) -> None:
    """Puts and deletes over few ids, with compactions, read back like a dict, also after reopen."""
    rng = random.Random(13)
    model: dict[str, dict[str, object]] = {"session": {}, "pre-key": {}}
    path = tmp_path / "s"
    for _ in range(3):
        async with await open_native_backend(path, compact_min_bytes=8192) as backend:
            for _ in range(120):
                type_ = rng.choice(list(model))
                writes: dict[str, object] = {}
                for _ in range(rng.randint(1, 40)):
                    id_ = str(rng.randint(0, 150))
                    writes[id_] = None if rng.random() < 0.3 else rng.randbytes(rng.randint(1, 90))
                await backend.commit(Batch(keys={type_: writes}))  # type: ignore[dict-item]
                for id_, value in writes.items():
                    if value is None:
                        model[type_].pop(id_, None)
                    else:
                        model[type_][id_] = value
                probe = [str(i) for i in rng.sample(range(151), 20)]
                expected = {i: model[type_][i] for i in probe if i in model[type_]}
                assert await backend.read_keys(type_, probe) == expected
            assert backend.statistics().compactions > 0
            assert backend.statistics().keys == sum(len(t) for t in model.values())
    async with await open_native_backend(path) as backend:
        snapshot = await backend.snapshot()
        assert {t: v for t, v in snapshot.keys.items() if v} == {
            t: v for t, v in model.items() if v
        }


async def test_reads_after_compaction_come_from_the_new_snapshot(tmp_path: Path) -> None:
    """After a compaction the old files are gone and every value reads from the new snapshot."""
    path = tmp_path / "s"
    async with await open_native_backend(path) as backend:
        await backend.commit(Batch(keys={"pre-key": PRE_KEYS}))
        await backend.commit(Batch(keys={"pre-key": {"5": None}}))
        await backend.compact()
        assert not (path / log_name(0)).exists()
        assert (path / snapshot_name(1)).exists()
        found = await backend.read_keys("pre-key", ["4", "5", "6"])
        assert found == {"4": PRE_KEYS["4"], "6": PRE_KEYS["6"]}
        assert backend.statistics().values_in_memory == 0


async def test_entries_that_cannot_be_placed_stay_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry longer than a place can describe is kept as bytes and still reads back."""
    monkeypatch.setattr(native_values, "PLACEABLE_BYTES", 40)
    async with await open_native_backend(tmp_path / "s") as backend:
        await backend.commit(Batch(keys={"session": {"short": b"s", "long": b"L" * 100}}))
        assert backend.statistics().values_in_memory == 1
        assert await backend.read_keys("session", ["short", "long"]) == {
            "short": b"s",
            "long": b"L" * 100,
        }


def test_rewriting_placed_keys_moves_them_in_place_without_an_overlay() -> None:
    """A key already in the sorted arrays placed anew changes there: no overlay, no merge."""
    table = native_values._Table()
    for i in range(100):
        table.change(str(i), native_values._digest(str(i)), (i, i), None)
    table.merge()
    for round_ in range(5):
        for i in range(100):
            table.change(str(i), native_values._digest(str(i)), (1000 + i, round_), None)
    assert table.overlay == {} and table.count == 100
    assert table.find(native_values._digest("7")) == (1007, 4)
    table.change("7", native_values._digest("7"), None, None)  # a delete still goes through
    assert table.find(native_values._digest("7")) is None and table.count == 99


def test_an_entry_is_located_even_when_its_first_bytes_occur_earlier() -> None:
    """The search by the first bytes skips a look-alike and finds the whole entry."""
    entry = entry_bytes("id", b"A" * 40 + b"tail")
    decoy = entry_bytes("id", b"A" * 40 + b"tale")  # same length: same first 32 bytes
    data = b"head" + decoy + entry + b"end"
    at = native_values._locate(data, entry, 0, len(data))
    assert at == 4 + len(decoy) and data[at : at + len(entry)] == entry
    assert native_values._locate(data, entry_bytes("id", b"B" * 44), 0, len(data)) == -1


@pytest.mark.parametrize("id_length", [1, 23, 24, 255, 256])
@pytest.mark.parametrize("creds", [None, b"", b"c" * 23, b"c" * 300])
def test_a_placed_body_is_the_cbor_of_its_keys_with_each_entry_where_it_says(
    id_length: int, creds: bytes | None
) -> None:
    """placed_body writes the bytes cbor2 writes for ``keys`` then ``creds`` (every CBOR
    head size, deletions and non-ASCII ids included), and each place it gives holds
    exactly that entry's bytes, with their CRC-32."""
    ids = ["a" * id_length, "é" * id_length, "x" + "€" * 9]
    sizes = [0, 1, 22, 23, 24, 255, 256, 65535, 65536]
    keys: dict[str, dict[str, bytes | None]] = {
        "session": {f"{id_}-{n}": cbor2.dumps(bytes([n % 251]) * n) for id_ in ids for n in sizes},
        "pre-key": {id_: None for id_ in ids},
        "t" * 30: {"k": cbor2.dumps({"a": 1})},
        "ü" * 12: {str(i): cbor2.dumps(i) for i in range(24)},
    }
    body, places = native_values.placed_body(keys, creds)
    assert body == cbor2.dumps(keys) + cbor2.dumps(creds)
    assert [(p[0], p[1]) for p in places] == [(t, i) for t, e in keys.items() for i in e]
    for type_, id_, digest, at, length, crc in places:
        assert digest == native_values._digest(id_)
        raw = keys[type_][id_]
        if raw is None:
            deletion = cbor2.dumps(id_) + cbor2.dumps(None)
            assert length == -1 and body[at : at + len(deletion)] == deletion
            continue
        entry = entry_bytes(id_, raw)
        assert body[at : at + length] == entry and crc == zlib.crc32(entry), (type_, id_)


def test_a_placed_body_of_no_keys_or_an_unencodable_id_is_what_cbor2_makes() -> None:
    """An empty key map is the one-byte map head; an id cbor2 refuses is refused alike."""
    assert native_values.placed_body({}, b"x") == (cbor2.dumps({}) + cbor2.dumps(b"x"), [])
    with pytest.raises(UnicodeEncodeError):
        cbor2.dumps({"session": {"\ud800": b"v"}})
    with pytest.raises(UnicodeEncodeError):
        native_values.placed_body({"session": {"\ud800": b"v"}}, None)


def test_an_entry_too_long_to_place_is_left_unplaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry longer than a place can say is marked unplaced (the index keeps it)."""
    monkeypatch.setattr(native_values, "PLACEABLE_BYTES", 100)
    keys: dict[str, dict[str, bytes | None]] = {"s": {"short": b"v" * 10, "long": b"v" * 200}}
    _, places = native_values.placed_body(keys, None)
    assert [(p[1], p[3]) for p in places] == [("short", 4), ("long", -1)]
