"""Sender keys' pure core: a sender's own record, the ``skdm`` a member takes, ``skmsg`` decrypt.

A member's record changes only through ``process_distribution`` and ``decrypt``; each
test decrypts on the record itself (the core's contract for a failure is checked by
comparing ``to_bytes()`` before and after).
"""

from __future__ import annotations

import secrets
from dataclasses import replace

import pytest

from actors.signal import group_cipher
from actors.signal.crypto import chain_step
from actors.signal.errors import (
    DuplicateMessage,
    InvalidMessage,
    InvalidSignature,
    NoSenderKey,
    TooFarInFuture,
)
from actors.signal.sender_key_record import MAX_MESSAGE_KEYS, MAX_STATES, SenderKeyRecord
from actors.signal.session_record import MAX_SKIP
from actors.signal.wire import (
    build_distribution_message,
    parse_distribution_message,
    parse_sender_key_message,
)
from tests.signal.test_core_session import key_pair

NAME = "120363025246125486@g.us::111::0"


def own_record(key_id: int = 17) -> SenderKeyRecord:
    """A sender's own record: one state with the signing private key, at iteration 0."""
    record = SenderKeyRecord()
    assert group_cipher.ensure_own_state(record, key_id, secrets.token_bytes(32), key_pair())
    return record


def member_of(sender: SenderKeyRecord) -> SenderKeyRecord:
    """A member's record for ``sender`` after taking its current skdm."""
    record = SenderKeyRecord()
    assert group_cipher.process_distribution(
        record, group_cipher.distribution_message(sender, NAME)
    )
    return record


def advance(sender: SenderKeyRecord, steps: int) -> None:
    """Move the sender's chain on by ``steps`` iterations (messages nobody received)."""
    state = sender.states[-1]
    for _ in range(steps):
        _, state.chain_key = chain_step(state.chain_key)
    state.iteration += steps


def test_an_skmsg_decrypts_after_its_skdm_was_processed() -> None:
    """A member who took the sender's skdm decrypts the sender's following messages."""
    sender = own_record()
    member = member_of(sender)
    for i in range(3):
        ciphertext = group_cipher.encrypt(sender, NAME, f"g{i}".encode())
        assert parse_sender_key_message(ciphertext).iteration == i
        assert group_cipher.decrypt(member, NAME, ciphertext) == f"g{i}".encode()


def test_the_skdm_names_the_state_and_its_current_iteration() -> None:
    """The skdm carries the key id, the chain at its next iteration and the 33-byte signing key."""
    sender = own_record(key_id=42)
    group_cipher.encrypt(sender, NAME, b"before")
    message = parse_distribution_message(group_cipher.distribution_message(sender, NAME))
    state = sender.states[0]
    assert (message.key_id, message.iteration) == (42, 1)
    assert message.chain_key == state.chain_key
    assert message.signing_key == state.signing_public and len(message.signing_key) == 33


def test_a_member_cannot_read_messages_sent_before_its_skdm() -> None:
    """An skdm taken at iteration 2 reads iteration 2 on; iteration 1 is below its chain."""
    sender = own_record()
    early = [group_cipher.encrypt(sender, NAME, b"early") for _ in range(2)]
    member = member_of(sender)
    later = group_cipher.encrypt(sender, NAME, b"later")
    assert group_cipher.decrypt(member, NAME, later) == b"later"
    with pytest.raises(DuplicateMessage):
        group_cipher.decrypt(member, NAME, early[1])


def test_iterations_decrypt_in_any_order() -> None:
    """Skipped iterations' keys are kept, so messages decrypt whatever order they arrive in."""
    sender = own_record()
    member = member_of(sender)
    sealed = [group_cipher.encrypt(sender, NAME, f"g{i}".encode()) for i in range(6)]
    for i in (3, 0, 5, 1, 4, 2):
        assert group_cipher.decrypt(member, NAME, sealed[i]) == f"g{i}".encode()
    assert member.states[0].message_keys == []


def test_a_decrypted_iteration_is_a_duplicate_message() -> None:
    """The same skmsg twice, in order or out of order, is DuplicateMessage the second time."""
    sender = own_record()
    member = member_of(sender)
    sealed = [group_cipher.encrypt(sender, NAME, b"x") for _ in range(3)]
    group_cipher.decrypt(member, NAME, sealed[2])
    group_cipher.decrypt(member, NAME, sealed[0])
    for i in (2, 0):
        before = member.to_bytes()
        with pytest.raises(DuplicateMessage) as caught:
            group_cipher.decrypt(member, NAME, sealed[i])
        assert caught.value.counter == i
        assert member.to_bytes() == before
    assert group_cipher.decrypt(member, NAME, sealed[1]) == b"x"


@pytest.mark.parametrize("where", ["ciphertext", "iteration", "signature", "sign bit"])
def test_a_tampered_skmsg_is_invalid_signature_and_changes_nothing(where: str) -> None:
    """A flipped bit in the signed part or the signature is InvalidSignature; the record stays."""
    sender = own_record()
    member = member_of(sender)
    ciphertext = bytearray(group_cipher.encrypt(sender, NAME, b"signed"))
    signed_length = len(ciphertext) - 64
    index = {
        "ciphertext": signed_length - 3,
        "iteration": 4,  # 33, tag 08, key id (1 byte: 17), tag 10, iteration 0
        "signature": signed_length + 5,
        "sign bit": len(ciphertext) - 1,
    }[where]
    ciphertext[index] ^= 0x80 if where == "sign bit" else 0x01
    before = member.to_bytes()
    with pytest.raises(InvalidSignature):
        group_cipher.decrypt(member, NAME, bytes(ciphertext))
    assert member.to_bytes() == before


