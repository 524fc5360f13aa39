"""``baileys-trio demo``: a whole WhatsApp session on the embedded default, offline.

The script, stage by stage (each one waits for what the runtime really did):

1. ``sandbox``: the sandbox starts in this process (loopback only, no network);
   a fresh native auth directory is made in a new temporary directory.
2. ``qr``: the real runtime (``open_runtime``) opens it as a new device and shows
   a pairing QR (block QR and raw string).
3. ``scanned``: the simulated phone scans it; the identity is durable.
4. ``restart_515``: the server closes with 515, the client reconnects at once.
5. ``logged_in``: the login handshake with the saved creds succeeds.
6. ``pre_keys_uploaded``: pre-keys are committed durably, then uploaded.
7. ``open``: the session is open.
8. ``conversation``: a simulated contact (Ann, whose Signal side is our own
   code) writes to the bot; the bot receives it (``messages_upsert``, after the
   decrypt is durable) and answers with ``send_message``; Ann's phone decrypts
   the answer and sends a delivery receipt (``messages_update``).
9. ``crash_connection``: Ann writes and, in the same instant, the connection
   actor is crashed on purpose; its supervisor restarts it, the session opens
   again (no QR), Ann's message arrives (the server delivers what was not
   acked) and the bot answers it.
10. ``crash_persister``: the same with the persister; rest_for_one restarts it
    and the actors after it (signal store, connection).
11. ``nothing_lost``: the durable creds and keys read back equal to before the
    crashes; every message of the conversation arrived on both sides and none
    failed to decrypt.
12. ``runtime_restarted``: the whole runtime stops and starts again on the same
    directory, logs in without a QR, and the conversation goes on from the
    Signal sessions on disk.
13. ``done``: where the auth directory is, and how to inspect it.

This module is the demo only: it is the one place in ``actors`` that imports
``sandbox`` (a server for tests and demos, never used by a session).

Since 0.1.0.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from actors.cli import describe_message
from actors.connection.binary.jid import Jid
from actors.demo_show import Journal, Record, Show, TapLogger, connection, logged
from actors.events import MESSAGES_UPDATE, MESSAGES_UPSERT
from runtime.app import Config, Runtime, open_runtime
from runtime.errors import ActorDown, MailboxFull
from runtime.ref import ActorRef
from sandbox.server import Sandbox, open_sandbox  # the demo only (see the module docstring)
from stores.creds import AuthCreds
from stores.inspection import inspect_location

#: Real seconds the whole demo may take before it counts as failed.
DEMO_TIMEOUT = 30.0
STAGES = (
    "sandbox",
    "qr",
    "scanned",
    "restart_515",
    "logged_in",
    "pre_keys_uploaded",
    "open",
    "conversation",
    "crash_connection",
    "crash_persister",
    "nothing_lost",
    "runtime_restarted",
    "done",
)


class DemoFailed(Exception):
    """The runtime did not do what the demo narrates; the message says what differed."""


class DemoCrash:
    """A message no actor handles: casting it makes the actor crash (on purpose)."""

    def __repr__(self) -> str:
        return "DemoCrash(on purpose)"


@dataclass(frozen=True)
class Durable:
    """What is durable at the auth directory, read back through the runtime and from disk."""

    creds: AuthCreds
    persister_seq: int | None
    disk_seq: int | None
    key_counts: dict[str, int]
    records: int

    def describe(self) -> str:
        keys = ", ".join(f"{kind} {n}" for kind, n in sorted(self.key_counts.items()))
        return (
            f"durable seq {self.disk_seq} (persister: {self.persister_seq}); keys: {keys}; "
            f"{self.records} records read and checked"
        )


def fingerprint(public: bytes) -> str:
    """A short, non-secret name for a public key (its SHA-256 prefix)."""
    return hashlib.sha256(public).hexdigest()[:16]


async def read_durable(rt: Runtime, auth_dir: Path) -> Durable:
    """Creds as the persister holds them durably, and every record on disk (integrity checked)."""
    creds = await rt.auth_state()  # pending snapshots are written first
    stats = await rt.primary.persister_statistics()
    report = await trio.to_thread.run_sync(inspect_location, auth_dir)
    if not report.ok or len(report.accounts) != 1:
        raise DemoFailed(f"inspect found problems: {list(report.problems)}")
    account = report.accounts[0]
    if stats.durable_seq != account.durable_seq:
        raise DemoFailed(f"persister seq {stats.durable_seq} != on disk {account.durable_seq}")
    return Durable(
        creds,
        stats.durable_seq,
        account.durable_seq,
        dict(account.key_counts),
        report.records_checked,
    )


#: Creds fields the server sends anew at every login: they may differ after a reconnect.
REFRESHED_AT_LOGIN = frozenset({"routing_info"})


def changed_creds(before: AuthCreds, after: AuthCreds) -> list[str]:
    """Names of the creds fields that differ, except those refreshed at every login."""
    old, new = before.to_plain(), after.to_plain()
    names = old.keys() | new.keys()
    changed = {name for name in names if old.get(name) != new.get(name)}
    lost = {name for name in REFRESHED_AT_LOGIN if old.get(name) and not new.get(name)}
    return sorted((changed - REFRESHED_AT_LOGIN) | lost)


def lost_keys(before: dict[str, int], after: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Key types with fewer records than before: ``{type: (before, after)}``.

    The conversation may add records during the crashes (a message kept under the
    contact's LID address once the bot learnt it); none may go missing.
    """
    return {
        kind: (count, after.get(kind, 0))
        for kind, count in sorted(before.items())
        if after.get(kind, 0) < count
    }


