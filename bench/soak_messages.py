"""Crash soak for messages: SIGKILL an echo bot at random moments while a contact streams to it.

``python -m bench.soak_messages [--kills N] [--seed S] [--rate R]`` (also
``python -m bench.soak --messages ...``; default 1,000 kills; not part of
``make bench``: this module has no ``main``). The CI variant is
tests/soak/test_soak_messages.py (30 kills).

The sandbox runs in THIS process (``open_sandbox``, real loopback websockets), so
it, its offline queues and its simulated contact survive every kill. One auth
folder (native backend) is paired once; then bench/soak_messages_child.py is
started on it again and again and SIGKILLed at a random moment anchored to what
it printed: its spawn (start-up, store open, login, the offline backlog arriving),
its open (the backlog being decrypted and acked), or its k-th received message
(between the durable commit and the receipt/ack, or while the echo is encrypted
and sent). All the while a simulated contact sends numbered texts to the bot at
``--rate`` messages/s on average (in bursts), whether the bot is up or not; the
bot answers each text with ``echo:<text>``.

At the end the contact stops, one last run is not killed and drains the queue.
Then over all runs:

- **lost**: ids the contact sent that no run emitted (``messages_upsert``) although
  the sandbox no longer holds them for the bot (acked); an id still queued at the
  end is counted as ``stuck`` instead;
- **undecryptable**: message events carrying ``undecryptable``;
- **retry receipts**: retry receipts the contact got from the bot (the bot could
  not decrypt something) and those the contact sent (a reply it could not read);
- **replies**: every reply the bot reported sent (server-acked) must be at the
  contact, decrypted, with the right text; any contact message with an error
  counts as a failure.

Prints the tally and writes bench/results/soak_messages.json.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

from bench._common import PYTHON, REPO, JsonLines, machine_facts, print_machine, wall
from bench.soak_messages_child import ECHO

RESULTS = Path(__file__).resolve().parent / "results" / "soak_messages.json"
DEFAULT_KILLS = 1000
DEFAULT_RATE = 40.0
STEP_LIMIT = 60.0
DRAIN_LIMIT = 60.0
DRAIN_IDLE = 5.0
FINAL_RUNS = 6


@dataclass
class MessageTally:
    """What the soak found; ``lost``, ``undecryptable``, the retries and failures must be 0."""

    kills: int = 0
    runs: int = 0
    sent: int = 0
    emitted: int = 0
    emitted_events: int = 0
    duplicates: int = 0
    most_again_in_a_run: int = 0
    lost: int = 0
    stuck: int = 0
    undecryptable: int = 0
    retry_receipts_from_bot: int = 0
    retry_receipts_from_contact: int = 0
    replies_sent: int = 0
    replies_ok: int = 0
    reply_failures: int = 0
    replies_unconfirmed: int = 0
    send_failures: int = 0
    failed_runs: int = 0
    drain_runs_extra: int = 0
    messages_routed: int = 0
    stanzas_dropped: int = 0
    kills_by_anchor: dict[str, int] = field(default_factory=dict)
    kills_by_stage: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    echo_problems: bool = field(default=False, repr=False)

    def problem(self, text: str) -> None:
        if self.echo_problems:
            print(f"  problem: {text}", flush=True)
        if len(self.problems) < 50:
            self.problems.append(text)

    @property
    def bad(self) -> int:
        """The sum of everything that must stay 0."""
        return (
            self.lost
            + self.stuck
            + self.undecryptable
            + self.retry_receipts_from_bot
            + self.retry_receipts_from_contact
            + self.reply_failures
            + self.failed_runs
        )


@dataclass
class World:
    """The soak's shared state: the sandbox, the contact, what was sent and seen."""

    sb: Any
    contact: Any
    auth: Path
    tally: MessageTally
    rng: random.Random
    bot_user: str = ""
    bot_device: str = ""
    sent: dict[str, str] = field(default_factory=dict)  # id -> text
    seen: dict[str, int] = field(default_factory=dict)  # id -> times emitted
    replies: dict[str, str] = field(default_factory=dict)  # reply id -> id it echoes
    opens: int = 0  # runs that reached open
    logs: Path | None = None


