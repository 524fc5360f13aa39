// The Baileys v7 side of bench/messages.py: one socket on the sandbox, receiving and sending.
// Run as `node messages_baileys.mjs PEER_DIR URL AUTH_DIR`. Times are CLOCK_MONOTONIC seconds
// (process.hrtime, the clock Python's time.monotonic() reads), so the parent compares them
// with the sandbox host's. Prints one JSON line per event, flushed:
//   {"event":"started"}, {"event":"qr","qr":...}, {"event":"open","me":JID}
//   {"event":"message","id":ID,"t":T,"text":...}          in the messages.upsert handler
//   {"event":"sent_many","t0":T,"t1":T,"ids":[...]}       after a send_many command
//   {"event":"first_sends","times":[[JID,T0,T1,ID],...]}  after a first_sends command
//   {"event":"error","message":...}, {"event":"close","code":...}
// Commands on stdin, one JSON object per line:
//   {"op":"send_many","to":JID,"count":N,"prefix":P}  N texts in a row, each awaited
//   {"op":"first_sends","to":[JID,...]}                one text to each, each awaited
//   {"op":"end"}                                       close and exit 0
import path from 'node:path';
import readline from 'node:readline';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const [peer, url, dir] = process.argv.slice(2);
const modules = path.join(peer, 'node_modules');
const baileys = await import(pathToFileURL(path.join(modules, 'baileys', 'lib', 'index.js')).href);
const makeWASocket = baileys.default.default ?? baileys.default ?? baileys.makeWASocket;
const { useMultiFileAuthState, DisconnectReason } = baileys;
const pino = createRequire(path.join(modules, 'x.js'))('pino');
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const now = () => Number(process.hrtime.bigint()) / 1e9;
setTimeout(() => { out({ event: 'timeout' }); process.exit(3); }, 900000).unref();
out({ event: 'started' });

const sent = new Map();
let sock;
const textOf = (m) => m?.conversation ?? m?.extendedTextMessage?.text ?? null;

async function start() {
    const { state, saveCreds } = await useMultiFileAuthState(dir);
    sock = makeWASocket({
        waWebSocketUrl: url,
        auth: state,
        logger: pino({ level: 'silent' }),
        markOnlineOnConnect: false,
        syncFullHistory: false,
        printQRInTerminal: false,
        getMessage: async (key) => sent.get(key.id)
    });
    sock.ev.on('creds.update', saveCreds);
    sock.ev.on('connection.update', async (u) => {
        if (u.qr) out({ event: 'qr', qr: u.qr });
        if (u.connection === 'open') {
            await saveCreds();
            out({ event: 'open', me: state.creds.me?.id });
        }
        if (u.connection === 'close') {
            const code = u.lastDisconnect?.error?.output?.statusCode;
            out({ event: 'close', code });
            if (code === DisconnectReason.restartRequired) void start();
            else process.exit(4);
        }
    });
    sock.ev.on('messages.upsert', ({ messages }) => {
        const t = now();
        for (const m of messages) {
            if (m.key.fromMe) continue;
            out({ event: 'message', id: m.key.id, t, text: textOf(m.message), stub: m.messageStubType ?? null });
        }
    });
}

async function send(to, text) {
    const msg = await sock.sendMessage(to, { text });
    sent.set(msg.key.id, msg.message);
    return msg.key.id;
}

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', async (line) => {
    if (!line.trim()) return;
    const command = JSON.parse(line);
    try {
        if (command.op === 'send_many') {
            const ids = [];
            const t0 = now();
            for (let i = 0; i < command.count; i++) ids.push(await send(command.to, `${command.prefix}${i}`));
            out({ event: 'sent_many', t0, t1: now(), ids });
        } else if (command.op === 'first_sends') {
            const times = [];
            for (const to of command.to) {
                const t0 = now();
                const id = await send(to, 'first');
                times.push([to, t0, now(), id]);
            }
            out({ event: 'first_sends', times });
        } else if (command.op === 'end') {
            sock.end(undefined);
            process.exit(0);
        }
    } catch (err) {
        out({ event: 'error', message: String(err?.stack || err) });
    }
});
lines.on('close', () => process.exit(0));
void start();
