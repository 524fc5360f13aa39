"""``SignalRepository`` over a real memory auth state: what each operation stores, in one
commit, and that a failed one stores nothing; identity changes and the policy; PN and LID
addresses; ``migrate_session``, ``validate_session``, ``delete_session``; groups.

A :class:`Device` is one account (``use_memory_auth_state``) with three one-time pre-keys
(ids 1-3), a repository over its ``auth.keys`` with a counting clock, and the identity
changes it was told about.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace

import pytest

from actors.signal import (
    BadMac,
    DuplicateMessage,
    IdentityChange,
    IdentityPolicy,
    InvalidAddress,
    InvalidMessage,
    InvalidSignature,
    MigrationResult,
    MissingPreKey,
    NoSenderKey,
    NoSession,
    PreKey,
    PreKeyBundle,
    SenderKeyRecord,
    SessionRecord,
    SessionValidation,
    SignalError,
    SignalRepository,
    SignedPreKey,
    TooFarInFuture,
    UntrustedIdentity,
    jid_to_signal_address,
)
from actors.signal.session_record import MAX_SESSIONS, MAX_SKIP
from actors.signal.wire import build_pre_key_message, parse_pre_key_message, parse_whisper
from stores.auth import PersistedAuth, use_memory_auth_state
from stores.keys import generate_pre_keys, signal_public_key
from stores.transactions import TransactionalStore
from stores.types import Batch

ALICE = "111@s.whatsapp.net"
ALICE_ADDRESS = "111.0"
ALICE_LID = "999@lid"
ALICE_LID_ADDRESS = "999_1.0"
BOB = "222@s.whatsapp.net"
BOB_ADDRESS = "222.0"
GROUP = "120363025246125486@g.us"

Sealed = tuple[str, bytes]


@dataclass
class Device:
    """One account: auth state, repository, identity changes reported to it."""

    jid: str
    auth: PersistedAuth
    repo: SignalRepository
    changes: list[IdentityChange] = field(default_factory=list)

    async def bundle(self, pre_key_id: int | None = 1) -> PreKeyBundle:
        """This device's pre-key bundle, as the server hands it out."""
        creds = self.auth.state.creds
        pre_key = None
        if pre_key_id is not None:
            found = await self.auth.keys.get("pre-key", [str(pre_key_id)])
            public = found[str(pre_key_id)]["public"]  # type: ignore[index]
            pre_key = PreKey(pre_key_id, signal_public_key(public))  # type: ignore[arg-type]
        return PreKeyBundle(
            creds.registration_id,
            signal_public_key(creds.signed_identity_key.public),
            SignedPreKey(
                creds.signed_pre_key.key_id,
                signal_public_key(creds.signed_pre_key.key_pair.public),
                creds.signed_pre_key.signature,
            ),
            pre_key,
        )

    @property
    def identity(self) -> bytes:
        return signal_public_key(self.auth.state.creds.signed_identity_key.public)

    async def stored(self, type_: str, id_: str) -> object:
        return (await self.auth.keys.get(type_, [id_])).get(id_)

    async def snapshot(self, type_: str, id_: str) -> str:
        """The stored value as text, to compare byte for byte."""
        value = await self.stored(type_, id_)
        if isinstance(value, bytes):
            return value.hex()
        return json.dumps(value)

    async def pre_key_ids(self) -> set[str]:
        return set(await self.auth.keys.get("pre-key", ["1", "2", "3"]))

    async def send(self, to: Device, plaintext: bytes) -> Sealed:
        return await self.repo.encrypt_message(to.jid, plaintext)

    async def receive(self, sender: Device, sealed: Sealed) -> bytes:
        return await self.repo.decrypt_message(sender.jid, *sealed)


Opener = Callable[..., Awaitable[Device]]


