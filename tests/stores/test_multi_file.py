"""The Baileys multi-file backend: Baileys' layout, atomic durable commits, typed errors."""

from __future__ import annotations

import errno
import json
import os
import random
import selectors
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from stores import buffer_json
from stores._multi_file_journal import encode_journal
from stores._multi_file_layout import (
    EPOCH_FILE,
    JOURNAL_FILE,
    LAST_GOOD_CREDS_FILE,
    fix_file_name,
    parse_key_file_name,
)
from stores.creds import AuthCreds, KeyPair, creds_to_baileys_json, init_auth_creds
from stores.errors import (
    CorruptStateError,
    DurabilityError,
    InvalidValueError,
    StoreClosedError,
    StoreLockedError,
    StoreReadOnlyError,
    WrongBackendError,
)
from stores.fsio import REAL_FS, Fault, FaultyFileSystem
from stores.multi_file import (
    MultiFileBackend,
    open_multi_file_backend,
    restore_last_good_creds,
)
from stores.native_format import MAGIC as NATIVE_MAGIC
from stores.types import Batch, Persistence
from tests.stores.dying_fs import DyingFileSystem

PRE_KEY = {"private": bytes(range(32)), "public": bytes(range(32, 64))}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def write_creds(directory: Path, creds: AuthCreds) -> None:
    async with await open_multi_file_backend(directory) as backend:
        await backend.commit(Batch(creds=creds))


async def test_absent_directory_is_a_new_device_created_private(tmp_path: Path) -> None:
    """An absent path is created 0700 and holds no creds: the only way to a new device."""
    directory = tmp_path / "a" / "auth"
    async with await open_multi_file_backend(directory) as backend:
        assert isinstance(backend, Persistence)
        assert backend.backend_name == "multi-file"
        assert backend.location == str(directory)
        assert await backend.read_creds() is None
        assert await backend.read_keys("pre-key", ["1"]) == {}
        assert (await backend.snapshot()).keys == {}
    assert mode(directory) == 0o700


async def test_commit_writes_baileys_files_0600_and_reads_back(tmp_path: Path) -> None:
    """Creds and keys land in creds.json and <type>-<id>.json (0600) and read back equal."""
    creds = init_auth_creds()
    async with await open_multi_file_backend(tmp_path) as backend:
        seq = await backend.commit(
            Batch(
                keys={
                    "pre-key": {"1": PRE_KEY},
                    "session": {"4455.2": {"_sessions": {"a": {"x": 1}}, "version": "v1"}},
                    "sender-key": {"g@g.us::4455::0": b"{}"},
                },
                creds=creds,
            )
        )
        assert seq == (1 << 32) + 1  # first open: epoch 1, first commit
        assert await backend.read_creds() == creds
        assert await backend.read_keys("pre-key", ["1", "2"]) == {"1": PRE_KEY}
    names = sorted(n for n in os.listdir(tmp_path) if not n.startswith("."))
    assert names == [
        "creds.json",
        "pre-key-1.json",
        "sender-key-g@g.us--4455--0.json",
        "session-4455.2.json",
    ]
    for name in names:
        assert mode(tmp_path / name) == 0o600
    assert (tmp_path / "creds.json").read_bytes() == buffer_json.dump_bytes(
        creds_to_baileys_json(creds)
    )
    assert json.loads((tmp_path / "pre-key-1.json").read_text())["public"]["type"] == "Buffer"
    async with await open_multi_file_backend(tmp_path) as backend:
        assert await backend.read_creds() == creds
        assert await backend.read_keys("sender-key", ["g@g.us::4455::0"]) == {
            "g@g.us::4455::0": b"{}"
        }


async def test_sequence_numbers_grow_across_reopens(tmp_path: Path) -> None:
    """Every open starts a higher epoch, so sequence numbers never go back after a reopen."""
    seen = []
    for _ in range(3):
        async with await open_multi_file_backend(tmp_path) as backend:
            seen.append(await backend.commit(Batch(keys={"pre-key": {"1": PRE_KEY}})))
            seen.append(await backend.commit(Batch()))
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    (tmp_path / EPOCH_FILE).write_text("garbage")
    with pytest.raises(CorruptStateError):
        await open_multi_file_backend(tmp_path)