async def crash_and_wait(ref: ActorRef, within: float) -> None:
    """Crash the actor behind ``ref`` and return once a new incarnation runs."""
    before = ref.statistics().incarnations
    try:
        ref.cast_nowait(DemoCrash())
    except (ActorDown, MailboxFull) as exc:
        raise DemoFailed(f"{ref.name} could not be sent the crash: {exc}") from exc
    with trio.fail_after(within):
        while True:
            stats = ref.statistics()
            if stats.incarnations > before and stats.running:
                return
            await trio.sleep(0.005)  # polls the registry; bounded by the timeout


def received(message_id: str) -> Any:
    """A predicate: a ``messages_upsert`` event carrying the message ``message_id``."""

    def match(record: Record) -> bool:
        if record.kind != "event" or record.name != MESSAGES_UPSERT:
            return False
        return any(m["key"]["id"] == message_id for m in record.fields.get("messages", ()))

    return match


def receipt(message_id: str) -> Any:
    """A predicate: a ``messages_update`` event reporting on our message ``message_id``."""

    def match(record: Record) -> bool:
        if record.kind != "event" or record.name != MESSAGES_UPDATE:
            return False
        return any(u["key"]["id"] == message_id for u in record.fields.get("value", ()))

    return match


class Chat:
    """The conversation between the simulated contact Ann and the bot, on both sides."""

    def __init__(self, sb: Sandbox, bot_device: str) -> None:
        self.sb = sb
        self.ann = sb.new_contact("Ann")
        self.bot = str(Jid.parse(bot_device).user_jid())
        self.sent: list[str] = []  # ids of what Ann wrote
        self.answers: list[str] = []  # texts the bot answered

    def write(self, show: Show, text: str, why: str = "") -> str:
        """Ann writes ``text`` to the bot (the sandbox routes it at once)."""
        message_id = self.sb.contact_send(self.ann.jid, self.bot, text)
        self.sent.append(message_id)
        show.note(
            f"Ann ({self.ann.jid}) writes to the bot: {text!r}{why}",
            contact=self.ann.jid,
            said=text,
            id=message_id,
        )
        return message_id

    async def answer(
        self, show: Show, rt: Runtime, journal: Journal, message_id: str, text: str
    ) -> None:
        """Wait until the bot received ``message_id``; answer it; wait until Ann read it."""
        entry = await self.receive(show, journal, message_id)
        await self.reply(show, rt, journal, entry, text)

    async def receive(self, show: Show, journal: Journal, message_id: str) -> dict[str, Any]:
        """The bot's ``messages_upsert`` entry of ``message_id`` (waits for it)."""
        record = await journal.wait_for(received(message_id))
        [entry] = [m for m in record.fields["messages"] if m["key"]["id"] == message_id]
        if entry.get("undecryptable"):
            raise DemoFailed(f"the bot could not decrypt {message_id}: {entry['undecryptable']}")
        times = sum(
            1
            for r in journal.records
            if received(message_id)(r)  # a stanza delivered again is emitted again
        )
        again = "" if times == 1 else f" (emitted {times} times: delivered again, same key)"
        show.note(f"bot received: {describe_message(entry)}{again}", id=message_id, times=times)
        return dict(entry)

    async def reply(
        self, show: Show, rt: Runtime, journal: Journal, entry: dict[str, Any], text: str
    ) -> None:
        """The bot answers ``entry`` with ``text``; returns once Ann's phone read it."""
        await rt.wait_connected()  # what waited on the server arrives before "open"
        key = await rt.send_message(entry["key"]["remote_jid"], {"text": text})
        self.answers.append(text)
        show.note(
            f"bot answers {text!r}: acked by the server as {key.id} (its Signal session "
            "changes were durable before the stanza left)",
            answer=text,
            id=key.id,
        )
        got = await self.sb.wait_contact_messages(self.ann.jid, len(self.answers))
        last = got[-1]
        if last.error is not None or last.text != text:
            raise DemoFailed(f"Ann read {last.text!r} ({last.error}), expected {text!r}")
        await journal.wait_for(receipt(key.id))
        show.note(
            f"Ann's phone decrypted it ({last.text!r}) and sent a delivery receipt "
            "(messages_update: delivery)",
            read=last.text,
        )

    def check(self, journal: Journal, first: int = 0) -> tuple[int, int]:
        """Ann's messages from the ``first`` on reached the bot (as ``journal`` saw), every
        answer reached Ann, none undecryptable: (messages to the bot, answers to Ann)."""
        upserts = [r for r in journal.records if r.kind == "event" and r.name == MESSAGES_UPSERT]
        entries = [m for r in upserts for m in r.fields.get("messages", ())]
        bad = [m["key"]["id"] for m in entries if m.get("undecryptable")]
        if bad:
            raise DemoFailed(f"the bot could not decrypt {bad}")
        seen = {m["key"]["id"] for m in entries}
        missing = [i for i in self.sent[first:] if i not in seen]
        if missing:
            raise DemoFailed(f"messages Ann wrote never reached the bot: {missing}")
        got = self.sb.contact_messages(self.ann.jid)
        if [m.text for m in got] != self.answers or any(m.error for m in got):
            raise DemoFailed(f"Ann read {[(m.text, m.error) for m in got]}, not {self.answers}")
        return len(self.sent) - first, len(got)


