// Login latency with Baileys v7: one process, one socket, saved creds, until 'open'.
// Run by bench/login.py as `node login_baileys.mjs PEER_DIR URL AUTH_DIR MODE` where MODE
// is "pair" (print each QR; the parent has the sandbox's phone scan it; once open after
// the 515 restart, save the creds, then say open and exit) or "login" (exit right after the first open).
// Prints one JSON line per step, flushed: {"event":"started"} once the modules are
// loaded, {"event":"connecting"}, {"event":"qr","qr":...}, {"event":"open"}.
import path from 'node:path';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const [peer, url, dir, mode] = process.argv.slice(2);
const modules = path.join(peer, 'node_modules');
const baileys = await import(pathToFileURL(path.join(modules, 'baileys', 'lib', 'index.js')).href);
const makeWASocket = baileys.default.default ?? baileys.default ?? baileys.makeWASocket;
const { useMultiFileAuthState, DisconnectReason } = baileys;
const pino = createRequire(path.join(modules, 'x.js'))('pino');
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
setTimeout(() => { out({ event: 'timeout' }); process.exit(3); }, 60000).unref();
out({ event: 'started' });

async function start() {
    const { state, saveCreds } = await useMultiFileAuthState(dir);
    const sock = makeWASocket({
        waWebSocketUrl: url,
        auth: state,
        logger: pino({ level: 'silent' }),
        markOnlineOnConnect: false,
        syncFullHistory: false,
        printQRInTerminal: false
    });
    sock.ev.on('creds.update', saveCreds);
    sock.ev.on('connection.update', async (u) => {
        if (u.connection === 'connecting') out({ event: 'connecting' });
        if (u.qr) out({ event: 'qr', qr: u.qr });
        if (u.connection === 'open') {
            // The parent stops us once it reads "open": after pairing, the creds must be
            // on disk by then, or the next login run starts as a new device (a QR).
            if (mode === 'pair') await saveCreds();
            out({ event: 'open' });
            await saveCreds();
            sock.end(undefined);
            process.exit(0);
        }
        if (u.connection === 'close') {
            const code = u.lastDisconnect?.error?.output?.statusCode;
            if (code === DisconnectReason.restartRequired) void start();
            else { out({ event: 'close', code }); process.exit(4); }
        }
    });
}
void start();
