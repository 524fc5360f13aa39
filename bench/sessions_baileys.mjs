// The sessions workload with Baileys v7: ONE node process holding N sockets.
// Run by bench/sessions.py as `node --expose-gc sessions_baileys.mjs '<json>'` from the
// reference peer's folder. The JSON holds: peer (that folder), phase ("pair" | "login"), n,
// root (one useMultiFileAuthState folder per account below it), url, admin (the
// sandbox host's admin port, bench/_common.py), idle_ms, settle_ms, pair_window,
// reopen_limit_ms. Prints one JSON result line; exit 0 when it ran to the end.
//
// Reconnects after the drop are what Baileys' README shows: on a close that is not
// loggedOut, make a new socket at once (Baileys itself has no reconnect or jitter).
import net from 'node:net';
import path from 'node:path';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const cfg = JSON.parse(process.argv[2]);
const modules = path.join(cfg.peer, 'node_modules');
const baileys = await import(pathToFileURL(path.join(modules, 'baileys', 'lib', 'index.js')).href);
const makeWASocket = baileys.default.default ?? baileys.default ?? baileys.makeWASocket;
const { useMultiFileAuthState, DisconnectReason } = baileys;
const pino = createRequire(path.join(modules, 'x.js'))('pino');
const logger = pino({ level: 'silent' });
const now = () => Number(process.hrtime.bigint()) / 1e9;
const result = { n: cfg.n, phase: cfg.phase };
const hardLimit = setTimeout(() => {
    process.stdout.write(JSON.stringify({ ...result, error: 'hard time limit' }) + '\n');
    process.exit(3);
}, 60000 + cfg.n * 3000);
hardLimit.unref();

function admin(request) {
    return new Promise((resolve, reject) => {
        const sock = net.createConnection({ host: '127.0.0.1', port: cfg.admin });
        let buffer = '';
        sock.on('connect', () => sock.write(JSON.stringify(request) + '\n'));
        sock.on('data', (d) => {
            buffer += d.toString();
            if (buffer.includes('\n')) {
                sock.end();
                const reply = JSON.parse(buffer.split('\n')[0]);
                if (reply.ok) resolve(reply); else reject(new Error(reply.error));
            }
        });
        sock.on('error', reject);
    });
}

const accounts = [];
let openCount = 0;
let qrs = 0;
let waiters = [];
const changed = () => { const w = waiters; waiters = []; w.forEach((f) => f()); };
const waitChange = () => new Promise((r) => waiters.push(r));
async function waitUntil(pred, limitMs) {
    const deadline = now() + limitMs / 1000;
    while (!pred()) {
        if (now() > deadline) return false;
        await Promise.race([waitChange(), new Promise((r) => setTimeout(r, 200))]);
    }
    return true;
}

async function account(i) {
    const dir = path.join(cfg.root, `a${String(i).padStart(4, '0')}`);
    const { state, saveCreds } = await useMultiFileAuthState(dir);
    const a = { i, state, saveCreds, sock: null, open: false, scanned: false,
        opens: [], connecting: [], stopped: false };
    accounts[i] = a;
    return a;
}

function connect(a) {
    a.connecting.push(now());
    const sock = makeWASocket({
        waWebSocketUrl: cfg.url,
        auth: a.state,
        logger,
        markOnlineOnConnect: false,
        syncFullHistory: false,
        connectTimeoutMs: 20000,
        keepAliveIntervalMs: 30000,
        printQRInTerminal: false
    });
    a.sock = sock;
    sock.ev.on('creds.update', a.saveCreds);
    sock.ev.on('connection.update', (u) => {
        if (a.sock !== sock) return;
        if (u.qr) {
            qrs += 1;
            if (!a.scanned) {
                a.scanned = true;
                admin({ op: 'scan', qr: u.qr }).catch(() => { a.scanned = false; });
            }
        }
        if (u.connection === 'open') {
            a.open = true;
            a.opens.push(now());
            openCount += 1;
            changed();
        }
        if (u.connection === 'close') {
            if (a.open) { a.open = false; openCount -= 1; }
            changed();
            const code = u.lastDisconnect?.error?.output?.statusCode;
            if (!a.stopped && code !== DisconnectReason.loggedOut) connect(a);
        }
    });
}

