// A long-lived driver for the reference Signal implementation that Baileys runs:
// libsignal-node (npm `libsignal`) for 1:1 sessions and Baileys' own group cipher
// (baileys/lib/Signal/Group/*.js) for sender keys. Python interop tests talk to it
// through tests/signal/libsignal_peer.py.
//
// Protocol: one JSON request per line on stdin, one JSON reply per line on stdout.
//   request  {"id": n, "op": "...", ...args}
//   reply    {"id": n, "ok": true, ...result}
//         or {"id": n, "ok": false, "error": "<JS error class name>", "message": "..."}
// Every byte string in either direction is standard base64 with padding. Session
// records travel as the object `SessionRecord.serialize()` returns (it already
// holds its bytes as base64 strings), exactly what Baileys writes to session-*.json.
//
// Each named party has in-memory storage shaped like Baileys' signalStorage adapter
// (lib/Signal/libsignal.js) without the LID mapping: sessions are kept serialized
// and deserialized on every load, sender keys are kept as the bytes of
// JSON.stringify(record.serialize()), identities are trusted on first use.
//
// Where to find the peer: LIBSIGNAL_PEER_ROOT (a folder whose node_modules holds
// `baileys` and `libsignal`), else the parent of the first NODE_PATH entry.

import { createRequire, syncBuiltinESMExports } from 'node:module';
import path from 'node:path';
import readline from 'node:readline';
import { pathToFileURL } from 'node:url';

// libsignal logs through console.info/console.log ("Closing session: ..."), which
// would land on stdout and corrupt the reply stream: send all console output to
// stderr and keep stdout for replies only.
const replyStream = process.stdout;
for (const level of ['log', 'info', 'debug', 'trace']) {
    console[level] = (...args) => console.error(...args);
}

function peerRoot() {
    if (process.env.LIBSIGNAL_PEER_ROOT) {
        return path.resolve(process.env.LIBSIGNAL_PEER_ROOT);
    }
    const first = (process.env.NODE_PATH || '').split(path.delimiter).filter(Boolean)[0];
    if (!first) {
        throw new Error('set LIBSIGNAL_PEER_ROOT or NODE_PATH to the Baileys peer');
    }
    return path.dirname(path.resolve(first));
}

// ESM ignores NODE_PATH, so resolve everything from the peer's own folder.
const require = createRequire(path.join(peerRoot(), 'package.json'));
const libsignal = require('libsignal');
const curve = require('libsignal/src/curve.js');
const signalCrypto = require('libsignal/src/crypto.js');
const protobufs = require('libsignal/src/protobufs.js');
const nodeCrypto = require('node:crypto');

// --- Determinism hooks -------------------------------------------------------
//
// session_builder.js and session_cipher.js call `curve.generateKeyPair()` through
// the module object, so replacing the export reaches them. Baileys' Group/keyhelper.js
// does `import { generateKeyPair } from 'libsignal/src/curve.js'`: an ES import of a
// CommonJS module copies the export once, when it is first imported, so the patch
// must be in place BEFORE Baileys' group modules are imported (below).

const originalGenerateKeyPair = curve.generateKeyPair;
const randomKeyQueue = []; // private keys (Buffer) handed out in order, then random again

function keyPairFromPrivate(privKey) {
    return { pubKey: curve.getPublicFromPrivateKey(privKey), privKey: Buffer.from(privKey) };
}

curve.generateKeyPair = function generateKeyPair() {
    if (randomKeyQueue.length) {
        return keyPairFromPrivate(randomKeyQueue.shift());
    }
    return originalGenerateKeyPair();
};

// libsignal stamps created/used/closed with Date.now() into the session JSON.
const originalDateNow = Date.now;
function setClock(ms) {
    Date.now = ms === null || ms === undefined ? originalDateNow : () => ms;
}

const Group = await import(pathToFileURL(require.resolve('baileys/lib/Signal/Group/index.js')).href);
const { GroupCipher, GroupSessionBuilder, SenderKeyDistributionMessage, SenderKeyName, SenderKeyRecord } =
    Group;

