"""Signal crypto: messages/s of the double ratchet and sender keys, ours vs libsignal-node.

Five workloads, plaintexts of ``PLAINTEXT_SIZE`` bytes:

* ``encrypt``: ``count`` 1:1 encrypts on an established session (the sender;
  ``msg``, no pending pre-key, so one symmetric chain step per message);
* ``decrypt``: the receiver decrypts those messages in order;
* ``pingpong``: ``pingpong_count`` messages A→B, B→A, ... each encrypted by one
  side and decrypted by the other, so every message turns the DH ratchet (a key
  pair and two X25519 on the receiving side); one message = one encrypt + one
  decrypt. Neither side prunes old receiving chains (libsignal-node keeps them
  all, and so do we), so a record gains a chain per turn and the rate falls as
  the conversation grows: the figure is for records growing to ``pingpong_count
  / 2`` chains;
* ``sk_encrypt``: ``sk_count`` sender-key (group) encrypts, XEdDSA-signed;
* ``sk_decrypt``: a member decrypts those in order (signature verified).

at three levels, the same on both sides:

* ``core``: records held in memory as live objects. Ours: the pure functions
  (``session_cipher.encrypt`` / ``decrypt_whisper``, ``group_cipher.encrypt`` /
  ``decrypt``) on a ``SessionRecord`` / ``SenderKeyRecord``. Node: libsignal's
  ``SessionCipher`` and Baileys' ``GroupCipher`` over a storage whose
  ``loadSession`` / ``loadSenderKey`` hand back the same live record object
  (the lowest level libsignal has: every call still goes through its async
  storage interface and job queue).
* ``stored``: the record read from and written back to its stored form around
  every message, as Baileys' ``signalStorage`` does (lib/Signal/libsignal.js): a
  session is kept as ``SessionRecord.serialize()``'s plain object and
  ``deserialize()``d on load; a sender key as ``JSON.stringify(serialize())`` in a
  Buffer. Ours: ``SessionRecord.to_plain`` / ``from_plain`` (the same object
  shape) and ``SenderKeyRecord.to_bytes`` / ``from_stored`` (the same JSON), in a
  dict. No store, no transaction.
* ``repository``: the full operation. Ours: ``SignalRepository`` over
  ``use_memory_auth_state`` (one store transaction per message, LID resolution,
  identity checks), in trio. Node: Baileys' ``makeLibSignalRepository`` over an
  in-memory ``SignalKeyStore`` (plain objects) wrapped by
  ``addTransactionCapability``, exactly as ``makeWASocket`` wires it.

Each side encrypts and decrypts its own messages (not each other's): Baileys'
group encrypt skips an iteration after the first message and keeps the skipped
key, so its records grow where ours do not (see ``actors/signal/group_cipher.py``);
that is part of what is measured. Plaintexts are checked after each phase, outside
the timing. Each level first runs once unmeasured (``warm_up``: up to 2,000 / 50 /
10 messages), on both sides: node's JIT needs it, and takes it.

Run as ``python -m bench signal`` or ``python -m bench.signal [--count N]
[--pingpong-count N] [--sk-count N] [--levels core,stored,repository]``; node runs
``bench/signal_libsignal.mjs`` in the same run. Figures and ratios are printed,
never asserted.
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:
    # Run as a script (python bench/signal.py): bench/ heads sys.path, where this file
    # shadows the `signal` module of the standard library. Run it as the module it is instead.
    import os
    import runpy
    import sys

    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runpy.run_module("bench.signal", run_name="__main__", alter_sys=True)
    sys.exit(0)

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import trio

from actors.signal import group_cipher, session_cipher
from actors.signal.crypto import SignalKeyPair, random_key_pair
from actors.signal.repository import SignalRepository
from actors.signal.sender_key_record import SenderKeyRecord
from actors.signal.session_builder import (
    LocalIdentity,
    PreKey,
    PreKeyBundle,
    SignedPreKey,
    start_outgoing,
)
from actors.signal.session_record import SessionRecord
from actors.signal.wire import parse_pre_key_message
from bench._common import baileys_root, node_version
from stores import use_memory_auth_state
from stores.keys import generate_pre_keys, sign, signal_public_key

NODE_SCRIPT = Path(__file__).resolve().parent / "signal_libsignal.mjs"
PLAINTEXT_SIZE = 100
DEFAULT_COUNT = 2000
DEFAULT_PINGPONG_COUNT = 200
DEFAULT_SK_COUNT = 100
NOW_MS = 1_760_000_000_000

ALICE_JID = "111@s.whatsapp.net"
BOB_JID = "222@s.whatsapp.net"
GROUP_JID = "120363000000000000@g.us"
ALICE = "111.0"  # Signal addresses of those JIDs
BOB = "222.0"
SENDER_KEY_NAME = f"{GROUP_JID}::111::0"

WORKLOADS = (
    ("encrypt", "1:1 encrypt (sender)"),
    ("decrypt", "1:1 decrypt in order (receiver)"),
    ("pingpong", "1:1 ping-pong, ratchet turn each msg"),
    ("sk_encrypt", "sender-key encrypt"),
    ("sk_decrypt", "sender-key decrypt in order"),
)
LEVELS = (
    ("core", "records in memory"),
    ("stored", "record to stored form per message"),
    ("repository", "SignalRepository / Baileys repository, memory store"),
)
LEVEL_NAMES = tuple(level for level, _ in LEVELS)


def plaintexts(count: int) -> list[bytes]:
    """``count`` distinct plaintexts of PLAINTEXT_SIZE bytes (the index, then filler)."""
    return [f"{i:08d}".encode().ljust(PLAINTEXT_SIZE, b".") for i in range(count)]


@dataclass(frozen=True)
class Phase:
    """Messages through one workload in a measured interval."""

    messages: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else float("inf")

    def as_dict(self) -> dict[str, float]:
        return {
            "messages": self.messages,
            "seconds": round(self.seconds, 4),
            "messages_per_s": round(self.rate, 1),
        }


Figures = dict[str, dict[str, Phase]]
"""level -> workload -> Phase."""


@dataclass(frozen=True)
class Counts:
    """Messages per workload: 1:1 encrypt/decrypt, ping-pong, sender keys."""

    one: int = DEFAULT_COUNT
    pingpong: int = DEFAULT_PINGPONG_COUNT
    sk: int = DEFAULT_SK_COUNT

    def args(self) -> list[str]:
        return [str(self.one), str(self.pingpong), str(self.sk)]


WARM_UP = Counts(2000, 50, 10)
"""At most this many messages per workload before each level is measured (both sides)."""


def warm_up(counts: Counts) -> Counts:
    """The warm-up run for ``counts``: WARM_UP, but never more than the measured run."""
    return Counts(
        min(WARM_UP.one, counts.one),
        min(WARM_UP.pingpong, counts.pingpong),
        min(WARM_UP.sk, counts.sk),
    )


T = TypeVar("T")


def _timed(count: int, fn: Callable[[], T]) -> tuple[Phase, T]:
    start = time.perf_counter()
    out = fn()
    return Phase(count, time.perf_counter() - start), out


def _check(expected: list[bytes], got: Sequence[bytes], what: str) -> None:
    if list(got) != expected:
        raise AssertionError(f"{what}: a plaintext came back different")


# --- the two parties ----------------------------------------------------------------


@dataclass(frozen=True)
class Party:
    ours: LocalIdentity
    one_time: SignalKeyPair

    def bundle(self, pre_key_id: int = 7) -> PreKeyBundle:
        signed = self.ours.signed_pre_key.public
        return PreKeyBundle(
            registration_id=self.ours.registration_id,
            identity_key=self.ours.identity.public,
            signed_pre_key=SignedPreKey(
                self.ours.signed_pre_key_id, signed, sign(self.ours.identity.private, signed)
            ),
            pre_key=PreKey(pre_key_id, self.one_time.public),
        )


def party(registration_id: int) -> Party:
    identity = LocalIdentity(
        identity=random_key_pair(),
        registration_id=registration_id,
        signed_pre_key_id=1,
        signed_pre_key=random_key_pair(),
    )
    return Party(identity, random_key_pair())


def established() -> tuple[Party, SessionRecord, Party, SessionRecord]:
    """Alice and Bob with a session past its pre-key stage (a pkmsg and a reply seen)."""
    alice, bob = party(1111), party(2222)
    rec_a, rec_b = SessionRecord(), SessionRecord()
    start_outgoing(rec_a, alice.ours, bob.bundle(), now_ms=NOW_MS, new_key_pair=random_key_pair)
    kind, first = session_cipher.encrypt(rec_a, alice.ours, BOB, b"hello")
    assert kind == session_cipher.PKMSG
    session_cipher.decrypt_pre_key(
        rec_b,
        bob.ours,
        ALICE,
        parse_pre_key_message(first),
        bob.one_time,
        now_ms=NOW_MS,
        new_key_pair=random_key_pair,
    )
    kind, reply = session_cipher.encrypt(rec_b, bob.ours, ALICE, b"hello back")
    session_cipher.decrypt_whisper(
        rec_a, alice.ours, BOB, reply, now_ms=NOW_MS, new_key_pair=random_key_pair
    )
    return alice, rec_a, bob, rec_b


def sender_keys() -> tuple[SenderKeyRecord, SenderKeyRecord]:
    """Our own sender-key record for the group and a member's, after the member took our skdm."""
    own, member = SenderKeyRecord(), SenderKeyRecord()
    seed = random_key_pair()
    group_cipher.ensure_own_state(own, 12345, os.urandom(32), seed)
    group_cipher.process_distribution(
        member, group_cipher.distribution_message(own, SENDER_KEY_NAME)
    )
    return own, member