# --- one run --------------------------------------------------------------------------


@dataclass
class RunOutcome:
    stage: str = "start"
    opened: bool = False
    messages: int = 0
    again: int = 0
    ended: str | None = None
    exit: int | None = None


async def run_child(
    world: World, kill: tuple[str, float, int] | None, until: trio.Event | None = None
) -> RunOutcome:
    """Run the child once: SIGKILL it per ``kill`` (anchor, delay, k), or SIGINT once ``until``."""
    world.tally.runs += 1
    argv = [
        PYTHON,
        "-m",
        "bench.soak_messages_child",
        "--auth",
        str(world.auth),
        "--url",
        world.sb.url,
        "--key",
        world.sb.root_public_key.hex(),
    ]
    if world.logs is not None:
        argv += ["--log", str(world.logs / f"run{world.tally.runs:05d}.log")]
    process = await trio.lowlevel.open_process(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO
    )
    lines = JsonLines(process)
    outcome = RunOutcome()
    reached = {"start": trio.Event(), "open": trio.Event(), "message": trio.Event()}
    reached["start"].set()
    k = kill[2] if kill is not None else 0
    done = trio.Event()

    async def read(nursery: trio.Nursery) -> None:
        while True:
            line = await lines.next()
            if line is None:
                break
            record(world, line, outcome, nursery)
            if outcome.opened:
                reached["open"].set()
            if outcome.messages >= k > 0:
                reached["message"].set()
        done.set()
        for event in reached.values():
            event.set()

    try:
        with trio.fail_after(STEP_LIMIT + DRAIN_LIMIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read, nursery)
                if kill is None:
                    await reached["open"].wait()
                    if until is not None:
                        await until.wait()
                else:
                    anchor, delay, _ = kill
                    with trio.move_on_after(STEP_LIMIT / 4):
                        await reached[anchor].wait()
                    await trio.sleep(delay)
                if process.returncode is None:
                    process.send_signal(signal.SIGKILL if kill else signal.SIGINT)
                await process.wait()
                await done.wait()
                nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
    outcome.exit = process.returncode
    return outcome


def record(world: World, line: dict[str, Any], outcome: RunOutcome, nursery: trio.Nursery) -> None:
    """Fold one line the child printed into the soak's state."""
    event = line.get("event")
    tally = world.tally
    if event == "qr":
        outcome.stage = "pairing"
        nursery.start_soon(scan, world, str(line["qr"]))
    elif event == "open":
        outcome.opened = True
        outcome.stage = "open"
        world.opens += 1
        world.bot_device = str(line.get("me") or world.bot_device)
    elif event == "message":
        outcome.messages += 1
        outcome.stage = "messages"
        msg_id = str(line.get("id"))
        tally.emitted_events += 1
        if line.get("undecryptable"):
            tally.undecryptable += 1
            tally.problem(f"run {tally.runs}: {msg_id} undecryptable: {line['undecryptable']}")
        if msg_id in world.seen:
            tally.duplicates += 1
            outcome.again += 1
            tally.most_again_in_a_run = max(tally.most_again_in_a_run, outcome.again)
        world.seen[msg_id] = world.seen.get(msg_id, 0) + 1
        expected = world.sent.get(msg_id)
        if expected is not None and line.get("text") != expected:
            tally.problem(f"run {tally.runs}: {msg_id} text {line.get('text')!r} != {expected!r}")
    elif event == "reply":
        world.replies[str(line["id"])] = str(line["of"])
    elif event == "send_failed":
        tally.send_failures += 1
    elif event == "ended":
        outcome.ended = str(line.get("reason"))


async def scan(world: World, qr: str) -> None:
    with trio.fail_after(STEP_LIMIT):
        await world.sb.phone.scan(qr)