@pytest.fixture
async def open_device() -> AsyncIterator[Opener]:
    """Open devices for a test; all are closed at its end."""
    opened: list[Device] = []

    async def opener(
        jid: str, *, policy: IdentityPolicy = IdentityPolicy.REPLACE, name: str | None = None
    ) -> Device:
        auth = await use_memory_auth_state(name or jid)
        await auth.keys.set({"pre-key": generate_pre_keys(1, 3)})
        changes: list[IdentityChange] = []
        repo = SignalRepository(
            auth.keys,
            lambda: auth.state.creds,
            clock=itertools.count(1_000).__next__,
            identity_policy=policy,
            on_identity_change=changes.append,
        )
        device = Device(jid, auth, repo, changes)
        opened.append(device)
        return device

    yield opener
    for device in opened:
        await device.auth.aclose()


async def started(open_device: Opener, *, pre_key_id: int | None = 1) -> tuple[Device, Device]:
    """Alice with a session to Bob from his bundle (nothing sent yet)."""
    alice, bob = await open_device(ALICE), await open_device(BOB)
    await alice.repo.inject_e2e_session(BOB, await bob.bundle(pre_key_id))
    return alice, bob


async def talking(open_device: Opener) -> tuple[Device, Device]:
    """Alice and Bob after one message each way."""
    alice, bob = await started(open_device)
    assert await bob.receive(alice, await alice.send(bob, b"hello")) == b"hello"
    assert await alice.receive(bob, await bob.send(alice, b"hi")) == b"hi"
    return alice, bob


class RecordingCommit:
    """A commit function over the device's backend that keeps every batch it commits."""

    def __init__(self, device: Device) -> None:
        self.backend = device.auth.backend
        self.batches: list[Batch] = []

    async def __call__(self, batch: Batch) -> int:
        self.batches.append(batch)
        return await self.backend.commit(batch)


# -- sessions ------------------------------------------------------------------------


async def test_a_pkmsg_with_a_one_time_pre_key_deletes_it_in_the_commit_that_stores_the_session(
    open_device: Opener,
) -> None:
    """Bob's decrypt commits once: the session, Alice's identity and pre-key 1's deletion."""
    alice, bob = await started(open_device, pre_key_id=1)
    sealed = await alice.send(bob, b"hello")
    assert sealed[0] == "pkmsg"
    recorder = RecordingCommit(bob)
    repo = SignalRepository(
        TransactionalStore(bob.auth.backend.read_keys, recorder), bob.auth.state.creds
    )
    assert await repo.decrypt_message(ALICE, *sealed) == b"hello"
    assert len(recorder.batches) == 1
    writes = recorder.batches[0].keys
    assert writes["pre-key"] == {"1": None}
    assert list(writes["session"]) == [ALICE_ADDRESS]
    assert writes["identity-key"] == {ALICE_ADDRESS: alice.identity}
    left = await bob.auth.backend.read_keys("pre-key", ["1", "2", "3"])
    assert set(left) == {"2", "3"}


async def test_a_pkmsg_without_a_one_time_pre_key_decrypts_and_deletes_none(
    open_device: Opener,
) -> None:
    """A session from a bundle without one-time pre-key: its pkmsg decrypts, every pre-key stays."""
    alice, bob = await started(open_device, pre_key_id=None)
    sealed = await alice.send(bob, b"three DHs")
    assert parse_pre_key_message(sealed[1]).pre_key_id is None
    assert await bob.receive(alice, sealed) == b"three DHs"
    assert await bob.pre_key_ids() == {"1", "2", "3"}
    assert (await bob.repo.validate_session(ALICE)).exists


async def test_the_first_reply_turns_the_initiators_pkmsgs_into_msgs(open_device: Opener) -> None:
    """Alice's messages are pkmsgs until Bob's first reply decrypts, then msgs."""
    alice, bob = await started(open_device)
    early = [await alice.send(bob, f"m{i}".encode()) for i in range(2)]
    assert [kind for kind, _ in early] == ["pkmsg", "pkmsg"]
    for sealed in early:
        await bob.receive(alice, sealed)
    reply = await bob.send(alice, b"reply")
    assert reply[0] == "msg"
    assert await alice.receive(bob, reply) == b"reply"
    later = await alice.send(bob, b"later")
    assert later[0] == "msg"
    assert await bob.receive(alice, later) == b"later"


