"""The double ratchet's pure core: X3DH setup, ``pkmsg``/``msg`` encrypt and decrypt.

Two parties are plain objects over ``SessionRecord`` values (no store): a receive
works on a copy of the record and keeps it only on success, and a consumed one-time
pre-key is removed in the same step, as the repository's transaction does. Keys come
from ``stores.keys.generate_key_pair``.

The helpers (:class:`Peer`, :func:`new_identity`) are reused by the property tests.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import pytest

from actors.signal.crypto import SignalKeyPair
from actors.signal.errors import (
    BadMac,
    DuplicateMessage,
    InvalidMessage,
    InvalidSignature,
    MissingPreKey,
    NoSession,
    SignalError,
    TooFarInFuture,
)
from actors.signal.session_builder import (
    LocalIdentity,
    PreKey,
    PreKeyBundle,
    SignedPreKey,
    start_outgoing,
)
from actors.signal.session_cipher import MSG, PKMSG, decrypt_pre_key, decrypt_whisper, encrypt
from actors.signal.session_record import (
    MAX_RECEIVING_CHAINS,
    MAX_SESSIONS,
    MAX_SKIP,
    ChainType,
    SessionRecord,
)
from actors.signal.wire import (
    MAC_LENGTH,
    build_pre_key_message,
    build_whisper_body,
    parse_pre_key_message,
    parse_whisper,
)
from stores.keys import generate_key_pair, sign, signal_public_key

SIGNED_PRE_KEY_ID = 7


def key_pair() -> SignalKeyPair:
    """A fresh key pair in libsignal's shape (33-byte public)."""
    pair = generate_key_pair()
    return SignalKeyPair(signal_public_key(pair.public), pair.private)


def new_identity(registration_id: int) -> LocalIdentity:
    """A device: identity key pair, registration id and a signed pre-key."""
    return LocalIdentity(
        identity=key_pair(),
        registration_id=registration_id,
        signed_pre_key_id=SIGNED_PRE_KEY_ID,
        signed_pre_key=key_pair(),
    )


def plain_json(record: SessionRecord) -> str:
    """The record's stored form as text: equal text means an equal record, key order included."""
    return json.dumps(record.to_plain())


@dataclass
class Peer:
    """One device of the pure-core conversation, its records keyed by the other's name."""

    name: str
    ours: LocalIdentity
    pre_keys: dict[int, SignalKeyPair] = field(default_factory=dict)
    records: dict[str, SessionRecord] = field(default_factory=dict)
    clock: Iterator[int] = field(default_factory=lambda: itertools.count(1_000))

    @classmethod
    def make(cls, name: str, registration_id: int, pre_keys: int = 3) -> Peer:
        peer = cls(name, new_identity(registration_id))
        peer.pre_keys = {key_id: key_pair() for key_id in range(1, pre_keys + 1)}
        return peer

    def bundle(
        self, pre_key_id: int | None = None, *, signature: bytes | None = None
    ) -> PreKeyBundle:
        """Our pre-key bundle, with one-time pre-key ``pre_key_id`` when given."""
        signed = self.ours.signed_pre_key
        if signature is None:
            signature = sign(self.ours.identity.private, signed.public)
        pre_key = None
        if pre_key_id is not None:
            pre_key = PreKey(pre_key_id, self.pre_keys[pre_key_id].public)
        return PreKeyBundle(
            self.ours.registration_id,
            self.ours.identity.public,
            SignedPreKey(self.ours.signed_pre_key_id, signed.public, signature),
            pre_key,
        )

    def record(self, other: Peer) -> SessionRecord:
        return self.records.setdefault(other.name, SessionRecord())

    def start(
        self, other: Peer, pre_key_id: int | None = 1, bundle: PreKeyBundle | None = None
    ) -> None:
        """Start a session with ``other`` from its bundle (the repository's inject)."""
        trial = self.record(other).clone()
        start_outgoing(
            trial,
            self.ours,
            other.bundle(pre_key_id) if bundle is None else bundle,
            now_ms=next(self.clock),
            new_key_pair=key_pair,
        )
        self.records[other.name] = trial

    def send(self, other: Peer, plaintext: bytes) -> tuple[str, bytes]:
        trial = self.record(other).clone()
        sealed = encrypt(trial, self.ours, other.name, plaintext)
        self.records[other.name] = trial
        return sealed

    def receive(self, other: Peer, kind: str, ciphertext: bytes) -> bytes:
        """Decrypt on a copy; keep the copy (and drop the consumed pre-key) only on success."""
        trial = self.record(other).clone()
        if kind == PKMSG:
            message = parse_pre_key_message(ciphertext)
            one_time = None if message.pre_key_id is None else self.pre_keys.get(message.pre_key_id)
            plaintext, consumed = decrypt_pre_key(
                trial,
                self.ours,
                other.name,
                message,
                one_time,
                now_ms=next(self.clock),
                new_key_pair=key_pair,
            )
            if consumed is not None:
                del self.pre_keys[consumed]
        else:
            plaintext, _ = decrypt_whisper(
                trial,
                self.ours,
                other.name,
                ciphertext,
                now_ms=next(self.clock),
                new_key_pair=key_pair,
            )
        self.records[other.name] = trial
        return plaintext


