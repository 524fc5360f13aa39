// The store workload of bench/stores.py, run by Baileys' own useMultiFileAuthState.
//
// usage: node baileys_store_workload.mjs <baileys package dir> <auth dir> <writers> <seconds>
// prints one JSON line: {"transactions": n, "seconds": s, "writers": w}
//
// A "transaction" is one `state.keys.set({session: {...}})` of 1-8 ids chosen uniformly
// among 500, each a 1 KiB value: the same workload bench/stores.py runs through our
// transaction layer. Baileys writes each file with writeFile and no fsync.
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

const [pkgDir, authDir, writersArg, secondsArg] = process.argv.slice(2);
if (!pkgDir || !authDir) {
    console.error('usage: node baileys_store_workload.mjs <baileys dir> <auth dir> <writers> <seconds>');
    process.exit(2);
}
const writers = Number(writersArg ?? 1);
const seconds = Number(secondsArg ?? 2);

// Imported by path: an ES module resolves 'baileys' next to the script, not via NODE_PATH.
const baileys = await import(pathToFileURL(join(pkgDir, 'lib', 'index.js')).href);
const { state } = await baileys.useMultiFileAuthState(authDir);

const IDS = 500;
const pool = Array.from({ length: 64 }, () => randomBytes(1024));

// A small seeded generator (mulberry32) so every writer's sequence is reproducible.
const rng = (seed) => () => {
    seed |= 0; seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};

// Drawn before the phase, as bench/stores.py does: the harness's random numbers are
// not the store's cost. Each writer cycles through its own stretch of the sequence.
const DRAWN = 8192;
const draw = rng(1000);
const drawn = Array.from({ length: DRAWN }, () => {
    const k = 1 + Math.floor(draw() * 8);
    const session = {};
    while (Object.keys(session).length < k) {
        session[String(Math.floor(draw() * IDS))] = pool[Math.floor(draw() * pool.length)];
    }
    return session;
});

const deadline = performance.now() + seconds * 1000;
let transactions = 0;

const writer = async (w) => {
    let at = Math.floor((w * DRAWN) / writers);
    while (performance.now() < deadline) {
        const session = { ...drawn[at % DRAWN] };
        at += 1;
        await state.keys.set({ session });
        transactions += 1;
    }
};

const started = performance.now();
await Promise.all(Array.from({ length: writers }, (_, w) => writer(w)));
const elapsed = (performance.now() - started) / 1000;
console.log(JSON.stringify({ transactions, seconds: elapsed, writers }));
