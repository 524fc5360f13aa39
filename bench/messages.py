"""Messages in and out: ours (runtime in this process, native store) vs Baileys v7, one sandbox.

``python -m bench messages`` or ``python -m bench.messages [--light N] [--burst N]
[--out N] [--first K] [--no-baileys]``. Figures and ratios are printed, never asserted.

The sandbox runs in a host process of its own (``python -m bench.messages host``), so
its work (the simulated contacts' encryption, routing) never counts as either
client's. The host instruments its own objects (no sandbox code changes): the moment
a routed ``message`` stanza is queued for a bot's device and written to its
connection (**sandbox-in**), the moment the bot's ``ack`` removes it from the queue,
and the moment a contact has decrypted a message the bot sent. All times are
``CLOCK_MONOTONIC`` (Python's ``time.monotonic``, node's ``process.hrtime``), one
clock for the three processes.

Each side pairs its own account, then, against fresh simulated contacts:

1. warm-up: a contact sends 20 texts (the first a ``pkmsg``), the bot sends 5 back;
2. **in, light load**: the contact sends ``--light`` texts one at a time (the next
   once the previous was acked, 10 ms apart); latency = sandbox-in → the bot's
   ``messages_upsert`` handler (ours: our event bus subscriber; Baileys: its
   ``messages.upsert`` listener), p50/p99;
3. **in, burst**: the contact sends ``--burst`` texts at once (encrypted by the host
   first, then written back to back); rate = texts / (first sandbox-in → last ack):
   decrypted, committed (ours: durably, fsync through the persister; Baileys:
   ``useMultiFileAuthState``, its default, which writes files without fsync) and
   acked;
4. **out**: the bot sends ``--out`` texts to the contact, one after the other, each
   awaited (ours: ``send_message`` returns once the server acked; Baileys:
   ``sendMessage`` resolves once the stanza is written); rate = texts / (first call →
   the contact has decrypted the last);
5. **first send to a new contact**: ``--first`` fresh contacts, one text each (usync,
   pre-key bundle, ``pkmsg``), one after the other; latency = call → the contact has
   decrypted it, p50 (and the call's own duration).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from bench._common import (
    PYTHON,
    REPO,
    JsonLines,
    admin,
    baileys_root,
    machine_facts,
    percentile,
    print_machine,
    serve_admin,
)

NODE_SCRIPT = Path(__file__).resolve().parent / "messages_baileys.mjs"
LIGHT = 200
BURST = 500
OUT = 200
FIRST = 20
ROUNDS = 3
WARM_IN = 20
WARM_OUT = 5
CIPHERTEXT_STUB = 2  # Baileys' WAMessageStubType.CIPHERTEXT: a message it could not decrypt
STEP_LIMIT = 120.0


# --- the sandbox host (child side) ----------------------------------------------------


@dataclass
class _Watch:
    """What the host saw, by message id (CLOCK_MONOTONIC seconds)."""

    sandbox_in: dict[str, float] = field(default_factory=dict)
    acked: dict[str, float] = field(default_factory=dict)
    #: the first of the bot's ack and its delivery receipt (Baileys v7 acknowledges a
    #: decrypted message with the receipt alone, as WhatsApp's server accepts)
    delivered: dict[str, float] = field(default_factory=dict)
    ack_waiters: dict[str, trio.Event] = field(default_factory=dict)
    #: contact JID -> [(id, t, text, error)] of what it decrypted (or failed to)
    arrivals: dict[str, list[tuple[str, float, str | None, str | None]]] = field(
        default_factory=dict
    )
    retry_receipts: dict[str, int] = field(default_factory=dict)  # by contact JID
    changed: trio.Event = field(default_factory=trio.Event)

    def deliver(self, msg_id: str, t: float) -> None:
        self.delivered.setdefault(msg_id, t)
        waiter = self.ack_waiters.pop(msg_id, None)
        if waiter is not None:
            waiter.set()

    def bump(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


def _instrument(sb: Any, watch: _Watch) -> None:
    """Wrap the host's own router objects: record sandbox-in, ack and receipt times."""
    router = sb.core.router
    queues = router.queues
    push, ack, on_receipt = queues.push, queues.ack, router.on_receipt

    def timed_push(key: Any, node: Any) -> None:
        push(key, node)
        if node.tag == "message":
            watch.sandbox_in.setdefault(str(node.attr("id")), time.monotonic())

    def timed_ack(key: Any, node: Any) -> Any:
        found = ack(key, node)
        if found is not None and found.tag == "message":
            msg_id = str(found.attr("id"))
            watch.acked[msg_id] = time.monotonic()
            watch.deliver(msg_id, watch.acked[msg_id])
        return found

    def timed_receipt(sender: Any, node: Any, t: str) -> Any:
        kind = node.attr("type")
        if kind in (None, "inactive"):
            now = time.monotonic()
            listed = node.child("list")
            items = listed.children("item") if listed is not None else []
            for msg_id in [node.attr("id"), *(item.attr("id") for item in items)]:
                watch.deliver(str(msg_id), now)
        return on_receipt(sender, node, t)

    queues.push = timed_push
    queues.ack = timed_ack
    router.on_receipt = timed_receipt