def pair() -> tuple[Peer, Peer]:
    """Alice, who starts a session with Bob from his bundle with one-time pre-key 1."""
    alice, bob = Peer.make("alice", 1111), Peer.make("bob", 2222)
    alice.start(bob, pre_key_id=1)
    return alice, bob


def talking() -> tuple[Peer, Peer]:
    """Alice and Bob after one message each way (no pre-key message pending any more)."""
    alice, bob = pair()
    assert bob.receive(alice, *alice.send(bob, b"hello")) == b"hello"
    assert alice.receive(bob, *bob.send(alice, b"hi")) == b"hi"
    return alice, bob


def ratchet_key(ciphertext: bytes, kind: str = MSG) -> bytes:
    """The sender's ratchet public key a ``msg`` (or the ``msg`` inside a ``pkmsg``) carries."""
    if kind == PKMSG:
        ciphertext = parse_pre_key_message(ciphertext).message
    return parse_whisper(ciphertext).ephemeral_key


def test_pkmsg_with_one_time_pre_key_decrypts_and_names_the_pre_key_it_consumed() -> None:
    """A pkmsg from a bundle with a one-time pre-key carries its id; decrypting consumes it."""
    alice, bob = pair()
    kind, ciphertext = alice.send(bob, b"hello")
    assert kind == PKMSG
    assert parse_pre_key_message(ciphertext).pre_key_id == 1
    assert bob.receive(alice, kind, ciphertext) == b"hello"
    assert sorted(bob.pre_keys) == [2, 3]
    assert bob.record(alice).has_open_session()


def test_pkmsg_without_one_time_pre_key_decrypts() -> None:
    """A bundle without a one-time pre-key gives a pkmsg with no pre-key id, which decrypts."""
    alice, bob = Peer.make("alice", 1), Peer.make("bob", 2)
    alice.start(bob, pre_key_id=None)
    kind, ciphertext = alice.send(bob, b"no one-time key")
    message = parse_pre_key_message(ciphertext)
    assert (kind, message.pre_key_id) == (PKMSG, None)
    assert message.signed_pre_key_id == SIGNED_PRE_KEY_ID
    assert bob.receive(alice, kind, ciphertext) == b"no one-time key"
    assert sorted(bob.pre_keys) == [1, 2, 3]


def test_initiator_sends_pkmsg_until_the_first_reply_then_msg() -> None:
    """Every message before the first reply is a pkmsg; after the reply decrypts, a msg."""
    alice, bob = pair()
    first = [alice.send(bob, f"m{i}".encode()) for i in range(3)]
    assert [kind for kind, _ in first] == [PKMSG] * 3
    for sealed in first:
        bob.receive(alice, *sealed)
    reply = bob.send(alice, b"reply")
    assert reply[0] == MSG
    assert alice.send(bob, b"still before the reply")[0] == PKMSG
    alice.receive(bob, *reply)
    after = alice.send(bob, b"after the reply")
    assert after[0] == MSG
    assert bob.receive(alice, *after) == b"after the reply"