async def test_read_creds_returns_a_copy(tmp_path: Path) -> None:
    """Mutating creds read from the backend does not change what it holds."""
    async with await open_multi_file_backend(tmp_path) as backend:
        await backend.commit(Batch(creds=init_auth_creds()))
        first = await backend.read_creds()
        assert first is not None
        first.registered = True
        again = await backend.read_creds()
        assert again is not None and again.registered is False


async def test_none_deletes_and_deleting_a_missing_key_is_a_no_op(tmp_path: Path) -> None:
    """A None value removes the file; removing an absent key succeeds silently."""
    async with await open_multi_file_backend(tmp_path) as backend:
        await backend.commit(Batch(keys={"pre-key": {"1": PRE_KEY, "2": PRE_KEY}}))
        await backend.commit(Batch(keys={"pre-key": {"1": None, "99": None}}))
        assert await backend.read_keys("pre-key", ["1", "2", "99"]) == {"2": PRE_KEY}
    assert not (tmp_path / "pre-key-1.json").exists()


def test_file_names_escape_like_baileys() -> None:
    """Names replace / with __ and then : with -, exactly as Baileys' fixFileName."""
    assert fix_file_name("app-state-sync-key-AB/c+d=.json") == "app-state-sync-key-AB__c+d=.json"
    assert fix_file_name("sender-key-g@g.us::1::0.json") == "sender-key-g@g.us--1--0.json"
    assert parse_key_file_name("sender-key-memory-g@g.us.json") == ("sender-key-memory", "g@g.us")
    assert parse_key_file_name("sender-key-g@g.us--1--0.json") == ("sender-key", "g@g.us::1::0")
    assert parse_key_file_name("app-state-sync-key-AB__c.json") == ("app-state-sync-key", "AB/c")
    assert parse_key_file_name("tctoken-__index.json") == ("tctoken", "__index")
    assert parse_key_file_name("creds.json") is None
    assert parse_key_file_name("notes.txt") is None
    assert parse_key_file_name("unknown-type-1.json") is None


async def test_app_state_sync_keys_are_stored_as_protobuf_json(tmp_path: Path) -> None:
    """app-state-sync-key files hold keyData as plain base64 and the timestamp as a string."""
    value = {
        "keyData": bytes(32),
        "fingerprint": {"rawId": 1, "currentIndex": 2, "deviceIndexes": [0, 1]},
        "timestamp": 1700000000123,
    }
    async with await open_multi_file_backend(tmp_path) as backend:
        await backend.commit(Batch(keys={"app-state-sync-key": {"AAAAAB/c": value}}))
        assert await backend.read_keys("app-state-sync-key", ["AAAAAB/c"]) == {"AAAAAB/c": value}
    text = (tmp_path / "app-state-sync-key-AAAAAB__c.json").read_text()
    assert text == (
        '{"keyData":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",'
        '"fingerprint":{"rawId":1,"currentIndex":2,"deviceIndexes":[0,1]},'
        '"timestamp":"1700000000123"}'
    )


async def test_bad_values_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    """Bad types, ids or values raise InvalidValueError; the store stays writable."""
    async with await open_multi_file_backend(tmp_path) as backend:
        bad_batches: list[Batch] = [
            Batch(keys={"no-such-type": {"1": b"x"}}),
            Batch(keys={"pre-key": {"": PRE_KEY}}),
            Batch(keys={"pre-key": {"a\x00b": PRE_KEY}}),
            Batch(keys={"pre-key": {"x" * 300: PRE_KEY}}),
            Batch(keys={"session": {"1.0": {"bad": object()}}}),
            Batch(keys={"app-state-sync-key": {"k": {"keyData": "not bytes"}}}),
        ]
        for batch in bad_batches:
            with pytest.raises(InvalidValueError):
                await backend.commit(batch)
        with pytest.raises(InvalidValueError):
            await backend.read_keys("no-such-type", ["1"])
        broken = init_auth_creds()
        broken.noise_key = KeyPair(private=broken.noise_key.private, public=bytes(32))
        with pytest.raises(InvalidValueError, match="noise_key"):
            await backend.commit(Batch(creds=broken))
        assert not backend.read_only
        await backend.commit(Batch(keys={"pre-key": {"1": PRE_KEY}}))
    assert sorted(n for n in os.listdir(tmp_path) if not n.startswith(".")) == ["pre-key-1.json"]