async def test_the_ratchet_turns_both_ways_through_the_store(open_device: Opener) -> None:
    """Twelve turns with 1-3 messages each, every one stored and read back between turns."""
    alice, bob = await talking(open_device)
    for turn in range(12):
        sender, receiver = (alice, bob) if turn % 2 == 0 else (bob, alice)
        sealed = [await sender.send(receiver, f"{turn}.{i}".encode()) for i in range(1 + turn % 3)]
        assert len({parse_whisper(c).ephemeral_key for _, c in sealed}) == 1
        for i, item in reversed(list(enumerate(sealed))):
            assert await receiver.receive(sender, item) == f"{turn}.{i}".encode()


async def test_out_of_order_across_ratchet_steps_through_the_store(open_device: Opener) -> None:
    """Delayed pkmsgs of Alice's first chain decrypt after her next chain's msgs arrived."""
    alice, bob = await started(open_device)
    old = [await alice.send(bob, f"old{i}".encode()) for i in range(3)]
    await bob.receive(alice, old[0])
    await alice.receive(bob, await bob.send(alice, b"reply"))
    new = [await alice.send(bob, f"new{i}".encode()) for i in range(2)]
    for sealed, text in (
        (new[1], b"new1"),
        (old[2], b"old2"),
        (new[0], b"new0"),
        (old[1], b"old1"),
    ):
        assert await bob.receive(alice, sealed) == text


async def test_simultaneous_initiation_through_the_store(open_device: Opener) -> None:
    """Both inject the other's bundle and send a pkmsg: both decrypt, and replies keep working."""
    alice, bob = await open_device(ALICE), await open_device(BOB)
    await alice.repo.inject_e2e_session(BOB, await bob.bundle(1))
    await bob.repo.inject_e2e_session(ALICE, await alice.bundle(1))
    from_alice, from_bob = await alice.send(bob, b"a"), await bob.send(alice, b"b")
    assert (from_alice[0], from_bob[0]) == ("pkmsg", "pkmsg")
    assert await bob.receive(alice, from_alice) == b"a"
    assert await alice.receive(bob, from_bob) == b"b"
    for turn in range(4):
        sender, receiver = (alice, bob) if turn % 2 == 0 else (bob, alice)
        assert await receiver.receive(sender, await sender.send(receiver, b"t")) == b"t"


async def test_an_old_sessions_message_decrypts_after_a_new_session_started(
    open_device: Opener,
) -> None:
    """Alice re-injects Bob's bundle; her delayed msg on the first session still decrypts."""
    alice, bob = await talking(open_device)
    delayed = await alice.send(bob, b"first session")
    await alice.repo.inject_e2e_session(BOB, await bob.bundle(2))
    fresh = await alice.send(bob, b"second session")
    assert fresh[0] == "pkmsg"
    assert await bob.receive(alice, fresh) == b"second session"
    assert await bob.receive(alice, delayed) == b"first session"


async def test_a_replay_is_a_duplicate_message_and_stores_nothing(open_device: Opener) -> None:
    """A msg or pkmsg decrypted again is DuplicateMessage; Bob's stored record is unchanged."""
    alice, bob = await started(open_device)
    first = await alice.send(bob, b"pk")
    await bob.receive(alice, first)
    await alice.receive(bob, await bob.send(alice, b"reply"))
    second = await alice.send(bob, b"msg")
    await bob.receive(alice, second)
    before = await bob.snapshot("session", ALICE_ADDRESS)
    for sealed in (first, second):
        with pytest.raises(DuplicateMessage):
            await bob.receive(alice, sealed)
    assert await bob.snapshot("session", ALICE_ADDRESS) == before


async def test_a_counter_more_than_2000_ahead_is_too_far_in_future_through_the_store(
    open_device: Opener,
) -> None:
    """2,001 past Bob's chain is TooFarInFuture and stores nothing; 2,000 past decrypts."""
    alice, bob = await talking(open_device)
    sealed = [await alice.send(bob, b"x") for _ in range(MAX_SKIP + 2)]
    await bob.receive(alice, sealed[0])
    before = await bob.snapshot("session", ALICE_ADDRESS)
    with pytest.raises(TooFarInFuture):
        await bob.receive(alice, sealed[MAX_SKIP + 1])
    assert await bob.snapshot("session", ALICE_ADDRESS) == before
    assert await bob.receive(alice, sealed[MAX_SKIP]) == b"x"


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]