// Baileys' Group/keyhelper.js draws the sender key and its id from
// `import * as nodeCrypto from 'crypto'` (randomBytes(32), randomInt(2**31 - 1)).
// Builtin ES namespaces follow the CommonJS exports after syncBuiltinESMExports(),
// so fixed values are injected by patching node:crypto for the length of one
// GroupSessionBuilder.create call, and only for those two draws.
let pendingGroupKeys = null; // {senderKeyId?, senderKey?, signingPrivate?}, used by the next create

async function withGroupKeys(fn) {
    const fixed = pendingGroupKeys;
    if (!fixed) {
        return await fn();
    }
    const { randomBytes, randomInt } = nodeCrypto;
    let usedKey = fixed.senderKey === undefined;
    let usedId = fixed.senderKeyId === undefined;
    nodeCrypto.randomBytes = (size, ...rest) => {
        if (!usedKey && size === 32 && rest.length === 0) {
            usedKey = true;
            return Buffer.from(fixed.senderKey);
        }
        return randomBytes(size, ...rest);
    };
    nodeCrypto.randomInt = (...args) => {
        if (!usedId && args.length === 1 && typeof args[0] === 'number') {
            usedId = true;
            return fixed.senderKeyId;
        }
        return randomInt(...args);
    };
    syncBuiltinESMExports();
    // The signing key pair comes from curve.generateKeyPair: put it first in line.
    const queuedSigning = fixed.signingPrivate !== undefined;
    if (queuedSigning) {
        randomKeyQueue.unshift(fixed.signingPrivate);
    }
    const queueLength = randomKeyQueue.length;
    try {
        return await fn();
    } finally {
        nodeCrypto.randomBytes = randomBytes;
        nodeCrypto.randomInt = randomInt;
        syncBuiltinESMExports();
        const usedSigning = queuedSigning && randomKeyQueue.length < queueLength;
        if (queuedSigning && !usedSigning) {
            randomKeyQueue.shift(); // the record existed already: nothing was generated
        }
        // One-shot: the values are spent once a new sender key state was created.
        if (usedKey && usedId && (!queuedSigning || usedSigning)) {
            pendingGroupKeys = null;
        }
    }
}

// --- Bytes -------------------------------------------------------------------

const B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function bytes(value, name) {
    if (typeof value !== 'string' || !B64.test(value)) {
        throw new TypeError(`${name} must be a standard base64 string`);
    }
    return Buffer.from(value, 'base64');
}

function optionalBytes(value, name) {
    return value === undefined || value === null ? undefined : bytes(value, name);
}

function b64(buffer) {
    return Buffer.from(buffer).toString('base64');
}

function privateKey(value, name) {
    const key = bytes(value, name);
    if (key.length !== 32) {
        throw new TypeError(`${name} must be 32 bytes, got ${key.length}`);
    }
    return key;
}

function integer(value, name) {
    if (!Number.isInteger(value) || value < 0) {
        throw new TypeError(`${name} must be a non-negative integer`);
    }
    return value;
}

function text(value, name) {
    if (typeof value !== 'string') {
        throw new TypeError(`${name} must be a string`);
    }
    return value;
}

// A key pair as Baileys keeps it in creds / pre-key-*.json: 32-byte public, no 05 prefix.
function partyKeyPair(privateB64, name) {
    const pair = privateB64 === undefined || privateB64 === null
        ? originalGenerateKeyPair() // party keys never drain the set_random_keys queue
        : keyPairFromPrivate(privateKey(privateB64, name));
    return { public: pair.pubKey.subarray(1), private: pair.privKey };
}

function prefixed(public32) {
    return Buffer.concat([Buffer.from([5]), public32]);
}

// --- Parties -----------------------------------------------------------------

class Party {
    constructor(name, registrationId, identity, signedPreKey) {
        this.name = name;
        this.registrationId = registrationId;
        this.identity = identity; // {public (32), private}
        this.signedPreKey = signedPreKey; // {keyId, keyPair {public (32), private}, signature}
        this.preKeys = new Map(); // id -> {public (32), private}
        this.sessions = new Map(); // address -> record.serialize() object
        this.identities = new Map(); // address -> 33-byte identity key
        this.senderKeys = new Map(); // sender key name -> bytes of JSON.stringify(record.serialize())
        this.storage = this.makeStorage();
    }

