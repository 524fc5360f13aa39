from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.baileys_peer import PeerUnavailable, install_peer
from tests.signal.libsignal_peer import LibsignalPeer, open_libsignal_peer


@pytest.fixture(scope="module")
def libsignal_peer() -> Iterator[LibsignalPeer]:
    """libsignal-node and Baileys' group cipher under node; skipped (saying why) without node."""
    try:
        install_peer()  # cached after the first run; raises only when node/npm are absent
    except PeerUnavailable as exc:
        pytest.skip(f"libsignal interop skipped: {exc}")
    with open_libsignal_peer() as peer:
        yield peer
