"""Interop with real Baileys v7 (7.0.0-rc13 under node): directories, creds and signatures.

Every test here runs Baileys' own code (``useMultiFileAuthState``, ``initAuthCreds``,
``keys.set``, libsignal's ``verifySignature``, ``configureSuccessfulPairing``) against
what this package reads and writes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from stores import buffer_json, keys
from stores._multi_file_layout import app_state_key_to_proto_json
from stores.creds import AuthCreds, creds_to_baileys_json, init_auth_creds
from stores.multi_file import open_multi_file_backend
from stores.types import BAILEYS_KEY_TYPES as KEY_TYPES
from stores.types import Batch
from tests.baileys_peer import BaileysPeer

FIXTURES = Path(__file__).parent / "fixtures"


def _script(name: str) -> str:
    """A node ES-module script of ours kept beside the tests (JavaScript, not Python)."""
    return (FIXTURES / name).read_text()


PRELUDE = _script("interop_prelude.mjs")

# Written by Baileys in test (a): every key type, sessions and sender keys made by libsignal.
WRITE_EVERY_KEY_TYPE = _script("interop_write_every_key_type.mjs")


def as_baileys_json(type: str, value: Any) -> Any:
    """A plain key value as Baileys' JSON.stringify of its in-memory value shows it."""
    if type == "app-state-sync-key":
        value = app_state_key_to_proto_json(value, type)
    return json.loads(buffer_json.dumps(value))


def creds_json(creds: AuthCreds) -> Any:
    return json.loads(buffer_json.dumps(creds_to_baileys_json(creds)))


async def test_directory_written_by_baileys_loads_with_equal_content(
    baileys_peer: BaileysPeer, tmp_path: Path
) -> None:
    """A directory real Baileys v7 wrote (paired creds, every key type) loads here unchanged."""
    directory = tmp_path / "baileys"
    seen = baileys_peer.run_json(PRELUDE + WRITE_EVERY_KEY_TYPE, stdin={"dir": str(directory)})
    ids: dict[str, list[str]] = seen["ids"]
    assert set(ids) == set(KEY_TYPES)
    async with await open_multi_file_backend(directory) as backend:
        creds = await backend.read_creds()
        assert creds is not None
        assert creds_json(creds) == seen["creds"]
        assert creds.me == {
            "id": "15550001111:3@s.whatsapp.net",
            "name": "Bot",
            "lid": "99887766:3@lid",
        }
        # Baileys' pairing signatures over the account verify under our rules.
        keys.check_account_signatures(creds, "creds.json")
        for type, wanted in ids.items():
            got = await backend.read_keys(type, wanted)
            present = {id: v for id, v in seen["keys"][type].items() if v is not None}
            assert set(got) == set(present), type
            assert {id: as_baileys_json(type, v) for id, v in got.items()} == present, type
        snapshot = await backend.snapshot()
    # Listing the directory finds every key under the id Baileys used.
    assert {t: set(v) for t, v in snapshot.keys.items()} == {
        t: {id for id, v in seen["keys"][t].items() if v is not None} for t in KEY_TYPES
    }


async def test_key_files_rewritten_here_are_byte_identical_to_baileys(
    baileys_peer: BaileysPeer, tmp_path: Path
) -> None:
    """Every key file and creds.json we write for Baileys' values has exactly Baileys' bytes."""
    source = tmp_path / "baileys"
    seen = baileys_peer.run_json(PRELUDE + WRITE_EVERY_KEY_TYPE, stdin={"dir": str(source)})
    async with await open_multi_file_backend(source) as backend:
        snapshot = await backend.snapshot()
    target = tmp_path / "ours"
    async with await open_multi_file_backend(target) as backend:
        await backend.commit(Batch(keys=snapshot.keys, creds=snapshot.creds))
    baileys_files = sorted(n for n in os.listdir(source) if not n.startswith("."))
    our_files = sorted(n for n in os.listdir(target) if not n.startswith("."))
    assert our_files == baileys_files
    for name in baileys_files:
        assert (target / name).read_bytes() == (source / name).read_bytes(), name
    assert seen["ids"]


WRITE_OURS_LOAD_IN_BAILEYS = _script("interop_load_ours.mjs")


