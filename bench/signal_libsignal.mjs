// The Signal workload of bench/signal.py, run by libsignal-node and Baileys' group cipher.
//
// usage: node signal_libsignal.mjs <node_modules dir holding baileys> <count> <ping-pong count>
//        <sender-key count> <plaintext bytes> <the three counts of the warm-up run>
// prints one JSON line:
//   {"figures": {<level>: {<workload>: {"messages", "seconds"}}}, "node", "libsignal", "baileys"}
//
// workloads (plaintexts as bench/signal.py makes them):
//   encrypt     <count> 1:1 encrypts on an established session (no pending pre-key)
//   decrypt     the receiver decrypts those in order
//   pingpong    <ping-pong count> messages A->B, B->A, ...: one encrypt + one decrypt
//               per message, a ratchet turn each
//   sk_encrypt  <sender-key count> Baileys' GroupCipher.encrypt (XEdDSA-signed)
//   sk_decrypt  a member's GroupCipher.decrypt of those, in order
// Every level runs once with the warm-up counts first (for the JIT; not reported).
// bench/signal.py passes the same counts to its own run and warm-up.
// levels:
//   core        SessionCipher / GroupCipher over a storage whose loadSession /
//               loadSenderKey return the same live record object (no serialization)
//   stored      the same storage, but records kept in their stored form as Baileys'
//               signalStorage keeps them (lib/Signal/libsignal.js): a session as
//               SessionRecord.serialize()'s object, deserialize()d on every load; a
//               sender key as Buffer(JSON.stringify(record.serialize())), deserialize()d
//   repository  Baileys' makeLibSignalRepository over an in-memory SignalKeyStore
//               (plain objects) wrapped by addTransactionCapability, as makeWASocket does
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { join, resolve } from 'node:path';
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
if (args.length !== 8) {
    console.error('usage: node signal_libsignal.mjs <node_modules dir> <count> <ping-pong count>'
        + ' <sender-key count> <plaintext bytes> <warm-up: count> <ping-pong count>'
        + ' <sender-key count>');
    process.exit(2);
}
const modules = resolve(args[0]);
const [one, pingpong, sk, size, warmOne, warmPingPong, warmSk] = args.slice(1).map(Number);
const COUNTS = { one, pingpong, sk };
const WARM_UP = { one: warmOne, pingpong: warmPingPong, sk: warmSk };

// libsignal resolved as Baileys resolves it; Baileys' ES modules imported by path.
const require = createRequire(join(modules, 'baileys', 'package.json'));
const libsignal = require('libsignal');
const baileysLib = (path) => import(pathToFileURL(join(modules, 'baileys', 'lib', path)).href);
const { GroupCipher, GroupSessionBuilder, SenderKeyName, SenderKeyRecord } =
    await baileysLib('Signal/Group/index.js');
const { makeLibSignalRepository } = await baileysLib('Signal/libsignal.js');
const { addTransactionCapability, initAuthCreds } = await baileysLib('Utils/auth-utils.js');
const { Curve, generateSignalPubKey } = await baileysLib('Utils/crypto.js');
const { curve, SessionRecord, SessionBuilder, SessionCipher, ProtocolAddress } = libsignal;

const versionOf = (pkg) =>
    JSON.parse(readFileSync(join(modules, pkg, 'package.json'), 'utf8')).version;

// The plaintexts of bench/signal.py: the index as 8 digits, padded with '.'.
const plaintexts = (n) => Array.from({ length: n }, (_, i) =>
    Buffer.from(String(i).padStart(8, '0').padEnd(size, '.')));

const NOW = () => performance.now();
const phase = (texts, began) => ({ messages: texts.length, seconds: (NOW() - began) / 1000 });
const check = (texts, got, what) => {
    if (got.length !== texts.length) throw new Error(`${what}: ${got.length} plaintexts`);
    for (let i = 0; i < texts.length; i++) {
        if (!Buffer.from(got[i]).equals(texts[i])) {
            throw new Error(`${what}: plaintext ${i} came back different`);
        }
    }
};

// console.info of libsignal ("Closing session", ...) must not reach stdout: it is JSON only.
console.info = () => {};
console.log = ((log) => (...args) => {
    if (typeof args[0] === 'string' && args[0].startsWith('{"figures"')) log(...args);
})(console.log);

// --- core and stored -------------------------------------------------------------------