    addPreKeys(specs) {
        if (!Array.isArray(specs)) {
            throw new TypeError('pre_keys must be a list');
        }
        return specs.map(spec => {
            const keyId = integer(spec.id, 'pre_keys[].id');
            const pair = partyKeyPair(spec.private, 'pre_keys[].private');
            this.preKeys.set(keyId, pair);
            return { key_id: keyId, public_key: b64(prefixed(pair.public)) };
        });
    }

    // Baileys' signalStorage(), minus the PN -> LID address resolution.
    makeStorage() {
        const party = this;
        return {
            async loadSession(id) {
                const stored = party.sessions.get(id);
                if (!stored) {
                    return null;
                }
                try {
                    return libsignal.SessionRecord.deserialize(structuredClone(stored));
                } catch (e) {
                    // Baileys swallows this too: an unreadable record is "no session".
                    console.error(`[${party.name}] unreadable session ${id}:`, e);
                    return null;
                }
            },
            async storeSession(id, record) {
                // A JSON round trip, as a write to session-<id>.json would do.
                party.sessions.set(id, JSON.parse(JSON.stringify(record.serialize())));
            },
            isTrustedIdentity() {
                return true; // trust on first use, as Baileys does
            },
            async loadIdentityKey(id) {
                return party.identities.get(id);
            },
            async saveIdentity(id, identityKey) {
                const existing = party.identities.get(id);
                const key = Buffer.from(identityKey);
                if (existing && !existing.equals(key)) {
                    // Identity changed: Baileys drops the session and keeps the new key.
                    party.sessions.delete(id);
                    party.identities.set(id, key);
                    return true;
                }
                if (!existing) {
                    party.identities.set(id, key);
                    return true;
                }
                return false;
            },
            async loadPreKey(id) {
                const key = party.preKeys.get(Number(id));
                if (key) {
                    return { privKey: Buffer.from(key.private), pubKey: Buffer.from(key.public) };
                }
            },
            async removePreKey(id) {
                party.preKeys.delete(Number(id));
            },
            loadSignedPreKey() {
                // Baileys ignores the requested id: there is one signed pre-key.
                const key = party.signedPreKey.keyPair;
                return { privKey: Buffer.from(key.private), pubKey: Buffer.from(key.public) };
            },
            async loadSenderKey(senderKeyName) {
                const stored = party.senderKeys.get(senderKeyName.toString());
                if (stored) {
                    return SenderKeyRecord.deserialize(stored);
                }
                return new SenderKeyRecord();
            },
            async storeSenderKey(senderKeyName, record) {
                const serialized = JSON.stringify(record.serialize());
                party.senderKeys.set(senderKeyName.toString(), Buffer.from(serialized, 'utf-8'));
            },
            getOurRegistrationId() {
                return party.registrationId;
            },
            getOurIdentity() {
                return {
                    privKey: Buffer.from(party.identity.private),
                    pubKey: prefixed(party.identity.public)
                };
            }
        };
    }
}

const parties = new Map();

function party(args) {
    const name = text(args.party, 'party');
    const found = parties.get(name);
    if (!found) {
        throw new Error(`no party named ${JSON.stringify(name)}`);
    }
    return found;
}

function address(value, name = 'address') {
    return libsignal.ProtocolAddress.from(text(value, name));
}

function senderKeyName(args) {
    return new SenderKeyName(text(args.group, 'group'), address(args.author, 'author'));
}

// Baileys' ensureSenderKeyAndCreateSkdm: store an empty record first, then create.
async function ensureSenderKey(p, name) {
    if (!p.senderKeys.has(name.toString())) {
        await p.storage.storeSenderKey(name, new SenderKeyRecord());
    }
    return await withGroupKeys(() => new GroupSessionBuilder(p.storage).create(name));
}

