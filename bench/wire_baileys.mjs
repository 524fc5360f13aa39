// The wire workload of bench/wire.py, run by Baileys' own noise handler and node codec.
//
// usage: node wire_baileys.mjs <baileys package dir> <seconds per phase>
// stdin: {"nodes": [node, ...]} where node = {"tag", "attrs", "content"} and content is
//        null, a string, {"b64": "<base64 bytes>"} or a list of nodes (bench/wire.py writes it).
// prints one JSON line:
//   {"send": {"frames", "bytes", "seconds"}, "receive", "encode", "decode": {...},
//    "encoded_sha256", "node"}
//
// send    = encodeBinaryNode + the transport encryption and framing of makeNoiseHandler's
//           encodeFrame (what Baileys' sendNode does for every stanza);
// receive = makeNoiseHandler's decodeFrame: split, transport decrypt, decodeBinaryNode;
// encode, decode = encodeBinaryNode, decodeBinaryNode alone (half the time each).
// The handler reaches its transport state through finishInit(), without a handshake:
// its keys then come from HKDF(salt = NOISE_MODE, ikm = empty) exactly as after one
// (the handshake only changes which keys; the per-frame work is the same). Frames for
// the receive phase are encrypted here with the handler's read key, counters from 0.
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

const [pkgDir, secondsArg] = process.argv.slice(2);
if (!pkgDir) {
    console.error('usage: node wire_baileys.mjs <baileys package dir> <seconds per phase>');
    process.exit(2);
}
const seconds = Number(secondsArg ?? 3);

// Imported by path: an ES module resolves 'baileys' next to the script, not via NODE_PATH.
const lib = (path) => import(pathToFileURL(join(pkgDir, 'lib', path)).href);
const { makeNoiseHandler } = await lib('Utils/noise-handler.js');
const { aesEncryptGCM, hkdf, Curve } = await lib('Utils/crypto.js');
const { encodeBinaryNode, decodeBinaryNode } = await lib('WABinary/index.js');
const { NOISE_MODE, NOISE_WA_HEADER } = await lib('Defaults/index.js');

const toNode = (j) => ({
    tag: j.tag,
    attrs: j.attrs,
    content:
        j.content === null ? undefined
        : typeof j.content === 'string' ? j.content
        : Array.isArray(j.content) ? j.content.map(toNode)
        : Buffer.from(j.content.b64, 'base64'),
});
const nodes = JSON.parse(readFileSync(0, 'utf8')).nodes.map(toNode);

const silent = { level: 'silent', child() { return this; }, trace() {}, debug() {}, info() {} };
const handler = () => {
    const noise = makeNoiseHandler({
        keyPair: Curve.generateKeyPair(),
        NOISE_HEADER: NOISE_WA_HEADER,
        logger: silent,
    });
    return noise;
};

// The same split finishInit makes: [write, read] = HKDF(empty, 64, salt = NOISE_MODE).
const keys = hkdf(Buffer.alloc(0), 64, { salt: Buffer.from(NOISE_MODE), info: '' });
const readKey = keys.subarray(32);
const iv = (counter) => {
    const out = new Uint8Array(12);
    new DataView(out.buffer).setUint32(8, counter);
    return out;
};

// Parity check for bench/wire.py: our encoder must give these same bytes.
const encoded = nodes.map((n) => encodeBinaryNode(n));
const digest = createHash('sha256');
for (const e of encoded) digest.update(e);

// --- send: encode + encrypt + frame ----------------------------------------------
const sender = handler();
await sender.finishInit();
sender.encodeFrame(Buffer.alloc(0)); // the intro goes out with the first frame: not per-frame work
let sendFrames = 0;
let sendBytes = 0;
let start = performance.now();
let elapsed = 0;
do {
    for (const node of nodes) {
        sendBytes += sender.encodeFrame(encodeBinaryNode(node)).length;
    }
    sendFrames += nodes.length;
    elapsed = (performance.now() - start) / 1000;
} while (elapsed < seconds);
const send = { frames: sendFrames, bytes: sendBytes, seconds: elapsed };

// --- receive: split + decrypt + decode -------------------------------------------
const wire = encoded.map((plain, counter) => {
    const ciphertext = aesEncryptGCM(plain, readKey, iv(counter), Buffer.alloc(0));
    const frame = Buffer.alloc(3 + ciphertext.length);
    frame.writeUIntBE(ciphertext.length, 0, 3);
    frame.set(ciphertext, 3);
    return frame;
});
let receiveFrames = 0;
let receiveBytes = 0;
let decoded = 0;
start = performance.now();
do {
    const receiver = handler(); // a fresh transport: read counter back at 0
    await receiver.finishInit();
    for (const frame of wire) {
        await receiver.decodeFrame(frame, () => { decoded += 1; });
        receiveBytes += frame.length;
    }
    receiveFrames += wire.length;
    elapsed = (performance.now() - start) / 1000;
} while (elapsed < seconds);
if (decoded !== receiveFrames) {
    console.error(`decoded ${decoded} of ${receiveFrames} frames`);
    process.exit(1);
}
const receive = { frames: receiveFrames, bytes: receiveBytes, seconds: elapsed };

// --- the codec alone (where the time goes) -----------------------------------------
const codecSeconds = seconds / 2;
const codecPhase = async (one, bytesOf) => {
    let frames = 0;
    let bytes = 0;
    const began = performance.now();
    let took = 0;
    do {
        for (let i = 0; i < nodes.length; i++) {
            await one(i);
            bytes += bytesOf(i);
        }
        frames += nodes.length;
        took = (performance.now() - began) / 1000;
    } while (took < codecSeconds);
    return { frames, bytes, seconds: took };
};
const encode = await codecPhase((i) => encodeBinaryNode(nodes[i]), (i) => encoded[i].length);
const decode = await codecPhase((i) => decodeBinaryNode(encoded[i]), (i) => encoded[i].length);

console.log(JSON.stringify({
    send,
    receive,
    encode,
    decode,
    encoded_sha256: digest.digest('hex'),
    node: process.version,
}));
