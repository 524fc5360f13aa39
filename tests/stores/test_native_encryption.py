"""Encryption at rest in the native backend: what it seals, what it refuses, rekey."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import cbor2
import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from stores.auth import use_multi_file_auth_state, use_native_file_auth_state
from stores.encryption import StoreKey
from stores.errors import CorruptStateError, EncryptionKeyError, WrongKeyError
from stores.fsio import FileSystem
from stores.native import open_native_backend
from stores.native_format import (
    FRAME_OVERHEAD,
    MAGIC,
    decode_header,
    frame,
    log_name,
    scan_log,
)
from stores.types import Batch
from tests.stores.encryption_helpers import (
    first_creds,
    scan_for_leaks,
    secret_batch,
    write_key_file,
)
from tests.stores.native_log import records_end, trim_log

LOG0 = log_name(0)


def tree(path: Path) -> dict[str, bytes]:
    return {name: (path / name).read_bytes() for name in sorted(os.listdir(path))}


async def test_encrypted_store_round_trips_and_names_only_the_key_id(tmp_path: Path) -> None:
    """Creds and keys read back under the key; the header holds the key id, not the key."""
    key, path = StoreKey.generate(), tmp_path / "auth"
    creds, _ = first_creds()
    batch, _ = secret_batch(1)
    async with await open_native_backend(path, encryption_key=key) as backend:
        await backend.commit(Batch(keys=batch.keys, creds=creds))
        assert backend.key_id == key.key_id
    async with await open_native_backend(path, encryption_key=key) as backend:
        assert await backend.read_creds() == creds
        assert await backend.read_keys("session", ["s1"]) == batch.keys["session"]
    header, _ = decode_header((path / LOG0).read_bytes(), "log", "log")
    assert header.encryption is not None and header.encryption.key_id == key.key_id
    assert key._raw not in (path / LOG0).read_bytes()
    assert key._raw.hex() not in repr(key) and key.key_id in repr(key)


async def test_no_key_material_reaches_any_file_through_compactions(tmp_path: Path) -> None:
    """Private creds keys and session keys never appear in log, snapshot or temp files."""
    key, path = StoreKey.generate(), tmp_path / "auth"
    creds, known = first_creds()
    async with await open_native_backend(
        path, encryption_key=key, compact_min_bytes=4096
    ) as backend:
        await backend.commit(Batch(creds=creds))
        for n in range(60):
            batch, found = secret_batch(n)
            known += found
            await backend.commit(batch)
        assert backend.statistics().compactions > 0
        assert scan_for_leaks(path, known) == []
    assert scan_for_leaks(path, known) == []
    # The scanner itself finds what a plain store writes.
    plain = tmp_path / "plain"
    async with await open_native_backend(plain) as backend:
        await backend.commit(Batch(creds=creds))
    assert scan_for_leaks(plain, known)


@pytest.mark.parametrize("given", ["other", "none"])
async def test_wrong_or_missing_key_is_refused_and_changes_nothing(
    tmp_path: Path, given: str
) -> None:
    """A wrong or absent key is WrongKeyError naming the expected key id; no byte changes."""
    key, path = StoreKey.generate(), tmp_path / "auth"
    async with await open_native_backend(path, encryption_key=key) as backend:
        await backend.commit(secret_batch(1)[0])
    before = tree(path)
    other = StoreKey.generate() if given == "other" else None
    with pytest.raises(WrongKeyError) as caught:
        await open_native_backend(path, encryption_key=other)
    assert caught.value.expected == key.key_id
    assert caught.value.given == (None if other is None else other.key_id)
    assert str(path) in str(caught.value) and key.key_id in str(caught.value)
    assert tree(path) == before


async def test_plain_store_opened_with_a_key_is_refused_with_a_rekey_hint(tmp_path: Path) -> None:
    """A key given for a plain store is refused (never silently ignored), nothing changes."""
    path = tmp_path / "auth"
    async with await open_native_backend(path) as backend:
        await backend.commit(secret_batch(1)[0])
    before = tree(path)
    with pytest.raises(WrongKeyError, match="rekey") as caught:
        await open_native_backend(path, encryption_key=StoreKey.generate())
    assert caught.value.expected is None
    assert tree(path) == before


async def encrypted_log(path: Path, key: StoreKey, commits: int) -> tuple[Path, list[Any]]:
    """A store of ``commits`` sealed records; its log and each record's CBOR array."""
    async with await open_native_backend(path, encryption_key=key) as backend:
        for n in range(commits):
            await backend.commit(secret_batch(n)[0])
    log = path / LOG0
    data = log.read_bytes()
    offsets = [offset for offset, _ in scan_log(data, str(log), key=key).records]
    ends = [*offsets[1:], records_end(log)]
    return log, [
        cbor2.loads(data[o + FRAME_OVERHEAD : e]) for o, e in zip(offsets, ends, strict=True)
    ]