// Baileys' extractIdentityFromPkmsg: the sender's identity key of a pkmsg, or undefined.
function identityFromPkmsg(ciphertext) {
    try {
        if (ciphertext.length < 2 || (ciphertext[0] & 0xf) !== 3) {
            return undefined;
        }
        const proto = protobufs.PreKeyWhisperMessage.decode(ciphertext.subarray(1));
        return proto.identityKey?.length === 33 ? Buffer.from(proto.identityKey) : undefined;
    } catch {
        return undefined;
    }
}

// --- Operations --------------------------------------------------------------

const ops = {
    ping() {
        return { libsignal: require('libsignal/package.json').version, baileys: require('baileys/package.json').version };
    },

    new_party(args) {
        const name = text(args.party, 'party');
        if (parties.has(name)) {
            throw new Error(`party ${JSON.stringify(name)} exists already`);
        }
        const registrationId = args.registration_id === undefined || args.registration_id === null
            ? libsignal.keyhelper.generateRegistrationId()
            : integer(args.registration_id, 'registration_id');
        const identity = partyKeyPair(args.identity_private, 'identity_private');
        const spkPair = partyKeyPair(args.signed_pre_key_private, 'signed_pre_key_private');
        const signedPreKey = {
            keyId: args.signed_pre_key_id === undefined || args.signed_pre_key_id === null
                ? 1 // Baileys' initAuthCreds uses signed pre-key id 1
                : integer(args.signed_pre_key_id, 'signed_pre_key_id'),
            keyPair: spkPair,
            signature: curve.calculateSignature(identity.private, prefixed(spkPair.public))
        };
        const p = new Party(name, registrationId, identity, signedPreKey);
        const preKeys = p.addPreKeys(args.pre_keys || []);
        parties.set(name, p);
        return {
            registration_id: registrationId,
            identity_key: b64(prefixed(identity.public)),
            signed_pre_key: {
                key_id: signedPreKey.keyId,
                public_key: b64(prefixed(spkPair.public)),
                signature: b64(signedPreKey.signature)
            },
            pre_keys: preKeys
        };
    },

    drop_party(args) {
        return { dropped: parties.delete(text(args.party, 'party')) };
    },

    party_keys(args) {
        const p = party(args);
        return {
            registration_id: p.registrationId,
            identity_key: b64(prefixed(p.identity.public)),
            identity_private: b64(p.identity.private),
            signed_pre_key: {
                key_id: p.signedPreKey.keyId,
                public_key: b64(prefixed(p.signedPreKey.keyPair.public)),
                private_key: b64(p.signedPreKey.keyPair.private),
                signature: b64(p.signedPreKey.signature)
            },
            pre_keys: [...p.preKeys.entries()].map(([keyId, pair]) => ({
                key_id: keyId,
                public_key: b64(prefixed(pair.public)),
                private_key: b64(pair.private)
            }))
        };
    },

    add_pre_keys(args) {
        return { pre_keys: party(args).addPreKeys(args.pre_keys) };
    },

    // `key_id`, not `id`: a top-level `id` is the request's own id.
    has_pre_key(args) {
        return { present: party(args).preKeys.has(integer(args.key_id, 'key_id')) };
    },

    async process_bundle(args) {
        const p = party(args);
        const bundle = args.bundle || {};
        const spk = bundle.signed_pre_key || {};
        const device = {
            registrationId: integer(bundle.registration_id, 'bundle.registration_id'),
            identityKey: bytes(bundle.identity_key, 'bundle.identity_key'),
            signedPreKey: {
                keyId: integer(spk.key_id, 'bundle.signed_pre_key.key_id'),
                publicKey: bytes(spk.public_key, 'bundle.signed_pre_key.public_key'),
                signature: bytes(spk.signature, 'bundle.signed_pre_key.signature')
            }
        };
        if (bundle.pre_key) {
            device.preKey = {
                keyId: integer(bundle.pre_key.key_id, 'bundle.pre_key.key_id'),
                publicKey: bytes(bundle.pre_key.public_key, 'bundle.pre_key.public_key')
            };
        }
        await new libsignal.SessionBuilder(p.storage, address(args.address)).initOutgoing(device);
        return {};
    },

    async encrypt(args) {
        const p = party(args);
        const cipher = new libsignal.SessionCipher(p.storage, address(args.address));
        const { type, body, registrationId } = await cipher.encrypt(bytes(args.plaintext, 'plaintext'));
        return {
            type: type === 3 ? 'pkmsg' : 'msg',
            ciphertext: b64(body),
            registration_id: registrationId
        };
    },

    async decrypt(args) {
        const p = party(args);
        const addr = address(args.address);
        const ciphertext = bytes(args.ciphertext, 'ciphertext');
        const cipher = new libsignal.SessionCipher(p.storage, addr);
        let plaintext;
        if (args.type === 'pkmsg') {
            // As Baileys' decryptMessage: save the sender's identity first (a changed
            // identity drops the old session), then decrypt.
            const identityKey = identityFromPkmsg(ciphertext);
            if (identityKey) {
                await p.storage.saveIdentity(addr.toString(), identityKey);
            }
            plaintext = await cipher.decryptPreKeyWhisperMessage(ciphertext);
        } else if (args.type === 'msg') {
            plaintext = await cipher.decryptWhisperMessage(ciphertext);
        } else {
            throw new TypeError(`type must be "pkmsg" or "msg", got ${JSON.stringify(args.type)}`);
        }
        return { plaintext: b64(plaintext) };
    },

    get_session(args) {
        const stored = party(args).sessions.get(address(args.address).toString());
        return { session: stored === undefined ? null : stored };
    },

    put_session(args) {
        const p = party(args);
        const id = address(args.address).toString();
        if (args.session === null || args.session === undefined) {
            p.sessions.delete(id);
        } else if (typeof args.session !== 'object' || Array.isArray(args.session)) {
            throw new TypeError('session must be a SessionRecord.serialize() object or null');
        } else {
            p.sessions.set(id, structuredClone(args.session));
        }
        return {};
    },

    async has_open_session(args) {
        const p = party(args);
        const cipher = new libsignal.SessionCipher(p.storage, address(args.address));
        return { open: await cipher.hasOpenSession() };
    },

    get_identity(args) {
        const key = party(args).identities.get(address(args.address).toString());
        return { identity_key: key === undefined ? null : b64(key) };
    },

    // --- groups (Baileys lib/Signal/Group) ---

    async group_create(args) {
        const p = party(args);
        const skdm = await ensureSenderKey(p, senderKeyName(args));
        return { skdm: b64(skdm.serialize()) };
    },

    async group_process(args) {
        const p = party(args);
        const name = senderKeyName(args);
        const message = new SenderKeyDistributionMessage(null, null, null, null, bytes(args.skdm, 'skdm'));
        if (!p.senderKeys.has(name.toString())) {
            await p.storage.storeSenderKey(name, new SenderKeyRecord());
        }
        await new GroupSessionBuilder(p.storage).process(name, message);
        return {};
    },

    async group_encrypt(args) {
        // Baileys' encryptGroupMessage: make sure our sender key exists (creating it
        // if need be), then encrypt; it returns the distribution message as well.
        const p = party(args);
        const name = senderKeyName(args);
        const skdm = await ensureSenderKey(p, name);
        const ciphertext = await new GroupCipher(p.storage, name).encrypt(bytes(args.plaintext, 'plaintext'));
        return { ciphertext: b64(ciphertext), skdm: b64(skdm.serialize()) };
    },

    async group_decrypt(args) {
        const p = party(args);
        const plaintext = await new GroupCipher(p.storage, senderKeyName(args)).decrypt(
            bytes(args.ciphertext, 'ciphertext'));
        return { plaintext: b64(plaintext) };
    },

    get_sender_key(args) {
        const stored = party(args).senderKeys.get(senderKeyName(args).toString());
        return { record: stored === undefined ? null : b64(stored) };
    },

    put_sender_key(args) {
        const p = party(args);
        const name = senderKeyName(args).toString();
        if (args.record === null || args.record === undefined) {
            p.senderKeys.delete(name);
        } else {
            p.senderKeys.set(name, bytes(args.record, 'record'));
        }
        return {};
    },

    // --- determinism ---

    set_random_keys(args) {
        if (!Array.isArray(args.privates)) {
            throw new TypeError('privates must be a list');
        }
        const keys = args.privates.map(k => privateKey(k, 'privates[]'));
        randomKeyQueue.length = 0;
        randomKeyQueue.push(...keys);
        return { queued: randomKeyQueue.length };
    },

    pending_random_keys() {
        return { count: randomKeyQueue.length };
    },

    set_clock(args) {
        const ms = args.ms === undefined || args.ms === null ? null : integer(args.ms, 'ms');
        setClock(ms);
        return { now: Date.now() };
    },

    set_group_keys(args) {
        const fixed = {};
        if (args.sender_key_id !== undefined && args.sender_key_id !== null) {
            fixed.senderKeyId = integer(args.sender_key_id, 'sender_key_id');
        }
        if (args.sender_key !== undefined && args.sender_key !== null) {
            fixed.senderKey = privateKey(args.sender_key, 'sender_key');
        }
        if (args.signing_private !== undefined && args.signing_private !== null) {
            fixed.signingPrivate = privateKey(args.signing_private, 'signing_private');
        }
        pendingGroupKeys = Object.keys(fixed).length ? fixed : null;
        return {};
    },

    reset() {
        parties.clear();
        randomKeyQueue.length = 0;
        pendingGroupKeys = null;
        setClock(null);
        return {};
    },

    // --- primitives ---

    hkdf(args) {
        const salt = optionalBytes(args.salt, 'salt') ?? Buffer.alloc(32);
        const chunks = signalCrypto.deriveSecrets(bytes(args.ikm, 'ikm'), salt,
            Buffer.from(text(args.info, 'info'), 'utf-8'), args.chunks);
        return { chunks: chunks.map(b64), output: b64(Buffer.concat(chunks)) };
    },

    sign(args) {
        return { signature: b64(curve.calculateSignature(privateKey(args.private, 'private'),
            bytes(args.message, 'message'))) };
    },

    verify(args) {
        const pub = bytes(args.public, 'public');
        const message = bytes(args.message, 'message');
        const signature = bytes(args.signature, 'signature');
        try {
            return { valid: Boolean(curve.verifySignature(pub, message, signature)) };
        } catch (e) {
            // verifySignature throws on a malformed key or signature: that is "not valid".
            return { valid: false, reason: `${e.constructor?.name || 'Error'}: ${e.message}` };
        }
    },

    public_from_private(args) {
        return { public_key: b64(curve.getPublicFromPrivateKey(privateKey(args.private, 'private'))) };
    }
};

