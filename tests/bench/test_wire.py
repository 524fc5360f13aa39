"""The wire benchmark (bench/wire.py) runs on a tiny corpus, both sides, and checks itself."""

from __future__ import annotations

import pytest

from actors.connection.binary import BinaryNode, encode_node
from actors.connection.binary.decoder import (
    Reader,
    available_readers,
    current_reader,
    use_reader,
)
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


def test_best_of_keeps_each_phases_fastest_run() -> None:
    """Rounds in turns: per phase the best rate wins, whichever round it came from."""
    slow, fast = wire.Phase(10, 100, 1.0), wire.Phase(30, 300, 1.0)
    first = wire.Ours(send=fast, receive=slow, encode=slow, decode=fast)
    second = wire.Ours(send=slow, receive=fast, encode=slow, decode=slow)
    assert wire.best_of([first, second]) == wire.Ours(fast, fast, slow, fast)
    assert wire.best_of(["node not on PATH", "node not on PATH"]) == "node not on PATH"


def test_targets_say_met_or_not_met_beside_each_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    """Each receive and decode figure is printed with its ratio to Baileys and met / NOT MET."""
    theirs_phase = wire.Phase(100, 1000, 1.0)
    baileys = wire.BaileysRun(
        theirs_phase, theirs_phase, theirs_phase, theirs_phase, encoded_sha256="", node="v20"
    )
    ours = wire.Ours(
        send=theirs_phase,
        receive=wire.Phase(150, 1000, 1.0),
        encode=theirs_phase,
        decode=wire.Phase(99, 1000, 1.0),
    )
    reference = wire.Reference(receive=wire.Phase(50, 1000, 1.0), decode=theirs_phase)
    result = wire.targets(ours, baileys, reference)
    out = capsys.readouterr().out
    reader = current_reader().value
    assert result[f"receive path, {reader} reader"] == {"ratio": 1.5, "target": 1.0, "met": True}
    assert result[f"decoder alone, {reader} reader"]["met"] is False
    assert result["receive path, python reader"]["ratio"] == 0.5
    assert result["decoder alone, python reader"]["met"] is True  # exactly 1x meets it
    assert "0.99x  NOT MET" in out and "1.50x  met" in out


def test_the_python_reader_is_measured_apart_only_when_it_is_not_the_default() -> None:
    """With the compiled reader as default the reference is measured; else a reason says why not."""
    with use_reader(Reader.PYTHON):
        assert "default reader is the Python one" in str(wire.measure_reference(TINY, 0.0))
    if Reader.COMPILED in available_readers():
        reference = wire.measure_reference(TINY, 0.0)
        assert isinstance(reference, wire.Reference)
        assert reference.receive.frames == reference.decode.frames == len(TINY)


def test_the_run_summary_holds_each_target_row_and_explains_the_reference() -> None:
    """`make bench`'s closing table gets every ratio; a python-reader row behind a compiled
    default says what the reference costs per frame against Baileys."""
    theirs = wire.Phase(100_000, 1000, 1.0)  # 10 us a frame
    baileys = wire.BaileysRun(theirs, theirs, theirs, theirs, encoded_sha256="", node="v20")
    default = f"receive path, {current_reader().value} reader"
    found = {
        default: {"ratio": 2.0, "target": 1.0, "met": True},
        "receive path, python reader": {"ratio": 0.5, "target": 1.0, "met": False},
    }
    python = wire.Reference(receive=wire.Phase(50_000, 1000, 1.0), decode=theirs)  # 20 us
    rows = {v.figure: v for v in wire.verdicts(found, baileys, python)}
    assert set(rows) == set(found)
    reference = rows["receive path, python reader"]
    assert not reference.met and reference.value == "0.50x Baileys"
    assert "20.0 us a frame against Baileys' 10.0 us" in reference.limit