def rewrite_log(log: Path, records: list[Any]) -> int:
    """Rewrite the log's records (re-framed: every checksum is good); the last's offset."""
    data = log.read_bytes()
    head = data[: decode_header(data, str(log), "log")[1]]
    frames = [frame(cbor2.dumps(record)) for record in records]
    log.write_bytes(head + b"".join(frames))
    return len(head) + sum(len(f) for f in frames[:-1])


async def test_a_bad_tag_on_an_intact_frame_is_corruption_never_a_torn_tail(
    tmp_path: Path,
) -> None:
    """Ciphertext changed under an intact frame checksum: CorruptStateError, nothing cut."""
    key, path = StoreKey.generate(), tmp_path / "auth"
    log, records = await encrypted_log(path, key, 2)
    sealed = bytearray(records[1][2])
    sealed[-1] ^= 1
    records[1][2] = bytes(sealed)
    offset = rewrite_log(log, records)
    before = tree(path)
    with pytest.raises(CorruptStateError, match="authentication tag") as caught:
        await open_native_backend(path, encryption_key=key)
    assert caught.value.offset == offset
    assert tree(path) == before


async def test_records_swapped_between_places_fail_their_tag(tmp_path: Path) -> None:
    """A sealed record copied into another seq's place does not open (identity is bound)."""
    key, path = StoreKey.generate(), tmp_path / "auth"
    log, records = await encrypted_log(path, key, 2)
    records[1][2] = records[0][2]
    rewrite_log(log, records)
    with pytest.raises(CorruptStateError, match="authentication tag"):
        await open_native_backend(path, encryption_key=key)


async def test_torn_tail_of_an_encrypted_log_is_still_cut(tmp_path: Path) -> None:
    """A half-written last frame is a torn tail as in a plain store: cut, the rest opens."""
    key, path = StoreKey.generate(), tmp_path / "auth"
    async with await open_native_backend(path, encryption_key=key) as backend:
        for n in range(3):
            await backend.commit(secret_batch(n)[0])
    log = path / LOG0
    trim_log(log)
    log.write_bytes(log.read_bytes()[:-7])
    async with await open_native_backend(path, encryption_key=key) as backend:
        assert backend.recovery.torn_tail is not None
        assert backend.statistics().durable_seq == 2


@pytest.mark.parametrize("start,end", [("plain", "key"), ("key", "key2"), ("key", "plain")])
async def test_rekey_rewrites_the_store_under_the_new_key(
    tmp_path: Path, start: str, end: str
) -> None:
    """After rekey only the new key (or none) opens the store, with all data; old files go."""
    keys = {"plain": None, "key": StoreKey.generate(), "key2": StoreKey.generate()}
    path = tmp_path / "auth"
    creds, known = first_creds()
    async with await open_native_backend(path, encryption_key=keys[start]) as backend:
        await backend.commit(Batch(creds=creds))
        for n in range(5):
            batch, found = secret_batch(n)
            known += found
            await backend.commit(batch)
        await backend.rekey(keys[end])
        await backend.commit(secret_batch(9)[0])
        assert backend.key_id == (None if keys[end] is None else keys[end].key_id)
    with pytest.raises(WrongKeyError):
        await open_native_backend(path, encryption_key=keys[start])
    async with await open_native_backend(path, encryption_key=keys[end]) as backend:
        assert await backend.read_creds() == creds
        assert len(await backend.read_keys("session", [f"s{n}" for n in range(10)])) == 6
    assert sorted(os.listdir(path)) == ["LOCK", "log-0000000000000001", "snapshot-0000000000000001"]
    if end != "plain":
        assert scan_for_leaks(path, known) == []