// --- The request loop ----------------------------------------------------------

function errorReply(id, e) {
    const isError = e instanceof Error;
    return {
        id,
        ok: false,
        error: isError ? (e.constructor?.name || e.name || 'Error') : 'Error',
        message: isError ? String(e.message ?? '') : String(e)
    };
}

async function handle(line) {
    let request;
    try {
        request = JSON.parse(line);
    } catch (e) {
        return errorReply(null, e);
    }
    const id = request && typeof request === 'object' ? request.id ?? null : null;
    try {
        const op = request.op;
        if (typeof op !== 'string' || !Object.hasOwn(ops, op)) {
            throw new Error(`unknown op ${JSON.stringify(op)}`);
        }
        const result = await ops[op](request);
        return { id, ok: true, ...result };
    } catch (e) {
        return errorReply(id, e);
    }
}

// Requests run strictly one after another: several ops share module-level state
// (the key queue, the clock, node:crypto patches), and replies keep request order.
let chain = Promise.resolve();
const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on('line', line => {
    if (!line.trim()) {
        return;
    }
    chain = chain.then(async () => {
        const reply = await handle(line);
        replyStream.write(JSON.stringify(reply) + '\n');
    });
});
lines.on('close', () => {
    chain.then(() => process.exit(0));
});
// A stray rejection inside libsignal must not kill the peer: log it and go on.
process.on('unhandledRejection', e => console.error('unhandled rejection:', e));