def _instrument_contact(contact: Any, watch: _Watch) -> None:
    """Wrap one contact's ``receive``: record when it decrypted (or failed) a message."""
    receive = contact.receive
    log = watch.arrivals.setdefault(contact.jid, [])

    def timed_receive(node: Any, now_ms: int) -> Any:
        before = len(contact.messages)
        answer = receive(node, now_ms)
        t = time.monotonic()
        for m in contact.messages[before:]:
            log.append((m.id, t, m.text, m.error))
        if node.tag == "receipt" and node.attr("type") == "retry":
            watch.retry_receipts[contact.jid] = watch.retry_receipts.get(contact.jid, 0) + 1
        if len(contact.messages) > before:
            watch.bump()
        return answer

    contact.receive = timed_receive


async def _serve_host(seconds: float) -> None:
    from sandbox.server import open_sandbox

    watch = _Watch()
    async with open_sandbox() as sb, trio.open_nursery() as nursery:
        _instrument(sb, watch)

        def send(contact: str, to: str, text: str) -> str:
            msg_id: str = sb.contact_send(contact, to, text)
            return msg_id

        async def wait_acked(ids: list[str], limit: float) -> None:
            with trio.fail_after(limit):
                for msg_id in ids:
                    if msg_id not in watch.delivered:
                        waiter = watch.ack_waiters.setdefault(msg_id, trio.Event())
                        await waiter.wait()

        async def answer(request: dict[str, Any]) -> dict[str, Any]:
            op = request.get("op")
            if op == "scan":
                phone = sb.phone_of(request["user"]) if request.get("user") else sb.phone
                with trio.fail_after(60):
                    linked = await phone.scan(str(request["qr"]))
                return {"ok": True, "jid": linked.jid}
            if op == "new_phone":
                phone = sb.new_phone()
                return {"ok": True, "user": phone.user}
            if op == "contacts":
                jids = []
                for _ in range(int(request.get("count", 1))):
                    contact = sb.new_contact(request.get("name"))
                    _instrument_contact(contact, watch)
                    jids.append(contact.jid)
                return {"ok": True, "jids": jids}
            if op == "paced":
                ids = []
                for i in range(int(request["count"])):
                    msg_id = send(request["contact"], request["to"], f"light {i}")
                    ids.append(msg_id)
                    await wait_acked([msg_id], 30)
                    await trio.sleep(float(request.get("interval", 0.01)))
                return {"ok": True, "ids": ids}
            if op == "burst":
                started, cpu = time.monotonic(), time.process_time()
                ids = [
                    send(request["contact"], request["to"], f"burst {i}")
                    for i in range(int(request["count"]))
                ]
                encrypted = time.monotonic()
                await wait_acked(ids, float(request.get("limit", 120)))
                busy = (time.process_time() - cpu) / (time.monotonic() - started)
                return {
                    "ok": True,
                    "ids": ids,
                    "started": started,
                    "encrypted": encrypted,
                    "host_cpu_share": busy,
                }
            if op == "times":
                ids = request["ids"]
                return {
                    "ok": True,
                    "sandbox_in": [watch.sandbox_in.get(i) for i in ids],
                    "acked": [watch.acked.get(i) for i in ids],
                    "delivered": [watch.delivered.get(i) for i in ids],
                }
            if op == "wait_arrivals":
                log = watch.arrivals.setdefault(request["contact"], [])
                with trio.fail_after(float(request.get("limit", 60))):
                    while len(log) < int(request["count"]):
                        await watch.changed.wait()
                retries = watch.retry_receipts.get(request["contact"], 0)
                return {"ok": True, "arrivals": log, "retry_receipts": retries}
            if op == "stats":
                return {"ok": True, **dataclasses.asdict(sb.statistics())}
            return {"ok": False, "error": f"unknown op {op!r}"}

        await serve_admin(sb, answer, seconds, nursery)


