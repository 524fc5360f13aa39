"""End to end over the in-memory transport: pairing, login, pre-keys, restart without QR."""

from __future__ import annotations

import trio

from runtime.app import open_runtime
from stores.auth import use_memory_auth_state
from tests.session.helpers import Recorder, sandbox_config, scanning_phone
from tests.session.memory_sandbox import open_memory_sandbox


async def test_fresh_device_pairs_logs_in_uploads_812_prekeys_and_opens(autojump_clock):
    """Fresh creds → qr → phone scans → 515 → login → 812 pre-keys uploaded → open."""
    async with open_memory_sandbox() as sb, trio.open_nursery() as nursery:
        auth = await use_memory_auth_state()
        events = Recorder()
        on_qr = scanning_phone(sb, nursery)
        async with open_runtime(sandbox_config(sb, auth, on_qr=on_qr)) as rt:
            rt.subscribe_raw(events)
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
