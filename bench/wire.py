"""Wire throughput: frames/s through Noise + the binary node codec, ours vs Baileys in node.

Two directions on one corpus of realistic nodes (messages with ciphertext, group
fan-out, receipts, acks, pings, presences, notifications, usync queries, a pre-key
upload; ``bench.fuzz_targets.realistic_nodes``):

* send: ``encode_node`` + ``NoiseTransport.send`` (encrypt, then the 3-byte frame);
* receive: ``NoiseTransport.receive_data`` one frame per read + ``events()`` (split,
  decrypt) + ``decode_node``;
* and, to show where the time goes, the codec alone: ``encode_node``, ``decode_node``.

``decode_node`` runs with its default reader (the compiled one when it was built at
install, else the pure-Python one); the receive path and the decoder are measured
with the pure-Python reader too, the reference, and every receive and decode figure
is printed beside the target (``TARGET``: at least Baileys' rate) with met / NOT MET.

The machine is shared and its load moves: ours and Baileys run in turns, ``ROUNDS``
times, and each phase keeps its best rate on each side.

Ours runs on the keys of a real in-memory handshake; Baileys runs
``bench/wire_baileys.mjs``: its own ``makeNoiseHandler`` (``encodeFrame`` /
``decodeFrame`` in transport state) and ``encodeBinaryNode`` / ``decodeBinaryNode``
on the same corpus, passed as JSON. Each phase runs whole corpus rounds for at
least ``PHASE_SECONDS``. Both encoders must give the same bytes for the corpus
(checked by digest and printed). Skipped, saying why, when node is absent.
Run as ``python -m bench wire``.

Before/after: with ``WIRE_BEFORE`` set to the root of another tree of this project
(an older revision, e.g. from ``git archive``), that tree's own ``measure_ours``
runs too, in a subprocess, on the same corpus (checked by digest), and the table
gains a ``before`` column and ``now/before``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from actors.connection.binary import BinaryNode, decode_node, encode_node
from actors.connection.binary.decoder import Reader, current_reader, use_reader
from bench._common import baileys_root
from bench._targets import Verdict
from bench.fuzz_targets import (
    NoiseKeys,
    client_transport,
    noise_keys,
    realistic_nodes,
    server_transport,
)

NODE_SCRIPT = Path(__file__).resolve().parent / "wire_baileys.mjs"
CORPUS_SIZE = 240
CORPUS_SEED = 2026
PHASE_SECONDS = 1.5
ROUNDS = 2
#: The issue's bar for the receive path and the decoder: at least Baileys' rate.
TARGET = 1.0


@dataclass(frozen=True)
class Phase:
    """Frames pushed through one direction in a measured interval."""

    frames: int
    bytes: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.frames / self.seconds

    @property
    def megabytes_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6

    def as_dict(self) -> dict[str, float]:
        return {
            "frames": self.frames,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "frames_per_s": round(self.rate, 1),
            "mb_per_s": round(self.megabytes_per_s, 2),
        }


def corpus(size: int = CORPUS_SIZE, seed: int = CORPUS_SEED) -> list[BinaryNode]:
    return realistic_nodes(size, seed)


def node_to_json(node: BinaryNode) -> dict[str, Any]:
    """The JSON form wire_baileys.mjs reads (bytes as ``{"b64": ...}``)."""
    content = node.content
    out: Any
    if content is None or isinstance(content, str):
        out = content
    elif isinstance(content, bytes):
        out = {"b64": base64.b64encode(content).decode("ascii")}
    else:
        out = [node_to_json(child) for child in content]
    return {"tag": node.tag, "attrs": dict(node.attrs), "content": out}


def encoded_digest(nodes: list[BinaryNode]) -> str:
    digest = hashlib.sha256()
    for node in nodes:
        digest.update(encode_node(node))
    return digest.hexdigest()


def measure_send(nodes: list[BinaryNode], seconds: float) -> Phase:
    """encode_node + NoiseTransport.send, whole corpus rounds for at least ``seconds``."""
    sender = client_transport(noise_keys())
    frames = total = 0
    start = time.perf_counter()
    while True:
        for node in nodes:
            total += len(sender.send(encode_node(node)))
        frames += len(nodes)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return Phase(frames, total, elapsed)


def measure_receive(nodes: list[BinaryNode], seconds: float) -> Phase:
    """One socket read per frame: receive_data, events (split + decrypt), decode_node.

    Each node is handed on and dropped, as the connection does and as Baileys'
    side does (its callback counts); the first round is kept and checked against
    what was sent, before the clock starts.
    """
    keys = noise_keys()
    server = server_transport(keys)
    wire = [server.send(encode_node(node)) for node in nodes]
    expected = [decode_node(encode_node(node)) for node in nodes]
    if _receive_round(keys, wire, keep=True) != expected:
        raise AssertionError("receive path decoded something else than was sent")
    size = sum(len(w) for w in wire)
    frames = total = 0
    start = time.perf_counter()
    while True:
        frames += len(_receive_round(keys, wire, keep=False))
        total += size
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return Phase(frames, total, elapsed)


def _receive_round(keys: NoiseKeys, wire: list[bytes], *, keep: bool) -> list[BinaryNode | None]:
    """Feed every frame to a fresh transport (read counter at 0); the nodes if ``keep``."""
    receiver = client_transport(keys)
    decoded: list[BinaryNode | None] = []
    for data in wire:
        receiver.receive_data(data)
        for event in receiver.events():
            node = decode_node(event.payload)
            decoded.append(node if keep else None)
    return decoded


def measure_codec(nodes: list[BinaryNode], seconds: float, *, decode: bool) -> Phase:
    """encode_node alone, or decode_node alone, whole corpus rounds for at least ``seconds``."""
    encoded = [encode_node(node) for node in nodes]
    size = sum(len(e) for e in encoded)
    frames = total = 0
    start = time.perf_counter()
    while True:
        if decode:
            for data in encoded:
                decode_node(data)
        else:
            for node in nodes:
                encode_node(node)
        frames += len(nodes)
        total += size
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return Phase(frames, total, elapsed)


@dataclass(frozen=True)
class Ours:
    send: Phase
    receive: Phase
    encode: Phase
    decode: Phase


def measure_ours(nodes: list[BinaryNode], seconds: float) -> Ours:
    return Ours(
        send=measure_send(nodes, seconds),
        receive=measure_receive(nodes, seconds),
        encode=measure_codec(nodes, seconds / 2, decode=False),
        decode=measure_codec(nodes, seconds / 2, decode=True),
    )


@dataclass(frozen=True)
class Reference:
    """The receive path and the decoder with the pure-Python reader of decode_node."""

    receive: Phase
    decode: Phase


def measure_reference(nodes: list[BinaryNode], seconds: float) -> Reference | str:
    """The pure-Python reader's figures; a string says why they are the default's already."""
    if current_reader() is Reader.PYTHON:
        return "the default reader is the Python one (no compiled reader built)"
    with use_reader(Reader.PYTHON):
        return Reference(
            receive=measure_receive(nodes, seconds),
            decode=measure_codec(nodes, seconds / 2, decode=True),
        )


def _faster(a: Phase, b: Phase) -> Phase:
    return a if a.rate >= b.rate else b


def best_of(runs: list[Any]) -> Any:
    """Per phase, the fastest of several runs of one side (Ours, Reference or BaileysRun)."""
    first = runs[0]
    if isinstance(first, str):
        return first
    best = {
        name: getattr(first, name)
        for name in first.__dataclass_fields__
        if isinstance(getattr(first, name), Phase)
    }
    for run in runs[1:]:
        for name in best:
            best[name] = _faster(best[name], getattr(run, name))
    return replace(first, **best)


@dataclass(frozen=True)
class BaileysRun:
    send: Phase
    receive: Phase
    encode: Phase
    decode: Phase
    encoded_sha256: str
    node: str


def measure_baileys(nodes: list[BinaryNode], seconds: float) -> BaileysRun | str:
    """Run wire_baileys.mjs on the corpus; a string says why it was skipped."""
    root, why = baileys_root()
    if root is None:
        return why
    package = root / "node_modules" / "baileys"
    proc = subprocess.run(
        ["node", str(NODE_SCRIPT), str(package), str(seconds)],
        input=json.dumps({"nodes": [node_to_json(n) for n in nodes]}),
        capture_output=True,
        text=True,
        timeout=8 * seconds + 60,
        check=False,
    )
    if proc.returncode != 0:
        return f"node failed ({proc.returncode}): {proc.stderr.strip()[-300:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return BaileysRun(
        send=Phase(**out["send"]),
        receive=Phase(**out["receive"]),
        encode=Phase(**out["encode"]),
        decode=Phase(**out["decode"]),
        encoded_sha256=out["encoded_sha256"],
        node=out["node"],
    )


#: What runs in the other tree: its own corpus, digest and measure_ours, as JSON.
_BEFORE_SCRIPT = """
import json, sys
from bench import wire
nodes = wire.corpus()
ours = wire.measure_ours(nodes, float(sys.argv[1]))
phases = {k: getattr(ours, k) for k in ("send", "receive", "encode", "decode")}
print(json.dumps({
    "encoded_sha256": wire.encoded_digest(nodes),
    **{k: {"frames": p.frames, "bytes": p.bytes, "seconds": p.seconds} for k, p in phases.items()},
}))
"""


def measure_before(root: Path, nodes: list[BinaryNode], seconds: float) -> Ours | str:
    """The tree at ``root`` measured as ours is, on the same corpus; a string says why not."""
    if not (root / "bench" / "wire.py").is_file():
        return f"{root} holds no bench/wire.py"
    env = {**os.environ, "PYTHONPATH": str(root)}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _BEFORE_SCRIPT, str(seconds)],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=8 * seconds + 60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "the other tree timed out"
    if proc.returncode != 0:
        return f"the other tree failed ({proc.returncode}): {proc.stderr.strip()[-300:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if out["encoded_sha256"] != encoded_digest(nodes):
        return "the other tree encodes another corpus (or encodes it differently)"
    return Ours(**{key: Phase(**out[key]) for _, key in ROWS})


def node_version() -> str | None:
    if shutil.which("node") is None:
        return None
    proc = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=30)
    return proc.stdout.strip() or None


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "-"


ROWS = (
    ("send: encode + encrypt + frame", "send"),
    ("receive: split + decrypt + decode", "receive"),
    ("  codec alone: encode", "encode"),
    ("  codec alone: decode", "decode"),
)


def report(
    nodes: list[BinaryNode],
    ours: Ours,
    baileys: BaileysRun | str,
    before: Ours | str | None = None,
    reference: Reference | str | None = None,
) -> dict[str, Any]:
    """Print the table (and the before/after table when ``before`` is given); return the figures."""
    frame_sizes = [len(encode_node(n)) for n in nodes]
    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()},"
        f" node {node_version() or 'absent'}, {platform.platform()}"
    )
    print(
        f"corpus: {len(nodes)} nodes, {sum(frame_sizes)} bytes encoded,"
        f" {min(frame_sizes)}-{max(frame_sizes)} bytes per frame"
    )
    head = f"{'direction':<34} {'ours fr/s':>10} {'MB/s':>6}"
    print(f"{head} {'Baileys fr/s':>13} {'MB/s':>6} {'ours/B':>7}")
    result: dict[str, Any] = {
        "corpus": {"nodes": len(nodes), "bytes": sum(frame_sizes)},
        "ours": {key: getattr(ours, key).as_dict() for _, key in ROWS},
    }
    for label, key in ROWS:
        mine_phase: Phase = getattr(ours, key)
        mine = f"{label:<34} {mine_phase.rate:>10.0f} {mine_phase.megabytes_per_s:>6.1f}"
        if isinstance(baileys, BaileysRun):
            theirs: Phase = getattr(baileys, key)
            ratio = _ratio(mine_phase.rate, theirs.rate)
            print(f"{mine} {theirs.rate:>13.0f} {theirs.megabytes_per_s:>6.1f} {ratio:>7}")
        else:
            print(f"{mine} {'-':>13} {'-':>6} {'-':>7}")
    if isinstance(baileys, BaileysRun):
        same = baileys.encoded_sha256 == encoded_digest(nodes)
        verdict = "yes" if same else "NO"
        print(f"byte-identical encodings of the corpus (ours vs encodeBinaryNode): {verdict}")
        result["baileys"] = {key: getattr(baileys, key).as_dict() for _, key in ROWS}
        result["baileys"].update(node=baileys.node, same_encoding=same)
        result["ratio"] = {
            key: round(getattr(ours, key).rate / getattr(baileys, key).rate, 3) for _, key in ROWS
        }
    else:
        print(f"Baileys: skipped: {baileys}")
        result["baileys"] = {"skipped": baileys}
    print("one core each: Python (GIL) vs node's main thread; AES-GCM is OpenSSL on both sides")
    if isinstance(reference, Reference):
        result["python_reader"] = {
            "receive": reference.receive.as_dict(),
            "decode": reference.decode.as_dict(),
        }
    elif isinstance(reference, str):
        result["python_reader"] = {"skipped": reference}
    if isinstance(baileys, BaileysRun):
        result["targets"] = targets(ours, baileys, reference)
        found = verdicts(result["targets"], baileys, reference)
        result["verdicts"] = [v.as_dict() for v in found]
    if isinstance(before, Ours):
        print(f"{'before/after':<34} {'before fr/s':>11} {'now fr/s':>10} {'now/before':>11}")
        for label, key in ROWS:
            then: Phase = getattr(before, key)
            now: Phase = getattr(ours, key)
            ratio = _ratio(now.rate, then.rate)
            print(f"{label:<34} {then.rate:>11.0f} {now.rate:>10.0f} {ratio:>11}")
        result["before"] = {key: getattr(before, key).as_dict() for _, key in ROWS}
    elif isinstance(before, str):
        print(f"before: skipped: {before}")
        result["before"] = {"skipped": before}
    return result


def targets(
    ours: Ours, baileys: BaileysRun, reference: Reference | str | None
) -> dict[str, dict[str, Any]]:
    """Print the receive and decode figures beside TARGET, met or NOT MET; return them."""
    default = current_reader().value
    rows = [
        (f"receive path, {default} reader", ours.receive, baileys.receive),
        (f"decoder alone, {default} reader", ours.decode, baileys.decode),
    ]
    if isinstance(reference, Reference):
        rows += [
            ("receive path, python reader", reference.receive, baileys.receive),
            ("decoder alone, python reader", reference.decode, baileys.decode),
        ]
    print(f"target: receive path and decoder >= {TARGET:g}x Baileys (issue 13)")
    out: dict[str, dict[str, Any]] = {}
    for label, mine, theirs in rows:
        ratio = mine.rate / theirs.rate if theirs.rate else 0.0
        met = ratio >= TARGET
        print(f"  {label:<32} {ratio:>6.2f}x  {'met' if met else 'NOT MET'}")
        out[label] = {"ratio": round(ratio, 3), "target": TARGET, "met": met}
    return out


def verdicts(
    found: dict[str, dict[str, Any]], baileys: BaileysRun, reference: Reference | str | None
) -> list[Verdict]:
    """The target rows for ``python -m bench``'s closing table.

    The python-reader rows, when the compiled reader is the default, say what the
    reference costs per frame beside Baileys: the optional compiled reader is the one
    held to the target there (the pure-Python reader stays the tested reference).
    """
    out = []
    for label, row in found.items():
        limit = ""
        if label.endswith("python reader") and isinstance(reference, Reference):
            receive = label.startswith("receive")
            mine = reference.receive if receive else reference.decode
            theirs = baileys.receive if receive else baileys.decode
            limit = (
                f"the pure-Python reference takes {1e6 / mine.rate:.1f} us a frame against"
                f" Baileys' {1e6 / theirs.rate:.1f} us; the default (compiled) reader is held"
                " to the target"
            )
        out.append(
            Verdict(
                figure=label,
                value=f"{row['ratio']:.2f}x Baileys",
                target=f">= {TARGET:g}x Baileys",
                met=bool(row["met"]),
                limit=limit,
            )
        )
    return out


def main() -> dict[str, Any]:
    nodes = corpus()
    other = os.environ.get("WIRE_BEFORE")
    mine: list[Ours] = []
    theirs: list[BaileysRun | str] = []
    references: list[Reference | str] = []
    for _ in range(ROUNDS):  # in turns, so a load swing hits both sides alike
        mine.append(measure_ours(nodes, PHASE_SECONDS))
        references.append(measure_reference(nodes, PHASE_SECONDS))
        theirs.append(measure_baileys(nodes, PHASE_SECONDS))
    before = measure_before(Path(other), nodes, PHASE_SECONDS) if other else None
    return report(nodes, best_of(mine), best_of(theirs), before, best_of(references))


if __name__ == "__main__":
    main()
