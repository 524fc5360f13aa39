"""A server certificate that does not verify under the configured root ends the session at once."""

from __future__ import annotations

import pytest
import trio

from actors.errors import SessionEnded
from actors.status import EndReason
from runtime.app import open_runtime
from stores.auth import use_memory_auth_state
from stores.keys import generate_key_pair
from tests.session.helpers import Recorder, sandbox_config
from tests.session.memory_sandbox import open_memory_sandbox


@pytest.mark.parametrize("root", ["another key", "WhatsApp's (unset)"])
async def test_a_wrong_root_key_ends_the_session_after_one_attempt(
    root: str, autojump_clock: trio.testing.MockClock
) -> None:
    """wait_connected raises SessionEnded naming server_root_key after exactly one connect."""
    async with open_memory_sandbox() as sb:
        key = generate_key_pair().public if root == "another key" else None
        events = Recorder()
        async with open_runtime(subscribe=events) as rt:
            auth = await use_memory_auth_state("a")
            session = await rt.start_session(sandbox_config(sb, auth, server_root_key=key))
            with trio.fail_after(60), pytest.raises(SessionEnded) as ended:
                await session.wait_connected()
            assert ended.value.reason == EndReason.UNTRUSTED_SERVER.value
            assert "does not verify under the root key" in str(ended.value)
            assert "server_root_key" in str(ended.value) and "sandbox" in str(ended.value)
            assert await session.wait_ended() is EndReason.UNTRUSTED_SERVER
        assert sb.transport.connects == 1
        closes = [
            e["connection_update"]
            for e in events.events
            if e.get("connection_update", {}).get("connection") == "close"
        ]
        assert [c["reconnect"] for c in closes] == [False]
