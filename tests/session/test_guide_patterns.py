"""The persistence guide's patterns, as written in Python, end to end on the memory sandbox.

(Reusing one directory across restarts and the custom signal store are shown in
test_pairing.py, test_crash.py and docs/configuration.md.)
"""

from __future__ import annotations

from typing import Any

import trio

from runtime.app import AuthLocation, open_runtime
from stores.auth import open_auth_state, use_native_file_auth_state
from stores.migrate import migrate_compat_json_to_native
from stores.native import open_native_backend
from stores.types import Batch
from tests.session.helpers import Recorder, sandbox_config, scanning_phone
from tests.session.memory_sandbox import open_memory_sandbox


async def test_pair_on_compat_json_then_migrate_explicitly_and_run_native_without_qr(tmp_path):
    """Baileys multi-file dir paired → migrate_compat_json_to_native → native logs in, no QR."""
    json_dir, native_dir = tmp_path / "baileys_auth", tmp_path / "native_auth"
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        config = sandbox_config(
            sb, AuthLocation(json_dir, "multi-file"), on_qr=scanning_phone(sb, nursery)
        )
        with trio.fail_after(60):
            async with open_runtime(config) as rt:
                await rt.wait_connected()
                me = (await rt.auth_state()).me
        assert (json_dir / "creds.json").exists()
        await migrate_compat_json_to_native(json_dir, native_dir)
        events = Recorder()
        with trio.fail_after(60):
            async with open_runtime(
                sandbox_config(sb, AuthLocation(native_dir, "native")), subscribe=events
            ) as rt:
                await rt.wait_connected()
                assert (await rt.auth_state()).me == me
        assert events.connection("qr") == []
        assert sb.statistics().links == 1
        nursery.cancel_scope.cancel()


class AuditingBackend:
    """A custom persistence wrapper (the guide's pattern): delegates, and audits each commit."""

    backend_name = "audited-native"

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.audit: list[tuple[int, list[str], bool]] = []

    @property
    def location(self) -> str:
        return self.inner.location

    async def read_creds(self) -> Any:
        return await self.inner.read_creds()

    async def read_keys(self, type: str, ids: Any) -> Any:
        return await self.inner.read_keys(type, ids)

    async def commit(self, batch: Batch) -> int:
        seq: int = await self.inner.commit(batch)
        self.audit.append((seq, sorted(batch.keys), batch.creds is not None))
        return seq

    async def snapshot(self) -> Any:
        return await self.inner.snapshot()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_custom_persistence_wrapper_sees_every_durable_commit_in_order(tmp_path):
    """open_auth_state(wrapper over native): the session pairs through it; seqs only grow."""
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        wrapper = AuditingBackend(await open_native_backend(tmp_path / "auth"))
        auth = await open_auth_state(wrapper)
        with trio.fail_after(60):
            async with (
                auth,
                open_runtime(sandbox_config(sb, auth, on_qr=scanning_phone(sb, nursery))) as rt,
            ):
                await rt.wait_connected()
        seqs = [seq for seq, _types, _creds in wrapper.audit]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert (["pre-key"], True) in [(types, creds) for _s, types, creds in wrapper.audit]
        async with await use_native_file_auth_state(tmp_path / "auth") as reopened:
            assert reopened.state.creds.next_pre_key_id == 813
        nursery.cancel_scope.cancel()
