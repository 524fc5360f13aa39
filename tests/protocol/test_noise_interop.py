"""Our Noise code against real Baileys v7 (``makeNoiseHandler`` under node).

Baileys plays the client, exactly as ``validateConnection`` in its socket does;
our NoiseResponder plays WhatsApp. They talk over node's stdin/stdout, one JSON
object a line, so each side really reacts to what the other produced.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from actors.connection.noise import (
    ClientFinish,
    ClientHello,
    Finish,
    Frame,
    Hello,
    NoiseInitiator,
    NoiseResponder,
    ServerHello,
)
from actors.connection.proto import wa_pb2
from stores.creds import KeyPair
from tests.baileys_peer import BaileysPeer
from tests.protocol.noise_fixtures import ServerIdentity, make_server_identity

pytestmark = pytest.mark.peer

# A Baileys client driven line by line. Requests: {"op": ...}; one reply line each.
DRIVER = r"""
import { createInterface } from 'node:readline';
import { makeNoiseHandler, proto, Curve, initAuthCreds, generateRegistrationNode,
         DEFAULT_CONNECTION_CONFIG, NOISE_WA_HEADER, encodeBinaryNode } from 'baileys';

const logger = { level: 'silent', child() { return this; },
                 trace() {}, debug() {}, info() {}, warn() {}, error() {} };
const hex = (b) => Buffer.from(b).toString('hex');
const unhex = (s) => Buffer.from(s, 'hex');
const pair = (p) => ({ private: unhex(p.private), public: unhex(p.public) });
let noise, noiseKey;
const creds = initAuthCreds();

const ops = {
  keys: () => {
    const k = () => {
      const p = Curve.generateKeyPair();
      return { private: hex(p.private), public: hex(p.public) };
    };
    return { ephemeral: k(), noise: k() };
  },
  start: (r) => {
    noiseKey = pair(r.noise);
    noise = makeNoiseHandler({ keyPair: pair(r.ephemeral), NOISE_HEADER: NOISE_WA_HEADER, logger,
                               routingInfo: r.routing ? unhex(r.routing) : undefined });
    const clientHello = { ephemeral: unhex(r.ephemeral.public) };
    const hello = proto.HandshakeMessage.encode({ clientHello }).finish();
    return { data: hex(noise.encodeFrame(hello)) };
  },
  serverHello: async (r) => {
    let frames = [];
    await noise.decodeFrame(unhex(r.data), (f) => frames.push(f));
    const handshake = proto.HandshakeMessage.decode(frames[0]);
    const keyEnc = noise.processHandshake(handshake, noiseKey);
    const node = generateRegistrationNode(creds, DEFAULT_CONNECTION_CONFIG);
    const payload = proto.ClientPayload.encode(node).finish();
    const payloadEnc = noise.encrypt(payload);
    const clientFinish = { static: keyEnc, payload: payloadEnc };
    const finish = proto.HandshakeMessage.encode({ clientFinish }).finish();
    const out = noise.encodeFrame(finish);
    await noise.finishInit();
    return { data: hex(out), payload: hex(payload), identity: hex(creds.signedIdentityKey.public) };
  },
  send: (r) => ({ data: hex(noise.encodeFrame(unhex(r.data))) }),
  node: (r) => ({ data: hex(encodeBinaryNode(r.node)) }),
  recv: async (r) => {
    const nodes = [];
    await noise.decodeFrame(unhex(r.data), (n) => nodes.push({ tag: n.tag, attrs: n.attrs }));
    return { nodes };
  },
};

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  const req = JSON.parse(line);
  let reply;
  try {
    reply = await ops[req.op](req);
  } catch (e) {
    reply = { error: String((e && e.message) || e) };
  }
  process.stdout.write(JSON.stringify(reply) + '\n');
}
"""


class NodeClient:
    """A running Baileys driver; ``call`` sends one request and waits for its reply."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def call(self, op: str, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"Baileys driver gave no reply to {op!r} within {timeout}s")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"Baileys driver exited during {op!r}")
        reply: dict[str, Any] = json.loads(line)
        assert "error" not in reply, f"Baileys failed in {op!r}: {reply['error']}"
        return reply