async def test_directory_written_here_loads_in_baileys_and_works(
    baileys_peer: BaileysPeer, tmp_path: Path
) -> None:
    """Baileys loads our directory: equal content, encrypts with its session, pairs our creds."""
    made = baileys_peer.run_json(
        PRELUDE + WRITE_EVERY_KEY_TYPE, stdin={"dir": str(tmp_path / "src")}
    )
    values = {t: {id: v for id, v in made["keys"][t].items() if v is not None} for t in KEY_TYPES}
    plain = buffer_json.revive(values, "fixture")
    plain["app-state-sync-key"] = {
        "AAAAAB/c": {
            "keyData": bytes([1]) * 32,
            "fingerprint": {"rawId": 5, "currentIndex": 2, "deviceIndexes": [0, 3]},
            "timestamp": 1700000000123,
        }
    }
    creds = init_auth_creds()
    creds.me = {"id": "15550001111:3@s.whatsapp.net", "lid": "99887766:3@lid"}
    creds.registered = True
    creds.routing_info = b"\x08\x02"
    directory = tmp_path / "ours"
    async with await open_multi_file_backend(directory) as backend:
        await backend.commit(Batch(keys=plain, creds=creds))
    session_id = made["ids"]["session"][0]
    seen = baileys_peer.run_json(
        PRELUDE + WRITE_OURS_LOAD_IN_BAILEYS,
        stdin={
            "dir": str(directory),
            "ids": made["ids"],
            "sessionJid": "5511999990000:2@s.whatsapp.net",
        },
    )
    assert seen["creds"] == creds_json(creds)
    for type in KEY_TYPES:
        got = {id: v for id, v in seen["keys"][type].items() if v is not None}
        assert got == {id: as_baileys_json(type, v) for id, v in plain[type].items()}, type
    assert session_id in seen["keys"]["session"]
    assert seen["encType"] in ("pkmsg", "msg")
    assert seen["me"]["id"] == "15550001111:9@s.whatsapp.net"
    # Baileys signed the pairing with our identity key: our verify accepts it.
    details = _buffer(seen["details"])
    account_key = _buffer(seen["phonePublic"])
    message = b"\x06\x01" + details + creds.signed_identity_key.public + account_key
    assert keys.verify(creds.signed_identity_key.public, message, _buffer(seen["deviceSignature"]))


def _buffer(tagged: Any) -> bytes:
    value = buffer_json.revive(tagged, "node output")
    assert isinstance(value, bytes)
    return value


VERIFY_WITH_LIBSIGNAL = """
const v = (pub, msg, sig) => curve.verifySignature(pub05(pub), msg, sig)
const flipped = Buffer.from(input.signature); flipped[5] ^= 1
out({ ok: v(input.identity, pub05(input.preKey), input.signature),
      flipped: v(input.identity, pub05(input.preKey), flipped),
      baileysVerify: Curve.verify(input.identity, pub05(input.preKey), input.signature) })
"""


async def test_our_signed_pre_key_verifies_under_libsignal(baileys_peer: BaileysPeer) -> None:
    """Our signed pre-key verifies under libsignal's verifySignature; a flipped bit does not."""
    for _ in range(3):
        creds = init_auth_creds()
        seen = baileys_peer.run_json(
            PRELUDE + VERIFY_WITH_LIBSIGNAL,
            stdin=json.loads(
                buffer_json.dumps(
                    {
                        "identity": creds.signed_identity_key.public,
                        "preKey": creds.signed_pre_key.key_pair.public,
                        "signature": creds.signed_pre_key.signature,
                    }
                )
            ),
        )
        assert seen == {"ok": True, "flipped": False, "baileysVerify": True}


BAILEYS_SIGNS = """
const results = []
for (let i = 0; i < 8; i++) {
  const identity = Curve.generateKeyPair()
  const spk = signedKeyPair(identity, 7 + i)
  const msg = Buffer.from('message ' + i)
  results.push({ identity: identity.public, spk, msg, sig: Curve.sign(identity.private, msg) })
}
out(results)
"""


