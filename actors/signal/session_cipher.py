"""The double ratchet: encrypt and decrypt ``msg`` and ``pkmsg`` as libsignal's ``SessionCipher``.

Encrypt uses the open session's sending chain; while the session still has a
pending pre-key (no reply seen yet) the ``msg`` is wrapped in a ``pkmsg``.

Decrypt of a ``msg`` tries every session of the record, most recently used first,
each on a *copy*: only the session that decrypts is replaced, so a failed attempt
never leaves a half-stepped ratchet behind (libsignal-node keeps such damage when a
later session succeeds). Out-of-order messages decrypt from message keys kept for
skipped counters, at most 2,000 ahead of a chain; a counter whose key was used
already is a :class:`DuplicateMessage`.

Every function mutates the record it is given and returns the result; callers
hand in a freshly read record and store it only on success.

Since 0.2.0.
"""

from __future__ import annotations

import hmac

from actors.signal.crypto import (
    INFO_MESSAGE_KEYS,
    ZERO_SALT,
    KeyPairFactory,
    SignalKeyPair,
    aes_cbc_decrypt,
    aes_cbc_encrypt,
    chain_step,
    derive_secrets,
    hmac_sha256,
)
from actors.signal.errors import (
    BadMac,
    DuplicateMessage,
    InvalidMessage,
    InvalidRecord,
    NoSession,
    SignalError,
    TooFarInFuture,
)
from actors.signal.session_builder import LocalIdentity, accept_incoming, add_ratchet_chain
from actors.signal.session_record import (
    MAX_RECEIVING_CHAINS,
    MAX_SKIP,
    Chain,
    ChainType,
    SessionEntry,
    SessionRecord,
)
from actors.signal.wire import (
    MAC_LENGTH,
    PreKeyWhisperMessage,
    WhisperMessage,
    build_pre_key_message,
    build_whisper_body,
    parse_whisper,
)

PKMSG = "pkmsg"
MSG = "msg"


def encrypt(
    record: SessionRecord, ours: LocalIdentity, address: str, plaintext: bytes
) -> tuple[str, bytes]:
    """Encrypt on the open session: ``("pkmsg" | "msg", ciphertext)``."""
    session = record.open_session()
    if session is None:
        raise NoSession(address, "no open session" if record.sessions else "no session")
    chain = session.chains.get(session.ephemeral.public)
    if chain is None or chain.chain_type is not ChainType.SENDING:
        raise InvalidRecord(f"session {address}", "the open session has no sending chain")
    counter = chain.counter + 1
    _fill_message_keys(chain, counter, address)
    cipher_key, mac_key, iv = _message_keys(chain.message_keys.pop(counter))
    body = build_whisper_body(
        session.ephemeral.public,
        counter,
        session.previous_counter,
        aes_cbc_encrypt(cipher_key, iv, plaintext),
    )
    mac = _mac(mac_key, ours.identity.public, session.remote_identity, body)
    message = body + mac
    record.remove_old_sessions()
    pending = session.pending_pre_key
    if pending is None:
        return MSG, message
    wrapped = PreKeyWhisperMessage(
        registration_id=ours.registration_id,
        # libsignal leaves a pre-key id of 0 out, as it does a missing one.
        pre_key_id=pending.pre_key_id or None,
        signed_pre_key_id=pending.signed_key_id,
        base_key=pending.base_key,
        identity_key=ours.identity.public,
        message=message,
    )
    return PKMSG, build_pre_key_message(wrapped)


def decrypt_whisper(
    record: SessionRecord,
    ours: LocalIdentity,
    address: str,
    data: bytes,
    *,
    now_ms: int,
    new_key_pair: KeyPairFactory,
) -> tuple[bytes, SessionEntry]:
    """Decrypt a ``msg`` with whichever session of ``record`` it belongs to."""
    if not record.sessions:
        raise NoSession(address)
    message = parse_whisper(data)
    failures: list[SignalError] = []
    for session in record.by_recent_use():
        trial = session.clone()
        try:
            plaintext = _decrypt_with(trial, ours, address, message, new_key_pair)
        except (BadMac, DuplicateMessage, InvalidMessage, NoSession) as exc:
            failures.append(exc)
            continue
        trial.used = now_ms
        record.sessions[trial.base_key] = trial
        record.remove_old_sessions()
        return plaintext, trial
    raise _most_telling(failures, address)