@contextmanager
def baileys_client(peer: BaileysPeer) -> Iterator[NodeClient]:
    """Start the driver under node and stop it at the end, whatever happens."""
    env = dict(os.environ, NODE_PATH=str(peer.root / "node_modules"))
    proc = subprocess.Popen(
        ["node", "--input-type=module", "-e", DRIVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(peer.root),
        env=env,
    )
    try:
        yield NodeClient(proc)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _pair(raw: dict[str, str]) -> KeyPair:
    return KeyPair(private=bytes.fromhex(raw["private"]), public=bytes.fromhex(raw["public"]))


def _responder(identity: ServerIdentity) -> NoiseResponder:
    return NoiseResponder(static_key=identity.static_key, cert_chain=identity.cert_chain)


def _handshake_with_baileys(
    node: NodeClient, identity: ServerIdentity, routing: bytes | None = None
) -> tuple[NoiseResponder, dict[str, Any], dict[str, Any], ClientHello, ClientFinish, bytes]:
    keys = node.call("keys")
    start = node.call("start", **keys, routing=routing.hex() if routing else None)
    server = _responder(identity)
    server.receive_data(bytes.fromhex(start["data"]))
    hello = server.next_event()
    assert isinstance(hello, ClientHello)
    server_hello = server.send(Hello())
    reply = node.call("serverHello", data=server_hello.hex())
    server.receive_data(bytes.fromhex(reply["data"]))
    finish = server.next_event()
    assert isinstance(finish, ClientFinish)
    return server, keys, reply, hello, finish, server_hello


def test_baileys_client_completes_handshake_with_our_responder(baileys_peer: BaileysPeer) -> None:
    """Baileys' client side finishes XX with our responder; we learn its noise key and payload."""
    identity = make_server_identity()
    with baileys_client(baileys_peer) as node:
        _, keys, reply, hello, finish, _ = _handshake_with_baileys(node, identity)
    assert hello.ephemeral == bytes.fromhex(keys["ephemeral"]["public"])
    assert hello.routing_info is None
    assert finish.static_key == bytes.fromhex(keys["noise"]["public"])
    assert finish.payload == bytes.fromhex(reply["payload"])
    payload = wa_pb2.ClientPayload.FromString(finish.payload)
    assert payload.passive is False
    assert payload.userAgent.platform == wa_pb2.ClientPayload.UserAgent.WEB
    assert payload.devicePairingData.eIdent == bytes.fromhex(reply["identity"])
    assert payload.devicePairingData.eKeytype == b"\x05"


def test_routing_info_from_baileys_intro_reaches_the_responder(baileys_peer: BaileysPeer) -> None:
    """The ED-prefixed intro Baileys writes with routingInfo parses, and the handshake holds."""
    identity = make_server_identity()
    routing = bytes(range(1, 40))
    with baileys_client(baileys_peer) as node:
        _, _, _, hello, finish, _ = _handshake_with_baileys(node, identity, routing)
    assert hello.routing_info == routing
    assert len(finish.static_key) == 32


def test_transport_frames_cross_both_ways(baileys_peer: BaileysPeer) -> None:
    """After the handshake Baileys' frames decrypt on our side and ours decode in Baileys."""
    identity = make_server_identity()
    with baileys_client(baileys_peer) as node:
        server, *_ = _handshake_with_baileys(node, identity)
        transport = server.transport
        sent = [bytes([i]) * (i * 37 + 1) for i in range(5)]
        for payload in sent:
            transport.receive_data(bytes.fromhex(node.call("send", data=payload.hex())["data"]))
        assert [frame.payload for frame in transport.events()] == sent

        nodes = [
            {"tag": "iq", "attrs": {"id": f"q{i}", "type": "result", "from": "s.whatsapp.net"}}
            for i in range(3)
        ]
        wire = b"".join(
            transport.send(bytes.fromhex(node.call("node", node=n)["data"])) for n in nodes
        )
        # Split oddly so Baileys' own splitter has to reassemble.
        received: list[dict[str, Any]] = []
        for chunk in (wire[:5], wire[5:40], wire[40:]):
            received += node.call("recv", data=chunk.hex())["nodes"]
    assert received == nodes


def test_our_initiator_writes_the_bytes_baileys_writes(baileys_peer: BaileysPeer) -> None:
    """Same keys and ServerHello: our intro, ClientHello and ClientFinish equal Baileys' bytes."""
    identity = make_server_identity()
    with baileys_client(baileys_peer) as node:
        for routing in (None, b"\x08\x02\x08\x05"):
            server, keys, reply, _, _, server_hello = _handshake_with_baileys(
                node, identity, routing
            )
            ours = NoiseInitiator(
                noise_key=_pair(keys["noise"]),
                ephemeral=_pair(keys["ephemeral"]),
                routing_info=routing,
                root=identity.root,
            )
            baileys_start = node.call("start", **keys, routing=routing.hex() if routing else None)
            assert ours.send(Hello()) == bytes.fromhex(baileys_start["data"])
            ours.receive_data(server_hello)
            event = ours.next_event()
            assert isinstance(event, ServerHello)
            assert event.static_key == identity.static_key.public
            finish = ours.send(Finish(bytes.fromhex(reply["payload"])))
            assert finish == bytes.fromhex(reply["data"])
            # Both transports now hold the same keys: a frame from ours decrypts in the server.
            server.transport.receive_data(ours.transport.send(b"ping"))
            assert server.transport.events() == [Frame(b"ping")]