function party(registrationId, stored) {
    const identity = curve.generateKeyPair();
    const signed = curve.generateKeyPair();
    const oneTime = curve.generateKeyPair();
    const sessions = new Map();
    const senderKeys = new Map();
    const storage = {
        loadSession: async (id) => {
            const value = sessions.get(id);
            if (!value) return null;
            return stored ? SessionRecord.deserialize(value) : value;
        },
        storeSession: async (id, record) => {
            sessions.set(id, stored ? record.serialize() : record);
        },
        isTrustedIdentity: () => true,
        loadIdentityKey: async () => undefined,
        saveIdentity: async () => false,
        loadPreKey: async (id) => (id === 7 ? oneTime : undefined),
        removePreKey: async () => {},
        loadSignedPreKey: () => signed,
        getOurRegistrationId: () => registrationId,
        getOurIdentity: () => identity,
        loadSenderKey: async (name) => {
            const value = senderKeys.get(name.toString());
            if (!value) return new SenderKeyRecord();
            return stored ? SenderKeyRecord.deserialize(value) : value;
        },
        storeSenderKey: async (name, record) => {
            senderKeys.set(
                name.toString(),
                stored ? Buffer.from(JSON.stringify(record.serialize()), 'utf-8') : record,
            );
        },
    };
    const bundle = {
        registrationId,
        identityKey: identity.pubKey,
        signedPreKey: {
            keyId: 1,
            publicKey: signed.pubKey,
            signature: curve.calculateSignature(identity.privKey, signed.pubKey),
        },
        preKey: { keyId: 7, publicKey: oneTime.pubKey },
    };
    return { storage, bundle };
}

async function measureLevel(stored, counts) {
    let texts = plaintexts(counts.one);
    const alice = party(1111, stored);
    const bob = party(2222, stored);
    const aliceAddr = new ProtocolAddress('111', 0);
    const bobAddr = new ProtocolAddress('222', 0);
    await new SessionBuilder(alice.storage, bobAddr).initOutgoing(bob.bundle);
    const toBob = new SessionCipher(alice.storage, bobAddr);
    const toAlice = new SessionCipher(bob.storage, aliceAddr);
    const first = await toBob.encrypt(Buffer.from('hello'));
    if (first.type !== 3) throw new Error(`expected a pkmsg, got type ${first.type}`);
    await toAlice.decryptPreKeyWhisperMessage(first.body);
    const reply = await toAlice.encrypt(Buffer.from('hello back'));
    await toBob.decryptWhisperMessage(reply.body);
    const out = {};

    let began = NOW();
    const sent = [];
    for (const text of texts) sent.push(await toBob.encrypt(text));
    out.encrypt = phase(texts, began);
    if (sent.some((m) => m.type !== 1)) throw new Error('an established session sent a pkmsg');

    began = NOW();
    let got = [];
    for (const m of sent) got.push(await toAlice.decryptWhisperMessage(m.body));
    out.decrypt = phase(texts, began);
    check(texts, got, 'decrypt');

    texts = plaintexts(counts.pingpong);
    got = [];
    began = NOW();
    for (let i = 0; i < texts.length; i++) {
        const [from, to] = i % 2 === 0 ? [toBob, toAlice] : [toAlice, toBob];
        const m = await from.encrypt(texts[i]);
        got.push(await to.decryptWhisperMessage(m.body));
    }
    out.pingpong = phase(texts, began);
    check(texts, got, 'pingpong');

    // Sender keys: Alice's own record for the group, Bob a member who took her skdm.
    texts = plaintexts(counts.sk);
    const name = new SenderKeyName('120363000000000000@g.us', aliceAddr);
    const skdm = await new GroupSessionBuilder(alice.storage).create(name);
    await new GroupSessionBuilder(bob.storage).process(name, skdm);
    const groupOut = new GroupCipher(alice.storage, name);
    const groupIn = new GroupCipher(bob.storage, name);

    began = NOW();
    const group = [];
    for (const text of texts) group.push(await groupOut.encrypt(text));
    out.sk_encrypt = phase(texts, began);

    began = NOW();
    got = [];
    for (const m of group) got.push(await groupIn.decrypt(m));
    out.sk_decrypt = phase(texts, began);
    check(texts, got, 'sk_decrypt');
    return out;
}

// --- repository --------------------------------------------------------------------------

const silent = {
    level: 'silent',
    child() { return this; },
    trace() {}, debug() {}, info() {}, warn() {}, error() {},
};

