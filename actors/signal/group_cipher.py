"""Sender keys: group encrypt and decrypt as Baileys' group cipher (lib/Signal/Group).

Our own record for a group has one state with the signing private key; a
SenderKeyDistributionMessage (``skdm``) hands its key id, chain (at its current
iteration) and signing public key to each member, who adds it as a state of that
sender's record (at most 5 states, oldest dropped).

Message key for an iteration: HKDF(seed, zero salt, ``WhisperGroup``), IV = first
16 bytes, AES-256-CBC key = the next 32. An ``skmsg`` carries the key id, the
iteration and the ciphertext, signed (XEdDSA) with the state's signing key;
decrypt checks the signature before it touches any key. Iterations may arrive out
of order: keys of skipped iterations are kept (at most 2,000, oldest dropped), and
an iteration whose key was used is a :class:`DuplicateMessage`.

One deliberate difference from Baileys: its encrypt skips an iteration after the
first message (it asks for ``iteration + 1`` and keeps the skipped key in the
sender's own record); ours encrypts at the chain's current iteration, so our own
record does not fill with keys nobody will ask for. Receivers accept both.

Pure functions over :class:`SenderKeyRecord`: no I/O, randomness passed in.

Since 0.2.0.
"""

from __future__ import annotations

from actors.signal.crypto import (
    INFO_GROUP,
    ZERO_SALT,
    SignalKeyPair,
    aes_cbc_decrypt,
    aes_cbc_encrypt,
    chain_step,
    derive_secrets,
)
from actors.signal.errors import DuplicateMessage, InvalidSignature, NoSenderKey, TooFarInFuture
from actors.signal.sender_key_record import MAX_MESSAGE_KEYS, SenderKeyRecord, SenderKeyState
from actors.signal.session_record import MAX_SKIP
from actors.signal.wire import (
    SenderKeyDistributionMessage,
    build_distribution_message,
    build_sender_key_body,
    parse_distribution_message,
    parse_sender_key_message,
)
from stores.keys import sign, verify


def ensure_own_state(
    record: SenderKeyRecord, key_id: int, chain_key: bytes, signing: SignalKeyPair
) -> bool:
    """Give an empty record our first state; return whether the record changed."""
    if record.states:
        return False
    record.states = [
        SenderKeyState(
            key_id=key_id,
            iteration=0,
            chain_key=chain_key,
            signing_public=signing.public,
            signing_private=signing.private,
        )
    ]
    return True


def distribution_message(record: SenderKeyRecord, name: str) -> bytes:
    """The ``skdm`` of the newest state: what a member needs to read our next message."""
    state = record.newest()
    if state is None:
        raise NoSenderKey(name)
    message = SenderKeyDistributionMessage(
        key_id=state.key_id,
        iteration=state.iteration,
        chain_key=state.chain_key,
        signing_key=state.signing_key_33(),
    )
    return build_distribution_message(message)


def process_distribution(record: SenderKeyRecord, data: bytes) -> bool:
    """Add the state an ``skdm`` describes; return whether the record changed.

    A message repeating a state we hold (same key id and signing key) changes
    nothing: taking it again would rewind the chain and let old messages replay.
    """
    message = parse_distribution_message(data)
    held = record.find(message.key_id)
    if held is not None and held.signing_key_33() == message.signing_key:
        return False
    record.add(
        SenderKeyState(
            key_id=message.key_id,
            iteration=message.iteration,
            chain_key=message.chain_key,
            signing_public=message.signing_key,
        )
    )
    return True


def encrypt(record: SenderKeyRecord, name: str, plaintext: bytes) -> bytes:
    """Encrypt with our newest state at its current iteration; the chain moves on."""
    state = record.newest()
    if state is None or not state.signing_private:
        raise NoSenderKey(name, "no own sender key to encrypt with")
    iteration = state.iteration
    seed, state.chain_key = chain_step(state.chain_key)
    state.iteration = iteration + 1
    iv, cipher_key = _group_message_keys(seed)
    body = build_sender_key_body(
        state.key_id, iteration, aes_cbc_encrypt(cipher_key, iv, plaintext)
    )
    return body + sign(state.signing_private, body)


def decrypt(record: SenderKeyRecord, name: str, data: bytes) -> bytes:
    """Decrypt an ``skmsg`` from the sender whose record this is."""
    message = parse_sender_key_message(data)
    state = record.find(message.key_id)
    if state is None:
        raise NoSenderKey(name, f"no sender key with id {message.key_id}")
    if not verify(state.signing_key_33(), message.signed, message.signature):
        raise InvalidSignature(f"skmsg from {name}")
    seed = _seed_for(state, message.iteration, name)
    iv, cipher_key = _group_message_keys(seed)
    return aes_cbc_decrypt(cipher_key, iv, message.ciphertext, "skmsg.ciphertext")


def _seed_for(state: SenderKeyState, iteration: int, name: str) -> bytes:
    if iteration < state.iteration:
        for index, (kept_iteration, seed) in enumerate(state.message_keys):
            if kept_iteration == iteration:
                del state.message_keys[index]
                return seed
        raise DuplicateMessage(name, iteration)
    if iteration - state.iteration > MAX_SKIP:
        raise TooFarInFuture(
            "skmsg.iteration", f"{iteration} is over {MAX_SKIP} ahead of its chain"
        )
    chain_key = state.chain_key
    for skipped in range(state.iteration, iteration):
        seed, chain_key = chain_step(chain_key)
        state.message_keys.append((skipped, seed))
    del state.message_keys[:-MAX_MESSAGE_KEYS]
    seed, state.chain_key = chain_step(chain_key)
    state.iteration = iteration + 1
    return seed


def _group_message_keys(seed: bytes) -> tuple[bytes, bytes]:
    """``(IV, AES key)`` of one group message (HKDF info ``WhisperGroup``)."""
    first, second, _ = derive_secrets(seed, ZERO_SALT, INFO_GROUP)
    return first[:16], first[16:] + second[:16]