async def test_failed_decrypts_leave_every_stored_record_byte_for_byte(open_device: Opener) -> None:
    """Bad MAC, garbage, a wrong type and a pkmsg with a bad inner MAC store nothing at all."""
    alice, bob = await started(open_device)
    pkmsg = await alice.send(bob, b"pk")
    outer = parse_pre_key_message(pkmsg[1])
    inner_mac_flipped = replace(outer, message=_flip(outer.message, len(outer.message) - 1))
    broken_pkmsg = ("pkmsg", build_pre_key_message(inner_mac_flipped))
    with pytest.raises(BadMac):
        await bob.receive(alice, broken_pkmsg)
    assert await bob.stored("session", ALICE_ADDRESS) is None
    assert await bob.stored("identity-key", ALICE_ADDRESS) is None
    assert await bob.pre_key_ids() == {"1", "2", "3"}

    await bob.receive(alice, pkmsg)
    await alice.receive(bob, await bob.send(alice, b"reply"))
    msg = await alice.send(bob, b"msg")
    before = [await bob.snapshot(t, ALICE_ADDRESS) for t in ("session", "identity-key")]
    failures: list[tuple[Sealed, type[Exception]]] = [
        (("msg", _flip(msg[1], len(msg[1]) - 1)), BadMac),
        (("msg", _flip(msg[1], len(msg[1]) - 9)), BadMac),  # ciphertext
        (("msg", msg[1][:5]), InvalidMessage),
        (("skmsg", msg[1]), InvalidMessage),
    ]
    for sealed, error in failures:
        with pytest.raises(error):
            await bob.receive(alice, sealed)
        assert [await bob.snapshot(t, ALICE_ADDRESS) for t in ("session", "identity-key")] == before
    assert await bob.receive(alice, msg) == b"msg"


async def test_a_pkmsg_replayed_with_a_malleated_base_key_is_refused(open_device: Opener) -> None:
    """A pkmsg replayed with its base key's ignored top bit flipped is not decrypted twice."""
    alice, bob = await started(open_device, pre_key_id=None)
    kind, ciphertext = await alice.send(bob, b"pay 10")
    assert await bob.receive(alice, (kind, ciphertext)) == b"pay 10"
    message = parse_pre_key_message(ciphertext)
    malleated = message.base_key[:-1] + bytes([message.base_key[-1] ^ 0x80])
    replayed = build_pre_key_message(replace(message, base_key=malleated))
    with pytest.raises(SignalError):
        await bob.receive(alice, (kind, replayed))


async def test_a_pkmsg_naming_a_consumed_pre_key_is_missing_pre_key(open_device: Opener) -> None:
    """A second session from the same bundle names pre-key 1 Bob already used: MissingPreKey."""
    alice, bob = await open_device(ALICE), await open_device(BOB)
    stale = await bob.bundle(1)
    await alice.repo.inject_e2e_session(BOB, stale)
    await bob.receive(alice, await alice.send(bob, b"first"))
    await alice.repo.inject_e2e_session(BOB, stale)
    second = await alice.send(bob, b"second")
    before = await bob.snapshot("session", ALICE_ADDRESS)
    with pytest.raises(MissingPreKey) as caught:
        await bob.receive(alice, second)
    assert caught.value.key_id == 1
    assert await bob.snapshot("session", ALICE_ADDRESS) == before


async def test_a_bundle_with_a_bad_signature_is_refused_and_stores_nothing(
    open_device: Opener,
) -> None:
    """inject_e2e_session with a forged signed pre-key signature: InvalidSignature, no writes."""
    alice, bob = await open_device(ALICE), await open_device(BOB)
    good = await bob.bundle(1)
    signature = bytearray(good.signed_pre_key.signature)
    signature[0] ^= 1
    forged = PreKeyBundle(
        good.registration_id,
        good.identity_key,
        SignedPreKey(good.signed_pre_key.key_id, good.signed_pre_key.public_key, bytes(signature)),
        good.pre_key,
    )
    with pytest.raises(InvalidSignature):
        await alice.repo.inject_e2e_session(BOB, forged)
    assert await alice.stored("session", BOB_ADDRESS) is None
    assert await alice.stored("identity-key", BOB_ADDRESS) is None
    assert alice.changes == []