async def test_second_owner_is_refused_at_once(tmp_path: Path) -> None:
    """A second open of the same directory gets StoreLockedError naming the owner."""
    async with await open_multi_file_backend(tmp_path):
        with pytest.raises(StoreLockedError) as info:
            await open_multi_file_backend(tmp_path)
        assert f"pid {os.getpid()}" in str(info.value)
    async with await open_multi_file_backend(tmp_path):
        pass


async def test_closed_backend_refuses_use(tmp_path: Path) -> None:
    """After aclose every operation raises StoreClosedError; aclose is idempotent."""
    backend = await open_multi_file_backend(tmp_path)
    await backend.aclose()
    await backend.aclose()
    with pytest.raises(StoreClosedError):
        await backend.read_creds()
    with pytest.raises(StoreClosedError):
        await backend.commit(Batch(keys={"pre-key": {"1": PRE_KEY}}))


async def test_every_truncation_of_creds_is_a_typed_error(tmp_path: Path) -> None:
    """creds.json cut at any byte offset raises CorruptStateError naming the file and an offset."""
    creds = init_auth_creds()
    await write_creds(tmp_path, creds)
    path = tmp_path / "creds.json"
    full = path.read_bytes()
    for cut in range(len(full)):
        path.write_bytes(full[:cut])
        with pytest.raises(CorruptStateError) as info:
            await open_multi_file_backend(tmp_path)
        assert info.value.location == str(path)
        assert info.value.offset is not None
        assert LAST_GOOD_CREDS_FILE in info.value.reason
    path.write_bytes(full)
    async with await open_multi_file_backend(tmp_path) as backend:
        assert await backend.read_creds() == creds


async def test_flipped_bits_in_key_material_are_caught(tmp_path: Path) -> None:
    """A flipped bit in any key or signature of creds.json is an error with an offset."""
    creds = init_auth_creds()
    await write_creds(tmp_path, creds)
    path = tmp_path / "creds.json"
    full = path.read_bytes()
    obj = creds_to_baileys_json(creds)
    regions = [
        buffer_json.dumps(value).encode()
        for value in (
            obj["noiseKey"]["private"],
            obj["pairingEphemeralKeyPair"]["public"],
            obj["signedIdentityKey"]["private"],
            obj["signedPreKey"]["keyPair"]["public"],
            obj["signedPreKey"]["signature"],
        )
    ]
    checked = 0
    for region in regions:
        start = full.index(region)
        for offset in range(start, start + len(region), 3):
            for bit in (0, 5):
                damaged = bytearray(full)
                damaged[offset] ^= 1 << bit
                path.write_bytes(bytes(damaged))
                try:
                    backend = await open_multi_file_backend(tmp_path)
                except CorruptStateError as exc:
                    assert exc.location == str(path)
                    # A parse error's offset, or where the damaged field starts.
                    assert exc.offset is not None
                    checked += 1
                    continue
                # Only a flip that decodes to the same bytes may pass.
                assert await backend.read_creds() == creds
                await backend.aclose()
    assert checked > 100
    path.write_bytes(full)


async def test_invalid_creds_fields_are_reported_with_their_offset(tmp_path: Path) -> None:
    """Well-formed JSON with a wrong field: the error names the field and where it is."""
    obj = creds_to_baileys_json(init_auth_creds())
    obj["registrationId"] = "12"
    raw = buffer_json.dump_bytes(obj)
    (tmp_path / "creds.json").write_bytes(raw)
    with pytest.raises(CorruptStateError) as info:
        await open_multi_file_backend(tmp_path)
    assert "registrationId" in info.value.reason
    assert info.value.offset == raw.index(b'"registrationId"')


# Fields whose every value is valid: Baileys JSON has no checksum to catch a flip there.
UNPROTECTED = {
    "registration_id",
    "adv_secret_key",
    "next_pre_key_id",
    "first_unuploaded_pre_key_id",
    "account_sync_counter",
    "signed_pre_key",  # its key id only: key and signature flips are caught
    "account_settings",
}