def test_ratchet_turns_both_ways_many_times() -> None:
    """Forty turns of 1-3 messages each way: each turn opens a new chain counting from 0."""
    alice, bob = talking()
    seen_keys: set[bytes] = set()
    for turn in range(40):
        sender, receiver = (alice, bob) if turn % 2 == 0 else (bob, alice)
        count = 1 + turn % 3
        sealed = [sender.send(receiver, f"{turn}.{i}".encode()) for i in range(count)]
        keys = {ratchet_key(ciphertext) for _, ciphertext in sealed}
        assert len(keys) == 1 and not keys & seen_keys, "one new ratchet key per turn"
        seen_keys |= keys
        assert [parse_whisper(c).counter for _, c in sealed] == list(range(count))
        for i, (kind, ciphertext) in enumerate(sealed):
            assert kind == MSG
            assert receiver.receive(sender, kind, ciphertext) == f"{turn}.{i}".encode()


def test_out_of_order_delivery_within_one_chain() -> None:
    """Messages of one chain decrypt in any order, each from the key kept for its counter."""
    alice, bob = talking()
    sealed = [alice.send(bob, f"m{i}".encode()) for i in range(6)]
    for i in (4, 0, 5, 2, 1, 3):
        assert bob.receive(alice, *sealed[i]) == f"m{i}".encode()


def test_messages_from_an_older_chain_decrypt_after_a_newer_chain_arrived() -> None:
    """After Alice ratchets, Bob still decrypts her delayed messages of the chain before."""
    alice, bob = pair()
    old = [alice.send(bob, f"old{i}".encode()) for i in range(4)]
    assert bob.receive(alice, *old[0]) == b"old0"
    assert alice.receive(bob, *bob.send(alice, b"reply")) == b"reply"
    new = [alice.send(bob, f"new{i}".encode()) for i in range(3)]
    assert ratchet_key(new[0][1]) != ratchet_key(old[0][1], PKMSG)
    assert parse_whisper(new[0][1]).previous_counter == 3
    assert bob.receive(alice, *new[2]) == b"new2"
    assert bob.receive(alice, *old[3]) == b"old3"
    assert bob.receive(alice, *new[0]) == b"new0"
    assert bob.receive(alice, *old[1]) == b"old1"
    assert bob.receive(alice, *old[2]) == b"old2"
    assert bob.receive(alice, *new[1]) == b"new1"


def test_a_message_on_an_older_session_decrypts_after_a_new_session_started() -> None:
    """Alice starts a second session; Bob still decrypts a delayed message of the first one."""
    alice, bob = talking()
    delayed = alice.send(bob, b"on the first session")
    alice.start(bob, pre_key_id=2)
    fresh = alice.send(bob, b"on the second session")
    assert fresh[0] == PKMSG
    assert bob.receive(alice, *fresh) == b"on the second session"
    assert len(bob.record(alice).sessions) == 2
    assert bob.receive(alice, *delayed) == b"on the first session"
    assert bob.record(alice).open_session() is not None
    assert bob.record(alice).open_session().base_key == parse_pre_key_message(fresh[1]).base_key


