"""Migration between backends: verified, atomic, never touching the source."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import pytest

from stores import migrate as migrate_mod
from stores.auth import enter_backend
from stores.creds import init_auth_creds
from stores.errors import MigrationError, StoreLockedError
from stores.migrate import (
    BACKENDS,
    BackendKind,
    Layout,
    MigrationSummary,
    migrate,
    migrate_compat_json_to_native,
    migrate_native_to_compat_json,
    migrate_to_sqlite,
)
from stores.sqlite import open_sqlite_backend
from stores.types import Batch, Persistence, StoreSnapshot
from tests.baileys_peer import BaileysPeer

ME = "15551234567:12@s.whatsapp.net"


def _sample_keys() -> dict[str, dict[str, Any]]:
    """One or more ids of every key type, in the plain shapes Baileys keeps."""
    return {
        "pre-key": {
            str(i): {"private": bytes([i]) * 32, "public": bytes([i + 1]) * 32} for i in (1, 2, 3)
        },
        "session": {
            "15551234567.0": {
                "_sessions": {"BQUF": {"registrationId": 4321, "_chains": {}}},
                "version": "v1",
            }
        },
        "sender-key": {"120363@g.us::15551234567::0": b'[{"senderKeyId":7}]'},
        "sender-key-memory": {"120363@g.us": {"15551234567:0@s.whatsapp.net": True}},
        "lid-mapping": {"15551234567": "123456789", "123456789_reverse": "15551234567"},
        "device-list": {"15551234567": ["0", "12"]},
        "identity-key": {"15557654321.0": b"\x05" + b"\x0c" * 32},
    }


def _sample_creds() -> Any:
    creds = init_auth_creds()
    creds.me = {"id": ME, "name": "bot"}
    creds.registered = True
    return creds


async def _write(kind: str, path: Path, snapshot: StoreSnapshot, account: str = "default") -> None:
    async with AsyncExitStack() as stack:
        backend = await enter_backend(stack, BACKENDS[kind].open(path, account))
        await backend.commit(Batch(keys=snapshot.keys, creds=snapshot.creds))


async def _read(kind: str, path: Path, account: str = "default") -> StoreSnapshot:
    async with AsyncExitStack() as stack:
        backend = await enter_backend(stack, BACKENDS[kind].open(path, account))
        return await backend.snapshot()


def _fingerprint(path: Path) -> dict[str, str]:
    """Mode and sha256 of every file under ``path`` (lock files excluded: not data)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {
        str(p.relative_to(path.parent)): f"{p.stat().st_mode:o} "
        + hashlib.sha256(p.read_bytes()).hexdigest()
        for p in files
        if not p.name.endswith(".lock") and p.name != "LOCK"
    }


def _siblings(path: Path) -> list[str]:
    return sorted(os.listdir(path.parent))


def _assert_same(a: StoreSnapshot, b: StoreSnapshot) -> None:
    assert a.creds is not None and b.creds is not None
    assert a.creds.to_plain() == b.creds.to_plain()
    assert {t: v for t, v in a.keys.items() if v} == {t: v for t, v in b.keys.items() if v}


@pytest.fixture
def sample() -> StoreSnapshot:
    return StoreSnapshot(creds=_sample_creds(), keys=_sample_keys())


def _location(tmp_path: Path, kind: str, name: str) -> Path:
    return tmp_path / (f"{name}.db" if BACKENDS[kind].layout is Layout.DATABASE else name)


DIRECTIONS = [
    ("native", "sqlite"),
    ("sqlite", "native"),
    ("sqlite", "sqlite"),
    ("multi-file", "native"),
    ("native", "multi-file"),
    ("multi-file", "sqlite"),
    ("sqlite", "multi-file"),
]


@pytest.mark.parametrize(("src_kind", "dst_kind"), DIRECTIONS)
async def test_every_direction_copies_everything(
    tmp_path: Path, sample: StoreSnapshot, src_kind: str, dst_kind: str
) -> None:
    """Each direction copies creds and every key exactly and leaves the source as it was."""
    src, dst = _location(tmp_path, src_kind, "src"), _location(tmp_path, dst_kind, "dst")
    await _write(src_kind, src, sample)
    before = _fingerprint(src)
    summary = await migrate(src_kind, src, dst_kind, dst)
    _assert_same(await _read(dst_kind, dst), sample)
    assert _fingerprint(src) == before
    assert summary.src_backend == src_kind and summary.dst_backend == dst_kind
    assert summary.src == str(src) and summary.dst == str(dst)
    assert summary.account_id == ME
    assert dict(summary.key_counts) == {t: len(v) for t, v in sample.keys.items()}
    assert summary.total_keys == sum(len(v) for v in sample.keys.values())
    assert not [n for n in _siblings(dst) if ".migrating-" in n]