def _clamped(plain: dict[str, Any]) -> dict[str, Any]:
    """X25519 ignores 5 bits of a private key (clamping): compare keys as X25519 uses them."""

    def clamp(private: bytes) -> bytes:
        return bytes([private[0] & 248]) + private[1:31] + bytes([(private[31] & 127) | 64])

    out = dict(plain)
    for name in ("noise_key", "pairing_ephemeral_key_pair", "signed_identity_key"):
        out[name] = {**plain[name], "private": clamp(plain[name]["private"])}
    spk = plain["signed_pre_key"]
    pair = {**spk["key_pair"], "private": clamp(spk["key_pair"]["private"])}
    out["signed_pre_key"] = {**spk, "key_pair": pair}
    return out


async def test_a_flip_at_every_byte_of_creds_is_caught_or_confined(tmp_path: Path) -> None:
    """A flipped bit anywhere in creds.json is an error with an offset, or lands where it
    changes nothing X25519 uses, or in a field with no redundancy (ids, counters, secret)."""
    creds = init_auth_creds()
    await write_creds(tmp_path, creds)
    path = tmp_path / "creds.json"
    full = path.read_bytes()
    caught = 0
    for offset in range(len(full)):
        damaged = bytearray(full)
        damaged[offset] ^= 0x01
        path.write_bytes(bytes(damaged))
        try:
            backend = await open_multi_file_backend(tmp_path)
        except CorruptStateError as exc:
            assert exc.location == str(path) and exc.offset is not None
            caught += 1
            continue
        loaded = await backend.read_creds()
        await backend.aclose()
        assert loaded is not None
        plain, original = _clamped(loaded.to_plain()), _clamped(creds.to_plain())
        changed = {k for k, v in plain.items() if original[k] != v}
        assert changed <= UNPROTECTED, (offset, changed)
        if "signed_pre_key" in changed:
            assert plain["signed_pre_key"]["key_pair"] == original["signed_pre_key"]["key_pair"]
    assert caught > len(full) * 3 // 4


async def test_corrupt_creds_are_never_replaced_and_can_be_restored(tmp_path: Path) -> None:
    """A torn creds.json stays untouched; restore_last_good_creds brings the last good copy back."""
    creds = init_auth_creds()
    await write_creds(tmp_path, creds)
    (tmp_path / "creds.json").write_bytes(b'{"noiseKey":{"priv')
    for _ in range(2):
        with pytest.raises(CorruptStateError):
            await open_multi_file_backend(tmp_path)
    assert (tmp_path / "creds.json").read_bytes() == b'{"noiseKey":{"priv'
    assert await restore_last_good_creds(tmp_path) == creds
    async with await open_multi_file_backend(tmp_path) as backend:
        assert await backend.read_creds() == creds


async def test_empty_creds_file_is_corrupt_not_new(tmp_path: Path) -> None:
    """An empty creds.json (a torn Baileys write) is an error at offset 0, not a new device."""
    (tmp_path / "creds.json").write_bytes(b"")
    with pytest.raises(CorruptStateError) as info:
        await open_multi_file_backend(tmp_path)
    assert info.value.offset == 0


async def test_missing_creds_beside_a_last_good_copy_is_an_error(tmp_path: Path) -> None:
    """creds.json deleted while a last-good copy exists is an error, never a new device."""
    creds = init_auth_creds()
    await write_creds(tmp_path, creds)
    (tmp_path / "creds.json").unlink()
    with pytest.raises(CorruptStateError, match="missing"):
        await open_multi_file_backend(tmp_path)
    assert await restore_last_good_creds(tmp_path) == creds


async def test_restore_without_a_last_good_copy_is_an_error(tmp_path: Path) -> None:
    """restore_last_good_creds refuses when there is nothing to restore."""
    with pytest.raises(CorruptStateError):
        await restore_last_good_creds(tmp_path)


async def test_last_good_copy_follows_creds_written_by_baileys(tmp_path: Path) -> None:
    """Opening a directory whose valid creds.json changed refreshes the last-good copy."""
    await write_creds(tmp_path, init_auth_creds())
    newer = init_auth_creds()
    (tmp_path / "creds.json").write_bytes(buffer_json.dump_bytes(creds_to_baileys_json(newer)))
    async with await open_multi_file_backend(tmp_path):
        pass
    assert (tmp_path / LAST_GOOD_CREDS_FILE).read_bytes() == (tmp_path / "creds.json").read_bytes()


