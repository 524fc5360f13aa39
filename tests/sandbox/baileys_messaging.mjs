// A real Baileys v7 bot for the sandbox messaging tests. Run with `node --input-type=module -e`
// from the reference peer's folder, configured by env:
//   SB_URL, SB_AUTH   the sandbox websocket URL and the useMultiFileAuthState folder
//   SB_TIMEOUT_MS     hard bound on the whole run (default 60000)
//   SB_LOG            pino level written to stderr (default 'silent')
// Prints one JSON object per line: {"event":"qr"|"open"|"close"|"message"|"update"|"receipt"|
// "sent"|"error"|"exit", ...}. Reads commands from stdin, one JSON object per line:
//   {"op":"send","to":JID,"text":TEXT}   sendMessage; prints {"event":"sent","id":...}
//   {"op":"end"}                          closes the socket and exits 0
import makeWASocket, { useMultiFileAuthState, DisconnectReason } from 'baileys';
import pino from 'pino';
import readline from 'node:readline';

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const finish = (code, why) => {
    out({ event: 'exit', code, why });
    process.exit(code);
};
setTimeout(() => finish(3, 'timeout'), Number(process.env.SB_TIMEOUT_MS || 60000)).unref();

const sent = new Map();
let sock;

const textOf = (m) => m?.conversation ?? m?.extendedTextMessage?.text ?? null;

async function start() {
    const { state, saveCreds } = await useMultiFileAuthState(process.env.SB_AUTH);
    sock = makeWASocket({
        waWebSocketUrl: process.env.SB_URL,
        auth: state,
        logger: pino({ level: process.env.SB_LOG || 'silent' }, pino.destination(2)),
        markOnlineOnConnect: false,
        syncFullHistory: false,
        connectTimeoutMs: 10000,
        getMessage: async (key) => sent.get(key.id)
    });
    sock.ev.on('creds.update', saveCreds);
    sock.ev.on('connection.update', async (u) => {
        if (u.qr) out({ event: 'qr', qr: u.qr });
        if (u.connection === 'open') {
            await saveCreds();
            out({ event: 'open', me: state.creds.me });
        }
        if (u.connection === 'close') {
            const code = u.lastDisconnect?.error?.output?.statusCode;
            out({ event: 'close', statusCode: code });
            if (code === DisconnectReason.restartRequired) void start();
            else finish(4, `unplanned close ${code}`);
        }
    });
    sock.ev.on('messages.upsert', ({ messages, type }) => {
        for (const m of messages) {
            out({
                event: 'message',
                type,
                id: m.key.id,
                remoteJid: m.key.remoteJid,
                fromMe: m.key.fromMe,
                participant: m.key.participant ?? null,
                pushName: m.pushName ?? null,
                text: textOf(m.message),
                stub: m.messageStubType ?? null,
                stubParameters: m.messageStubParameters ?? null,
                // Receipts and updates that came in the same event-buffer flush as the
                // message are folded into it (no message-receipt.update/messages.update).
                status: m.status ?? null,
                userReceipt: (m.userReceipt ?? []).map((r) => r.userJid)
            });
        }
    });
    sock.ev.on('messages.update', (updates) => {
        for (const u of updates) {
            out({ event: 'update', id: u.key.id, remoteJid: u.key.remoteJid, status: u.update?.status ?? null });
        }
    });
    sock.ev.on('message-receipt.update', (updates) => {
        for (const u of updates) {
            out({ event: 'receipt', id: u.key.id, userJid: u.receipt?.userJid ?? null });
        }
    });
}

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', async (line) => {
    if (!line.trim()) return;
    const command = JSON.parse(line);
    try {
        if (command.op === 'send') {
            const msg = await sock.sendMessage(command.to, { text: command.text });
            sent.set(msg.key.id, msg.message);
            out({ event: 'sent', id: msg.key.id });
        } else if (command.op === 'end') {
            sock.end(undefined);
            finish(0, 'end');
        }
    } catch (err) {
        out({ event: 'error', message: String(err?.stack || err) });
    }
});
lines.on('close', () => finish(0, 'stdin closed'));
void start();