# --- the stream -------------------------------------------------------------------------


async def stream(world: World, rate: float, scope: trio.CancelScope) -> None:
    """The contact sends numbered texts to the bot, in bursts, ``rate``/s on average."""
    n = 0
    with scope:
        while True:
            burst = world.rng.choice((1, 1, 1, 2, 3, 5, 8))
            for _ in range(burst):
                n += 1
                text = f"m{n}"
                msg_id = world.sb.contact_send(world.contact.jid, world.bot_user, text)
                world.sent[msg_id] = text
            await trio.sleep(world.rng.expovariate(rate / burst) if rate > 0 else 3600)


# --- the soak ----------------------------------------------------------------------------


def kill_moment(rng: random.Random) -> tuple[str, float, int]:
    """(anchor, delay after it, k for the message anchor)."""
    roll = rng.random()
    if roll < 0.3:
        return ("start", rng.uniform(0.0, 1.0), 0)
    if roll < 0.6:
        return ("open", rng.uniform(0.0, 0.3), 0)
    return ("message", rng.choice((0.0, 0.0, rng.uniform(0.0, 0.02))), rng.randint(1, 25))


async def soak(
    kills: int, seed: int, rate: float, workdir: Path, progress: bool, keep_logs: bool = False
) -> MessageTally:
    from sandbox.server import open_sandbox

    tally = MessageTally(echo_problems=progress)
    rng = random.Random(seed)
    async with open_sandbox() as sb, trio.open_nursery() as nursery:
        contact = sb.new_contact("Streamer")
        world = World(sb, contact, workdir / "auth", tally, rng)
        if keep_logs:
            world.logs = workdir / "logs"
            world.logs.mkdir()
        world.bot_user = sb.core.registry.account(sb.phone.user).jid
        # Pair once (not killed), so every kill lands in a paired session.
        paired = trio.Event()
        paired.set()
        first = await run_child(world, None, paired)
        if not first.opened:
            raise RuntimeError(f"the first run never opened: {first}")
        streaming = trio.CancelScope()
        nursery.start_soon(stream, world, rate, streaming)
        while tally.kills < kills:
            anchor, delay, k = kill_moment(rng)
            outcome = await run_child(world, (anchor, delay, k))
            if outcome.exit is not None and outcome.exit >= 0:
                tally.failed_runs += 1
                tally.problem(f"run {tally.runs} exited {outcome.exit} by itself: {outcome}")
            tally.kills += 1
            tally.kills_by_anchor[anchor] = tally.kills_by_anchor.get(anchor, 0) + 1
            tally.kills_by_stage[outcome.stage] = tally.kills_by_stage.get(outcome.stage, 0) + 1
            if progress and tally.kills % 50 == 0:
                print(
                    f"  {tally.kills} kills: sent {len(world.sent)}, emitted {len(world.seen)}, "
                    f"undecryptable {tally.undecryptable}",
                    flush=True,
                )
        streaming.cancel()
        # Drain: a run that is not killed, stopped once everything was emitted and the
        # bot's queue is empty, or once nothing moved for a while. What a connection
        # left un-acked the sandbox delivers again at the next login: a run more.
        for attempt in range(FINAL_RUNS):
            drained = trio.Event()
            nursery.start_soon(watch_drain, world, drained)
            final = await run_child(world, None, drained)
            if not final.opened or final.exit not in (0, -signal.SIGINT):
                tally.failed_runs += 1
                tally.problem(f"final run: {final}")
            await trio.sleep(0.2)  # receipts in flight reach the contact
            if not pending_ids(world):
                break
            tally.drain_runs_extra += 1
            tally.problem(
                f"final run {attempt + 1} stopped with {len(pending_ids(world))} stanzas "
                "still queued for the bot (left un-acked by its connection)"
            )
        settle(world)
        nursery.cancel_scope.cancel()
    return tally


