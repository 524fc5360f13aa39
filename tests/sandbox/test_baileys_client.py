"""The proof: the real Baileys v7 client pairs with, logs in to, and reacts to the sandbox.

Real time here (node is a real process); every wait is bounded.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from sandbox.errors import PairingFailedError
from sandbox.server import Sandbox, open_sandbox
from tests.baileys_peer import BaileysPeer
from tests.sandbox.baileys_run import Event, NodeClient, baileys_client

pytestmark = pytest.mark.peer


def _closed_with(code: int) -> Callable[[Event], bool]:
    return lambda e: e.get("connection") == "close" and e.get("statusCode") == code


async def _pair(client: NodeClient, scan: Callable[[str], Awaitable[None]]) -> Event:
    """Wait for the first QR, have ``scan`` scan it, and wait for Baileys' open."""
    qr = await client.next_event(lambda e: "qr" in e, within=15)
    await scan(qr["qr"])
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
        assert device.noise_key == _creds_noise_public(auth)
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


async def test_the_cli_sandbox_and_cli_phone_scan_link_baileys(
    baileys_peer: BaileysPeer, tmp_path: Path
) -> None:
    """`baileys-trio sandbox` and `baileys-trio phone scan`: Baileys pairs through them."""
    script = Path(sys.executable).parent / "baileys-trio"
    assert script.exists(), "the console script is installed with the project"
    command = [str(script)]
    server = await trio.lowlevel.open_process([*command, "sandbox"], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        with trio.fail_after(10):
            lines = b""
            while lines.count(b"\n") < 2:
                lines += await server.stdout.receive_some(4096)
        url, root_hex = lines.decode().splitlines()[:2]
        assert len(bytes.fromhex(root_hex)) == 32
        async with baileys_client(baileys_peer, url=url, auth_dir=tmp_path) as client:
            jids: list[str] = []

            async def scan(qr: str) -> None:
                with trio.fail_after(20):
                    done = await trio.run_process(
                        [*command, "phone", "scan", qr, "--sandbox", url], capture_stdout=True
                    )
                jids.append(done.stdout.decode().strip())

            opened = await _pair(client, scan)
        assert opened["me"]["id"] == jids[0]
        server.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await server.wait() == 0
    finally:
        if server.returncode is None:
            server.kill()


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
            faults: list[tuple[Callable[[], int], int]] = [
                (lambda: sb.faults.stream_error(440, jid), 440),
                (lambda: sb.faults.failure(401, jid), 401),
                (lambda: sb.faults.drop(jid), 428),
                (lambda: sb.faults.stream_error(500, jid), 500),
            ]
            for fault, code in faults:
                await _wait_logged_in(sb, jid)
                assert fault() == 1
                await client.next_event(_closed_with(code), within=10)
            assert await client.process.wait() == 0


async def test_baileys_gives_up_with_408_when_the_refs_run_out(
    baileys_peer: BaileysPeer, tmp_path: Path
) -> None:
    """Unscanned, Baileys shows one QR per ref (six) and then closes with 408 timedOut."""
    async with open_sandbox() as sb:
        async with baileys_client(
            baileys_peer, url=sb.url, auth_dir=tmp_path, hold_ms=-1, qr_timeout_ms=150
        ) as client:
            await client.next_event(_closed_with(408), within=15)
            assert await client.process.wait() == 0
        qrs = [e["qr"] for e in client.events if "qr" in e]
        assert len(qrs) == 6 == len(set(qrs))
        assert sb.statistics().links == 0


async def _wait_logged_in(sb: Sandbox, jid: str) -> None:
    with trio.fail_after(15):
        await sb.wait_logged_in(jid)


def _creds_noise_public(auth: Path) -> bytes:
    """The noise public key Baileys saved in creds.json (a Buffer-tagged base64 value)."""
    data = json.loads((auth / "creds.json").read_text())
    return base64.b64decode(data["noiseKey"]["public"]["data"])


@pytest.mark.parametrize("fault", ["stall", "oversize_frame"])
async def test_a_stalled_connection_is_lost_to_baileys_keepalive(
    baileys_peer: BaileysPeer, tmp_path: Path, fault: str
) -> None:
    """A stall, or a frame that never completes: Baileys closes with 408 connectionLost."""
    async with open_sandbox() as sb:
        async with baileys_client(
            baileys_peer, url=sb.url, auth_dir=tmp_path, hold_ms=-1, keepalive_ms=500
        ) as client:
            linked: list[str] = []

            async def scan(qr: str) -> None:
                linked.append((await sb.phone.scan(qr)).jid)

            await _pair(client, scan)
            assert getattr(sb.faults, fault)(linked[0]) == 1
            closed = await client.next_event(
                lambda e: e.get("connection") == "close" and e["socket"] == 2, within=15
            )
            assert closed["statusCode"] == 408
            assert await client.process.wait() == 0


@pytest.mark.parametrize("fault", ["malformed_frame", "undecryptable_frame"])
async def test_a_bad_frame_crashes_the_baileys_process(
    baileys_peer: BaileysPeer, tmp_path: Path, fault: str
) -> None:
    """Baileys v7 fact: a frame that fails to decrypt or decode is uncaught; node exits 1."""
    async with open_sandbox() as sb:
        async with baileys_client(
            baileys_peer, url=sb.url, auth_dir=tmp_path, hold_ms=-1
        ) as client:
            linked: list[str] = []

            async def scan(qr: str) -> None:
                linked.append((await sb.phone.scan(qr)).jid)

            await _pair(client, scan)
            assert getattr(sb.faults, fault)(linked[0]) == 1
            with trio.fail_after(10):
                assert await client.process.wait() == 1


async def test_baileys_pairs_by_code_with_the_sandbox_phone(
    baileys_peer: BaileysPeer, tmp_path: Path
) -> None:
    """requestPairingCode → the phone types the code → companion_finish → pair-success → open."""
    auth = tmp_path / "auth"
    async with open_sandbox() as sb:
        async with baileys_client(
            baileys_peer, url=sb.url, auth_dir=auth, pairing_phone=sb.phone.user
        ) as client:
            asked = await client.next_event(lambda e: e.get("event") == "pairing_code", within=15)
            assert len(asked["code"]) == 8
            with trio.fail_after(10):  # Baileys prints the code before the server read its iq
                await sb.wait_code_request(sb.phone.user)
            linked = await sb.phone.link_code(asked["code"])
            opened = await client.next_event(lambda e: e.get("event") == "open", within=20)
            assert await client.process.wait() == 0
        assert opened["me"]["id"] == linked.jid
        assert opened["registered"] is True
        closes = [e["statusCode"] for e in client.events if e.get("connection") == "close"]
        assert closes == [515]
        stats = sb.statistics()
        assert (stats.links, stats.logins, stats.link_failures) == (1, 1, 0)
        # Baileys' own check of pair-success passed: its HMAC key is the secret the code derived.
        saved = json.loads((auth / "creds.json").read_text())
        assert saved["registered"] is True and saved["me"]["id"] == linked.jid


async def test_baileys_with_a_wrong_code_is_not_linked(
    baileys_peer: BaileysPeer, tmp_path: Path
) -> None:
    """The phone types another code: the bundle does not open, no device is linked."""
    async with open_sandbox() as sb:
        async with baileys_client(
            baileys_peer, url=sb.url, auth_dir=tmp_path, pairing_phone=sb.phone.user, hold_ms=-1
        ) as client:
            asked = await client.next_event(lambda e: e.get("event") == "pairing_code", within=15)
            wrong = ("2" if asked["code"][0] != "2" else "3") + asked["code"][1:]
            with trio.fail_after(10):
                await sb.wait_code_request(sb.phone.user)
            with pytest.raises(PairingFailedError, match="wrong code"):
                with trio.fail_after(20):
                    await sb.phone.link_code(wrong)
        assert sb.statistics().links == 0