# --- the host (parent side) ---------------------------------------------------------------


@dataclass(frozen=True)
class Host:
    url: str
    root: str
    port: int

    async def __call__(self, op: str, limit: float = STEP_LIMIT, **request: Any) -> Any:
        return await admin(self.port, {"op": op, **request}, limit=limit)


async def start_host(nursery: trio.Nursery) -> tuple[Host, trio.Process]:
    process = await trio.lowlevel.open_process(
        [PYTHON, "-m", "bench.messages", "host", "1800"], stdout=subprocess.PIPE, cwd=REPO
    )
    lines = JsonLines(process)
    with trio.fail_after(60):
        info = await lines.next()
    if info is None:
        raise RuntimeError("the sandbox host exited before printing its address")
    return Host(info["url"], info["root"], int(info["admin"])), process


# --- the two bots ----------------------------------------------------------------------


@dataclass
class Bot:
    """What the workload needs of a side."""

    name: str
    user: str
    events: dict[str, float]
    undecryptable: list[str]
    send_many: Callable[[str, int, str], Awaitable[tuple[float, float]]]
    first_sends: Callable[[list[str]], Awaitable[list[tuple[float, float]]]]
    arrived: Arrivals


class Arrivals:
    """Wakes whoever waits for a message event (``wait`` returns after the next one)."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def bump(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class _Discard(io.StringIO):
    """A text sink for the runtime's logs (the bench reads events, not logs)."""

    def write(self, text: str) -> int:
        return len(text)


async def wait_events(bot: Bot, ids: Sequence[str], limit: float = STEP_LIMIT) -> None:
    with trio.fail_after(limit):
        while any(i not in bot.events for i in ids):
            await bot.arrived.wait()


def user_jid(jid: str) -> str:
    user = jid.split("@", 1)[0].split(":", 1)[0]
    return f"{user}@s.whatsapp.net"


@asynccontextmanager
async def ours_bot(host: Host, tmp: Path) -> AsyncIterator[Bot]:
    """Our runtime in this process (native store in ``tmp``), paired and open."""
    from runtime.app import Config, open_runtime
    from runtime.log import make_logger

    events: dict[str, float] = {}
    undecryptable: list[str] = []
    arrived = Arrivals()

    def on_event(event: dict[str, Any]) -> None:
        upsert = event.get("messages_upsert")
        if isinstance(upsert, dict):
            t = time.monotonic()
            for m in upsert.get("messages") or []:
                events.setdefault(str(m["key"]["id"]), t)
                if m.get("undecryptable"):
                    undecryptable.append(str(m["key"]["id"]))
            arrived.bump()

    with _Discard() as sink:
        async with trio.open_nursery() as nursery:
            config = Config(
                auth=tmp / "ours",
                ws_url=host.url,
                server_root_key=host.root,
                on_qr=lambda qr: nursery.start_soon(partial(host, "scan", qr=qr)),
            )
            async with open_runtime(
                config, log=make_logger("json", sink), subscribe=on_event
            ) as rt:
                await rt.wait_connected(STEP_LIMIT)
                me = str(((await rt.auth_state()).me or {})["id"])

                async def send_many(to: str, count: int, prefix: str) -> tuple[float, float]:
                    t0 = time.monotonic()
                    for i in range(count):
                        await rt.send_message(to, {"text": f"{prefix}{i}"})
                    return t0, time.monotonic()

                async def first_sends(tos: list[str]) -> list[tuple[float, float]]:
                    times = []
                    for to in tos:
                        t0 = time.monotonic()
                        await rt.send_message(to, {"text": "first"})
                        times.append((t0, time.monotonic()))
                    return times

                yield Bot(
                    "ours", user_jid(me), events, undecryptable, send_many, first_sends, arrived
                )
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def baileys_bot(host: Host, peer: Path, tmp: Path) -> AsyncIterator[Bot]:
    """Baileys v7 under node (its own account, ``useMultiFileAuthState``), paired and open."""
    phone = await host("new_phone")
    process = await trio.lowlevel.open_process(
        ["node", str(NODE_SCRIPT), str(peer), host.url, str(tmp / "baileys")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=str(peer),
    )
    lines = JsonLines(process)
    events: dict[str, float] = {}
    undecryptable: list[str] = []
    replies: dict[str, trio.MemorySendChannel[dict[str, Any]]] = {}
    opened = trio.Event()
    me: list[str] = []
    arrived = Arrivals()

    async def read(nursery: trio.Nursery) -> None:
        while True:
            line = await lines.next()
            if line is None:
                break
            event = line.get("event")
            if event == "qr":
                nursery.start_soon(partial(host, "scan", qr=line["qr"], user=phone["user"]))
            elif event == "open":
                me.append(str(line["me"]))
                opened.set()
            elif event == "message":
                events.setdefault(str(line["id"]), float(line["t"]))
                arrived.bump()
                if line.get("stub") == CIPHERTEXT_STUB:
                    undecryptable.append(str(line["id"]))
            elif event in ("sent_many", "first_sends") and event in replies:
                await replies[event].send(line)
            elif event == "error":
                for channel in list(replies.values()):
                    await channel.send(line)

    async def command(reply: str, **request: Any) -> dict[str, Any]:
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        replies[reply] = send
        try:
            assert process.stdin is not None
            await process.stdin.send_all(json.dumps(request).encode() + b"\n")
            with trio.fail_after(STEP_LIMIT):
                line = await receive.receive()
        finally:
            del replies[reply]
        if line.get("event") == "error":
            raise RuntimeError(f"Baileys: {line.get('message')}")
        return line

    async def send_many(to: str, count: int, prefix: str) -> tuple[float, float]:
        line = await command("sent_many", op="send_many", to=to, count=count, prefix=prefix)
        return float(line["t0"]), float(line["t1"])

    async def first_sends(tos: list[str]) -> list[tuple[float, float]]:
        line = await command("first_sends", op="first_sends", to=tos)
        return [(float(t0), float(t1)) for _, t0, t1, _ in line["times"]]

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, nursery)
            with trio.fail_after(STEP_LIMIT):
                await opened.wait()
            await trio.sleep(1.0)  # Baileys' post-login queries settle
            yield Bot(
                "baileys", user_jid(me[0]), events, undecryptable, send_many, first_sends, arrived
            )
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await process.wait()


