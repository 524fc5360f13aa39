from __future__ import annotations

import pytest

from tests.baileys_peer import BaileysPeer, PeerUnavailable, install_peer


@pytest.fixture(scope="session")
def baileys_peer() -> BaileysPeer:
    """Real Baileys v7 under node; tests using it are skipped, saying why, only without node."""
    try:
        return install_peer()
    except PeerUnavailable as exc:
        pytest.skip(str(exc))