async def run_whatsapp_demo(show: Show, workdir: Path) -> Path:
    """Run every stage; returns the auth directory. Raises DemoFailed when a stage differs."""
    auth_dir = workdir / "auth"
    async with open_sandbox() as sb:
        show.stage("sandbox", "the sandbox runs in this process; a fresh auth directory")
        show.note(f"sandbox: {sb.url} (loopback, in process; no network)", url=sb.url)
        show.note(f"auth directory (native, new): {auth_dir}", auth_dir=str(auth_dir))
        durable, chat = await _first_run(show, sb, auth_dir)
        await _second_run(show, sb, auth_dir, durable, chat)
    show.stage("done", "the device stays linked in the auth directory", auth_dir=str(auth_dir))
    show.note(f"auth directory: {auth_dir}", auth_dir=str(auth_dir))
    show.note(f"inspect it with: baileys-trio inspect {auth_dir}", command="inspect")
    return auth_dir


def _config(sb: Sandbox, auth_dir: Path) -> Config:
    return Config(
        auth=str(auth_dir),
        ws_url=sb.url,
        server_root_key=sb.root_public_key,
        creds_coalesce_delay=0.0,
    )


def _subscriber(show: Show, journal: Journal) -> Any:
    def on_event(event: dict[str, Any]) -> None:
        show.event(event)  # printed before it is recorded, so it precedes its stage line
        journal.on_event(event)

    return on_event


async def _first_run(show: Show, sb: Sandbox, auth_dir: Path) -> tuple[Durable, Chat]:
    journal = Journal()
    log = TapLogger(journal, show.runtime_log)
    async with open_runtime(
        _config(sb, auth_dir), log=log, subscribe=_subscriber(show, journal)
    ) as rt:
        await _pair(show, sb, journal)
        await rt.wait_connected()
        open_event = await journal.wait_for(connection("connection", "open"))
        show.stage("open", "the session is open", me=open_event.fields.get("me"))
        before = await read_durable(rt, auth_dir)
        show.note(
            f"open as {open_event.fields.get('me')}; {before.describe()}",
            durable_seq=before.disk_seq,
            key_counts=before.key_counts,
        )
        chat = Chat(sb, str(open_event.fields.get("me")))
        show.stage("conversation", "a contact writes to the bot, the bot answers")
        first = chat.write(show, "hello bot", " (a pkmsg: her phone starts a Signal session)")
        await chat.answer(show, rt, journal, first, "hello Ann")
        before = await read_durable(rt, auth_dir)
        await _crash_connection(show, sb, rt, journal, chat)
        await _crash_persister(show, sb, rt, journal, chat)
        after = await read_durable(rt, auth_dir)
        _nothing_lost(show, before, after, chat, journal)
        show.stage("runtime_restarted", "stopping the whole runtime and starting it again")
    report = await trio.to_thread.run_sync(inspect_location, auth_dir)
    if not report.ok or report.accounts[0].lock_owner is not None:
        raise DemoFailed(f"after the stop: problems {list(report.problems)}, lock still held")
    show.note(
        "runtime stopped in order (connection, signal store, persister); the lock is "
        f"released; durable seq {report.accounts[0].durable_seq}",
        durable_seq=report.accounts[0].durable_seq,
    )
    return after, chat