async def watch_drain(world: World, drained: trio.Event) -> None:
    """Set ``drained`` once every sent id was emitted and the bot's queue is empty, or once
    nothing moved for ``DRAIN_IDLE`` s since the run opened, or after ``DRAIN_LIMIT`` s.

    The idle time counts from the run's open, not from its spawn: under load a child
    can take longer than ``DRAIN_IDLE`` to start, and was then stopped right after its
    open with the whole backlog still queued."""
    opens = world.opens
    last = (-1, -1, -1)
    idle_since = trio.current_time()
    with trio.move_on_after(DRAIN_LIMIT):
        while not drained.is_set():
            missing = [i for i in world.sent if i not in world.seen]
            pending = pending_ids(world)
            if not missing and not pending and replies_settled(world):
                break
            now = (len(world.seen), len(pending), world.opens)
            if now != last:
                last, idle_since = now, trio.current_time()
            elif world.opens > opens and trio.current_time() - idle_since > DRAIN_IDLE:
                break  # nothing moves: what is queued waits for the next login
            await trio.sleep(0.05)
    drained.set()


def replies_settled(world: World) -> bool:
    """Every echo the bot reported is at the contact (it is routed synchronously)."""
    at_contact = {m.id for m in world.contact.messages}
    return all(reply in at_contact for reply in world.replies)


def pending_ids(world: World) -> list[str]:
    if not world.bot_device:
        return []
    return [str(node.attr("id")) for node in world.sb.core.pending(world.bot_device)]


def settle(world: World) -> None:
    """Compare what was sent, emitted, replied and received; fill in the tally."""
    tally = world.tally
    tally.sent = len(world.sent)
    tally.emitted = sum(1 for i in world.sent if i in world.seen)
    queued = set(pending_ids(world))
    for msg_id, text in world.sent.items():
        if msg_id in world.seen:
            continue
        if msg_id in queued:
            tally.stuck += 1
            tally.problem(f"{msg_id} ({text}) still queued for the bot at the end")
        else:
            tally.lost += 1
            tally.problem(f"{msg_id} ({text}) acked to the sandbox but never emitted")
    contact = world.contact
    tally.retry_receipts_from_bot = sum(1 for r in contact.receipts if r.type == "retry")
    by_id = {m.id: m for m in contact.messages}
    tally.retry_receipts_from_contact = sum(1 for m in contact.messages if m.error)
    for m in contact.messages:
        if m.error:
            tally.problem(f"reply {m.id} did not decrypt at the contact: {m.error}")
    tally.replies_sent = len(world.replies)
    for reply, of in world.replies.items():
        got = by_id.get(reply)
        want = ECHO + world.sent.get(of, "?")
        if got is None or got.error or got.text != want:
            tally.reply_failures += 1
            tally.problem(f"reply {reply} to {of}: at the contact {got}")
        else:
            tally.replies_ok += 1
    tally.replies_unconfirmed = sum(
        1 for m in contact.messages if m.id not in world.replies and not m.error
    )
    stats = world.sb.statistics()
    tally.messages_routed = stats.messages_routed
    tally.stanzas_dropped = stats.stanzas_dropped


async def backlog(count: int, workdir: Path) -> dict[str, int]:
    """A bot paired, stopped; ``count`` texts sent meanwhile; ONE run (not killed) drains.

    Returns what that one connection emitted and what it left queued (un-acked).
    """
    from sandbox.server import open_sandbox

    async with open_sandbox() as sb, trio.open_nursery() as nursery:
        contact = sb.new_contact("Backlog")
        world = World(sb, contact, workdir / "auth", MessageTally(), random.Random(0))
        world.bot_user = sb.core.registry.account(sb.phone.user).jid
        done = trio.Event()
        done.set()
        await run_child(world, None, done)
        for n in range(count):
            world.sent[sb.contact_send(contact.jid, world.bot_user, f"b{n}")] = f"b{n}"
        queued = len(pending_ids(world))
        drained = trio.Event()
        nursery.start_soon(watch_drain, world, drained)
        await run_child(world, None, drained)
        left = set(pending_ids(world))
        figures = {
            "sent": count,
            "queued_at_login": queued,
            "emitted": sum(1 for i in world.sent if i in world.seen),
            # The contact's messages still queued; receipts for the bot's replies are
            # counted apart (one sometimes waits for the next login: see the note).
            "left_queued": sum(1 for i in world.sent if i in left),
            "receipts_left_queued": sum(1 for i in left if i not in world.sent),
        }
        nursery.cancel_scope.cancel()
    return figures