def test_simultaneous_initiation_both_pkmsgs_decrypt_and_the_conversation_goes_on() -> None:
    """Both start a session from the other's bundle at once: both pkmsgs decrypt, later msgs too."""
    alice, bob = Peer.make("alice", 1), Peer.make("bob", 2)
    alice.start(bob, pre_key_id=1)
    bob.start(alice, pre_key_id=1)
    from_alice = alice.send(bob, b"alice first")
    from_bob = bob.send(alice, b"bob first")
    assert (from_alice[0], from_bob[0]) == (PKMSG, PKMSG)
    assert bob.receive(alice, *from_alice) == b"alice first"
    assert alice.receive(bob, *from_bob) == b"bob first"
    for record in (alice.record(bob), bob.record(alice)):
        assert len(record.sessions) == 2
    for turn in range(4):
        sender, receiver = (alice, bob) if turn % 2 == 0 else (bob, alice)
        kind, ciphertext = sender.send(receiver, f"turn {turn}".encode())
        assert kind == MSG
        assert receiver.receive(sender, kind, ciphertext) == f"turn {turn}".encode()


def test_a_replayed_msg_is_a_duplicate_message_and_changes_nothing() -> None:
    """Decrypting a msg twice is DuplicateMessage naming its counter; the record stays."""
    alice, bob = talking()
    sealed = [alice.send(bob, f"m{i}".encode()) for i in range(2)]
    for item in sealed:
        bob.receive(alice, *item)
    before = plain_json(bob.record(alice))
    with pytest.raises(DuplicateMessage) as caught:
        decrypt_whisper(
            bob.record(alice), bob.ours, "alice", sealed[0][1], now_ms=9_999, new_key_pair=key_pair
        )
    assert caught.value.counter == 0
    assert plain_json(bob.record(alice)) == before


def test_a_replayed_pkmsg_is_a_duplicate_message() -> None:
    """A pkmsg decrypted once (its one-time pre-key now gone) is a DuplicateMessage again."""
    alice, bob = pair()
    sealed = alice.send(bob, b"once")
    bob.receive(alice, *sealed)
    with pytest.raises(DuplicateMessage):
        bob.receive(alice, *sealed)


def test_a_counter_more_than_2000_ahead_is_too_far_in_future() -> None:
    """A msg 2,000 past the chain decrypts; one 2,001 past is TooFarInFuture and changes nothing."""
    alice, bob = talking()
    sealed = [alice.send(bob, b"x") for _ in range(MAX_SKIP + 2)]
    assert bob.receive(alice, *sealed[0]) == b"x"  # Bob's chain now stands at counter 0
    before = plain_json(bob.record(alice))
    with pytest.raises(TooFarInFuture):
        decrypt_whisper(
            bob.record(alice),
            bob.ours,
            "alice",
            sealed[MAX_SKIP + 1][1],
            now_ms=1,
            new_key_pair=key_pair,
        )
    assert plain_json(bob.record(alice)) == before
    assert bob.receive(alice, *sealed[MAX_SKIP]) == b"x"


def test_a_tampered_mac_is_bad_mac_and_leaves_the_record_as_it_was() -> None:
    """A msg whose MAC does not verify raises BadMac naming msg.mac; the record is unchanged."""
    alice, bob = talking()
    kind, ciphertext = alice.send(bob, b"secret")
    forged = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])
    record = bob.record(alice)
    before = plain_json(record)
    with pytest.raises(BadMac) as caught:
        decrypt_whisper(record, bob.ours, "alice", forged, now_ms=5, new_key_pair=key_pair)
    assert caught.value.field == "msg.mac"
    assert plain_json(record) == before
    assert bob.receive(alice, kind, ciphertext) == b"secret"


def test_a_msg_on_a_new_ratchet_key_that_fails_leaves_the_record_as_it_was() -> None:
    """A forged msg claiming a new ratchet key is refused without stepping the stored ratchet."""
    alice, bob = talking()
    _, genuine = alice.send(bob, b"real")
    message = parse_whisper(genuine)
    body = build_whisper_body(key_pair().public, 0, 0, message.ciphertext)
    record = bob.record(alice)
    before = plain_json(record)
    with pytest.raises(BadMac):
        decrypt_whisper(
            record, bob.ours, "alice", body + bytes(MAC_LENGTH), now_ms=5, new_key_pair=key_pair
        )
    assert plain_json(record) == before
    assert bob.receive(alice, MSG, genuine) == b"real"