async def _pair(show: Show, sb: Sandbox, journal: Journal) -> None:
    qr = await journal.wait_for(connection("qr"))
    show.stage("qr", "a new device: the session shows a pairing QR", qr_index=qr.fields["qr_index"])
    show.qr(qr.fields)
    linked = await sb.phone.scan(str(qr.fields["qr"]))
    paired = await journal.wait_for(connection("is_new_login", True))
    show.stage("scanned", "the simulated phone scanned the QR", me=linked.jid)
    show.note(f"paired as {paired.fields.get('me')} (the identity is written durably first)")
    close = await journal.wait_for(connection("code", 515))
    show.stage("restart_515", "the server asks for a restart (515), as after every pairing")
    show.note(
        f"closed: {close.fields.get('code')} {close.fields.get('reason')}, "
        f"reconnect at once (delay {close.fields.get('delay')})",
        code=515,
    )
    await journal.wait_for(logged("handshake_complete", registering=False))
    server_side = await sb.wait_logged_in(linked.jid)
    show.stage("logged_in", "logged in with the saved creds (no QR this time)")
    show.note(
        f"a login handshake, not a registration; the server has connection "
        f"#{server_side.conn_id} logged in as {server_side.jid}",
        conn_id=server_side.conn_id,
    )
    committed = await journal.wait_for(logged("prekeys_committed"))
    uploaded = await journal.wait_for(logged("prekeys_uploaded"))
    show.stage(
        "pre_keys_uploaded",
        "pre-keys committed durably, then uploaded",
        count=uploaded.fields.get("count"),
    )
    show.note(
        f"{committed.fields.get('generated')} pre-keys generated and durable before the "
        f"upload; {uploaded.fields.get('count')} uploaded; server count: "
        f"{sb.statistics().pre_key_uploads} upload(s)"
    )


async def _crash_connection(
    show: Show, sb: Sandbox, rt: Runtime, journal: Journal, chat: Chat
) -> None:
    show.stage("crash_connection", "crashing the connection actor on purpose, mid-conversation")
    # Ann's message is on its way when the crash comes: whatever the connection had
    # not acked, the server delivers again after the restart.
    written = chat.write(show, "are you there?", " ... and in the same instant:")
    await _crash(show, sb, rt, journal, "connection", ["connection"])
    await chat.answer(show, rt, journal, written, "still here after the connection crash")


async def _crash_persister(
    show: Show, sb: Sandbox, rt: Runtime, journal: Journal, chat: Chat
) -> None:
    show.stage(
        "crash_persister", "crashing the persister on purpose, mid-conversation (rest_for_one)"
    )
    # The bot has received Ann's message (its decrypt is durable) but not answered
    # yet when the persister crashes; the answer after the restart uses the Signal
    # session read back from disk.
    written = chat.write(show, "did you get that?")
    entry = await chat.receive(show, journal, written)
    show.note("before the bot answers:")
    victims = ["persister", "signal_store", "connection"]
    await _crash(show, sb, rt, journal, "persister", victims)
    await chat.reply(show, rt, journal, entry, "still here after the persister crash")


async def _crash(
    show: Show,
    sb: Sandbox,
    rt: Runtime,
    journal: Journal,
    victim: str,
    expected: list[str],
) -> None:
    refs = rt.primary.refs
    incarnations = {name: ref.statistics().incarnations for name, ref in refs.items()}
    links, opens = sb.statistics().links, _count(journal, connection("connection", "open"))
    qrs = _count(journal, connection("qr"))
    mark = journal.mark()
    await crash_and_wait(refs[victim], within=10.0)
    await rt.wait_connected()
    await journal.wait_for(connection("connection", "open"), start=mark)
    show.supervisor_lines(journal.since(mark))
    grew = sorted(n for n, ref in refs.items() if ref.statistics().incarnations > incarnations[n])
    if grew != sorted(expected):
        raise DemoFailed(f"restarted {grew}, expected {sorted(expected)}")
    if sb.statistics().links != links or _count(journal, connection("qr")) != qrs:
        raise DemoFailed("the crash made the device pair again")
    shown = ", ".join(f"{n} #{refs[n].statistics().incarnations}" for n in expected)
    show.note(
        f"restarted by the supervisor: {shown}; open again with the saved creds "
        f"(opens: {opens} -> {opens + 1}, no QR, no new link)",
        restarted=expected,
    )


