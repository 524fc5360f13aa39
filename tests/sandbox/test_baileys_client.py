"""The proof: the real Baileys v7 client pairs with, logs in to, and reacts to the sandbox.

Real time here (node is a real process); every wait is bounded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from sandbox.server import Sandbox, open_sandbox
from tests.baileys_peer import BaileysPeer
from tests.sandbox.baileys_run import Event, NodeClient, baileys_client

pytestmark = pytest.mark.peer


def _is(connection: str) -> object:
    return lambda e: e.get("connection") == connection


def _closed_with(code: int) -> object:
    return lambda e: e.get("connection") == "close" and e.get("statusCode") == code


async def _pair(client: NodeClient, scan: object) -> Event:
    qr = await client.next_event(lambda e: "qr" in e, within=15)
    await scan(qr["qr"])  # type: ignore[operator]  # an async callable
    return await client.next_event(lambda e: e.get("event") == "open", within=20)


async def test_baileys_pairs_by_qr_restarts_on_515_logs_in_and_reopens_without_qr(
    baileys_peer: BaileysPeer, tmp_path: Path
) -> None:
    """QR → phone scan → pair-success → 515 → login → open; rerun logs in with no QR."""
    auth = tmp_path / "auth"
    async with open_sandbox() as sb:
        async with baileys_client(baileys_peer, url=sb.url, auth_dir=auth) as client:
            linked: list[str] = []

            async def scan(qr: str) -> None:
                linked.append((await sb.phone.scan(qr)).jid)

            opened = await _pair(client, scan)
            assert await client.process.wait() == 0
        closes = [e for e in client.events if e.get("connection") == "close"]
        assert [e["statusCode"] for e in closes] == [515]
        assert opened["me"]["id"] == linked[0]
        assert opened["me"]["lid"].endswith("@lid")
        assert opened["hasRoutingInfo"] is True
        device = sb.core.registry.find(linked[0])
        # Baileys found 0 pre-keys on the server and uploaded its 812 (INITIAL_PREKEY_COUNT).
        assert device.pre_key_count == 812
        assert device.noise_key.hex() == _creds(auth)["noiseKey"]["public"]
        first = sb.statistics()
        assert (first.links, first.logins, first.pre_key_uploads) == (1, 1, 1)

        async with baileys_client(baileys_peer, url=sb.url, auth_dir=auth) as again:
            reopened = await again.next_event(lambda e: e.get("event") == "open", within=20)
            assert await again.process.wait() == 0
        assert not any("qr" in e for e in again.events)
        assert reopened["me"]["id"] == linked[0]
        second = sb.statistics()
        assert second.logins == 2
        assert second.routed_intros == 1  # the rerun's intro carried the ED routing prefix
        assert second.pre_key_uploads == 1  # the count was kept: no second upload
        assert device.pre_key_count == 812


async def test_phone_scan_through_the_control_channel_links_baileys(
    baileys_peer: BaileysPeer, tmp_path: Path
) -> None:
    """The `phone scan` path (the control channel) links a Baileys client like the phone API."""
    from sandbox.control import scan_via_control

    async with open_sandbox() as sb:
        async with baileys_client(baileys_peer, url=sb.url, auth_dir=tmp_path) as client:

            async def scan(qr: str) -> None:
                with trio.fail_after(20):
                    await scan_via_control(sb.url, qr)

            opened = await _pair(client, scan)
        assert opened["me"]["id"].startswith(sb.phone.user + ":")


async def test_baileys_reports_the_sandbox_faults_as_disconnect_reasons(
    baileys_peer: BaileysPeer, tmp_path: Path
) -> None:
    """440 conflict → connectionReplaced, failure 401 → loggedOut, drop → connectionClosed 428."""
    async with open_sandbox() as sb:
        async with baileys_client(
            baileys_peer, url=sb.url, auth_dir=tmp_path, reconnects=3, hold_ms=-1
        ) as client:
            linked: list[str] = []

            async def scan(qr: str) -> None:
                linked.append((await sb.phone.scan(qr)).jid)

            await _pair(client, scan)
            jid = linked[0]
            for fault, code in (
                (lambda: sb.faults.stream_error(440, jid), 440),
                (lambda: sb.faults.failure(401, jid), 401),
                (lambda: sb.faults.drop(jid), 428),
                (lambda: sb.faults.stream_error(500, jid), 500),
            ):
                await _wait_logged_in(sb, jid)
                assert fault() == 1
                await client.next_event(_closed_with(code), within=10)  # type: ignore[arg-type]
            assert await client.process.wait() == 0


async def test_baileys_gives_up_with_408_when_the_refs_run_out(
    baileys_peer: BaileysPeer, tmp_path: Path
) -> None:
    """Unscanned, Baileys shows one QR per ref (six) and then closes with 408 timedOut."""
    async with open_sandbox() as sb:
        async with baileys_client(
            baileys_peer, url=sb.url, auth_dir=tmp_path, hold_ms=-1, qr_timeout_ms=150
        ) as client:
            await client.next_event(_closed_with(408), within=15)  # type: ignore[arg-type]
            assert await client.process.wait() == 0
        qrs = [e["qr"] for e in client.events if "qr" in e]
        assert len(qrs) == 6 == len(set(qrs))
        assert sb.statistics().links == 0


async def _wait_logged_in(sb: Sandbox, jid: str) -> None:
    with trio.fail_after(15):
        await sb.wait_logged_in(jid)


def _creds(auth: Path) -> dict[str, object]:
    data = json.loads((auth / "creds.json").read_text())
    noise = data["noiseKey"]["public"]
    import base64

    data["noiseKey"]["public"] = base64.b64decode(noise["data"]).hex()
    return data  # type: ignore[no-any-return]