async def test_corrupt_key_file_is_a_typed_error(tmp_path: Path) -> None:
    """A torn key file raises CorruptStateError naming it, where Baileys would return nothing."""
    async with await open_multi_file_backend(tmp_path) as backend:
        await backend.commit(Batch(keys={"pre-key": {"5": PRE_KEY}}))
        path = tmp_path / "pre-key-5.json"
        path.write_bytes(path.read_bytes()[:20])
        with pytest.raises(CorruptStateError) as info:
            await backend.read_keys("pre-key", ["5"])
        assert info.value.location == str(path)
        assert info.value.offset is not None and 0 <= info.value.offset <= 20
        with pytest.raises(CorruptStateError):
            await backend.snapshot()


async def test_other_backends_data_is_refused(tmp_path: Path) -> None:
    """A SQLite file, or a folder of SQLite or native-backend files, is WrongBackendError."""
    db = tmp_path / "auth.db"
    db.write_bytes(b"SQLite format 3\x00" + bytes(100))
    with pytest.raises(WrongBackendError) as info:
        await open_multi_file_backend(db)
    assert info.value.found == "sqlite"
    folder = tmp_path / "sqlite-dir"
    folder.mkdir()
    (folder / "store.db").write_bytes(db.read_bytes())
    with pytest.raises(WrongBackendError):
        await open_multi_file_backend(folder)
    native = tmp_path / "native-dir"
    native.mkdir()
    (native / "log-0000000000000001").write_bytes(NATIVE_MAGIC + bytes(40))
    with pytest.raises(WrongBackendError):
        await open_multi_file_backend(native)
    plain_file = tmp_path / "file"
    plain_file.write_text("hello")
    with pytest.raises(WrongBackendError):
        await open_multi_file_backend(plain_file)
    assert sorted(os.listdir(native)) == ["log-0000000000000001"]


async def test_unknown_files_are_left_alone(tmp_path: Path) -> None:
    """Files that are not Baileys' are neither read nor changed nor deleted."""
    (tmp_path / "README.txt").write_text("mine")
    (tmp_path / "backup.json").write_text("{not json")
    async with await open_multi_file_backend(tmp_path) as backend:
        assert await backend.read_creds() is None
        await backend.commit(Batch(creds=init_auth_creds(), keys={"pre-key": {"1": PRE_KEY}}))
        assert set((await backend.snapshot()).keys) == {"pre-key"}
    assert (tmp_path / "README.txt").read_text() == "mine"
    assert (tmp_path / "backup.json").read_text() == "{not json"


async def test_loose_permissions_are_tightened_on_open(tmp_path: Path) -> None:
    """A Baileys folder (0755 dir, 0644 files) is tightened to 0700 / 0600 when opened."""
    await write_creds(tmp_path / "auth", init_auth_creds())
    directory = tmp_path / "auth"
    os.chmod(directory, 0o755)
    os.chmod(directory / "creds.json", 0o644)
    (directory / "pre-key-1.json").write_bytes(buffer_json.dump_bytes(PRE_KEY))
    os.chmod(directory / "pre-key-1.json", 0o644)
    async with await open_multi_file_backend(directory):
        pass
    assert mode(directory) == 0o700
    assert mode(directory / "creds.json") == 0o600
    assert mode(directory / "pre-key-1.json") == 0o600


async def test_leftover_temp_files_are_swept(tmp_path: Path) -> None:
    """Temp files left by a crash mid-write are removed on open and never read."""
    await write_creds(tmp_path, init_auth_creds())
    (tmp_path / ".pre-key-1.json.tmp-abcdef").write_bytes(b"{torn")
    async with await open_multi_file_backend(tmp_path) as backend:
        assert await backend.read_keys("pre-key", ["1"]) == {}
    assert not (tmp_path / ".pre-key-1.json.tmp-abcdef").exists()


