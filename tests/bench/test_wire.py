"""The wire benchmark (bench/wire.py) runs on a tiny corpus, both sides, and checks itself."""

from __future__ import annotations

import pytest

from actors.connection.binary import BinaryNode, encode_node
from bench import wire
from tests.baileys_peer import BaileysPeer

TINY = wire.corpus(size=12, seed=5)


def test_the_corpus_is_realistic_and_deterministic() -> None:
    """The corpus mixes the stanza kinds of live traffic and is the same for the same seed."""
    nodes = wire.corpus(size=24, seed=1)
    assert {"message", "receipt", "ack", "iq", "presence", "notification"} <= {n.tag for n in nodes}
    assert [encode_node(n) for n in nodes] == [encode_node(n) for n in wire.corpus(24, 1)]


def test_every_phase_pushes_whole_corpus_rounds() -> None:
    """With no time budget each phase runs exactly one round of the corpus and counts its bytes."""
    ours = wire.measure_ours(TINY, 0.0)
    phases = (ours.send, ours.receive, ours.encode, ours.decode)
    assert all(p.frames == len(TINY) and p.rate > 0 for p in phases)
    framed = sum(len(encode_node(n)) + 3 + 16 for n in TINY)  # 3-byte prefix, 16-byte GCM tag
    assert ours.send.bytes == ours.receive.bytes == framed
    assert ours.encode.bytes == ours.decode.bytes == sum(len(encode_node(n)) for n in TINY)


def test_node_json_keeps_bytes_strings_and_children() -> None:
    """The JSON handed to node carries bytes as base64, strings as text, children as lists."""
    node = BinaryNode(
        "iq", {"id": "1"}, [BinaryNode("enc", {}, b"\x00\xff"), BinaryNode("t", {}, "x")]
    )
    assert wire.node_to_json(node) == {
        "tag": "iq",
        "attrs": {"id": "1"},
        "content": [
            {"tag": "enc", "attrs": {}, "content": {"b64": "AP8="}},
            {"tag": "t", "attrs": {}, "content": "x"},
        ],
    }


def test_report_without_node_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    """When Baileys is skipped the table still prints ours and the reason."""
    phase = wire.Phase(frames=10, bytes=1000, seconds=0.5)
    result = wire.report(TINY, wire.Ours(phase, phase, phase, phase), "node not on PATH")
    out = capsys.readouterr().out
    assert "Baileys: skipped: node not on PATH" in out and "cores" in out
    assert result["baileys"] == {"skipped": "node not on PATH"}
    assert result["ours"]["send"]["frames_per_s"] == 20.0


def test_baileys_runs_the_same_corpus_and_encodes_it_identically(
    baileys_peer: BaileysPeer, capsys: pytest.CaptureFixture[str]
) -> None:
    """wire_baileys.mjs decodes every frame sent to it; its encodings equal ours byte for byte."""
    run = wire.measure_baileys(TINY, 0.0)
    assert isinstance(run, wire.BaileysRun), run
    assert run.send.frames == run.receive.frames == len(TINY)
    assert run.encoded_sha256 == wire.encoded_digest(TINY)
    assert run.encode.frames == run.decode.frames == len(TINY)
    result = wire.report(TINY, wire.measure_ours(TINY, 0.0), run)
    assert result["baileys"]["same_encoding"] is True
    assert set(result["ratio"]) == {"send", "receive", "encode", "decode"}
    assert "ours/B" in capsys.readouterr().out