def test_a_pkmsg_naming_a_consumed_pre_key_is_missing_pre_key() -> None:
    """A second session started from the same bundle names a pre-key Bob used: MissingPreKey."""
    alice, bob = Peer.make("alice", 1), Peer.make("bob", 2)
    stale = bob.bundle(1)
    alice.start(bob, bundle=stale)
    bob.receive(alice, *alice.send(bob, b"first"))
    assert 1 not in bob.pre_keys
    alice.start(bob, bundle=stale)
    kind, ciphertext = alice.send(bob, b"second")
    before = plain_json(bob.record(alice))
    with pytest.raises(MissingPreKey) as caught:
        bob.receive(alice, kind, ciphertext)
    assert caught.value.key_id == 1
    assert plain_json(bob.record(alice)) == before


def test_a_bundle_with_a_bad_signed_pre_key_signature_is_refused_and_adds_nothing() -> None:
    """start_outgoing verifies the signed pre-key signature: InvalidSignature, record untouched."""
    alice, bob = Peer.make("alice", 1), Peer.make("bob", 2)
    good = bob.bundle(1)
    bad_signature = bytearray(good.signed_pre_key.signature)
    bad_signature[10] ^= 0x40
    record = SessionRecord()
    with pytest.raises(InvalidSignature):
        start_outgoing(
            record,
            alice.ours,
            bob.bundle(1, signature=bytes(bad_signature)),
            now_ms=1,
            new_key_pair=key_pair,
        )
    other_identity = key_pair()
    signed_by_someone_else = sign(other_identity.private, bob.ours.signed_pre_key.public)
    with pytest.raises(InvalidSignature):
        start_outgoing(
            record,
            alice.ours,
            bob.bundle(1, signature=signed_by_someone_else),
            now_ms=1,
            new_key_pair=key_pair,
        )
    assert record.sessions == {}


def test_encrypt_without_a_session_is_no_session() -> None:
    """Encrypting for an address with no record, or with only closed sessions, is NoSession."""
    alice, bob = Peer.make("alice", 1), Peer.make("bob", 2)
    with pytest.raises(NoSession):
        alice.send(bob, b"nobody")
    alice.start(bob)
    record = alice.record(bob)
    record.close_open_session(5)
    with pytest.raises(NoSession) as caught:
        encrypt(record, alice.ours, "bob", b"closed")
    assert caught.value.reason == "no open session"


def test_a_pkmsg_carrying_a_base_key_we_made_is_refused() -> None:
    """A pkmsg reflected back to its sender names one of her own sessions: InvalidMessage."""
    alice, bob = pair()
    _, ciphertext = alice.send(bob, b"reflected")
    with pytest.raises(InvalidMessage) as caught:
        alice.receive(bob, PKMSG, ciphertext)
    assert caught.value.field == "pkmsg.base_key"


def test_a_record_keeps_at_most_40_sessions_dropping_the_longest_closed() -> None:
    """Bob accepts 45 sessions from Alice: he keeps 40, the open one and the 39 closed last."""
    alice, bob = Peer.make("alice", 1), Peer.make("bob", 2)
    base_keys = []
    for _ in range(MAX_SESSIONS + 5):
        alice.records.clear()
        alice.start(bob, pre_key_id=None)
        kind, ciphertext = alice.send(bob, b"again")
        base_keys.append(parse_pre_key_message(ciphertext).base_key)
        bob.receive(alice, kind, ciphertext)
        assert len(bob.record(alice).sessions) <= MAX_SESSIONS
    record = bob.record(alice)
    assert list(record.sessions) == base_keys[5:]
    assert [entry.is_closed for entry in record.sessions.values()] == [True] * 39 + [False]


def test_starting_sessions_never_leaves_more_than_40_in_the_record() -> None:
    """Starting 45 sessions from bundles leaves 40 in the record: the open one, 39 closed last."""
    alice, bob = Peer.make("alice", 1), Peer.make("bob", 2)
    base_keys = []
    for _ in range(MAX_SESSIONS + 5):
        alice.start(bob, pre_key_id=None)
        record = alice.record(bob)
        assert len(record.sessions) <= MAX_SESSIONS
        base_keys.append(record.open_session().base_key)
    assert list(alice.record(bob).sessions) == base_keys[5:]