# --- the workload ------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    light: int = LIGHT
    burst: int = BURST
    out: int = OUT
    first: int = FIRST
    rounds: int = ROUNDS


def stats_ms(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {"p50": percentile(ms, 0.5), "p99": percentile(ms, 0.99), "n": len(ms)}


def median(values: list[float]) -> float:
    return percentile(values, 0.5)


async def warm(host: Host, bot: Bot) -> str:
    """A contact for ``bot``, with sessions both ways (20 texts in, 5 out); its JID."""
    (contact,) = (await host("contacts", name="Bench"))["jids"]
    warm_ids = (await host("paced", contact=contact, to=bot.user, count=WARM_IN, interval=0))["ids"]
    await wait_events(bot, warm_ids)
    await bot.send_many(contact, WARM_OUT, "warm ")
    await host("wait_arrivals", contact=contact, count=WARM_OUT)
    return str(contact)


@dataclass
class Samples:
    """One side's measurements, summed over rounds."""

    light: list[float] = field(default_factory=list)
    light_receipt: list[float] = field(default_factory=list)
    burst_latency: list[float] = field(default_factory=list)
    burst_acked_per_s: list[float] = field(default_factory=list)
    burst_events_per_s: list[float] = field(default_factory=list)
    host_encrypt_s: list[float] = field(default_factory=list)
    host_cpu_share: list[float] = field(default_factory=list)
    out_per_s: list[float] = field(default_factory=list)
    out_calls_per_s: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    first_call: list[float] = field(default_factory=list)
    errors_at_contacts: int = 0
    retry_receipts: int = 0
    burst_messages: int = 0


async def light_phase(host: Host, bot: Bot, contact: str, n: int, into: Samples) -> None:
    """``n`` texts one at a time (the next 10 ms after the previous was acknowledged)."""
    ids = (await host("paced", contact=contact, to=bot.user, count=n, interval=0.01))["ids"]
    await wait_events(bot, ids)
    times = await host("times", ids=ids)
    into.light += [bot.events[i] - t for i, t in zip(ids, times["sandbox_in"], strict=True)]
    into.light_receipt += [
        d - t for t, d in zip(times["sandbox_in"], times["delivered"], strict=True)
    ]


async def burst_phase(host: Host, bot: Bot, contact: str, n: int, into: Samples) -> None:
    """``n`` texts at once: decrypted, committed and acknowledged per second."""
    burst = await host("burst", contact=contact, to=bot.user, count=n, limit=STEP_LIMIT)
    ids = burst["ids"]
    await wait_events(bot, ids)
    times = await host("times", ids=ids)
    first_in = min(times["sandbox_in"])
    into.burst_messages += len(ids)
    into.burst_acked_per_s.append(len(ids) / (max(times["delivered"]) - first_in))
    into.burst_events_per_s.append(len(ids) / (max(bot.events[i] for i in ids) - first_in))
    into.burst_latency += [bot.events[i] - t for i, t in zip(ids, times["sandbox_in"], strict=True)]
    into.host_encrypt_s.append(burst["encrypted"] - burst["started"])
    into.host_cpu_share.append(burst["host_cpu_share"])


async def out_phase(host: Host, bot: Bot, contact: str, n: int, into: Samples) -> None:
    """``n`` texts to the contact, one after the other, until the contact decrypted them."""
    before = len((await host("wait_arrivals", contact=contact, count=0))["arrivals"])
    t0, t1 = await bot.send_many(contact, n, "out ")
    arrivals = (await host("wait_arrivals", contact=contact, count=before + n))["arrivals"]
    into.out_per_s.append(n / (max(t for _, t, _, _ in arrivals[before:]) - t0))
    into.out_calls_per_s.append(n / (t1 - t0))
    into.errors_at_contacts += sum(1 for *_, error in arrivals[before:] if error)


async def first_phase(host: Host, bot: Bot, n: int, into: Samples) -> None:
    """One text to each of ``n`` fresh contacts (usync, bundle, pkmsg), one after the other."""
    fresh = (await host("contacts", count=n))["jids"]
    calls = await bot.first_sends(fresh)
    for jid, (c0, c1) in zip(fresh, calls, strict=True):
        reply = await host("wait_arrivals", contact=jid, count=1)
        got = reply["arrivals"]
        into.retry_receipts += reply["retry_receipts"]
        into.first.append(got[0][1] - c0)
        into.first_call.append(c1 - c0)
        into.errors_at_contacts += sum(1 for *_, error in got if error)


def summary(samples: Samples, bot: Bot, counts: Counts) -> dict[str, Any]:
    return {
        "in_light_latency_ms": stats_ms(samples.light),
        "in_light_ack_ms": stats_ms(samples.light_receipt),
        "in_burst": {
            "messages": samples.burst_messages,
            "host_encrypt_s": median(samples.host_encrypt_s),
            "host_cpu_share": median(samples.host_cpu_share),
            "acked_per_s": median(samples.burst_acked_per_s),
            "events_per_s": median(samples.burst_events_per_s),
            "acked_per_s_rounds": samples.burst_acked_per_s,
            "latency_ms": stats_ms(samples.burst_latency),
        },
        "out": {
            "messages": counts.out * counts.rounds,
            "per_s": median(samples.out_per_s),
            "calls_per_s": median(samples.out_calls_per_s),
            "per_s_rounds": samples.out_per_s,
        },
        "first_send_ms": stats_ms(samples.first),
        "first_send_call_ms": stats_ms(samples.first_call),
        "undecryptable": len(bot.undecryptable),
        "errors_at_contacts": samples.errors_at_contacts,
        "retry_receipts_at_contacts": samples.retry_receipts,
    }


async def measure(counts: Counts, with_baileys: bool, tmp: Path) -> dict[str, Any]:
    """Both bots open on one host; each phase runs for one side then the other, per round
    (the order alternates), so drift on a shared machine hits both."""
    peer, why = baileys_root() if with_baileys else (None, "--no-baileys")
    async with trio.open_nursery() as nursery:
        host, process = await start_host(nursery)
        try:
            async with AsyncExitStack() as stack:
                bots = [await stack.enter_async_context(ours_bot(host, tmp))]
                if peer is not None:
                    bots.append(await stack.enter_async_context(baileys_bot(host, peer, tmp)))
                contacts = {bot.name: await warm(host, bot) for bot in bots}
                samples = {bot.name: Samples() for bot in bots}
                for round_ in range(counts.rounds):
                    order = bots if round_ % 2 == 0 else bots[::-1]
                    phases: list[Callable[[Bot], Awaitable[None]]] = [
                        lambda b: light_phase(
                            host, b, contacts[b.name], counts.light, samples[b.name]
                        ),
                        lambda b: burst_phase(
                            host, b, contacts[b.name], counts.burst, samples[b.name]
                        ),
                        lambda b: out_phase(host, b, contacts[b.name], counts.out, samples[b.name]),
                        lambda b: first_phase(host, b, counts.first, samples[b.name]),
                    ]
                    for phase in phases:
                        for bot in order:
                            await phase(bot)
                for bot in bots:
                    reply = await host("wait_arrivals", contact=contacts[bot.name], count=0)
                    samples[bot.name].retry_receipts += reply["retry_receipts"]
                result: dict[str, Any] = {
                    bot.name: summary(samples[bot.name], bot, counts) for bot in bots
                }
        finally:
            process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await process.wait()
    result.setdefault("baileys", {"skipped": why})
    return {"counts": dataclasses.asdict(counts), **result}


# --- the table ----------------------------------------------------------------------------


def rows(result: dict[str, Any]) -> list[tuple[str, float, float | None, bool]]:
    """(label, ours, Baileys or None, higher is better)."""
    ours, theirs = result["ours"], result["baileys"]
    has = "skipped" not in theirs

    def pick(*path: str) -> tuple[float, float | None]:
        a: Any = ours
        b: Any = theirs if has else None
        for key in path:
            a = a[key]
            b = b[key] if b is not None else None
        return float(a), (float(b) if b is not None else None)

    return [
        ("in: light load sandbox-in -> event p50 (ms)", *pick("in_light_latency_ms", "p50"), False),
        ("in: light load sandbox-in -> event p99 (ms)", *pick("in_light_latency_ms", "p99"), False),
        ("in: light load sandbox-in -> receipt p50 (ms)", *pick("in_light_ack_ms", "p50"), False),
        ("in: burst, decrypted+committed+receipted /s", *pick("in_burst", "acked_per_s"), True),
        ("in: burst, events /s", *pick("in_burst", "events_per_s"), True),
        ("in: burst sandbox-in -> event p50 (ms)", *pick("in_burst", "latency_ms", "p50"), False),
        ("in: burst sandbox-in -> event p99 (ms)", *pick("in_burst", "latency_ms", "p99"), False),
        ("out: existing session, at the contact /s", *pick("out", "per_s"), True),
        ("out: existing session, calls returned /s", *pick("out", "calls_per_s"), True),
        ("out: first send to a new contact p50 (ms)", *pick("first_send_ms", "p50"), False),
        ("out: first send, p99 (ms)", *pick("first_send_ms", "p99"), False),
        ("out: first send, call p50 (ms)", *pick("first_send_call_ms", "p50"), False),
    ]


def print_table(result: dict[str, Any]) -> None:
    print(f"{'messages':46} {'ours':>9} {'Baileys':>9} {'ours/B':>7}")
    for label, a, b, _ in rows(result):
        shown = f"{b:>9.1f}" if b is not None else f"{'-':>9}"
        ratio = f"{a / b:>7.2f}" if b else f"{'-':>7}"
        print(f"{label:46} {a:>9.1f} {shown} {ratio}")
    for side in ("ours", "baileys"):
        figures = result[side]
        if "skipped" in figures:
            print(f"Baileys: skipped: {figures['skipped']}")
            continue
        print(
            f"{side}: undecryptable {figures['undecryptable']}, errors at the contacts "
            f"{figures['errors_at_contacts']}, host encrypt of the burst "
            f"{figures['in_burst']['host_encrypt_s'] * 1000:.0f} ms, the host's CPU during "
            f"the burst {figures['in_burst']['host_cpu_share'] * 100:.0f} % of one core"
        )
    c = result["counts"]
    print(
        f"counts: light {c['light']}, burst {c['burst']}, out {c['out']}, first sends "
        f"{c['first']}; ratios ours/Baileys (rates: higher is better; times: lower)"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run both sides on one sandbox host, print the table, return the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.messages")
    parser.add_argument("--light", type=int, default=LIGHT)
    parser.add_argument("--burst", type=int, default=BURST)
    parser.add_argument("--out", type=int, default=OUT)
    parser.add_argument("--first", type=int, default=FIRST)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--no-baileys", action="store_true")
    args = parser.parse_args(list(argv) if argv is not None else [])
    counts = Counts(args.light, args.burst, args.out, args.first, args.rounds)
    facts = machine_facts()
    print_machine(facts)
    with tempfile.TemporaryDirectory(prefix="bench-messages-") as tmp:
        result = trio.run(measure, counts, not args.no_baileys, Path(tmp))
    print_table(result)
    return {"machine": facts, **result}


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "host":
        trio.run(_serve_host, float(sys.argv[2]) if len(sys.argv) > 2 else 1800.0)
    else:
        main(sys.argv[1:])
