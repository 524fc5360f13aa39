from tests.baileys_peer import BaileysPeer


def test_reference_peer_is_baileys_v7(baileys_peer: BaileysPeer) -> None:
    """The interop tests run against baileys 7.0.0-rc13, the version PROTOCOL.md describes."""
    out = baileys_peer.run_json(
        "import fs from 'fs';"
        "const p = JSON.parse(fs.readFileSync('node_modules/baileys/package.json'));"
        "console.log(JSON.stringify(p.version));"
    )
    assert out == "7.0.0-rc13"