function percentile(xs, q) {
    const s = [...xs].sort((x, y) => x - y);
    return s[Math.min(s.length - 1, Math.max(0, Math.round(q * s.length + 0.5) - 1))];
}

async function pair() {
    const started = now();
    let inFlight = 0;
    for (let i = 0; i < cfg.n; i++) {
        await waitUntil(() => inFlight < cfg.pair_window, 120000);
        const a = await account(i);
        inFlight += 1;
        connect(a);
        void waitUntil(() => a.open, 120000).then(() => { inFlight -= 1; changed(); });
    }
    result.all_open = await waitUntil(() => openCount >= cfg.n, 60000 + cfg.n * 2000);
    result.pair_s = now() - started;
    result.qrs = qrs;
}

async function login() {
    global.gc?.();
    await new Promise((r) => setTimeout(r, 200));
    global.gc?.();
    const rssBefore = process.memoryUsage().rss;
    const started = now();
    for (let i = 0; i < cfg.n; i++) connect(await account(i));
    result.all_open = await waitUntil(() => openCount >= cfg.n, 60000 + cfg.n * 500);
    result.login_s = now() - started;
    result.qrs = qrs;
    if (!result.all_open || cfg.idle_ms <= 0) return;
    await new Promise((r) => setTimeout(r, cfg.settle_ms));
    global.gc?.();
    const rssAfter = process.memoryUsage().rss;
    result.rss_before_kib = rssBefore / 1024;
    result.rss_after_kib = rssAfter / 1024;
    result.rss_kib_per_session = (rssAfter - rssBefore) / 1024 / cfg.n;
    const cpu0 = process.cpuUsage();
    const t0 = now();
    await new Promise((r) => setTimeout(r, cfg.idle_ms));
    const cpu = process.cpuUsage(cpu0);
    const t1 = now();
    result.idle_window_s = t1 - t0;
    result.idle_cpu_pct_of_core = (100 * (cpu.user + cpu.system) / 1e6) / (t1 - t0);
    result.keepalive_s = 30;
    const before = accounts.map((a) => a.opens.length);
    const reply = await admin({ op: 'drop' });
    const droppedAt = now();
    result.dropped = reply.dropped;
    const reopenedCount = () => accounts.filter((a, i) => a.opens.length > before[i] && a.open).length;
    const ok = await waitUntil(() => reopenedCount() >= cfg.n, cfg.reopen_limit_ms);
    result.reopen_s = ok ? now() - droppedAt : null;
    result.reopened = reopenedCount();
    const firsts = accounts
        .map((a) => a.connecting.find((t) => t >= droppedAt))
        .filter((t) => t !== undefined)
        .map((t) => t - droppedAt);
    const bins = {};
    for (const t of firsts) bins[Math.floor(t * 10)] = (bins[Math.floor(t * 10)] || 0) + 1;
    result.reconnect_attempt_s = firsts.length === 0 ? { count: 0 } : {
        count: firsts.length,
        min_s: Math.min(...firsts),
        p50_s: percentile(firsts, 0.5),
        max_s: Math.max(...firsts),
        busiest_100ms: Math.max(...Object.values(bins))
    };
}

try {
    if (cfg.phase === 'pair') await pair(); else await login();
} catch (err) {
    result.error = String(err?.stack || err);
}
result.open_at_end = openCount;
for (const a of accounts) {
    if (!a) continue;
    a.stopped = true;
    try { a.sock?.end(undefined); } catch { /* already closed */ }
}
// Let saveCreds writes settle before exiting.
await new Promise((r) => setTimeout(r, 500));
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(result.error ? 1 : 0);