def test_an_unknown_key_id_is_no_sender_key() -> None:
    """An skmsg under a key id the member never received is NoSenderKey; no record is no key."""
    first, second = own_record(key_id=1), own_record(key_id=2)
    member = member_of(first)
    with pytest.raises(NoSenderKey) as caught:
        group_cipher.decrypt(member, NAME, group_cipher.encrypt(second, NAME, b"?"))
    assert "2" in caught.value.reason
    with pytest.raises(NoSenderKey):
        group_cipher.decrypt(SenderKeyRecord(), NAME, group_cipher.encrypt(first, NAME, b"?"))


def test_only_the_owner_can_encrypt() -> None:
    """A member's state has no signing private key, and an empty record none at all."""
    member = member_of(own_record())
    with pytest.raises(NoSenderKey):
        group_cipher.encrypt(member, NAME, b"impostor")
    with pytest.raises(NoSenderKey):
        group_cipher.encrypt(SenderKeyRecord(), NAME, b"nothing")
    with pytest.raises(NoSenderKey):
        group_cipher.distribution_message(SenderKeyRecord(), NAME)


def test_a_record_keeps_at_most_5_states_dropping_the_oldest() -> None:
    """Six generations of a sender's key: the member keeps the newest five."""
    senders = [own_record(key_id=100 + i) for i in range(MAX_STATES + 1)]
    member = SenderKeyRecord()
    for sender in senders:
        group_cipher.process_distribution(member, group_cipher.distribution_message(sender, NAME))
        assert len(member.states) <= MAX_STATES
    assert [state.key_id for state in member.states] == [101, 102, 103, 104, 105]
    with pytest.raises(NoSenderKey):
        group_cipher.decrypt(member, NAME, group_cipher.encrypt(senders[0], NAME, b"old"))
    for sender in senders[1:]:
        assert (
            group_cipher.decrypt(member, NAME, group_cipher.encrypt(sender, NAME, b"ok")) == b"ok"
        )


def test_an_iteration_more_than_2000_ahead_is_too_far_in_future() -> None:
    """2,000 iterations past the member's chain decrypts; 2,001 is TooFarInFuture, nothing kept."""
    sender = own_record()
    member = member_of(sender)
    advance(sender, MAX_SKIP + 1)
    too_far = group_cipher.encrypt(sender, NAME, b"far")
    before = member.to_bytes()
    with pytest.raises(TooFarInFuture) as caught:
        group_cipher.decrypt(member, NAME, too_far)
    assert caught.value.field == "skmsg.iteration"
    assert member.to_bytes() == before

    sender = own_record()
    member = member_of(sender)
    advance(sender, MAX_SKIP)
    assert (
        group_cipher.decrypt(member, NAME, group_cipher.encrypt(sender, NAME, b"edge")) == b"edge"
    )


def test_kept_group_message_keys_are_capped_at_2000_oldest_dropped() -> None:
    """Skipping 2,000 then 10 more keeps the newest 2,000 skipped keys; the oldest are gone."""
    sender = own_record()
    member = member_of(sender)
    first = group_cipher.encrypt(sender, NAME, b"first")  # iteration 0, never delivered yet
    second = group_cipher.encrypt(sender, NAME, b"second")  # iteration 1
    advance(sender, MAX_MESSAGE_KEYS - 2)
    group_cipher.decrypt(member, NAME, group_cipher.encrypt(sender, NAME, b"jump"))
    assert len(member.states[0].message_keys) == MAX_MESSAGE_KEYS
    advance(sender, 10)
    group_cipher.decrypt(member, NAME, group_cipher.encrypt(sender, NAME, b"jump again"))
    kept = member.states[0].message_keys
    assert len(kept) == MAX_MESSAGE_KEYS
    assert [kept[0][0], kept[-1][0]] == [10, MAX_MESSAGE_KEYS + 10]
    with pytest.raises(DuplicateMessage):
        group_cipher.decrypt(member, NAME, first)
    with pytest.raises(DuplicateMessage):
        group_cipher.decrypt(member, NAME, second)


def test_processing_the_same_skdm_twice_does_not_rewind_the_chain() -> None:
    """A repeated skdm changes nothing: a decrypted message stays a duplicate, the next decrypts."""
    sender = own_record()
    skdm = group_cipher.distribution_message(sender, NAME)
    member = SenderKeyRecord()
    assert group_cipher.process_distribution(member, skdm)
    sealed = [group_cipher.encrypt(sender, NAME, f"g{i}".encode()) for i in range(2)]
    group_cipher.decrypt(member, NAME, sealed[0])
    before = member.to_bytes()
    assert not group_cipher.process_distribution(member, skdm)
    assert member.to_bytes() == before
    with pytest.raises(DuplicateMessage):
        group_cipher.decrypt(member, NAME, sealed[0])
    assert group_cipher.decrypt(member, NAME, sealed[1]) == b"g1"


def test_a_malformed_skdm_is_invalid_message_and_adds_no_state() -> None:
    """An skdm with a 31-byte chain key is refused naming skdm.chain_key; nothing is added."""
    sender = own_record()
    good = parse_distribution_message(group_cipher.distribution_message(sender, NAME))
    short = build_distribution_message(replace(good, chain_key=good.chain_key[:31]))
    member = SenderKeyRecord()
    with pytest.raises(InvalidMessage) as caught:
        group_cipher.process_distribution(member, short)
    assert caught.value.field == "skdm.chain_key"
    assert member.states == []