# --- ours: core and stored ------------------------------------------------------------


class _Records:
    """Where the records live between messages: live objects, or their stored form."""

    def __init__(self, stored: bool) -> None:
        self.stored = stored
        self._live: dict[str, Any] = {}

    def put_session(self, address: str, record: SessionRecord) -> None:
        self._live[address] = record.to_plain() if self.stored else record

    def session(self, address: str) -> SessionRecord:
        value = self._live[address]
        return (
            SessionRecord.from_plain(value, address) if self.stored else cast(SessionRecord, value)
        )

    def put_sender_key(self, name: str, record: SenderKeyRecord) -> None:
        self._live[name] = record.to_bytes() if self.stored else record

    def sender_key(self, name: str) -> SenderKeyRecord:
        value = self._live[name]
        return (
            SenderKeyRecord.from_stored(value, name)
            if self.stored
            else cast(SenderKeyRecord, value)
        )


def measure_pure(counts: Counts, *, stored: bool) -> dict[str, Phase]:
    """The five workloads on the pure core, records live (``core``) or stored per message."""
    texts = plaintexts(counts.one)
    alice, rec_a, bob, rec_b = established()
    # Each party keeps its own records: Alice's session with Bob, Bob's with Alice.
    at_a, at_b = _Records(stored), _Records(stored)
    at_a.put_session(BOB, rec_a)
    at_b.put_session(ALICE, rec_b)
    out: dict[str, Phase] = {}

    def encrypt_all() -> list[bytes]:
        sent = []
        for text in texts:
            record = at_a.session(BOB)
            kind, data = session_cipher.encrypt(record, alice.ours, BOB, text)
            at_a.put_session(BOB, record)
            sent.append(data)
        assert kind == session_cipher.MSG
        return sent

    out["encrypt"], sent = _timed(len(texts), encrypt_all)

    def decrypt_all() -> list[bytes]:
        got = []
        for data in sent:
            record = at_b.session(ALICE)
            text, _ = session_cipher.decrypt_whisper(
                record, bob.ours, ALICE, data, now_ms=NOW_MS, new_key_pair=random_key_pair
            )
            at_b.put_session(ALICE, record)
            got.append(text)
        return got

    out["decrypt"], got = _timed(len(texts), decrypt_all)
    _check(texts, got, "decrypt")

    texts = plaintexts(counts.pingpong)

    def ping_pong() -> list[bytes]:
        got = []
        sides = ((alice, at_a, BOB, bob, at_b, ALICE), (bob, at_b, ALICE, alice, at_a, BOB))
        for i, text in enumerate(texts):
            sender, sender_records, to, receiver, receiver_records, frm = sides[i % 2]
            record = sender_records.session(to)
            _, data = session_cipher.encrypt(record, sender.ours, to, text)
            sender_records.put_session(to, record)
            record = receiver_records.session(frm)
            plain, _ = session_cipher.decrypt_whisper(
                record, receiver.ours, frm, data, now_ms=NOW_MS, new_key_pair=random_key_pair
            )
            receiver_records.put_session(frm, record)
            got.append(plain)
        return got

    out["pingpong"], got = _timed(len(texts), ping_pong)
    _check(texts, got, "pingpong")

    texts = plaintexts(counts.sk)

    own, member = sender_keys()
    at_a.put_sender_key(SENDER_KEY_NAME, own)
    at_b.put_sender_key(SENDER_KEY_NAME, member)

    def sk_encrypt_all() -> list[bytes]:
        sent = []
        for text in texts:
            record = at_a.sender_key(SENDER_KEY_NAME)
            sent.append(group_cipher.encrypt(record, SENDER_KEY_NAME, text))
            at_a.put_sender_key(SENDER_KEY_NAME, record)
        return sent

    out["sk_encrypt"], sent = _timed(len(texts), sk_encrypt_all)

    def sk_decrypt_all() -> list[bytes]:
        got = []
        for data in sent:
            record = at_b.sender_key(SENDER_KEY_NAME)
            got.append(group_cipher.decrypt(record, SENDER_KEY_NAME, data))
            at_b.put_sender_key(SENDER_KEY_NAME, record)
        return got

    out["sk_decrypt"], got = _timed(len(texts), sk_decrypt_all)
    _check(texts, got, "sk_decrypt")
    return out