async def test_a_stored_record_never_holds_more_than_40_sessions(open_device: Opener) -> None:
    """45 injected sessions with Bob, then 5 pkmsgs to him: both stored records hold at most 40."""
    alice, bob = await open_device(ALICE), await open_device(BOB)
    for round_ in range(MAX_SESSIONS + 5):
        await alice.repo.inject_e2e_session(BOB, await bob.bundle(None))
        stored = SessionRecord.from_plain(await alice.stored("session", BOB_ADDRESS))
        assert len(stored.sessions) == min(round_ + 1, MAX_SESSIONS)
        await bob.receive(alice, await alice.send(bob, b"again"))
        stored = SessionRecord.from_plain(await bob.stored("session", ALICE_ADDRESS))
        assert len(stored.sessions) == min(round_ + 1, MAX_SESSIONS)


async def test_encrypt_without_a_session_is_no_session(open_device: Opener) -> None:
    """Encrypting for a device we have no session with raises NoSession and stores nothing."""
    alice = await open_device(ALICE)
    with pytest.raises(NoSession):
        await alice.repo.encrypt_message(BOB, b"?")
    assert await alice.stored("session", BOB_ADDRESS) is None


# -- identities ----------------------------------------------------------------------


async def reinstalled(open_device: Opener, policy: IdentityPolicy) -> tuple[Device, Device, Device]:
    """Bob (with ``policy``) talking to Alice; then Alice's account reinstalled: a new identity
    with the same JID, which starts a session from Bob's bundle and has sent nothing yet."""
    alice, bob = await open_device(ALICE), await open_device(BOB, policy=policy)
    await alice.repo.inject_e2e_session(BOB, await bob.bundle(1))
    await bob.receive(alice, await alice.send(bob, b"hello"))
    await alice.receive(bob, await bob.send(alice, b"hi"))
    new_alice = await open_device(ALICE, name="alice reinstalled")
    await new_alice.repo.inject_e2e_session(BOB, await bob.bundle(2))
    assert new_alice.identity != alice.identity
    return alice, bob, new_alice


async def test_first_use_of_an_identity_is_stored_and_reported(open_device: Opener) -> None:
    """The first pkmsg from an address stores its identity key and reports it with no previous."""
    alice, bob = await started(open_device)
    await bob.receive(alice, await alice.send(bob, b"hello"))
    assert await bob.stored("identity-key", ALICE_ADDRESS) == alice.identity
    assert bob.changes == [IdentityChange(ALICE_ADDRESS, None, alice.identity)]
    assert alice.changes == [IdentityChange(BOB_ADDRESS, None, bob.identity)]


async def test_a_new_identity_replaces_the_sessions_and_is_reported(open_device: Opener) -> None:
    """A pkmsg from a new identity replaces the address's sessions, reporting old and new key."""
    alice, bob, new_alice = await reinstalled(open_device, IdentityPolicy.REPLACE)
    reported = len(bob.changes)
    assert await bob.receive(new_alice, await new_alice.send(bob, b"new phone")) == b"new phone"
    record = SessionRecord.from_plain(await bob.stored("session", ALICE_ADDRESS))
    assert len(record.sessions) == 1
    assert next(iter(record.sessions.values())).remote_identity == new_alice.identity
    assert await bob.stored("identity-key", ALICE_ADDRESS) == new_alice.identity
    assert bob.changes[reported:] == [
        IdentityChange(ALICE_ADDRESS, alice.identity, new_alice.identity)
    ]
    assert await new_alice.receive(bob, await bob.send(new_alice, b"welcome")) == b"welcome"