def _nothing_lost(
    show: Show, before: Durable, after: Durable, chat: Chat, journal: Journal
) -> None:
    changed = changed_creds(before.creds, after.creds)
    show.stage(
        "nothing_lost", "the durable creds, keys and conversation read back as before the crashes"
    )
    if changed:
        raise DemoFailed(f"creds fields changed or lost across the crashes: {changed}")
    fewer = lost_keys(before.key_counts, after.key_counts)
    if fewer:
        raise DemoFailed(f"keys lost: {fewer} ({before.key_counts} -> {after.key_counts})")
    if (after.disk_seq or 0) < (before.disk_seq or 0):
        raise DemoFailed(f"durable seq went back: {before.disk_seq} -> {after.disk_seq}")
    creds = after.creds
    me = (creds.me or {}).get("id")
    refreshed = sorted(
        name
        for name in REFRESHED_AT_LOGIN
        if before.creds.to_plain().get(name) != creds.to_plain().get(name)
    )
    show.note(
        f"creds kept: me {me}, registration id {creds.registration_id}, identity key "
        f"{fingerprint(creds.signed_identity_key.public)} (SHA-256 of the public key), "
        f"next pre-key id {creds.next_pre_key_id}",
        me=me,
        next_pre_key_id=creds.next_pre_key_id,
    )
    if refreshed:
        show.note(
            f"refreshed by the server at each re-login (expected): {', '.join(refreshed)}",
            refreshed=refreshed,
        )
    show.note(f"before: {before.describe()}", durable_seq=before.disk_seq, keys=before.key_counts)
    show.note(f"after:  {after.describe()}", durable_seq=after.disk_seq, keys=after.key_counts)
    to_bot, to_ann = chat.check(journal)
    show.note(
        f"conversation: all {to_bot} messages Ann wrote reached the bot and all {to_ann} "
        "answers reached Ann; none failed to decrypt on either side",
        to_bot=to_bot,
        to_contact=to_ann,
    )


async def _second_run(show: Show, sb: Sandbox, auth_dir: Path, before: Durable, chat: Chat) -> None:
    journal = Journal()
    log = TapLogger(journal, show.runtime_log)
    links = sb.statistics().links
    async with open_runtime(
        _config(sb, auth_dir), log=log, subscribe=_subscriber(show, journal)
    ) as rt:
        await rt.wait_connected()
        opened = await journal.wait_for(connection("connection", "open"))
        if journal.find(connection("qr")) is not None or sb.statistics().links != links:
            raise DemoFailed("the restarted runtime asked for a QR")
        creds = await rt.auth_state()
        if (creds.me or {}).get("id") != (before.creds.me or {}).get("id"):
            raise DemoFailed("the restarted runtime is another device")
        show.note(
            f"a new runtime on the same directory: open as {opened.fields.get('me')} "
            f"without a QR (sandbox links: {links})",
            me=opened.fields.get("me"),
            qr_shown=False,
        )
        first = len(chat.sent)
        written = chat.write(show, "and after the restart?", " (a msg: the session is on disk)")
        await chat.answer(show, rt, journal, written, "still here after the restart")
        chat.check(journal, first)


def _count(journal: Journal, predicate: Any) -> int:
    return sum(1 for record in journal.records if predicate(record))


async def main(show: Show, workdir: Path | None = None) -> Path:
    """The demo, bounded by ``DEMO_TIMEOUT``; makes a new temporary directory unless given."""
    where = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="baileys-trio-demo-"))
    started = time.monotonic()
    with trio.fail_after(DEMO_TIMEOUT):
        auth_dir = await run_whatsapp_demo(show, where)
    show.note(f"finished in {time.monotonic() - started:.1f} s", seconds=time.monotonic() - started)
    return auth_dir


__all__ = ["DEMO_TIMEOUT", "STAGES", "DemoFailed", "main", "run_whatsapp_demo"]