def decrypt_pre_key(
    record: SessionRecord,
    ours: LocalIdentity,
    address: str,
    message: PreKeyWhisperMessage,
    one_time: SignalKeyPair | None,
    *,
    now_ms: int,
    new_key_pair: KeyPairFactory,
) -> tuple[bytes, int | None]:
    """Decrypt a parsed ``pkmsg``: ``(plaintext, id of the one-time pre-key it consumed)``."""
    session, consumed = accept_incoming(
        record, ours, message, one_time, now_ms=now_ms, new_key_pair=new_key_pair
    )
    inner = parse_whisper(message.message, "pkmsg.message")
    plaintext = _decrypt_with(session, ours, address, inner, new_key_pair)
    record.remove_old_sessions()
    return plaintext, consumed


def _decrypt_with(
    session: SessionEntry,
    ours: LocalIdentity,
    address: str,
    message: WhisperMessage,
    new_key_pair: KeyPairFactory,
) -> bytes:
    _maybe_step_ratchet(
        session, message.ephemeral_key, message.previous_counter, address, new_key_pair
    )
    chain = session.chains[message.ephemeral_key]
    if chain.chain_type is ChainType.SENDING:
        raise InvalidMessage("msg.ephemeral_key", "names our own sending chain")
    _fill_message_keys(chain, message.counter, address)
    seed = chain.message_keys.pop(message.counter, None)
    if seed is None:
        raise DuplicateMessage(address, message.counter)
    cipher_key, mac_key, iv = _message_keys(seed)
    expected = _mac(mac_key, session.remote_identity, ours.identity.public, message.body)
    if not hmac.compare_digest(expected, message.mac):
        raise BadMac("msg.mac", f"does not verify under the session with {address}")
    plaintext = aes_cbc_decrypt(cipher_key, iv, message.ciphertext, "msg.ciphertext")
    session.pending_pre_key = None
    return plaintext


def _maybe_step_ratchet(
    session: SessionEntry,
    remote_key: bytes,
    previous_counter: int,
    address: str,
    new_key_pair: KeyPairFactory,
) -> None:
    if remote_key in session.chains:
        return
    previous = session.chains.get(session.last_remote_ephemeral)
    if previous is not None:
        _fill_message_keys(previous, previous_counter, address)
        previous.key = None
    add_ratchet_chain(session, remote_key, ChainType.RECEIVING, chunks=2)
    _drop_old_receiving_chains(session)
    sending = session.chains.pop(session.ephemeral.public, None)
    if sending is not None:
        session.previous_counter = sending.counter
    session.ephemeral = new_key_pair()
    add_ratchet_chain(session, remote_key, ChainType.SENDING, chunks=2)
    session.last_remote_ephemeral = remote_key


def _drop_old_receiving_chains(session: SessionEntry) -> None:
    """Keep the newest ``MAX_RECEIVING_CHAINS`` receiving chains, oldest dropped first.

    libsignal-node keeps every chain, so a long conversation's record grows without
    end (slower to read, write and copy at every message); Signal's libsignal keeps
    five. A message from a chain dropped here (five ratchet turns late) no longer
    decrypts, as in Signal's own apps.
    """
    receiving = [
        key for key, chain in session.chains.items() if chain.chain_type is ChainType.RECEIVING
    ]
    for key in receiving[: max(0, len(receiving) - MAX_RECEIVING_CHAINS)]:
        del session.chains[key]


def _fill_message_keys(chain: Chain, counter: int, address: str) -> None:
    """Advance ``chain`` to ``counter``, keeping the message key of every step."""
    if chain.counter >= counter:
        return
    if counter - chain.counter > MAX_SKIP:
        raise TooFarInFuture(
            "msg.counter", f"{counter} is over {MAX_SKIP} messages ahead of its chain"
        )
    key = chain.key
    if key is None:
        raise NoSession(address, f"message {counter} is on a closed chain")
    for index in range(chain.counter + 1, counter + 1):
        chain.message_keys[index], key = chain_step(key)
    chain.key = key
    chain.counter = counter


def _message_keys(seed: bytes) -> tuple[bytes, bytes, bytes]:
    """``(AES key, MAC key, IV)`` of one message (HKDF info ``WhisperMessageKeys``)."""
    cipher_key, mac_key, iv_block = derive_secrets(seed, ZERO_SALT, INFO_MESSAGE_KEYS)
    return cipher_key, mac_key, iv_block[:16]


def _mac(mac_key: bytes, sender_identity: bytes, receiver_identity: bytes, body: bytes) -> bytes:
    return hmac_sha256(mac_key, sender_identity + receiver_identity + body)[:MAC_LENGTH]


def _most_telling(failures: list[SignalError], address: str) -> SignalError:
    """The error to report when no session decrypts: a replay beats a bad MAC."""
    for kind in (DuplicateMessage, TooFarInFuture, BadMac, InvalidMessage):
        for failure in failures:
            if isinstance(failure, kind):
                return failure
    return failures[0] if failures else NoSession(address)