async def test_baileys_signatures_verify_here(baileys_peer: BaileysPeer) -> None:
    """Signed pre-keys and signatures Baileys makes verify under our verify; flipped bits do not."""
    results = buffer_json.revive(baileys_peer.run_json(PRELUDE + BAILEYS_SIGNS), "node output")
    for item in results:
        spk = item["spk"]
        pub33 = keys.signal_public_key(spk["keyPair"]["public"])
        assert keys.verify(item["identity"], pub33, spk["signature"])
        assert keys.verify(keys.signal_public_key(item["identity"]), pub33, spk["signature"])
        assert keys.verify(item["identity"], item["msg"], item["sig"])
        for bit in (0, 200, 511):
            bad = bytearray(item["sig"])
            bad[bit // 8] ^= 1 << (bit % 8)
            assert not keys.verify(item["identity"], item["msg"], bytes(bad))
        assert not keys.verify(item["identity"], item["msg"] + b"!", item["sig"])


SHARED_SECRET = """
const a = Curve.generateKeyPair()
out({ a, shared: Curve.sharedKey(a.private, input.public) })
"""


async def test_shared_secret_matches_baileys(baileys_peer: BaileysPeer) -> None:
    """X25519 agreement here equals Baileys' Curve.sharedKey in both directions."""
    ours = keys.generate_key_pair()
    seen = buffer_json.revive(
        baileys_peer.run_json(
            PRELUDE + SHARED_SECRET,
            stdin={"public": {"type": "Buffer", "data": base64.b64encode(ours.public).decode()}},
        ),
        "node output",
    )
    assert keys.shared_secret(ours.private, seen["a"]["public"]) == seen["shared"]
    assert keys.shared_secret(seen["a"]["private"], ours.public) == seen["shared"]


BAILEYS_INIT = """
const { state, saveCreds } = await useMultiFileAuthState(input.dir)
await saveCreds()
out(state.creds)
"""


async def test_fresh_baileys_creds_load_and_verify(
    baileys_peer: BaileysPeer, tmp_path: Path
) -> None:
    """A fresh Baileys initAuthCreds() creds.json loads with equal fields and a valid signature."""
    directory = tmp_path / "fresh"
    seen = baileys_peer.run_json(PRELUDE + BAILEYS_INIT, stdin={"dir": str(directory)})
    async with await open_multi_file_backend(directory) as backend:
        creds = await backend.read_creds()
    assert creds is not None
    assert creds_json(creds) == seen
    assert creds.extra == {}
    assert (directory / "creds.json").read_bytes() == buffer_json.dump_bytes(
        creds_to_baileys_json(creds)
    )
    assert keys.verify_signed_key_pair(creds.signed_identity_key.public, creds.signed_pre_key)


# --- Baileys v6 (6.17.16), installed on demand beside the v7 peer -------------------------

V6_ROOT = Path(__file__).resolve().parents[2] / ".cache" / "baileys-v6"
V6_TYPES = (
    "pre-key",
    "session",
    "sender-key",
    "sender-key-memory",
    "app-state-sync-key",
    "app-state-sync-version",
)


@pytest.fixture(scope="module")
def baileys_v6_peer() -> BaileysPeer:
    """Real Baileys v6.17.16 under node; skipped, saying why, when it cannot be installed."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not found on PATH: Baileys v6 interop tests need Node.js 20+")
    package = FIXTURES / "baileys-v6-package.json"
    digest = hashlib.sha256(package.read_bytes()).hexdigest()[:16]
    stamp = V6_ROOT / ".installed"
    installed = stamp.exists() and stamp.read_text() == digest
    if not (installed and (V6_ROOT / "node_modules" / "baileys").is_dir()):
        V6_ROOT.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package, V6_ROOT / "package.json")
        proc = subprocess.run(
            ["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=V6_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            pytest.skip(f"could not install baileys@6.17.16: {proc.stderr[-800:]}")
        stamp.write_text(digest)
    return BaileysPeer(V6_ROOT)


def _present(keys_seen: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t: {i: v for i, v in ids.items() if v is not None} for t, ids in keys_seen.items()}


async def test_directory_written_by_baileys_v6_loads_with_equal_content(
    baileys_v6_peer: BaileysPeer, tmp_path: Path
) -> None:
    """A directory real Baileys v6 wrote (paired creds, every v6 key type) loads unchanged."""
    directory = tmp_path / "v6"
    prelude = _script("v6_prelude.mjs")
    seen = baileys_v6_peer.run_json(
        prelude + _script("v6_write_every_key_type.mjs"), stdin={"dir": str(directory)}
    )
    assert set(seen["ids"]) == set(V6_TYPES)
    async with await open_multi_file_backend(directory) as backend:
        creds = await backend.read_creds()
        assert creds is not None
        assert creds_json(creds) == seen["creds"]
        keys.check_account_signatures(creds, "creds.json")
        for type, wanted in seen["ids"].items():
            got = await backend.read_keys(type, wanted)
            expected = _present(seen["keys"])[type]
            assert {id: as_baileys_json(type, v) for id, v in got.items()} == expected, type
        snapshot = await backend.snapshot()
    assert {t: set(v) for t, v in snapshot.keys.items()} == {
        t: set(v) for t, v in _present(seen["keys"]).items()
    }


async def test_baileys_v6_loads_a_directory_written_here(
    baileys_v6_peer: BaileysPeer, tmp_path: Path
) -> None:
    """Our rewrite of a v6 directory is byte-identical and v6 reads back the same content."""
    prelude = _script("v6_prelude.mjs")
    source = tmp_path / "v6"
    made = baileys_v6_peer.run_json(
        prelude + _script("v6_write_every_key_type.mjs"), stdin={"dir": str(source)}
    )
    async with await open_multi_file_backend(source) as backend:
        snapshot = await backend.snapshot()
    target = tmp_path / "ours"
    async with await open_multi_file_backend(target) as backend:
        await backend.commit(Batch(keys=snapshot.keys, creds=snapshot.creds))
    for name in sorted(n for n in os.listdir(source) if not n.startswith(".")):
        assert (target / name).read_bytes() == (source / name).read_bytes(), name
    seen = baileys_v6_peer.run_json(
        prelude + _script("v6_load.mjs"), stdin={"dir": str(target), "ids": made["ids"]}
    )
    assert seen["creds"] == made["creds"]
    assert _present(seen["keys"]) == _present(made["keys"])


# --- Baileys logs in from directories written here (against the loopback sandbox) -------


async def test_baileys_logs_in_from_a_directory_written_here(
    baileys_peer: BaileysPeer, tmp_path: Path
) -> None:
    """Baileys pairs into its folder; we rewrite it; Baileys logs in from ours with no QR."""
    from sandbox.server import open_sandbox
    from tests.sandbox.baileys_run import baileys_client

    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    async with open_sandbox() as sb:
        async with baileys_client(baileys_peer, url=sb.url, auth_dir=theirs) as client:
            qr = await client.next_event(lambda e: "qr" in e, within=15)
            linked = (await sb.phone.scan(qr["qr"])).jid
            await client.next_event(lambda e: e.get("event") == "open", within=20)
            assert await client.process.wait() == 0
        async with await open_multi_file_backend(theirs) as backend:
            snapshot = await backend.snapshot()
        assert snapshot.creds is not None and snapshot.creds.me is not None
        assert snapshot.creds.me["id"] == linked
        assert len(snapshot.keys["pre-key"]) >= 812
        async with await open_multi_file_backend(ours) as backend:
            await backend.commit(Batch(keys=snapshot.keys, creds=snapshot.creds))
        async with baileys_client(baileys_peer, url=sb.url, auth_dir=ours) as again:
            reopened = await again.next_event(lambda e: e.get("event") == "open", within=20)
            assert await again.process.wait() == 0
        assert not any("qr" in e for e in again.events)
        assert reopened["me"]["id"] == linked
        stats = sb.statistics()
        assert (stats.links, stats.logins, stats.pre_key_uploads) == (1, 2, 1)


async def test_baileys_pairs_with_creds_made_here(
    baileys_peer: BaileysPeer, tmp_path: Path
) -> None:
    """Our init_auth_creds in our directory: Baileys pairs and logs in with them, keys kept."""
    from sandbox.server import open_sandbox
    from tests.sandbox.baileys_run import baileys_client

    creds = init_auth_creds()
    async with await open_multi_file_backend(tmp_path) as backend:
        await backend.commit(Batch(creds=creds))
    async with open_sandbox() as sb:
        async with baileys_client(baileys_peer, url=sb.url, auth_dir=tmp_path) as client:
            qr = await client.next_event(lambda e: "qr" in e, within=15)
            linked = (await sb.phone.scan(qr["qr"])).jid
            opened = await client.next_event(lambda e: e.get("event") == "open", within=20)
            assert await client.process.wait() == 0
        assert opened["me"]["id"] == linked
        assert sb.core.registry.find(linked).noise_key == creds.noise_key.public
    # Baileys wrote its paired creds into our directory: they load, with our keys.
    async with await open_multi_file_backend(tmp_path) as backend:
        paired = await backend.read_creds()
    assert paired is not None and paired.me is not None and paired.me["id"] == linked
    assert paired.signed_identity_key == creds.signed_identity_key
    assert paired.noise_key == creds.noise_key
    keys.check_account_signatures(paired, "creds.json")