async def test_a_journal_left_by_a_crash_is_replayed(tmp_path: Path) -> None:
    """A journal left by a crash mid-commit is applied on open: every file of the commit."""
    creds = init_auth_creds()
    await write_creds(tmp_path, creds)
    ops: dict[str, bytes | None] = {
        "pre-key-7.json": buffer_json.dump_bytes(PRE_KEY),
        "pre-key-8.json": buffer_json.dump_bytes(PRE_KEY),
        "session-1.0.json": None,
    }
    (tmp_path / "session-1.0.json").write_text('{"old":true}')
    (tmp_path / JOURNAL_FILE).write_bytes(encode_journal(ops))
    async with await open_multi_file_backend(tmp_path) as backend:
        got = await backend.read_keys("pre-key", ["7", "8"])
        assert got == {"7": PRE_KEY, "8": PRE_KEY}
        assert await backend.read_keys("session", ["1.0"]) == {}
    assert not (tmp_path / JOURNAL_FILE).exists()


async def test_a_corrupt_journal_is_a_typed_error(tmp_path: Path) -> None:
    """A journal failing its checksum raises CorruptStateError naming it; nothing is applied."""
    raw = bytearray(encode_journal({"pre-key-7.json": buffer_json.dump_bytes(PRE_KEY)}))
    raw[-3] ^= 0x40
    (tmp_path / JOURNAL_FILE).write_bytes(bytes(raw))
    with pytest.raises(CorruptStateError) as info:
        await open_multi_file_backend(tmp_path)
    assert info.value.location == str(tmp_path / JOURNAL_FILE)
    assert info.value.offset is not None
    assert not (tmp_path / "pre-key-7.json").exists()


async def test_failed_apply_is_finished_by_the_next_open(tmp_path: Path) -> None:
    """A rename failing mid-commit: DurabilityError, read-only; reopen completes the batch."""
    creds = init_auth_creds()
    await write_creds(tmp_path, creds)
    fs = FaultyFileSystem(Fault("rename", errno=errno.EIO, path_contains="pre-key-2.json"))
    newer = init_auth_creds()
    batch = Batch(keys={"pre-key": {"1": PRE_KEY, "2": PRE_KEY, "3": PRE_KEY}}, creds=newer)
    backend = await open_multi_file_backend(tmp_path, fs=fs)
    with pytest.raises(DurabilityError):
        await backend.commit(batch)
    assert backend.read_only
    with pytest.raises(StoreReadOnlyError):
        await backend.commit(Batch(keys={"pre-key": {"4": PRE_KEY}}))
    # The journal is durable, so this process already reports what a reopen will hold.
    assert set(await backend.read_keys("pre-key", ["1", "2", "3"])) == {"1", "2", "3"}
    assert await backend.read_creds() == newer
    await backend.aclose()
    assert (tmp_path / JOURNAL_FILE).exists()
    async with await open_multi_file_backend(tmp_path) as again:
        assert set(await again.read_keys("pre-key", ["1", "2", "3"])) == {"1", "2", "3"}
        assert await again.read_creds() == newer


async def test_failed_journal_write_leaves_the_old_state(tmp_path: Path) -> None:
    """An fsync failing while the journal is written: DurabilityError and no file of the batch."""
    creds = init_auth_creds()
    await write_creds(tmp_path, creds)
    fs = FaultyFileSystem(Fault("fsync", errno=errno.EIO, path_contains=JOURNAL_FILE))
    backend = await open_multi_file_backend(tmp_path, fs=fs)
    with pytest.raises(DurabilityError):
        await backend.commit(
            Batch(keys={"pre-key": {"1": PRE_KEY, "2": PRE_KEY}}, creds=init_auth_creds())
        )
    assert await backend.read_creds() == creds
    await backend.aclose()
    async with await open_multi_file_backend(tmp_path) as again:
        assert await again.read_keys("pre-key", ["1", "2"]) == {}
        assert await again.read_creds() == creds


async def test_enospc_on_a_single_file_keeps_the_old_content(tmp_path: Path) -> None:
    """A disk filling up while creds.json is rewritten keeps the old creds intact."""
    creds = init_auth_creds()
    await write_creds(tmp_path, creds)
    fs = FaultyFileSystem(
        Fault("write", errno=errno.ENOSPC, path_contains="creds.json", written=10)
    )
    backend = await open_multi_file_backend(tmp_path, fs=fs)
    with pytest.raises(DurabilityError):
        await backend.commit(Batch(creds=init_auth_creds()))
    await backend.aclose()
    async with await open_multi_file_backend(tmp_path) as again:
        assert await again.read_creds() == creds


