"""The commands on a folder written by real Baileys v7 (useMultiFileAuthState)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stores.cli import EXIT_OK
from tests.baileys_peer import BaileysPeer
from tests.cli.stores_helpers import run_cli, tree_state

ME = "15551234567:12@s.whatsapp.net"

# Baileys writes creds, then one key of several types, including the protobuf-JSON
# app-state-sync-key and a sender key whose id holds '::' (escaped in the file name).
WRITE = """
import { useMultiFileAuthState, proto } from 'baileys';
const { state, saveCreds } = await useMultiFileAuthState(%(folder)s);
state.creds.me = { id: '%(me)s', name: 'bot' };
await saveCreds();
const buf = (n, b) => Buffer.alloc(n, b);
await state.keys.set({
  'pre-key': { '1': { private: buf(32, 1), public: buf(32, 2) },
               '2': { private: buf(32, 3), public: buf(32, 4) } },
  'sender-key': { '120363@g.us::15551234567::0': buf(40, 5) },
  'app-state-sync-key': { 'AAAAAFJQ': proto.Message.AppStateSyncKeyData.fromObject({
      keyData: buf(32, 8), fingerprint: { rawId: 1, currentIndex: 2, deviceIndexes: [0, 1] },
      timestamp: 1700000000123 }) },
  'device-list': { '15551234567': ['0', '12'] },
});
console.log(JSON.stringify('ok'));
"""


def json_files(folder: Path) -> dict[str, object]:
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


@pytest.mark.peer
def test_inspect_and_round_trip_a_real_baileys_folder(
    baileys_peer: BaileysPeer, tmp_path: Path
) -> None:
    """inspect reads Baileys' folder without touching it; migrate there and back is equal."""
    folder = tmp_path / "baileys_auth_info"
    script = WRITE % {"folder": json.dumps(str(folder)), "me": ME}
    assert baileys_peer.run_json(script) == "ok"
    before = tree_state(folder)

    inspected = run_cli("inspect", folder, "--json")
    assert inspected.code == EXIT_OK, inspected.out
    (account,) = inspected.json()["accounts"]
    assert inspected.json()["backend"] == "multi-file" and account["account_id"] == ME
    assert account["key_counts"] == {
        "app-state-sync-key": 1,
        "device-list": 1,
        "pre-key": 2,
        "sender-key": 1,
    }
    assert tree_state(folder) == before  # no lock file, no last-good copy, nothing

    assert run_cli("migrate", folder, tmp_path / "auth").code == EXIT_OK
    back = run_cli("migrate", tmp_path / "auth", tmp_path / "back", "--to", "multi-file")
    assert back.code == EXIT_OK, back.err
    assert json_files(tmp_path / "back") == json_files(folder)
    # migrate took the source's ownership lock: the lock file is the only addition.
    after = tree_state(folder)
    assert after.pop(".baileys-trio.lock", None) is not None
    assert after == before
