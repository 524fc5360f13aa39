"""The transport names why a connection could not be made."""

from __future__ import annotations

import socket

import pytest
import trio

from actors.connection.transport import WebSocketTransport, describe_failure
from actors.errors import TransportClosed


def test_a_failure_is_described_with_its_root_cause() -> None:
    """An empty wrapper error is shown with the cause behind it."""
    try:
        try:
            raise OSError(111, "Connection refused")
        except OSError as inner:
            raise RuntimeError() from inner
    except RuntimeError as outer:
        expected = "RuntimeError <- ConnectionRefusedError: [Errno 111] Connection refused"
        assert describe_failure(outer) == expected


async def test_connecting_to_a_closed_port_names_the_refusal() -> None:
    """A refused TCP connect becomes TransportClosed whose message says it was refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port now.
    transport = WebSocketTransport(connect_timeout=5)
    with trio.fail_after(10), pytest.raises(TransportClosed) as caught:
        async with transport.connect(f"ws://127.0.0.1:{port}/ws/chat"):
            pass
    assert "refused" in str(caught.value).lower()