def run_backlog(count: int) -> dict[str, int]:
    with tempfile.TemporaryDirectory(prefix="soak-backlog-") as tmp:
        figures: dict[str, int] = trio.run(backlog, count, Path(tmp))
    return figures


def print_summary(tally: MessageTally, seconds: float) -> None:
    print(f"kills:                    {tally.kills} ({tally.runs} runs)")
    print(f"messages sent by contact: {tally.sent}")
    print(
        f"emitted (distinct):       {tally.emitted}  (events {tally.emitted_events}, "
        f"duplicates {tally.duplicates}, at most {tally.most_again_in_a_run} in one run)"
    )
    print(f"lost:                     {tally.lost}")
    print(f"stuck in the queue:       {tally.stuck}")
    print(f"undecryptable events:     {tally.undecryptable}")
    print(
        f"retry receipts: bot -> contact {tally.retry_receipts_from_bot}, "
        f"contact -> bot {tally.retry_receipts_from_contact}"
    )
    print(
        f"replies: {tally.replies_sent} reported sent, {tally.replies_ok} decrypted at the "
        f"contact with the right text, {tally.reply_failures} failed; "
        f"{tally.replies_unconfirmed} more arrived from runs killed before reporting them"
    )
    print(
        f"send failures (bot side, e.g. connection gone): {tally.send_failures}; "
        f"runs that ended by themselves: {tally.failed_runs}; extra final runs needed "
        f"to drain the queue: {tally.drain_runs_extra}"
    )
    print(f"kills by anchor {tally.kills_by_anchor}; by stage reached {tally.kills_by_stage}")
    print(f"{seconds:.0f} s ({seconds / max(1, tally.kills):.2f} s per kill)")
    for problem in tally.problems[:20]:
        print(f"  problem: {problem}")


def run_soak(
    kills: int,
    *,
    seed: int = 1,
    rate: float = DEFAULT_RATE,
    progress: bool = False,
    keep: Path | None = None,
) -> tuple[MessageTally, float]:
    """Run the soak in a temporary folder (or ``keep``, with logs); the tally and seconds."""
    started = wall()
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        tally = trio.run(soak, kills, seed, rate, keep, progress, True)
    else:
        with tempfile.TemporaryDirectory(prefix="soak-messages-") as tmp:
            tally = trio.run(soak, kills, seed, rate, Path(tmp), progress)
    return tally, wall() - started


def entry(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak_messages")
    parser.add_argument("--kills", type=int, default=DEFAULT_KILLS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="messages/s sent")
    parser.add_argument("--keep", type=Path, default=None, help="keep the folder and run logs")
    args = parser.parse_args(argv)
    facts = machine_facts()
    print_machine(facts)
    print(f"message soak: {args.kills} SIGKILLs, seed {args.seed}, {args.rate:g} messages/s")
    tally, seconds = run_soak(
        args.kills, seed=args.seed, rate=args.rate, progress=True, keep=args.keep
    )
    print_summary(tally, seconds)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": facts,
                "seed": args.seed,
                "rate": args.rate,
                "seconds": seconds,
                **asdict(tally),
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    print(f"results: {RESULTS.relative_to(REPO)}")
    return 1 if tally.bad else 0


if __name__ == "__main__":
    sys.exit(entry(sys.argv[1:]))