def test_a_low_order_ratchet_key_is_invalid_message_and_changes_nothing() -> None:
    """A msg whose ratchet key is a low-order point is InvalidMessage; the record is unchanged."""
    alice, bob = talking()
    message = parse_whisper(alice.send(bob, b"x")[1])
    body = build_whisper_body(b"\x05" + bytes(32), 0, 0, message.ciphertext)
    record = bob.record(alice)
    before = plain_json(record)
    with pytest.raises(InvalidMessage):
        decrypt_whisper(
            record, bob.ours, "alice", body + bytes(MAC_LENGTH), now_ms=1, new_key_pair=key_pair
        )
    assert plain_json(record) == before


@pytest.mark.parametrize("part", ["base_key", "identity_key"])
def test_a_low_order_key_in_a_pkmsg_is_invalid_message(part: str) -> None:
    """A pkmsg whose base key or identity key is a low-order point is refused as InvalidMessage."""
    alice, bob = pair()
    genuine = parse_pre_key_message(alice.send(bob, b"x")[1])
    forged = replace(genuine, **{part: b"\x05" + bytes(32)})
    with pytest.raises(InvalidMessage):
        bob.receive(alice, PKMSG, build_pre_key_message(forged))
    assert bob.record(alice).sessions == {}
    assert sorted(bob.pre_keys) == [1, 2, 3]


def test_a_low_order_ratchet_key_error_names_msg_ephemeral_key() -> None:
    """The InvalidMessage for a low-order ratchet key names the part: msg.ephemeral_key."""
    alice, bob = talking()
    message = parse_whisper(alice.send(bob, b"x")[1])
    body = build_whisper_body(b"\x05" + bytes(32), 0, 0, message.ciphertext)
    with pytest.raises(InvalidMessage) as caught:
        decrypt_whisper(
            bob.record(alice),
            bob.ours,
            "alice",
            body + bytes(MAC_LENGTH),
            now_ms=1,
            new_key_pair=key_pair,
        )
    assert caught.value.field == "msg.ephemeral_key"


def test_a_session_keeps_only_its_five_newest_receiving_chains() -> None:
    """Ratchet turns add receiving chains; beyond five the oldest go, so records stay bounded."""
    alice, bob = talking()
    delayed = alice.send(bob, b"delayed on turn 0")
    for turn in range(12):
        sender, receiver = (alice, bob) if turn % 2 == 0 else (bob, alice)
        assert receiver.receive(sender, *sender.send(receiver, b"x")) == b"x"
        for record in (alice.record(bob), bob.record(alice)):
            session = record.open_session()
            assert session is not None
            receiving = [c for c in session.chains.values() if c.chain_type is ChainType.RECEIVING]
            assert len(receiving) <= MAX_RECEIVING_CHAINS
    before = plain_json(bob.record(alice))
    with pytest.raises(SignalError):
        bob.receive(alice, *delayed)
    assert plain_json(bob.record(alice)) == before


def test_a_message_from_a_chain_five_turns_back_still_decrypts() -> None:
    """The bound drops only chains older than the five newest: recent late messages still arrive."""
    alice, bob = talking()
    for _ in range(2):
        assert bob.receive(alice, *alice.send(bob, b"a")) == b"a"
        assert alice.receive(bob, *bob.send(alice, b"b")) == b"b"
    late = alice.send(bob, b"late")
    assert bob.receive(alice, *alice.send(bob, b"on time")) == b"on time"
    for _ in range(3):
        assert alice.receive(bob, *bob.send(alice, b"b")) == b"b"
        assert bob.receive(alice, *alice.send(bob, b"a")) == b"a"
    assert bob.receive(alice, *late) == b"late"