async def test_strict_policy_refuses_a_new_identity_and_changes_nothing(
    open_device: Opener,
) -> None:
    """With STRICT that pkmsg is UntrustedIdentity, stores nothing; the old session works."""
    alice, bob, new_alice = await reinstalled(open_device, IdentityPolicy.STRICT)
    before = [await bob.snapshot(t, ALICE_ADDRESS) for t in ("session", "identity-key")]
    pre_keys, reported = await bob.pre_key_ids(), list(bob.changes)
    with pytest.raises(UntrustedIdentity) as caught:
        await bob.receive(new_alice, await new_alice.send(bob, b"new phone"))
    assert caught.value.address == ALICE_ADDRESS
    assert [await bob.snapshot(t, ALICE_ADDRESS) for t in ("session", "identity-key")] == before
    assert (await bob.pre_key_ids(), bob.changes) == (pre_keys, reported)
    assert await bob.receive(alice, await alice.send(bob, b"old phone")) == b"old phone"


async def test_a_bundle_with_a_new_identity_replaces_the_sessions(open_device: Opener) -> None:
    """Injecting a bundle whose identity changed drops the old sessions and reports the change."""
    alice, bob = await talking(open_device)
    new_bob = await open_device(BOB, name="bob reinstalled")
    reported = len(alice.changes)
    await alice.repo.inject_e2e_session(BOB, await new_bob.bundle(1))
    record = SessionRecord.from_plain(await alice.stored("session", BOB_ADDRESS))
    assert len(record.sessions) == 1
    assert next(iter(record.sessions.values())).remote_identity == new_bob.identity
    assert await alice.stored("identity-key", BOB_ADDRESS) == new_bob.identity
    assert alice.changes[reported:] == [IdentityChange(BOB_ADDRESS, bob.identity, new_bob.identity)]
    assert await new_bob.receive(alice, await alice.send(new_bob, b"hello again")) == b"hello again"


async def test_strict_policy_refuses_a_bundle_with_a_new_identity(open_device: Opener) -> None:
    """With STRICT, a bundle whose identity changed is UntrustedIdentity; nothing is stored."""
    alice, bob = await open_device(ALICE, policy=IdentityPolicy.STRICT), await open_device(BOB)
    await alice.repo.inject_e2e_session(BOB, await bob.bundle(1))
    before = await alice.snapshot("session", BOB_ADDRESS)
    new_bob = await open_device(BOB, name="bob reinstalled")
    with pytest.raises(UntrustedIdentity):
        await alice.repo.inject_e2e_session(BOB, await new_bob.bundle(1))
    assert await alice.snapshot("session", BOB_ADDRESS) == before
    assert await alice.stored("identity-key", BOB_ADDRESS) == bob.identity


# -- addresses -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("jid", "address"),
    [
        ("123@s.whatsapp.net", "123.0"),
        ("123:4@s.whatsapp.net", "123.4"),
        ("123:0@s.whatsapp.net", "123.0"),
        ("123@lid", "123_1.0"),
        ("123:7@lid", "123_1.7"),
        ("123@hosted", "123_128.0"),
        ("123:99@hosted", "123_128.99"),
        ("123@hosted.lid", "123_129.0"),
        ("123:99@hosted.lid", "123_129.99"),
    ],
)
def test_jid_to_signal_address(jid: str, address: str) -> None:
    """PN is user.device, LID user_1, hosted user_128, hosted LID user_129; device 0 by default."""
    assert jid_to_signal_address(jid) == address
    assert SignalRepository.jid_to_signal_address(jid) == address


@pytest.mark.parametrize(
    "jid",
    ["123:99@s.whatsapp.net", "123:99@lid", "@s.whatsapp.net", "no-at-sign", "1:x@lid", ""],
)
def test_jid_to_signal_address_refuses_what_is_not_an_address(jid: str) -> None:
    """Device 99 off a hosted server, no user, no server or a bad device is InvalidAddress."""
    with pytest.raises(InvalidAddress):
        jid_to_signal_address(jid)