async def test_named_entry_points(tmp_path: Path, sample: StoreSnapshot) -> None:
    """The compat↔native and to-SQLite entry points migrate in their named direction."""
    await _write("multi-file", tmp_path / "baileys", sample)
    first = await migrate_compat_json_to_native(tmp_path / "baileys", tmp_path / "native")
    assert (first.src_backend, first.dst_backend) == ("multi-file", "native")
    back = await migrate_native_to_compat_json(tmp_path / "native", tmp_path / "again")
    assert (back.src_backend, back.dst_backend) == ("native", "multi-file")
    third = await migrate_to_sqlite(tmp_path / "native", "native", tmp_path / "all.db", "bot1")
    assert (third.dst_backend, third.dst_account, third.src_account) == ("sqlite", "bot1", None)
    _assert_same(await _read("sqlite", tmp_path / "all.db", "bot1"), sample)


async def test_into_existing_database_keeps_other_accounts(
    tmp_path: Path, sample: StoreSnapshot
) -> None:
    """Migrating into a database with other accounts adds one account and changes no other."""
    db = tmp_path / "all.db"
    other = StoreSnapshot(creds=init_auth_creds(), keys={"session": {"x": b"other"}})
    await _write("sqlite", db, other, account="other")
    await _write("sqlite", tmp_path / "src.db", sample)
    summary = await migrate("sqlite", tmp_path / "src.db", "sqlite", db, dst_account="new")
    assert summary.dst_account == "new" and summary.src_account == "default"
    _assert_same(await _read("sqlite", db, "new"), sample)
    _assert_same(await _read("sqlite", db, "other"), other)


async def test_source_locked_by_running_owner_is_refused(
    tmp_path: Path, sample: StoreSnapshot
) -> None:
    """A source opened by a running owner raises StoreLockedError; no target is made."""
    await _write("sqlite", tmp_path / "src.db", sample)
    async with await open_sqlite_backend(tmp_path / "src.db"):
        with pytest.raises(StoreLockedError):
            await migrate("sqlite", tmp_path / "src.db", "native", tmp_path / "dst")
    assert not (tmp_path / "dst").exists()


@pytest.mark.parametrize("src_kind", ["native", "multi-file"])
async def test_locked_directory_source_is_refused(
    tmp_path: Path, sample: StoreSnapshot, src_kind: str
) -> None:
    """A directory held by a running owner raises StoreLockedError naming the owner."""
    await _write(src_kind, tmp_path / "src", sample)
    async with AsyncExitStack() as stack:
        await enter_backend(stack, BACKENDS[src_kind].open(tmp_path / "src", "default"))
        with pytest.raises(StoreLockedError) as info:
            await migrate(src_kind, tmp_path / "src", "sqlite", tmp_path / "dst.db")
        assert f"pid {os.getpid()}" in info.value.owner
    assert not (tmp_path / "dst.db").exists()


@pytest.mark.parametrize("dst_kind", ["native", "multi-file"])
async def test_non_empty_target_directory_is_refused(
    tmp_path: Path, sample: StoreSnapshot, dst_kind: str
) -> None:
    """A target directory holding anything raises MigrationError and is left alone."""
    await _write("sqlite", tmp_path / "src.db", sample)
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "notes.txt").write_text("mine")
    with pytest.raises(MigrationError, match="not empty"):
        await migrate("sqlite", tmp_path / "src.db", dst_kind, tmp_path / "dst")
    assert os.listdir(tmp_path / "dst") == ["notes.txt"]


async def test_empty_target_directory_is_used(tmp_path: Path, sample: StoreSnapshot) -> None:
    """An existing but empty target directory is replaced by the migrated one."""
    await _write("sqlite", tmp_path / "src.db", sample)
    (tmp_path / "dst").mkdir()
    await migrate("sqlite", tmp_path / "src.db", "native", tmp_path / "dst")
    _assert_same(await _read("native", tmp_path / "dst"), sample)


async def test_non_empty_target_account_is_refused(tmp_path: Path, sample: StoreSnapshot) -> None:
    """A target account that already holds data raises MigrationError and keeps its data."""
    held = StoreSnapshot(creds=init_auth_creds(), keys={"pre-key": {"9": b"mine"}})
    await _write("sqlite", tmp_path / "dst.db", held)
    await _write("native", tmp_path / "src", sample)
    with pytest.raises(MigrationError, match="not empty"):
        await migrate("native", tmp_path / "src", "sqlite", tmp_path / "dst.db")
    _assert_same(await _read("sqlite", tmp_path / "dst.db"), held)