# --- ours: through SignalRepository over a memory store ---------------------------------


async def _measure_repository(counts: Counts) -> dict[str, Phase]:
    texts = plaintexts(counts.one)
    a = await use_memory_auth_state("bench-signal-a")
    b = await use_memory_auth_state("bench-signal-b")
    pre_keys = generate_pre_keys(1, 1)
    await b.keys.set({"pre-key": pre_keys})
    creds = b.state.creds
    bundle = PreKeyBundle(
        registration_id=creds.registration_id,
        identity_key=signal_public_key(creds.signed_identity_key.public),
        signed_pre_key=SignedPreKey(
            creds.signed_pre_key.key_id,
            signal_public_key(creds.signed_pre_key.key_pair.public),
            creds.signed_pre_key.signature,
        ),
        pre_key=PreKey(1, signal_public_key(pre_keys["1"]["public"])),
    )
    ra = SignalRepository(a.keys, a.state.creds)
    rb = SignalRepository(b.keys, b.state.creds)
    await ra.inject_e2e_session(BOB_JID, bundle)
    kind, data = await ra.encrypt_message(BOB_JID, b"hello")
    await rb.decrypt_message(ALICE_JID, kind, data)
    kind, data = await rb.encrypt_message(ALICE_JID, b"hello back")
    await ra.decrypt_message(BOB_JID, kind, data)
    out: dict[str, Phase] = {}

    start = time.perf_counter()
    sent = [await ra.encrypt_message(BOB_JID, text) for text in texts]
    out["encrypt"] = Phase(len(texts), time.perf_counter() - start)
    assert {k for k, _ in sent} == {session_cipher.MSG}

    start = time.perf_counter()
    got = [await rb.decrypt_message(ALICE_JID, k, d) for k, d in sent]
    out["decrypt"] = Phase(len(texts), time.perf_counter() - start)
    _check(texts, got, "repository decrypt")

    texts = plaintexts(counts.pingpong)
    got = []
    start = time.perf_counter()
    for i, text in enumerate(texts):
        if i % 2 == 0:
            kind, data = await ra.encrypt_message(BOB_JID, text)
            got.append(await rb.decrypt_message(ALICE_JID, kind, data))
        else:
            kind, data = await rb.encrypt_message(ALICE_JID, text)
            got.append(await ra.decrypt_message(BOB_JID, kind, data))
    out["pingpong"] = Phase(len(texts), time.perf_counter() - start)
    _check(texts, got, "repository pingpong")

    texts = plaintexts(counts.sk)
    skdm = await ra.get_sender_key_distribution_message(GROUP_JID, ALICE_JID)
    await rb.process_sender_key_distribution_message(GROUP_JID, ALICE_JID, skdm)
    start = time.perf_counter()
    group = [await ra.encrypt_group_message(GROUP_JID, ALICE_JID, text) for text in texts]
    out["sk_encrypt"] = Phase(len(texts), time.perf_counter() - start)

    start = time.perf_counter()
    got = [await rb.decrypt_group_message(GROUP_JID, ALICE_JID, c) for _, c in group]
    out["sk_decrypt"] = Phase(len(texts), time.perf_counter() - start)
    _check(texts, got, "repository sk_decrypt")
    return out