async def test_key_sources_bytes_file_hex_file_and_callbacks(tmp_path: Path) -> None:
    """32 bytes, a raw or hex key file, and sync or async callbacks all name one key."""
    raw = write_key_file(tmp_path / "key.bin")
    write_key_file(tmp_path / "key.hex", raw, hex_form=True)

    async def from_kms() -> bytes:
        return raw

    sources: list[object] = [
        raw,
        tmp_path / "key.bin",
        str(tmp_path / "key.hex"),
        lambda: raw,
        from_kms,
    ]
    path = tmp_path / "auth"
    for source in sources:
        async with await use_native_file_auth_state(path, encryption_key=source) as auth:  # type: ignore[arg-type]
            assert auth.backend.key_id == StoreKey.from_bytes(raw).key_id  # type: ignore[attr-defined]


async def test_bad_key_sources_are_typed_errors_that_touch_nothing(tmp_path: Path) -> None:
    """Short keys, open or missing key files and failing callbacks: EncryptionKeyError."""
    loose = tmp_path / "loose.key"
    write_key_file(loose)
    loose.chmod(0o644)
    short = tmp_path / "short.key"
    short.write_bytes(b"abc")
    short.chmod(0o600)

    def failing() -> bytes:
        raise RuntimeError("kms down")

    cases: list[tuple[object, str]] = [
        (b"\x00" * 16, "32 bytes"),
        (loose, "0644"),
        (short, "hex digits"),
        (tmp_path / "missing.key", "cannot be read"),
        (failing, "kms down"),
        (lambda: "text", "returned str"),
        (12, "got int"),
    ]
    path = tmp_path / "auth"
    for source, message in cases:
        with pytest.raises(EncryptionKeyError, match=message):
            await use_native_file_auth_state(path, encryption_key=source)  # type: ignore[arg-type]
    assert not path.exists()


async def test_multi_file_folder_refuses_a_key(tmp_path: Path) -> None:
    """The Baileys bridge folder stays plain: a key is a typed error, nothing is created."""
    with pytest.raises(EncryptionKeyError, match="never encrypted"):
        await use_multi_file_auth_state(tmp_path / "baileys", encryption_key=b"k" * 32)
    assert not (tmp_path / "baileys").exists()


def test_header_magic_is_unchanged_for_encrypted_files() -> None:
    """Encrypted files are native files: same magic, so tools still recognise them."""
    assert MAGIC == b"\x89BTN\r\n\x1a\n"


class _GatedFileSystem(FileSystem):
    """Holds every fdatasync at a gate, so the test decides what queues behind it."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.syncing = threading.Event()

    def fdatasync(self, fd: int) -> None:
        self.syncing.set()
        self.gate.wait(10)
        super().fdatasync(fd)


@pytest.mark.parametrize("start,end", [("plain", "key"), ("key", "plain")])
async def test_a_commit_encoded_before_a_rekey_and_written_after_it_reads_back(
    tmp_path: Path, start: str, end: str
) -> None:
    """A commit queued behind a rekey was encoded under the old key and is written under
    the new one: its values read back, from the log when it is plain, after a reopen too."""
    keys = {"plain": None, "key": StoreKey.generate()}
    fs = _GatedFileSystem()
    path = tmp_path / "auth"
    value = {"v": b"x" * 300}
    opened = await open_native_backend(
        path, fs=fs, encryption_key=keys[start], inline_write_below=0
    )
    async with opened as backend:
        async with trio.open_nursery() as nursery:
            fs.gate.clear()
            nursery.start_soon(backend.commit, Batch(keys={"session": {"a": value}}))
            await trio.to_thread.run_sync(fs.syncing.wait, 10)  # the first group is in flight
            nursery.start_soon(backend.rekey, keys[end])
            await wait_all_tasks_blocked()
            nursery.start_soon(backend.commit, Batch(keys={"session": {"b": value}}))
            await wait_all_tasks_blocked()
            fs.gate.set()  # the rekey and the commit after it go in the next group
        assert backend.statistics().groups == 2
        assert await backend.read_keys("session", ["a", "b"]) == {"a": value, "b": value}
        assert backend.statistics().values_in_memory == (0 if end == "plain" else 2)
    async with await open_native_backend(path, encryption_key=keys[end]) as backend:
        assert await backend.read_keys("session", ["a", "b"]) == {"a": value, "b": value}
