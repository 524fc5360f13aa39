"""Signal properties, checked against models written from the protocol's rules.

(a) Delivery. Alice starts a session with Bob; hypothesis interleaves sends (Bob only once
    he has received something), deliveries of any pending message, drops and redeliveries.
    The model labels every message from the double-ratchet rules alone:

    * Alice's first sending chain exists from the start; a party opens a new sending
      chain at its first send after it received a chain newer than any it had seen;
    * counters count from 0 in each chain, and a chain's messages carry, as previous
      counter, the last counter of the sender's chain before it (0 for the first);
    * Alice's messages are pkmsgs until she has received anything from Bob, then msgs;
    * a message whose (sender, chain, counter) was not delivered yet decrypts to its
      plaintext; one that was is a DuplicateMessage. Dropped messages change nothing.

    The wire must agree with the labels (counter, previous counter, one ratchet key per
    chain), and every delivered message is refused as a duplicate when redelivered.

(b) Tampering. Flipping any one bit of a msg, pkmsg or skmsg gives a SignalError (never
    another exception) and leaves every stored record as it was. The one exception is
    the protocol's own: a pkmsg's version byte, registration id and signed pre-key id
    are outside the MAC (libsignal accepts any version byte with minimum <= 3 <= maximum,
    and does not check the ids either), so a flip in those bytes may also decrypt, to the
    same plaintext.

(c) Caps. Whatever happens, a session record holds at most 40 sessions, a sender-key
    record at most 5 states (the newest distinct ones) and at most 2,000 kept group
    message keys (the newest skipped iterations).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import pytest
import trio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from actors.signal import PreKey, PreKeyBundle, SignedPreKey, group_cipher
from actors.signal.errors import DuplicateMessage, NoSenderKey, SignalError, TooFarInFuture
from actors.signal.repository import SignalRepository
from actors.signal.sender_key_record import MAX_MESSAGE_KEYS, MAX_STATES, SenderKeyRecord
from actors.signal.session_cipher import MSG, PKMSG, decrypt_whisper
from actors.signal.session_record import MAX_RECEIVING_CHAINS, MAX_SESSIONS, MAX_SKIP
from actors.signal.wire import (
    build_pre_key_message,
    parse_pre_key_message,
    parse_whisper,
)
from stores.auth import PersistedAuth, use_memory_auth_state
from stores.keys import generate_pre_keys, signal_public_key
from tests.signal.test_core_group import NAME, advance, member_of, own_record
from tests.signal.test_core_session import Peer, key_pair, plain_json

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- (a) any delivery order -------------------------------------------------------------


@dataclass(frozen=True)
class Label:
    """What the rules say a message is: who sent it, on which chain, at which counter."""

    sender: str
    chain: int
    counter: int
    previous_counter: int
    kind: str


@dataclass
class Side:
    """One party in the model."""

    chain: int = 0
    counter: int = -1
    last_counter_of_previous_chain: int = 0
    newest_seen: int = 0  # the newest chain of the other party received
    must_step: bool = False
    received_any: bool = False

    def next_label(self, name: str, initiator: bool) -> Label:
        if self.chain == 0 or self.must_step:
            if self.chain:
                self.last_counter_of_previous_chain = self.counter
            self.chain, self.counter, self.must_step = self.chain + 1, -1, False
        self.counter += 1
        kind = PKMSG if initiator and not self.received_any else MSG
        return Label(name, self.chain, self.counter, self.last_counter_of_previous_chain, kind)

    def on_receive(self, label: Label) -> None:
        self.received_any = True
        if label.chain > self.newest_seen:
            self.newest_seen = label.chain
            self.must_step = True


@dataclass
class Sent:
    label: Label
    plaintext: bytes
    kind: str
    ciphertext: bytes


@dataclass
class Conversation:
    """The real parties and the model side by side."""

    alice: Peer
    bob: Peer
    sides: dict[str, Side] = field(default_factory=lambda: {"alice": Side(), "bob": Side()})
    pending: list[Sent] = field(default_factory=list)
    delivered: dict[Label, Sent] = field(default_factory=dict)
    ratchet_keys: dict[tuple[str, int], bytes] = field(default_factory=dict)

    def peer(self, name: str) -> Peer:
        return self.alice if name == "alice" else self.bob

    def other(self, name: str) -> str:
        return "bob" if name == "alice" else "alice"

    def can_send(self, name: str) -> bool:
        return name == "alice" or self.sides["bob"].received_any

    def send(self, name: str) -> None:
        label = self.sides[name].next_label(name, initiator=name == "alice")
        plaintext = f"{label.sender}/{label.chain}/{label.counter}".encode()
        kind, ciphertext = self.peer(name).send(self.peer(self.other(name)), plaintext)
        assert kind == label.kind
        inner = parse_pre_key_message(ciphertext).message if kind == PKMSG else ciphertext
        message = parse_whisper(inner)
        assert (message.counter, message.previous_counter) == (
            label.counter,
            label.previous_counter,
        )
        key = self.ratchet_keys.setdefault((name, label.chain), message.ephemeral_key)
        assert key == message.ephemeral_key, "one ratchet key per chain"
        self.pending.append(Sent(label, plaintext, kind, ciphertext))

    def deliver(self, sent: Sent) -> None:
        """Deliver ``sent``; the model decides whether it decrypts or is a duplicate."""
        receiver_name = self.other(sent.label.sender)
        receiver, sender = self.peer(receiver_name), self.peer(sent.label.sender)
        if sent.label.chain <= self.sides[receiver_name].newest_seen - MAX_RECEIVING_CHAINS:
            # The receiver keeps its five newest receiving chains: this one is gone, so
            # the message (new or a duplicate) fails, and the failure changes nothing.
            event("a message of a dropped chain arrived")
            with pytest.raises(SignalError) as failed:
                receiver.receive(sender, sent.kind, sent.ciphertext)
            assert not isinstance(failed.value, DuplicateMessage)
            return
        if sent.label in self.delivered:
            with pytest.raises(DuplicateMessage):
                receiver.receive(sender, sent.kind, sent.ciphertext)
            return
        if sent.label.chain < self.sides[receiver_name].newest_seen:
            event("a message of an older chain arrived after a newer one")
        assert receiver.receive(sender, sent.kind, sent.ciphertext) == sent.plaintext
        self.delivered[sent.label] = sent
        self.sides[receiver_name].on_receive(sent.label)


@SETTINGS
@given(st.data())
def test_any_delivery_order_decrypts_each_message_exactly_once(data: st.DataObject) -> None:
    """Interleaved sends, out-of-order deliveries, drops and redeliveries all follow the model."""
    alice, bob = Peer.make("alice", 1), Peer.make("bob", 2)
    alice.start(bob, pre_key_id=1)
    talk = Conversation(alice, bob)
    for _ in range(data.draw(st.integers(1, 60), label="steps")):
        actions = ["alice sends"]
        if talk.can_send("bob"):
            actions.append("bob sends")
        if talk.pending:
            actions += ["deliver"] * 4 + ["drop"]
        if talk.delivered:
            actions.append("redeliver")
        action = data.draw(st.sampled_from(actions), label="action")
        if action.endswith("sends"):
            for _ in range(data.draw(st.integers(1, 3), label="burst")):
                talk.send(action.split()[0])
        elif action == "deliver":
            talk.deliver(talk.pending.pop(data.draw(st.integers(0, len(talk.pending) - 1))))
        elif action == "drop":
            talk.pending.pop(data.draw(st.integers(0, len(talk.pending) - 1)))
        else:
            talk.deliver(data.draw(st.sampled_from(list(talk.delivered.values()))))
    rest = data.draw(st.permutations(talk.pending), label="the rest, in this order")
    for sent in rest[: data.draw(st.integers(0, len(rest)), label="how many arrive")]:
        talk.deliver(sent)
    for sent in list(talk.delivered.values()):
        talk.deliver(sent)  # every one a duplicate now
    event(f"chains reached: {min(max(s.chain for s in talk.sides.values()), 4)}+")


def test_the_delivery_model_labels_a_simple_exchange_by_the_rules() -> None:
    """The model itself: chains step after a newer chain arrives, counters restart, kinds flip."""
    alice, bob = Side(), Side()
    a = [alice.next_label("alice", True) for _ in range(2)]
    assert [(x.chain, x.counter, x.kind) for x in a] == [(1, 0, PKMSG), (1, 1, PKMSG)]
    bob.on_receive(a[1])
    b = bob.next_label("bob", False)
    assert (b.chain, b.counter, b.previous_counter, b.kind) == (1, 0, 0, MSG)
    alice.on_receive(b)
    a3 = alice.next_label("alice", True)
    assert (a3.chain, a3.counter, a3.previous_counter, a3.kind) == (2, 0, 1, MSG)
    bob.on_receive(a[0])  # an older chain: no step
    assert bob.next_label("bob", False).chain == 1


# -- (b) single bit flips ------------------------------------------------------------

ALICE, BOB, GROUP = "111@s.whatsapp.net", "222@s.whatsapp.net", "g@g.us"


@dataclass
class Account:
    auth: PersistedAuth
    repo: SignalRepository

    @classmethod
    async def open(cls, name: str) -> Account:
        auth = await use_memory_auth_state(name)
        await auth.keys.set({"pre-key": generate_pre_keys(1, 2)})
        return cls(auth, SignalRepository(auth.keys, lambda: auth.state.creds))

    async def bundle(self) -> PreKeyBundle:
        creds = self.auth.state.creds
        public = (await self.auth.keys.get("pre-key", ["1"]))["1"]["public"]  # type: ignore[index]
        return PreKeyBundle(
            creds.registration_id,
            signal_public_key(creds.signed_identity_key.public),
            SignedPreKey(
                creds.signed_pre_key.key_id,
                signal_public_key(creds.signed_pre_key.key_pair.public),
                creds.signed_pre_key.signature,
            ),
            PreKey(1, signal_public_key(public)),  # type: ignore[arg-type]
        )

    async def everything(self) -> str:
        """Every stored Signal value this test can touch, as text."""
        ids = ["111.0", "1", "2", f"{GROUP}::111::0"]
        types = ("session", "identity-key", "pre-key", "sender-key")
        found = {t: await self.auth.keys.get(t, ids) for t in types}
        return json.dumps(found, default=lambda b: b.hex(), sort_keys=True)


def unauthenticated_bytes(data: bytes) -> set[int]:
    """The indexes of a pkmsg's version byte and its registration id and signed pre-key id
    values (its last fields, tag 28 and tag 30)."""
    message = parse_pre_key_message(data)
    rebuilt = build_pre_key_message(message)
    assert rebuilt == data
    without = build_pre_key_message(replace(message, registration_id=0, signed_pre_key_id=0))
    head = len(without) - 4  # both zero: tag 28, value 00, tag 30, value 00
    assert without[head:] == b"\x28\x00\x30\x00" and data[:head] == without[:head]
    return {0, *range(head + 1, len(data))}


async def flip_and_decrypt(kind: str, bit_seed: int) -> None:
    alice, bob = await Account.open("alice"), await Account.open("bob")
    try:
        await alice.repo.inject_e2e_session(BOB, await bob.bundle())
        first = await alice.repo.encrypt_message(BOB, b"first")
        plaintext = b"first"
        if kind == MSG:
            await bob.repo.decrypt_message(ALICE, *first)
            reply = await bob.repo.encrypt_message(ALICE, b"reply")
            await alice.repo.decrypt_message(BOB, *reply)
            plaintext = b"second"
            kind_sent, data = await alice.repo.encrypt_message(BOB, plaintext)
            assert kind_sent == MSG
        elif kind == PKMSG:
            data = first[1]
        else:
            skdm, earlier = await alice.repo.encrypt_group_message(GROUP, ALICE, b"g0")
            await bob.repo.process_sender_key_distribution_message(GROUP, ALICE, skdm)
            await bob.repo.decrypt_group_message(GROUP, ALICE, earlier)
            plaintext = b"g1"
            _, data = await alice.repo.encrypt_group_message(GROUP, ALICE, plaintext)
        bit = bit_seed % (len(data) * 8)
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        before = await bob.everything()
        try:
            if kind == "skmsg":
                result = await bob.repo.decrypt_group_message(GROUP, ALICE, bytes(flipped))
            else:
                result = await bob.repo.decrypt_message(ALICE, kind, bytes(flipped))
        except SignalError as exc:
            event(f"{kind}: {type(exc).__name__}")
            assert await bob.everything() == before
            return
        assert kind == PKMSG, f"{kind} with bit {bit} flipped decrypted"
        outside = bit // 8 in unauthenticated_bytes(data)
        assert outside, f"pkmsg with bit {bit} flipped decrypted"
        assert result == plaintext
        event(f"{kind}: decrypted (flip outside the MAC)")
    finally:
        await alice.auth.aclose()
        await bob.auth.aclose()


@SETTINGS
@given(st.sampled_from([MSG, PKMSG, "skmsg"]), st.integers(0, 2**16))
def test_a_single_flipped_bit_is_a_signal_error_and_stores_nothing(kind: str, bit: int) -> None:
    """One flipped bit of a msg, pkmsg or skmsg is a SignalError and changes no stored value."""
    trio.run(flip_and_decrypt, kind, bit)


def test_every_bit_of_a_msg_and_an_skmsg_is_covered() -> None:
    """Each bit of a msg or skmsg flipped is a SignalError and leaves the core record as it was."""
    alice, bob = Peer.make("alice", 1), Peer.make("bob", 2)
    alice.start(bob)
    bob.receive(alice, *alice.send(bob, b"hello"))
    alice.receive(bob, *bob.send(alice, b"hi"))
    _, data = alice.send(bob, b"target")
    record = bob.record(alice)
    before = plain_json(record)
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(SignalError):
            decrypt_whisper(
                record, bob.ours, "alice", bytes(flipped), now_ms=1, new_key_pair=key_pair
            )
        assert plain_json(record) == before, f"bit {bit}"

    sender = own_record()
    member = member_of(sender)
    data = group_cipher.encrypt(sender, NAME, b"group")
    before_bytes = member.to_bytes()
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(SignalError):
            group_cipher.decrypt(member, NAME, bytes(flipped))
        assert member.to_bytes() == before_bytes, f"bit {bit}"


def test_every_bit_of_a_pkmsg_is_covered() -> None:
    """Each bit of a pkmsg flipped is a SignalError unless it lies outside the MAC."""
    alice, bob = Peer.make("alice", 1), Peer.make("bob", 2)
    alice.start(bob)
    _, data = alice.send(bob, b"target")
    outside = unauthenticated_bytes(data)
    pre_keys = dict(bob.pre_keys)
    decrypted = set()
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        bob.pre_keys, bob.records = dict(pre_keys), {}
        try:
            plaintext = bob.receive(alice, PKMSG, bytes(flipped))
        except SignalError:
            continue
        assert bit // 8 in outside, f"bit {bit}"
        assert plaintext == b"target"
        decrypted.add(bit // 8)
    assert decrypted - {0}, "the ids outside the MAC are really not checked"


def test_the_unauthenticated_part_of_a_pkmsg_is_its_two_trailing_ids() -> None:
    """The exception in (b) is the version byte and the registration and signed pre-key ids."""
    alice, bob = Peer.make("alice", 300), Peer.make("bob", 2)
    alice.start(bob)
    _, data = alice.send(bob, b"x")
    span = sorted(unauthenticated_bytes(data))
    assert span[0] == 0 and span[1:] == list(range(len(data) - 4, len(data)))
    # 300 is the two-byte varint ac 02, then tag 30 and the signed pre-key id 7.
    assert data[-5:] == b"\x28\xac\x02\x30\x07"
    changed = bytearray(data)
    changed[-4] ^= 0x01
    changed[-1] ^= 0x02
    message = parse_pre_key_message(bytes(changed))
    assert (message.registration_id, message.signed_pre_key_id) == (301, 5)
    assert replace(message, registration_id=300, signed_pre_key_id=7) == parse_pre_key_message(data)


# -- (c) caps ------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_session_records_never_hold_more_than_40_sessions(data: st.DataObject) -> None:
    """Restarts, sends and deliveries in any order never leave over 40 sessions in a record."""
    alice, bob = Peer.make("alice", 1, pre_keys=0), Peer.make("bob", 2, pre_keys=0)
    alice.start(bob, pre_key_id=None)
    pending: list[tuple[str, tuple[str, bytes]]] = []

    def deliver(item: tuple[str, tuple[str, bytes]]) -> None:
        to, sealed = item
        receiver, sender = (bob, alice) if to == "bob" else (alice, bob)
        try:
            receiver.receive(sender, *sealed)
        except SignalError:
            pass  # a message on a session the receiver has dropped meanwhile

    def check() -> None:
        for record in (alice.record(bob), bob.record(alice)):
            assert len(record.sessions) <= MAX_SESSIONS
            assert record.sessions == {} or record.open_session() is not None

    restarts, target = (
        0,
        data.draw(st.integers(MAX_SESSIONS - 2, MAX_SESSIONS + 8), label="restarts"),
    )
    while restarts < target:
        action = data.draw(st.sampled_from(["restart", "alice sends", "bob sends", "deliver"]))
        if action == "restart":
            alice.start(bob, pre_key_id=None)
            restarts += 1
            pending.append(("bob", alice.send(bob, b"new session")))
        elif action == "alice sends":
            pending.append(("bob", alice.send(bob, b"a")))
        elif action == "bob sends" and bob.record(alice).open_session() is not None:
            pending.append(("alice", bob.send(alice, b"b")))
        elif action == "deliver" and pending:
            deliver(pending.pop(data.draw(st.integers(0, len(pending) - 1))))
        check()
    for item in data.draw(st.permutations(pending), label="the rest, in this order"):
        deliver(item)
        check()
    if len(bob.record(alice).sessions) == MAX_SESSIONS:
        event("Bob's record reached the cap")


@SETTINGS
@given(st.lists(st.integers(0, 8), min_size=1, max_size=30))
def test_sender_key_records_keep_the_newest_5_distinct_states(order: list[int]) -> None:
    """skdms in any order: a record keeps the newest 5 distinct states and exactly those decrypt."""
    senders = [own_record(key_id=1000 + i) for i in range(9)]
    member = SenderKeyRecord()
    model: list[int] = []
    for index in order:
        changed = group_cipher.process_distribution(
            member, group_cipher.distribution_message(senders[index], NAME)
        )
        assert changed == (index not in model)
        if index not in model:
            model = [*model, index][-MAX_STATES:]
        assert [state.key_id - 1000 for state in member.states] == model
    for index, sender in enumerate(senders):
        ciphertext = group_cipher.encrypt(sender, NAME, b"hello")
        if index in model:
            assert group_cipher.decrypt(member, NAME, ciphertext) == b"hello"
        else:
            with pytest.raises(NoSenderKey):
                group_cipher.decrypt(member, NAME, ciphertext)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_kept_group_message_keys_are_the_newest_2000_skipped_iterations(
    data: st.DataObject,
) -> None:
    """Kept group keys are the newest 2,000 skipped, unused iterations; decrypt follows suit."""
    sender = own_record()
    member = member_of(sender)
    next_iteration, kept = 0, []  # the member's chain position; skipped, not yet used
    sealed: dict[int, bytes] = {}
    for _ in range(data.draw(st.integers(1, 12), label="steps")):
        if data.draw(st.booleans(), label="jump") or not sealed:
            advance(sender, data.draw(st.integers(0, MAX_SKIP + 300), label="gap"))
            iteration = sender.states[0].iteration
            sealed[iteration] = group_cipher.encrypt(sender, NAME, str(iteration).encode())
        else:
            iteration = data.draw(st.sampled_from(sorted(sealed)), label="again or older")
        ciphertext = sealed[iteration]
        if iteration >= next_iteration and iteration - next_iteration > MAX_SKIP:
            with pytest.raises(TooFarInFuture):
                group_cipher.decrypt(member, NAME, ciphertext)
        elif iteration >= next_iteration:
            assert group_cipher.decrypt(member, NAME, ciphertext) == str(iteration).encode()
            kept = [*kept, *range(next_iteration, iteration)][-MAX_MESSAGE_KEYS:]
            next_iteration = iteration + 1
        elif iteration in kept:
            assert group_cipher.decrypt(member, NAME, ciphertext) == str(iteration).encode()
            kept.remove(iteration)
        else:
            with pytest.raises(DuplicateMessage):
                group_cipher.decrypt(member, NAME, ciphertext)
        state = member.states[0]
        assert [i for i, _ in state.message_keys] == kept
        assert len(state.message_keys) <= MAX_MESSAGE_KEYS
        assert state.iteration == next_iteration