def measure_repository(counts: Counts) -> dict[str, Phase]:
    return trio.run(_measure_repository, counts)


def measure_level(level: str, counts: Counts) -> dict[str, Phase]:
    if level == "repository":
        return measure_repository(counts)
    return measure_pure(counts, stored=level == "stored")


def measure_ours(counts: Counts, levels: Sequence[str] = LEVEL_NAMES) -> Figures:
    """Every level in ``levels``, each after a warm-up run with a few messages."""
    figures: Figures = {}
    for level in levels:
        measure_level(level, warm_up(counts))
        figures[level] = measure_level(level, counts)
    return figures


# --- node -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeRun:
    figures: Figures
    node: str
    libsignal: str
    baileys: str


def measure_node(counts: Counts) -> NodeRun | str:
    """Run signal_libsignal.mjs; a string says why it was skipped."""
    root, why = baileys_root()
    if root is None:
        return why
    modules = root / "node_modules"
    try:
        proc = subprocess.run(
            [
                "node",
                str(NODE_SCRIPT),
                str(modules),
                *counts.args(),
                str(PLAINTEXT_SIZE),
                *warm_up(counts).args(),
            ],
            capture_output=True,
            text=True,
            timeout=120 + counts.one * 0.01 + counts.pingpong * 0.1 + counts.sk * 0.5,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "node timed out"
    if proc.returncode != 0:
        return f"node failed ({proc.returncode}): {proc.stderr.strip()[-400:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    figures = {
        level: {key: Phase(**phase) for key, phase in workloads.items()}
        for level, workloads in out["figures"].items()
    }
    return NodeRun(figures, out["node"], out["libsignal"], out["baileys"])