async def test_concurrent_commits_are_grouped(tmp_path: Path) -> None:
    """Many concurrent commits are written in fewer groups, each gets its own sequence number."""
    seqs: list[int] = []
    async with await open_multi_file_backend(tmp_path) as backend:

        async def one(i: int) -> None:
            seqs.append(await backend.commit(Batch(keys={"session": {f"{i}.0": {"n": i}}})))

        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(one, i)
        stats = backend.statistics()
        assert stats.commits == 40
        assert stats.groups < 40
        got = await backend.read_keys("session", [f"{i}.0" for i in range(40)])
        assert got == {f"{i}.0": {"n": i} for i in range(40)}
    assert sorted(seqs) == [(1 << 32) + i for i in range(1, 41)]


async def test_later_write_in_a_group_wins(tmp_path: Path) -> None:
    """Within one group the later commit of the same key wins, as if run one after another."""
    async with await open_multi_file_backend(tmp_path) as backend:
        async with trio.open_nursery() as nursery:
            for value in (b"first", b"second", None, b"last"):
                nursery.start_soon(backend.commit, Batch(keys={"sender-key": {"g::1::0": value}}))
                await trio.testing.wait_all_tasks_blocked()
        assert await backend.read_keys("sender-key", ["g::1::0"]) == {"g::1::0": b"last"}


async def test_v6_shaped_directory_loads(tmp_path: Path) -> None:
    """A directory in v6 shapes (array Buffer data, {"buffer":true}) loads as plain values."""
    creds = init_auth_creds()
    obj: Any = json.loads(buffer_json.dumps(creds_to_baileys_json(creds)))
    obj["noiseKey"]["private"] = {"type": "Buffer", "data": list(creds.noise_key.private)}
    obj["noiseKey"]["public"] = {"buffer": True, "value": list(creds.noise_key.public)}
    obj["signedPreKey"]["signature"] = {
        "buffer": True,
        "value": buffer_json.buffer_tag(creds.signed_pre_key.signature)["data"],
    }
    (tmp_path / "creds.json").write_text(json.dumps(obj, indent=2))
    (tmp_path / "pre-key-1.json").write_text(
        json.dumps(
            {
                "private": {"type": "Buffer", "data": list(PRE_KEY["private"])},
                "public": {str(i): b for i, b in enumerate(PRE_KEY["public"])},
            }
        )
    )
    async with await open_multi_file_backend(tmp_path) as backend:
        assert await backend.read_creds() == creds
        assert await backend.read_keys("pre-key", ["1"]) == {"1": PRE_KEY}


def test_backend_satisfies_the_persistence_protocol() -> None:
    """MultiFileBackend has every member of stores.Persistence."""
    for name in ("location", "read_creds", "read_keys", "commit", "snapshot", "aclose"):
        assert hasattr(MultiFileBackend, name)
    assert MultiFileBackend.backend_name == "multi-file"


async def test_a_real_native_store_is_refused(tmp_path: Path) -> None:
    """A directory the native backend wrote is WrongBackendError here, and stays untouched."""
    from stores.native import open_native_backend

    native = await open_native_backend(tmp_path / "native")
    await native.commit(Batch(creds=init_auth_creds()))
    await native.aclose()
    before = sorted(os.listdir(tmp_path / "native"))
    with pytest.raises(WrongBackendError) as info:
        await open_multi_file_backend(tmp_path / "native")
    assert info.value.found.startswith("native")
    assert sorted(os.listdir(tmp_path / "native")) == before


# --- SIGKILL at random moments ----------------------------------------------------------

CRASH_KILLS = int(os.environ.get("MULTI_FILE_KILLS", "20"))
CRASH_KEYS = 4
CRASH_MAX_COMMITS = 3000
CRASH_MAX_SECONDS = 20.0


def crash_value(n: int, j: int) -> dict[str, Any]:
    return {"n": n, "j": j, "blob": bytes([n % 251]) * 40}