async def test_a_pn_jid_with_a_lid_mapping_uses_the_lid_session(open_device: Opener) -> None:
    """With lid-mapping {111: 999}, Alice's PN and LID JIDs share one session at 999_1.0."""
    alice, bob = await started(open_device)
    await bob.auth.keys.set({"lid-mapping": {"111": "999"}})
    assert await bob.repo.resolve_address(ALICE) == ALICE_LID_ADDRESS
    assert await bob.repo.resolve_address("111:3@s.whatsapp.net") == "999_1.3"
    assert await bob.repo.resolve_address("111@hosted") == "999_129.0"
    assert await bob.repo.resolve_address(ALICE_LID) == ALICE_LID_ADDRESS
    await bob.receive(alice, await alice.send(bob, b"by PN"))
    sealed = await alice.send(bob, b"by LID")
    assert await bob.repo.decrypt_message(ALICE_LID, *sealed) == b"by LID"
    assert (await bob.repo.encrypt_message(ALICE_LID, b"reply"))[0] == "msg"
    assert (await bob.repo.encrypt_message(ALICE, b"reply 2"))[0] == "msg"
    assert await bob.stored("session", ALICE_ADDRESS) is None
    record = SessionRecord.from_plain(await bob.stored("session", ALICE_LID_ADDRESS))
    assert len(record.sessions) == 1


async def test_migrate_session_moves_open_sessions_and_writes_the_mapping(
    open_device: Opener,
) -> None:
    """migrate_session moves the PN record to the LID address and maps both ways; talk goes on."""
    alice, bob = await talking(open_device)
    before = await bob.stored("session", ALICE_ADDRESS)
    result = await bob.repo.migrate_session(ALICE, ALICE_LID)
    assert result == MigrationResult(migrated=1, skipped=0, total=1)
    assert await bob.stored("session", ALICE_ADDRESS) is None
    assert await bob.stored("session", ALICE_LID_ADDRESS) == before
    assert await bob.auth.keys.get("lid-mapping", ["111", "999_reverse"]) == {
        "111": "999",
        "999_reverse": "111",
    }
    assert await bob.receive(alice, await alice.send(bob, b"after")) == b"after"
    sealed = await alice.send(bob, b"by LID")
    assert await bob.repo.decrypt_message(ALICE_LID, *sealed) == b"by LID"
    assert await alice.receive(bob, await bob.send(alice, b"back")) == b"back"


async def test_migrate_session_skips_devices_without_an_open_pn_session_or_with_a_lid_one(
    open_device: Opener,
) -> None:
    """Devices from device-list with no PN session, or whose LID address is open, stay put."""
    _, bob = await talking(open_device)
    await bob.auth.keys.set({"device-list": {"111": ["0", "4", "5"]}})
    lid_session = await bob.stored("session", ALICE_ADDRESS)
    await bob.auth.keys.set({"session": {"999_1.5": lid_session, "111.5": lid_session}})
    result = await bob.repo.migrate_session(ALICE, ALICE_LID)
    assert result == MigrationResult(migrated=1, skipped=2, total=3)
    assert await bob.stored("session", "111.5") == lid_session
    assert await bob.stored("session", "999_1.4") is None


async def test_migrate_session_goes_from_pn_to_lid_only(open_device: Opener) -> None:
    """Migrating from a LID, or to a PN, is InvalidAddress."""
    bob = await open_device(BOB)
    for pn, lid in ((ALICE_LID, ALICE), (ALICE, "333@s.whatsapp.net")):
        with pytest.raises(InvalidAddress):
            await bob.repo.migrate_session(pn, lid)


async def test_strict_policy_still_refuses_a_new_identity_after_migration(
    open_device: Opener,
) -> None:
    """After migrate_session the contact's known identity still guards its LID address."""
    _, bob, new_alice = await reinstalled(open_device, IdentityPolicy.STRICT)
    await bob.repo.migrate_session(ALICE, ALICE_LID)
    with pytest.raises(UntrustedIdentity):
        await bob.receive(new_alice, await new_alice.send(bob, b"new phone"))


async def test_validate_session_says_whether_an_open_session_exists_and_why_not(
    open_device: Opener,
) -> None:
    """No record, an unreadable one, only closed sessions: not valid, each with its reason."""
    alice, bob = await open_device(ALICE), await open_device(BOB)
    assert await alice.repo.validate_session(BOB) == SessionValidation(False, "no session")
    await alice.repo.inject_e2e_session(BOB, await bob.bundle(1))
    assert await alice.repo.validate_session(BOB) == SessionValidation(True)
    record = SessionRecord.from_plain(await alice.stored("session", BOB_ADDRESS))
    record.close_open_session(5)
    await alice.auth.keys.set({"session": {BOB_ADDRESS: record.to_plain()}})
    assert await alice.repo.validate_session(BOB) == SessionValidation(False, "no open session")
    await alice.auth.keys.set({"session": {BOB_ADDRESS: {"version": "v9"}}})
    validation = await alice.repo.validate_session(BOB)
    assert not validation.exists and (validation.reason or "").startswith("unreadable record")