function memoryKeys() {
    const data = {};
    return {
        get: async (type, ids) => {
            const out = {};
            for (const id of ids) {
                const value = data[type]?.[id];
                if (value !== undefined && value !== null) out[id] = value;
            }
            return out;
        },
        set: async (writes) => {
            for (const type in writes) {
                data[type] ??= {};
                for (const id in writes[type]) {
                    const value = writes[type][id];
                    if (value) data[type][id] = value;
                    else delete data[type][id];
                }
            }
        },
    };
}

function account() {
    const creds = initAuthCreds();
    const keys = addTransactionCapability(memoryKeys(), silent, {
        maxCommitRetries: 10,
        delayBetweenTriesMs: 3000,
    });
    const repository = makeLibSignalRepository({ creds, keys }, silent, async () => undefined);
    return { creds, keys, repository };
}

async function measureRepository(counts) {
    let texts = plaintexts(counts.one);
    const ALICE = '111@s.whatsapp.net';
    const BOB = '222@s.whatsapp.net';
    const GROUP = '120363000000000000@g.us';
    const alice = account();
    const bob = account();
    const preKey = Curve.generateKeyPair();
    await bob.keys.set({ 'pre-key': { 1: preKey } });
    await alice.repository.injectE2ESession({
        jid: BOB,
        session: {
            registrationId: bob.creds.registrationId,
            identityKey: generateSignalPubKey(bob.creds.signedIdentityKey.public),
            signedPreKey: {
                keyId: bob.creds.signedPreKey.keyId,
                publicKey: generateSignalPubKey(bob.creds.signedPreKey.keyPair.public),
                signature: bob.creds.signedPreKey.signature,
            },
            preKey: { keyId: 1, publicKey: generateSignalPubKey(preKey.public) },
        },
    });
    const first = await alice.repository.encryptMessage({ jid: BOB, data: Buffer.from('hello') });
    await bob.repository.decryptMessage({ jid: ALICE, ...first });
    const reply = await bob.repository.encryptMessage({ jid: ALICE, data: Buffer.from('hi') });
    await alice.repository.decryptMessage({ jid: BOB, ...reply });
    const out = {};

    let began = NOW();
    const sent = [];
    for (const data of texts) sent.push(await alice.repository.encryptMessage({ jid: BOB, data }));
    out.encrypt = phase(texts, began);
    if (sent.some((m) => m.type !== 'msg')) throw new Error('an established session sent a pkmsg');

    began = NOW();
    let got = [];
    for (const m of sent) got.push(await bob.repository.decryptMessage({ jid: ALICE, ...m }));
    out.decrypt = phase(texts, began);
    check(texts, got, 'repository decrypt');

    texts = plaintexts(counts.pingpong);
    got = [];
    began = NOW();
    for (let i = 0; i < texts.length; i++) {
        const [from, to, toJid, fromJid] =
            i % 2 === 0 ? [alice, bob, BOB, ALICE] : [bob, alice, ALICE, BOB];
        const m = await from.repository.encryptMessage({ jid: toJid, data: texts[i] });
        got.push(await to.repository.decryptMessage({ jid: fromJid, ...m }));
    }
    out.pingpong = phase(texts, began);
    check(texts, got, 'repository pingpong');

    const skdm = await alice.repository.getSenderKeyDistributionMessage({ group: GROUP, meId: ALICE });
    await bob.repository.processSenderKeyDistributionMessage({
        item: { groupId: GROUP, axolotlSenderKeyDistributionMessage: skdm },
        authorJid: ALICE,
    });
    texts = plaintexts(counts.sk);
    began = NOW();
    const group = [];
    for (const data of texts) {
        group.push(await alice.repository.encryptGroupMessage({ group: GROUP, meId: ALICE, data }));
    }
    out.sk_encrypt = phase(texts, began);

    began = NOW();
    got = [];
    for (const m of group) {
        got.push(await bob.repository.decryptGroupMessage({
            group: GROUP, authorJid: ALICE, msg: m.ciphertext,
        }));
    }
    out.sk_decrypt = phase(texts, began);
    check(texts, got, 'repository sk_decrypt');
    return out;
}

await measureLevel(false, WARM_UP);
await measureLevel(true, WARM_UP);
await measureRepository(WARM_UP);
const figures = {
    core: await measureLevel(false, COUNTS),
    stored: await measureLevel(true, COUNTS),
    repository: await measureRepository(COUNTS),
};
console.log(JSON.stringify({
    figures,
    node: process.version,
    libsignal: versionOf('libsignal'),
    baileys: versionOf('baileys'),
}));