def crash_child(path: str, first: int, crash_at: int) -> None:
    """Child body: 4 workers commit and print ``ACK <n> <seq>`` after each, until killed.

    With ``crash_at > 0`` the child kills itself at that disk operation (every crash
    point of open, replay and commit is reachable); otherwise the parent kills it.
    """
    deadline = time.monotonic() + CRASH_MAX_SECONDS
    fs = DyingFileSystem(crash_at) if crash_at > 0 else REAL_FS

    async def main() -> None:
        backend = await open_multi_file_backend(path, fs=fs)
        print("OPEN", flush=True)
        template = init_auth_creds()
        numbers = iter(range(first, first + CRASH_MAX_COMMITS))

        async def worker() -> None:
            for n in numbers:
                if time.monotonic() > deadline:
                    return
                keys_ = {"session": {f"c{n}-{j}": crash_value(n, j) for j in range(CRASH_KEYS)}}
                creds = None
                if n % 5 == 0:
                    creds = template.copy()
                    creds.next_pre_key_id = n
                seq = await backend.commit(Batch(keys=keys_, creds=creds))
                print(f"ACK {n} {seq}", flush=True)

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(worker)
        await backend.aclose()

    trio.run(main)


def _run_and_kill(path: Path, first: int, acks_before_kill: int, crash_at: int = 0) -> list[str]:
    """Start a child, SIGKILL it right after it acknowledged ``acks_before_kill`` commits
    (or let it kill itself at disk operation ``crash_at``); return its complete lines."""
    code = "import sys; from tests.stores.test_multi_file import crash_child; "
    code += "crash_child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))"
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(path), str(first), str(crash_at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
        bufsize=0,
    )
    assert child.stdout is not None
    seen: list[bytes] = []
    acks = -1  # the OPEN line counts as the zeroth acknowledgement
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        while acks < acks_before_kill and selector.select(timeout=30):
            line = child.stdout.readline()
            if not line:
                break
            seen.append(line)
            acks += 1
    child.kill()
    out, err = child.communicate(timeout=30)
    assert child.returncode == -9, f"child ended by itself: {err.decode()[-2000:]}"
    # A line cut by the kill (no newline yet) was never fully acknowledged.
    return (b"".join(seen) + out).decode().split("\n")[:-1]


async def _check_after_crash(path: Path, acked: dict[int, int], top: int, where: str) -> None:
    async with await open_multi_file_backend(path) as backend:
        ids = [f"c{n}-{j}" for n in range(1, top) for j in range(CRASH_KEYS)]
        got = await backend.read_keys("session", ids)
        for n in range(1, top):
            present = [j for j in range(CRASH_KEYS) if f"c{n}-{j}" in got]
            assert len(present) in (0, CRASH_KEYS), f"commit {n} is partial {where}"
            assert present or n not in acked, f"acknowledged commit {n} is missing {where}"
            for j in present:
                assert got[f"c{n}-{j}"] == crash_value(n, j), f"commit {n} has wrong data {where}"
        creds = await backend.read_creds()
        acked_creds = [n for n in acked if n % 5 == 0]
        if acked_creds:
            assert creds is not None, f"acknowledged creds lost {where}"
            holder = creds.next_pre_key_id
            assert holder % 5 == 0 and f"c{holder}-0" in got, f"creds from no commit {where}"
            newest = max(acked_creds, key=lambda n: acked[n])
            if holder in acked:
                assert acked[holder] >= acked[newest], f"stale creds {where}"
    assert not (path / JOURNAL_FILE).exists()


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_an_ack(tmp_path: Path) -> None:
    """SIGKILLs mid-commit: every reopen holds every acknowledged commit and no partial one."""
    # Real time is unavoidable here: the child is a separate process we kill.
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    path = tmp_path / "auth"
    acked: dict[int, int] = {}
    first = 1
    for cycle in range(CRASH_KILLS):
        # Half the kills come from outside after some acks, half from inside at a random
        # disk operation (mid-journal, mid-apply, mid-replay, torn writes).
        crash_at = rng.randrange(1, 700) if cycle % 2 else 0
        acks = rng.randrange(0, 25) if crash_at == 0 else 1_000_000
        for line in _run_and_kill(path, first, acks, crash_at):
            kind, *rest = line.split()
            if kind == "ACK":
                acked[int(rest[0])] = int(rest[1])
        # Fresh numbers each run, past any commit that was durable but not acknowledged.
        first = max(first, max(acked, default=0) + 1) + 100
        trio.run(_check_after_crash, path, acked, first, f"(seed {seed}, cycle {cycle})")
    assert len(acked) > CRASH_KILLS, f"too few commits to mean anything (seed {seed})"