async def test_delete_session_removes_the_records_of_every_device_named(
    open_device: Opener,
) -> None:
    """delete_session([...]) removes each device's record (a PN JID through its LID mapping)."""
    alice, bob = await open_device(ALICE), await open_device(BOB)
    await alice.repo.inject_e2e_session(BOB, await bob.bundle(1))
    await alice.repo.inject_e2e_session("333@lid", await bob.bundle(2))
    await alice.auth.keys.set({"lid-mapping": {"444": "333"}})
    await alice.repo.delete_session([BOB, "444@s.whatsapp.net"])
    assert await alice.repo.validate_session(BOB) == SessionValidation(False, "no session")
    assert await alice.stored("session", "333_1.0") is None
    with pytest.raises(NoSession):
        await alice.repo.encrypt_message(BOB, b"gone")


# -- groups --------------------------------------------------------------------------


SENDER_KEY = f"{GROUP}::111::0"


async def test_a_group_message_decrypts_after_its_skdm_through_the_store(
    open_device: Opener,
) -> None:
    """Alice's skdm is stored by Bob under group::111::0 as JSON bytes; her skmsgs decrypt."""
    alice, bob = await open_device(ALICE), await open_device(BOB)
    assert not await alice.repo.has_sender_key(GROUP, ALICE)
    skdm, first = await alice.repo.encrypt_group_message(GROUP, ALICE, b"g0")
    assert await alice.repo.has_sender_key(GROUP, ALICE)
    await bob.repo.process_sender_key_distribution_message(GROUP, ALICE, skdm)
    stored = await bob.stored("sender-key", SENDER_KEY)
    assert isinstance(stored, bytes) and stored.startswith(b'[{"senderKeyId":')
    later = [
        (await alice.repo.encrypt_group_message(GROUP, ALICE, f"g{i}".encode()))[1] for i in (1, 2)
    ]
    for ciphertext, text in ((later[1], b"g2"), (first, b"g0"), (later[0], b"g1")):
        assert await bob.repo.decrypt_group_message(GROUP, ALICE, ciphertext) == text
    assert (
        SenderKeyRecord.from_stored(await bob.stored("sender-key", SENDER_KEY))
        .states[0]
        .message_keys
        == []
    )


async def test_failed_group_decrypts_store_nothing(open_device: Opener) -> None:
    """NoSenderKey, a tampered skmsg and a replay store nothing; a repeated skdm changes nothing."""
    alice, bob = await open_device(ALICE), await open_device(BOB)
    skdm, first = await alice.repo.encrypt_group_message(GROUP, ALICE, b"g0")
    with pytest.raises(NoSenderKey):
        await bob.repo.decrypt_group_message(GROUP, ALICE, first)
    assert await bob.stored("sender-key", SENDER_KEY) is None
    await bob.repo.process_sender_key_distribution_message(GROUP, ALICE, skdm)
    await bob.repo.decrypt_group_message(GROUP, ALICE, first)
    _, second = await alice.repo.encrypt_group_message(GROUP, ALICE, b"g1")
    before = await bob.snapshot("sender-key", SENDER_KEY)
    for ciphertext, error in (
        (_flip(second, len(second) - 65), InvalidSignature),
        (first, DuplicateMessage),
    ):
        with pytest.raises(error):
            await bob.repo.decrypt_group_message(GROUP, ALICE, ciphertext)
        assert await bob.snapshot("sender-key", SENDER_KEY) == before
    await bob.repo.process_sender_key_distribution_message(GROUP, ALICE, skdm)
    assert await bob.snapshot("sender-key", SENDER_KEY) == before
    assert await bob.repo.decrypt_group_message(GROUP, ALICE, second) == b"g1"