# --- the table ----------------------------------------------------------------------------


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "-"


def report(counts: Counts, ours: Figures, node: NodeRun | str) -> dict[str, Any]:
    """Print the table; return the figures (msg/s) and ratios ours / node."""
    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()},"
        f" node {node_version() or 'absent'}, {platform.platform()}"
    )
    if isinstance(node, NodeRun):
        print(f"reference: libsignal {node.libsignal}, Baileys {node.baileys} (group cipher)")
    print(
        f"messages per row: 1:1 {counts.one}, ping-pong {counts.pingpong},"
        f" sender keys {counts.sk}; plaintext {PLAINTEXT_SIZE} bytes; one core each side"
    )
    print(f"{'level / workload':<46} {'ours msg/s':>11} {'node msg/s':>11} {'ours/node':>10}")
    result: dict[str, Any] = {
        "counts": {"one_to_one": counts.one, "pingpong": counts.pingpong, "sender_key": counts.sk},
        "plaintext_bytes": PLAINTEXT_SIZE,
        "ours": {},
    }
    if isinstance(node, NodeRun):
        result.update(node={}, ratio={}, node_version=node.node, libsignal=node.libsignal)
    for level, what in LEVELS:
        if level not in ours:
            continue
        print(f"{level}: {what}")
        result["ours"][level] = {k: p.as_dict() for k, p in ours[level].items()}
        theirs = node.figures.get(level) if isinstance(node, NodeRun) else None
        if theirs is not None:
            result["node"][level] = {k: p.as_dict() for k, p in theirs.items()}
            result["ratio"][level] = {}
        for key, label in WORKLOADS:
            mine = ours[level][key]
            line = f"  {label:<44} {mine.rate:>11.0f}"
            if theirs is not None and key in theirs:
                other = theirs[key]
                result["ratio"][level][key] = round(mine.rate / other.rate, 3)
                print(f"{line} {other.rate:>11.0f} {_ratio(mine.rate, other.rate):>10}")
            else:
                print(f"{line} {'-':>11} {'-':>10}")
    if isinstance(node, str):
        print(f"node: skipped: {node}")
        result["node"] = {"skipped": node}
    print(
        "X25519 and AES-CBC/HMAC are OpenSSL on both sides; XEdDSA (sender keys):"
        " xeddsa (C) here, curve25519-js (pure JS) in node"
    )
    return result


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.signal")
    parser.add_argument(
        "--count", type=int, default=DEFAULT_COUNT, help="1:1 messages encrypted, then decrypted"
    )
    parser.add_argument(
        "--pingpong-count", type=int, default=DEFAULT_PINGPONG_COUNT, help="ping-pong messages"
    )
    parser.add_argument(
        "--sk-count", type=int, default=DEFAULT_SK_COUNT, help="sender-key messages"
    )
    parser.add_argument(
        "--levels",
        default=",".join(LEVEL_NAMES),
        help="comma-separated subset of core,stored,repository",
    )
    parser.add_argument("--no-node", action="store_true", help="ours only")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(list(argv) if argv is not None else [])
    levels = [level for level in args.levels.split(",") if level]
    unknown = set(levels) - set(LEVEL_NAMES)
    if unknown:
        raise SystemExit(f"unknown level(s): {', '.join(sorted(unknown))}")
    counts = Counts(args.count, args.pingpong_count, args.sk_count)
    if min(counts.one, counts.pingpong, counts.sk) < 1:
        raise SystemExit("every count must be at least 1")
    ours = measure_ours(counts, levels)
    node = "--no-node given" if args.no_node else measure_node(counts)
    return report(counts, ours, node)


if __name__ == "__main__":
    main(sys.argv[1:])