@pytest.mark.parametrize("src_kind", ["native", "multi-file", "sqlite"])
async def test_absent_source_is_refused_and_not_created(tmp_path: Path, src_kind: str) -> None:
    """An absent source raises MigrationError and is not created by the attempt."""
    src = _location(tmp_path, src_kind, "src")
    with pytest.raises(MigrationError, match="absent or empty"):
        await migrate(src_kind, src, "sqlite" if src_kind != "sqlite" else "native", tmp_path / "d")
    assert not src.exists()


async def test_source_without_creds_is_refused(tmp_path: Path) -> None:
    """A source holding keys but no creds is refused: there is no device to migrate."""
    await _write("sqlite", tmp_path / "src.db", StoreSnapshot(None, {"session": {"a": b"v"}}))
    with pytest.raises(MigrationError, match="no creds"):
        await migrate("sqlite", tmp_path / "src.db", "native", tmp_path / "dst")
    assert not (tmp_path / "dst").exists()


async def test_unknown_backend_and_same_location_are_refused(tmp_path: Path) -> None:
    """An unknown backend name or a target equal to the source raises MigrationError."""
    with pytest.raises(MigrationError, match="unknown backend"):
        await migrate("oracle", tmp_path / "a", "native", tmp_path / "b")
    with pytest.raises(MigrationError, match="same location"):
        await migrate("native", tmp_path / "a", "native", tmp_path / "a")


class _Lossy:
    """A backend wrapper that silently drops one key on commit (a buggy target)."""

    backend_name = "lossy"

    def __init__(self, inner: Persistence) -> None:
        self._inner = inner

    @property
    def location(self) -> str:
        return self._inner.location

    async def read_creds(self) -> Any:
        return await self._inner.read_creds()

    async def read_keys(self, type: str, ids: Any) -> Any:
        return await self._inner.read_keys(type, ids)

    async def commit(self, batch: Batch) -> int:
        keys = {t: dict(v) for t, v in batch.keys.items()}
        keys["pre-key"].pop("2", None)
        return await self._inner.commit(Batch(keys=keys, creds=batch.creds))

    async def snapshot(self) -> StoreSnapshot:
        return await self._inner.snapshot()

    async def aclose(self) -> None:
        await self._inner.aclose()


def _lossy_kind(base: str) -> BackendKind:
    inner = BACKENDS[base]

    async def open_lossy(path: Path, account: str) -> Persistence:
        async with AsyncExitStack() as stack:
            backend = await enter_backend(stack, inner.open(path, account))
            stack.pop_all()
        return _Lossy(backend)

    return BackendKind("lossy", inner.layout, open_lossy)


