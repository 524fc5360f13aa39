"""The persistence guide's patterns, as written in Python, end to end on the memory sandbox.

(Reusing one directory across restarts, the custom signal store and the custom
persistence wrapper are shown in test_pairing.py and test_crash.py.)
"""

from __future__ import annotations

import trio

from runtime.app import AuthLocation, open_runtime
from stores.migrate import migrate_compat_json_to_native
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
