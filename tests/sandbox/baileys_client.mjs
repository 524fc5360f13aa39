// A real Baileys v7 client for the sandbox tests. Run with `node --input-type=module -e`
// from the reference peer's folder (so 'baileys' and 'pino' resolve), configured by env:
//   SB_URL         the sandbox websocket URL (waWebSocketUrl)
//   SB_AUTH        the useMultiFileAuthState folder
//   SB_RECONNECTS  how many non-515 closes to reconnect after (default 0)
//   SB_TIMEOUT_MS  hard bound on the whole run (default 40000)
//   SB_KEEPALIVE_MS   Baileys' keepAliveIntervalMs (default 30000)
//   SB_QR_TIMEOUT_MS  Baileys' qrTimeout: how long each QR lives (default: Baileys' 60 s/20 s)
//   SB_PAIRING_PHONE  pair by code: on the first QR, call requestPairingCode(this number)
//                  and print {"event":"pairing_code","code":...} (the QRs keep coming)
//   SB_HOLD_MS     how long to stay connected after the last open before exiting
//                  (default 0: exit right after open; -1: until SB_RECONNECTS are used up)
// Prints one JSON object per line: every connection.update (qr, connection, statusCode of
// lastDisconnect), then {"event":"exit",...}. Exit code 0 on a planned end, 3 on timeout,
// 4 on an unplanned close.
import { createRequire, syncBuiltinESMExports } from 'module';

// Baileys writes its folder with plain fs writes and no fsync; a process that exits
// while one is under way leaves a torn file. Count the writes in flight (patched
// before Baileys is imported, so its named import sees the patch) and exit only when
// none is left, so the folder a test reads afterwards is whole.
const require = createRequire(import.meta.url);
const fsp = require('fs/promises');
const realWriteFile = fsp.writeFile;
let writesInFlight = 0;
let writesIdle = [];
fsp.writeFile = async (...args) => {
    writesInFlight += 1;
    try {
        return await realWriteFile(...args);
    } finally {
        writesInFlight -= 1;
        if (writesInFlight === 0) {
            for (const wake of writesIdle.splice(0)) wake();
        }
    }
};
syncBuiltinESMExports();
const writesDone = () =>
    writesInFlight === 0 ? Promise.resolve() : new Promise((wake) => writesIdle.push(wake));

const { default: makeWASocket, useMultiFileAuthState, DisconnectReason } = await import('baileys');
const { default: pino } = await import('pino');

const url = process.env.SB_URL;
const dir = process.env.SB_AUTH;
let reconnects = Number(process.env.SB_RECONNECTS || 0);
const hold = Number(process.env.SB_HOLD_MS || 0);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const finish = async (code, why) => {
    await writesDone();
    out({ event: 'exit', code, why });
    process.exit(code);
};
setTimeout(() => finish(3, 'timeout'), Number(process.env.SB_TIMEOUT_MS || 40000)).unref();

let socketNo = 0;
let codeRequested = false;
async function start() {
    const { state, saveCreds } = await useMultiFileAuthState(dir);
    socketNo += 1;
    const mine = socketNo;
    const sock = makeWASocket({
        waWebSocketUrl: url,
        auth: state,
        logger: pino({ level: 'silent' }),
        markOnlineOnConnect: false,
        syncFullHistory: false,
        connectTimeoutMs: 10000,
        keepAliveIntervalMs: Number(process.env.SB_KEEPALIVE_MS || 30000),
        ...(process.env.SB_QR_TIMEOUT_MS ? { qrTimeout: Number(process.env.SB_QR_TIMEOUT_MS) } : {})
    });
    sock.ev.on('creds.update', saveCreds);
    sock.ev.on('connection.update', async (u) => {
        const e = { event: 'connection.update', socket: mine };
        if (u.connection) e.connection = u.connection;
        if (u.qr) e.qr = u.qr;
        if (u.isNewLogin) e.isNewLogin = true;
        if (u.lastDisconnect) {
            const err = u.lastDisconnect.error;
            e.statusCode = err?.output?.statusCode;
            e.message = err?.message;
        }
        out(e);
        if (u.qr && process.env.SB_PAIRING_PHONE && !codeRequested) {
            codeRequested = true;
            const code = await sock.requestPairingCode(process.env.SB_PAIRING_PHONE);
            out({ event: 'pairing_code', code, me: state.creds.me });
        }
        if (u.connection === 'open') {
            await saveCreds();
            out({
                event: 'open',
                me: state.creds.me,
                registered: state.creds.registered,
                hasRoutingInfo: Boolean(state.creds.routingInfo),
                nextPreKeyId: state.creds.nextPreKeyId
            });
            if (hold === 0) {
                sock.end(undefined);
                finish(0, 'open');
            } else if (hold > 0) {
                setTimeout(() => { sock.end(undefined); finish(0, 'held'); }, hold);
            }
        }
        if (u.connection === 'close') {
            const code = e.statusCode;
            if (code === DisconnectReason.restartRequired) {
                void start();
            } else if (reconnects > 0) {
                reconnects -= 1;
                void start();
            } else if (hold === -1) {
                finish(0, 'closed');
            } else {
                finish(4, `unplanned close ${code}`);
            }
        }
    });
}
void start();
