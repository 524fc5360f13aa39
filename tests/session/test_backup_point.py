"""A running session backs itself up: the persister provides the point in durable order."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.errors import SessionError
from actors.mail import CommitBatch, DurableSnapshot, TakeSnapshot
from actors.persister import Persister
from actors.session import SharedBackend
from runtime.app import open_runtime
from runtime.reply import call_durable
from runtime.spec import ChildSpec
from runtime.supervisor import open_supervisor
from stores.backup import restore_location, write_backup
from stores.creds import init_auth_creds
from stores.errors import BackupTargetNotEmpty, WrongKeyError
from stores.memory import MemoryBackend
from stores.native import open_native_backend
from stores.types import Batch
from tests.session.backends import InstrumentedBackend
from tests.session.helpers import sandbox_config, scanning_phone
from tests.session.memory_sandbox import open_memory_sandbox
from tests.stores.encryption_helpers import creds_secrets, scan_for_leaks


async def test_the_snapshot_holds_exactly_the_commits_up_to_its_point() -> None:
    """Taken while batches commit (slow fsyncs, group commit), the snapshot holds every
    batch acknowledged with a seq at or below the point and none above it."""
    inner = MemoryBackend()
    await inner.commit(Batch(creds=init_auth_creds()))
    backend = InstrumentedBackend(inner, fsync_time=0.002)
    spec = ChildSpec(
        "persister",
        lambda: Persister(SharedBackend(backend), emit=lambda event: None),
        name="persister",
    )
    acked: dict[int, int] = {}
    points: list[DurableSnapshot] = []
    async with open_supervisor([spec]) as sup:
        ref = sup.ref("persister")

        async def commit(n: int) -> None:
            batch = Batch(keys={"session": {f"s{n}": {"n": n}}})
            acked[n] = await call_durable(ref, CommitBatch(batch), timeout=30)

        async with trio.open_nursery() as nursery:
            for n in range(200):
                nursery.start_soon(commit, n)
                if n % 40 == 20:
                    await trio.sleep(0.001)
                    points.append(await ref.call(TakeSnapshot(), timeout=30))
    assert len(acked) == 200
    for point in points:
        held = {int(i[1:]) for i in point.snapshot.keys.get("session", {})}
        assert held == {n for n, seq in acked.items() if seq <= point.seq}
        assert point.backend == "instrumented"
    assert len({p.seq for p in points}) > 1  # the points moved with the commits


async def test_session_backup_while_connected_restores_the_durable_state(
    tmp_path: Path,
) -> None:
    """rt.backup(account, out) on a paired, connected session: the copy restores to the
    session's durable creds and keys, at the persister's seq."""
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        config = sandbox_config(
            sb, str(tmp_path / "auth"), account="bot", on_qr=scanning_phone(sb, nursery)
        )
        async with open_runtime(config) as rt:
            await rt.wait_connected(60)
            summary = await rt.backup("bot", tmp_path / "bak")
            stats = await rt.primary.persister_statistics()
            creds = await rt.auth_state()
            with pytest.raises(BackupTargetNotEmpty):
                await rt.primary.backup(tmp_path / "bak")
            with pytest.raises(SessionError, match="no session 'other'"):
                await rt.backup("other", tmp_path / "bak2")
        nursery.cancel_scope.cancel()
    assert summary.source == str(tmp_path / "auth") and summary.source_backend == "native"
    assert stats.durable_seq is None or summary.seq <= stats.durable_seq
    assert summary.account_id == (creds.me or {}).get("id")
    assert summary.key_counts.get("pre-key", 0) > 0
    await restore_location(tmp_path / "bak", tmp_path / "restored")
    async with await open_native_backend(tmp_path / "restored") as restored:
        got: Any = await restored.read_creds()
        assert got is not None and got.me == creds.me
        assert got.signed_identity_key == creds.signed_identity_key
        assert restored.statistics().durable_seq == summary.seq


class _Encrypted(InstrumentedBackend):
    """A backend that says it is encrypted at rest, as encrypted backends do."""

    key_id = "k1-0123456789abcdef"


async def test_an_encrypted_store_is_never_backed_up_as_plaintext(tmp_path: Path) -> None:
    """The point names the store's key id; without that key no backup is written."""
    inner = MemoryBackend()
    await inner.commit(Batch(creds=init_auth_creds()))
    spec = ChildSpec(
        "persister",
        lambda: Persister(SharedBackend(_Encrypted(inner)), emit=lambda event: None),
        name="persister",
    )
    async with open_supervisor([spec]) as sup:
        point: DurableSnapshot = await sup.ref("persister").call(TakeSnapshot(), timeout=30)
    assert point.key_id == "k1-0123456789abcdef"
    with pytest.raises(WrongKeyError, match="no key was given"):
        await write_backup(
            point.snapshot,
            point.seq,
            tmp_path / "bak",
            source=point.location,
            source_backend=point.backend,
            key_id=point.key_id,
        )
    assert not (tmp_path / "bak").exists()


async def test_an_encrypted_session_backs_up_sealed_under_its_key(tmp_path: Path) -> None:
    """A session opened with encryption_key backs up sealed under it (no key bytes in the
    copy's files); the copy restores with that key to the session's creds."""
    key = secrets.token_bytes(32)
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        config = sandbox_config(
            sb,
            str(tmp_path / "auth"),
            encryption_key=key,
            on_qr=scanning_phone(sb, nursery),
        )
        async with open_runtime(config) as rt:
            await rt.wait_connected(60)
            summary = await rt.primary.backup(tmp_path / "bak")
            creds = await rt.auth_state()
        nursery.cancel_scope.cancel()
    assert scan_for_leaks(tmp_path / "bak", creds_secrets(creds)) == []
    with pytest.raises(WrongKeyError):
        await restore_location(tmp_path / "bak", tmp_path / "plain")
    await restore_location(tmp_path / "bak", tmp_path / "restored", encryption_key=key)
    async with await open_native_backend(tmp_path / "restored", encryption_key=key) as store:
        got: Any = await store.read_creds()
        assert got.me == creds.me and store.statistics().durable_seq == summary.seq
