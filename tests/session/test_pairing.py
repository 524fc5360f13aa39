"""End to end over the in-memory transport: pairing, login, pre-keys, restart without QR.

Tests on disk backends run on the real clock: the backends fsync in worker threads,
which MockClock's autojump would mistake for idleness. Nothing in them sleeps.
"""

from __future__ import annotations

import os

import pytest
import trio

from runtime.app import AuthLocation, open_runtime
from stores.auth import use_memory_auth_state, use_native_file_auth_state
from stores.errors import StoreLockedError
from tests.session.helpers import Recorder, sandbox_config, scanning_phone
from tests.session.memory_sandbox import open_memory_sandbox


async def test_fresh_device_pairs_logs_in_uploads_812_prekeys_and_opens(autojump_clock):
    """Fresh creds → qr → phone scans → 515 → login → 812 pre-keys uploaded → open."""
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        auth = await use_memory_auth_state()
        events = Recorder()
        on_qr = scanning_phone(sb, nursery)
        async with open_runtime(sandbox_config(sb, auth, on_qr=on_qr), subscribe=events) as rt:
            await rt.wait_connected(timeout=120)
            creds = await rt.auth_state()
            assert creds.me is not None and creds.me["id"].endswith("@s.whatsapp.net")
            assert creds.next_pre_key_id == 813 and creds.first_unuploaded_pre_key_id == 813
            stored = await auth.backend.read_keys("pre-key", ["1", "812"])
            assert set(stored) == {"1", "812"}
            assert sb.statistics().pre_key_uploads == 1
            await events.wait_for(lambda r: "open" in r.connection())
        closes = [c["code"] for c in events.closes()]
        assert closes[0] == 515
        assert len(on_qr.scanned) == 1
        nursery.cancel_scope.cancel()


async def pair_once(sb, config_auth, nursery, **overrides):
    """Run a runtime until the device is paired and open, then stop it; returns events."""
    events = Recorder()
    on_qr = scanning_phone(sb, nursery)
    async with open_runtime(
        sandbox_config(sb, config_auth, on_qr=on_qr, **overrides), subscribe=events
    ) as rt:
        await rt.wait_connected(timeout=120)
        me = (await rt.auth_state()).me
    return events, me


@pytest.mark.parametrize("backend", ["native", "multi-file", "sqlite"])
async def test_each_durable_backend_pairs_then_restarts_without_qr(tmp_path, backend):
    """Pair with a path-based backend, stop, run again on the same path: open with no QR."""
    path = tmp_path / ("auth.db" if backend == "sqlite" else "auth")
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        first, me = await pair_once(sb, AuthLocation(path, backend), nursery)
        assert first.connection("qr")
        uploads = sb.statistics().pre_key_uploads
        second = Recorder()
        config = sandbox_config(sb, AuthLocation(path, backend), on_qr=lambda qr: None)
        async with open_runtime(config, subscribe=second) as rt:
            await rt.wait_connected(timeout=60)
            assert (await rt.auth_state()).me == me
        assert second.connection("qr") == []
        assert sb.statistics().pre_key_uploads == uploads  # the server kept our 812
        nursery.cancel_scope.cancel()


async def test_second_runtime_on_one_directory_fails_at_once_with_store_locked(tmp_path):
    """A second runtime on an auth directory in use raises StoreLockedError before any I/O."""
    async with open_memory_sandbox() as sb:
        config = sandbox_config(sb, tmp_path / "auth")
        async with open_runtime(config):
            connects = sb.transport.connects
            with pytest.raises(StoreLockedError) as caught:
                async with open_runtime(config):
                    pass  # pragma: no cover - must not get here
            assert str(os.getpid()) in str(caught.value)
            assert sb.transport.connects == connects


async def test_routing_info_from_the_server_is_saved_and_used_by_the_next_connection(tmp_path):
    """edge_routing after success lands durably in creds; the next intro carries it."""
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        await pair_once(sb, AuthLocation(tmp_path / "auth"), nursery)
        async with await use_native_file_auth_state(tmp_path / "auth") as auth:
            assert auth.state.creds.routing_info
        routed = sb.statistics().routed_intros
        config = sandbox_config(sb, AuthLocation(tmp_path / "auth"))
        async with open_runtime(config) as rt:
            await rt.wait_connected(timeout=60)
        assert sb.statistics().routed_intros == routed + 1
        nursery.cancel_scope.cancel()


async def test_one_persisted_auth_serves_one_session_at_a_time(autojump_clock):
    """Two sessions on one PersistedAuth object → StoreLockedError; free again after stop."""
    async with open_memory_sandbox() as sb:
        auth = await use_memory_auth_state()
        async with open_runtime(sandbox_config(sb, auth)) as rt:
            with pytest.raises(StoreLockedError, match="another session in this process"):
                await rt.start_session(sandbox_config(sb, auth, account="twin"))
        async with open_runtime(sandbox_config(sb, auth)) as rt:
            assert rt.connection_state in ("connecting", "handshaking", "pairing")


async def test_login_with_few_keys_left_on_the_server_tops_up_5_durably(autojump_clock):
    """Server holds 4 of our pre-keys at login → 5 new ones (ids 813..817) committed, uploaded."""
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        auth = await use_memory_auth_state()
        events = Recorder()
        config = sandbox_config(sb, auth, on_qr=scanning_phone(sb, nursery))
        async with open_runtime(config, subscribe=events) as rt:
            await rt.wait_connected(timeout=120)
            me = (await rt.auth_state()).me
            assert me is not None
            device = sb.core.registry.find(me["id"])
            while device.pre_key_count > 4:
                device.take_pre_key()
            uploads = sb.statistics().pre_key_uploads
            sb.faults.stream_error(515)
            await events.wait_for(lambda r: r.opens() == 2)
            creds = await rt.auth_state()
            assert (creds.next_pre_key_id, creds.first_unuploaded_pre_key_id) == (818, 818)
            assert device.pre_key_count == 9
            assert sb.statistics().pre_key_uploads == uploads + 1
            stored = await auth.backend.read_keys("pre-key", [str(i) for i in range(813, 818)])
            assert len(stored) == 5
        nursery.cancel_scope.cancel()