@pytest.mark.parametrize("base", ["native", "multi-file", "sqlite"])
async def test_verification_failure_leaves_source_and_no_target(
    tmp_path: Path, sample: StoreSnapshot, base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A target that loses a key fails verification; the target stays absent, the source intact."""
    monkeypatch.setitem(BACKENDS, "lossy", _lossy_kind(base))
    await _write("sqlite", tmp_path / "src.db", sample)
    before = _fingerprint(tmp_path / "src.db")
    dst = _location(tmp_path, base, "dst")
    with pytest.raises(MigrationError, match="pre-key/2 missing"):
        await migrate("sqlite", tmp_path / "src.db", "lossy", dst)
    assert not dst.exists()
    assert not [n for n in _siblings(dst) if ".migrating-" in n]
    assert _fingerprint(tmp_path / "src.db") == before


async def test_verification_failure_into_existing_database_rolls_back(
    tmp_path: Path, sample: StoreSnapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Into an existing database, a failed read-back comparison leaves the account empty."""
    db = tmp_path / "all.db"
    await _write("sqlite", db, StoreSnapshot(init_auth_creds(), {}), account="other")
    await _write("native", tmp_path / "src", sample)

    def disagree(expected: StoreSnapshot, got: StoreSnapshot, where: str) -> None:
        raise MigrationError(f"{where}: read-back differs (injected)")

    monkeypatch.setattr(migrate_mod, "compare_snapshots", disagree)
    with pytest.raises(MigrationError, match="injected"):
        await migrate("native", tmp_path / "src", "sqlite", db, dst_account="new")
    async with await open_sqlite_backend(db, account="new") as backend:
        assert await backend.is_empty()


@pytest.mark.parametrize("src_kind", ["native", "multi-file", "sqlite"])
async def test_source_stays_locked_until_published(
    tmp_path: Path, sample: StoreSnapshot, src_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the target is written, a second owner cannot open the source."""
    src = _location(tmp_path, src_kind, "src")
    await _write(src_kind, src, sample)
    seen: list[BaseException] = []
    inner = BACKENDS["native"]

    async def open_probing(path: Path, account: str) -> Persistence:
        try:
            async with AsyncExitStack() as stack:
                await enter_backend(stack, BACKENDS[src_kind].open(src, "default"))
        except StoreLockedError as exc:
            seen.append(exc)
        return await inner.open(path, account)  # type: ignore[no-any-return]  # opener is Any

    monkeypatch.setitem(BACKENDS, "probe", BackendKind("probe", Layout.DIRECTORY, open_probing))
    await migrate(src_kind, src, "probe", tmp_path / "dst")
    assert len(seen) == 2  # the staging write and the read-back both found it locked
    # Released afterwards: the source opens again.
    await _read(src_kind, src)


def test_summary_is_frozen() -> None:
    """The summary is an immutable record."""
    summary = MigrationSummary("native", "/a", "sqlite", "/b", None, {"pre-key": 1})
    with pytest.raises(FrozenInstanceError):
        summary.account_id = "x"  # type: ignore[misc]  # the point: assignment is refused


# --- round trips through Baileys' own format ----------------------------------------


def _json_files(folder: Path) -> dict[str, Any]:
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


_BAILEYS_KEYS = """
const buf = (n, b) => Buffer.alloc(n, b);
const b64 = (n, b) => buf(n, b).toString('base64');
await state.keys.set({
  'pre-key': { '1': { private: buf(32, 1), public: buf(32, 2) },
               '2': { private: buf(32, 3), public: buf(32, 4) } },
  'session': { '15551234567.0': { _sessions: { [b64(33, 5)]: { registrationId: 4321,
      currentRatchet: { rootKey: b64(32, 6), previousCounter: 0 },
      indexInfo: { closed: -1, used: 1700000000000 }, _chains: {} } }, version: 'v1' } },
  'sender-key': { '120363@g.us::15551234567::0': Buffer.from(JSON.stringify(
      [{ senderKeyId: 7, senderChainKey: { iteration: 0, seed: b64(32, 7) } }]), 'utf-8') },
  'sender-key-memory': { '120363@g.us': { '15551234567:0@s.whatsapp.net': true } },
  'app-state-sync-key': { 'AAAAAFJQ': proto.Message.AppStateSyncKeyData.fromObject({
      keyData: buf(32, 8), fingerprint: { rawId: 1, currentIndex: 2, deviceIndexes: [0, 1] },
      timestamp: 1700000000123 }) },
  'app-state-sync-version': { 'regular_high': { version: 3, hash: buf(128, 9),
      indexValueMap: { 'aW5kZXg=': { valueMac: buf(32, 10) } } } },
  'lid-mapping': { '15551234567': '123456789', '123456789_reverse': '15551234567' },
  'device-list': { '15551234567': ['0', '12'] },
  'tctoken': { '15557654321@s.whatsapp.net': { token: buf(20, 11), timestamp: '1700000000' } },
  'identity-key': { '15557654321.0': buf(33, 12) },
});
console.log(JSON.stringify('ok'));
"""

# What pairing adds to creds (lib/Utils/validate-connection.js configureSuccessfulPairing).
_BAILEYS_PAIRED = """
state.creds.me = { id: '%(me)s', name: 'bot', lid: '123456789:12@lid' };
state.creds.account = proto.ADVSignedDeviceIdentity.decode(proto.ADVSignedDeviceIdentity.encode({
  details: Buffer.alloc(40, 21), accountSignatureKey: Buffer.alloc(32, 22),
  accountSignature: Buffer.alloc(64, 23), deviceSignature: Buffer.alloc(64, 24) }).finish());
state.creds.signalIdentities = [{ identifier: { name: '%(me)s', deviceId: 0 },
  identifierKey: Buffer.concat([Buffer.from([5]), Buffer.alloc(32, 25)]) }];
state.creds.platform = 'smba';
state.creds.registered = true;
state.creds.routingInfo = Buffer.from([8, 5, 8, 8]);
state.creds.myAppStateKeyId = 'AAAAAFJQ';
state.creds.lastAccountSyncTimestamp = 1700000000;
"""


def _baileys_write_script(folder: Path, *, paired: bool) -> str:
    """A node script: Baileys' useMultiFileAuthState writes creds and every key type."""
    head = (
        "import { useMultiFileAuthState, proto } from 'baileys';\n"
        f"const {{ state, saveCreds }} = await useMultiFileAuthState({json.dumps(str(folder))});\n"
    )
    pairing = _BAILEYS_PAIRED % {"me": ME} if paired else ""
    return head + pairing + "await saveCreds();\n" + _BAILEYS_KEYS


@pytest.fixture
def baileys_dir(baileys_peer: BaileysPeer, tmp_path: Path) -> Iterator[Path]:
    """A directory written by real Baileys v7 for a paired device: every v7 key type."""
    folder = tmp_path / "baileys"
    assert baileys_peer.run_json(_baileys_write_script(folder, paired=True)) == "ok"
    yield folder


@pytest.mark.peer
async def test_baileys_dir_round_trip_through_native(baileys_dir: Path, tmp_path: Path) -> None:
    """Baileys dir → native → Baileys dir gives the same files with equal parsed JSON."""
    original = _json_files(baileys_dir)
    assert len(original) == 13  # creds + 12 key files, every v7 key type
    before = _fingerprint(baileys_dir)
    there = await migrate_compat_json_to_native(baileys_dir, tmp_path / "native")
    back = await migrate_native_to_compat_json(tmp_path / "native", tmp_path / "again")
    assert _json_files(tmp_path / "again") == original
    assert _fingerprint(baileys_dir) == before
    assert there.account_id == back.account_id == ME
    assert there.total_keys == back.total_keys == 12
    assert set(there.key_counts) == {
        "pre-key",
        "session",
        "sender-key",
        "sender-key-memory",
        "app-state-sync-key",
        "app-state-sync-version",
        "lid-mapping",
        "device-list",
        "tctoken",
        "identity-key",
    }


@pytest.mark.peer
async def test_unpaired_baileys_dir_round_trip(baileys_peer: BaileysPeer, tmp_path: Path) -> None:
    """A fresh (unpaired) Baileys dir → native → Baileys dir gives equal parsed JSON."""
    folder = tmp_path / "fresh"
    assert baileys_peer.run_json(_baileys_write_script(folder, paired=False)) == "ok"
    original = _json_files(folder)
    await migrate_compat_json_to_native(folder, tmp_path / "native")
    await migrate_native_to_compat_json(tmp_path / "native", tmp_path / "again")
    assert _json_files(tmp_path / "again") == original


@pytest.mark.peer
async def test_baileys_dir_round_trip_through_sqlite(baileys_dir: Path, tmp_path: Path) -> None:
    """Baileys dir → SQLite → Baileys dir also gives equal parsed JSON in every file."""
    original = _json_files(baileys_dir)
    await migrate_to_sqlite(baileys_dir, "multi-file", tmp_path / "all.db", "bot")
    await migrate(
        "sqlite", tmp_path / "all.db", "multi-file", tmp_path / "again", src_account="bot"
    )
    assert _json_files(tmp_path / "again") == original


@pytest.mark.peer
async def test_migrated_dir_loads_in_baileys(
    baileys_dir: Path, tmp_path: Path, baileys_peer: BaileysPeer
) -> None:
    """Real Baileys loads the directory a native → compat migration wrote: same me.id and keys."""
    await migrate_compat_json_to_native(baileys_dir, tmp_path / "native")
    await migrate_native_to_compat_json(tmp_path / "native", tmp_path / "again")
    folder = json.dumps(str(tmp_path / "again"))
    script = (
        "import { useMultiFileAuthState } from 'baileys';\n"
        f"const {{ state }} = await useMultiFileAuthState({folder});\n"
        + """
const pk = await state.keys.get('pre-key', ['1', '2']);
const ask = await state.keys.get('app-state-sync-key', ['AAAAAFJQ']);
console.log(JSON.stringify({ me: state.creds.me.id, pk: Object.keys(pk).filter(k => pk[k]),
  pub: Buffer.from(pk['1'].public).toString('hex').slice(0, 8),
  ts: String(ask['AAAAAFJQ'].timestamp) }));
"""
    )
    got = baileys_peer.run_json(script)
    assert got == {"me": ME, "pk": ["1", "2"], "pub": "02020202", "ts": "1700000000123"}


async def test_our_multi_file_dir_round_trip_through_native(
    tmp_path: Path, sample: StoreSnapshot
) -> None:
    """A directory our multi-file backend wrote survives → native → multi-file as equal JSON."""
    await _write("multi-file", tmp_path / "ours", sample)
    original = _json_files(tmp_path / "ours")
    assert len(original) == 1 + sum(len(v) for v in sample.keys.values())
    await migrate_compat_json_to_native(tmp_path / "ours", tmp_path / "native")
    await migrate_native_to_compat_json(tmp_path / "native", tmp_path / "again")
    assert _json_files(tmp_path / "again") == original
