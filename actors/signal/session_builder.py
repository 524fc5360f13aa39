"""X3DH session setup, both ways, as libsignal-node's ``SessionBuilder``.

Outgoing: from a contact device's pre-key bundle (its signed pre-key signature
verified, which libsignal-node skips) a new open session is added to the record,
closing the one open before; every message on it is a ``pkmsg`` until the first
reply. Incoming: a ``pkmsg`` whose base key is new starts a session from our signed
pre-key and, when it names one, our one-time pre-key (which the caller then deletes
in the same transaction).

Master secret: ``FF*32 || DH1 || DH2 || DH3 [|| DH4]``, HKDF info ``WhisperText``,
zero salt; the initiator takes a sending ratchet step (info ``WhisperRatchet``) at once.

Pure functions over :class:`SessionRecord`: no I/O; time and fresh keys are passed in.

Since 0.2.0.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.signal.crypto import (
    INFO_RATCHET,
    INFO_TEXT,
    ZERO_SALT,
    KeyPairFactory,
    SignalKeyPair,
    agree,
    derive_secrets,
)
from actors.signal.errors import InvalidMessage, InvalidSignature, MissingPreKey
from actors.signal.session_record import (
    BaseKeyType,
    Chain,
    ChainType,
    PendingPreKey,
    SessionEntry,
    SessionRecord,
)
from actors.signal.wire import PreKeyWhisperMessage
from stores.keys import verify

_MASTER_PREFIX = b"\xff" * 32


@dataclass(frozen=True, slots=True)
class SignedPreKey:
    """A bundle's signed pre-key: id, 33-byte public key, signature over it."""

    key_id: int
    public_key: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class PreKey:
    """A bundle's one-time pre-key: id and 33-byte public key."""

    key_id: int
    public_key: bytes


@dataclass(frozen=True, slots=True)
class PreKeyBundle:
    """What the server hands out for one contact device to start a session with.

    Keys are the 33-byte ``05 ||`` form. ``pre_key`` is None when the device has no
    one-time pre-key left (a valid bundle: the session then uses three DHs).
    """

    registration_id: int
    identity_key: bytes
    signed_pre_key: SignedPreKey
    pre_key: PreKey | None = None


@dataclass(frozen=True, slots=True)
class LocalIdentity:
    """Our side: identity key pair (33-byte public), registration id, signed pre-key."""

    identity: SignalKeyPair
    registration_id: int
    signed_pre_key_id: int
    signed_pre_key: SignalKeyPair

    def __repr__(self) -> str:
        return f"LocalIdentity(registration_id={self.registration_id})"


def start_outgoing(
    record: SessionRecord,
    ours: LocalIdentity,
    bundle: PreKeyBundle,
    *,
    now_ms: int,
    new_key_pair: KeyPairFactory,
) -> SessionEntry:
    """Add a session started from ``bundle`` to ``record`` (closing its open one); return it."""
    signed = bundle.signed_pre_key
    if not verify(bundle.identity_key, signed.public_key, signed.signature):
        raise InvalidSignature("bundle.signed_pre_key")
    base_key = new_key_pair()
    their_one_time = bundle.pre_key.public_key if bundle.pre_key is not None else None
    entry = _init_session(
        ours,
        initiator=True,
        our_base=base_key,
        our_signed=base_key,
        their_identity=bundle.identity_key,
        their_base=their_one_time,
        their_signed=signed.public_key,
        registration_id=bundle.registration_id,
        now_ms=now_ms,
        new_key_pair=new_key_pair,
    )
    entry.pending_pre_key = PendingPreKey(
        signed_key_id=signed.key_id,
        base_key=base_key.public,
        pre_key_id=bundle.pre_key.key_id if bundle.pre_key is not None else None,
    )
    record.close_open_session(now_ms)
    record.put(entry)
    record.remove_old_sessions()
    return entry


def accept_incoming(
    record: SessionRecord,
    ours: LocalIdentity,
    message: PreKeyWhisperMessage,
    one_time: SignalKeyPair | None,
    *,
    now_ms: int,
    new_key_pair: KeyPairFactory,
) -> tuple[SessionEntry, int | None]:
    """The session a ``pkmsg`` belongs to, started now if its base key is new.

    Returns the session and the id of the one-time pre-key it consumed (None when
    the session existed already or the message named none). ``one_time`` is our
    pre-key with the id the message names, or None when we do not hold it.
    """
    existing = record.sessions.get(message.base_key)
    if existing is not None:
        if existing.base_key_type is BaseKeyType.OURS:
            raise InvalidMessage("pkmsg.base_key", "is the base key of a session we started")
        return existing, None
    if message.pre_key_id and one_time is None:
        raise MissingPreKey(message.pre_key_id)
    entry = _init_session(
        ours,
        initiator=False,
        our_base=one_time,
        our_signed=ours.signed_pre_key,
        their_identity=message.identity_key,
        their_base=message.base_key,
        their_signed=message.base_key,
        registration_id=message.registration_id,
        now_ms=now_ms,
        new_key_pair=new_key_pair,
    )
    record.close_open_session(now_ms)
    record.put(entry)
    record.remove_old_sessions()
    return entry, message.pre_key_id


def _init_session(
    ours: LocalIdentity,
    *,
    initiator: bool,
    our_base: SignalKeyPair | None,
    our_signed: SignalKeyPair,
    their_identity: bytes,
    their_base: bytes | None,
    their_signed: bytes,
    registration_id: int,
    now_ms: int,
    new_key_pair: KeyPairFactory,
) -> SessionEntry:
    their_side = "bundle" if initiator else "pkmsg"
    signed_field = f"{their_side}.signed_pre_key" if initiator else "pkmsg.base_key"
    dh1 = agree(their_signed, ours.identity.private, signed_field)
    dh2 = agree(their_identity, our_signed.private, f"{their_side}.identity_key")
    dh3 = agree(their_signed, our_signed.private, signed_field)
    secret = _MASTER_PREFIX + (dh1 + dh2 if initiator else dh2 + dh1) + dh3
    if our_base is not None and their_base is not None:
        base_field = "bundle.pre_key" if initiator else "pkmsg.base_key"
        secret += agree(their_base, our_base.private, base_field)
    root_key = derive_secrets(secret, ZERO_SALT, INFO_TEXT)[0]
    if initiator:
        assert our_base is not None
        base_key, base_type, ephemeral = our_base.public, BaseKeyType.OURS, new_key_pair()
    else:
        assert their_base is not None
        base_key, base_type, ephemeral = their_base, BaseKeyType.THEIRS, our_signed
    entry = SessionEntry(
        registration_id=registration_id,
        ephemeral=ephemeral,
        last_remote_ephemeral=their_signed,
        previous_counter=0,
        root_key=root_key,
        base_key=base_key,
        base_key_type=base_type,
        closed=-1,
        used=now_ms,
        created=now_ms,
        remote_identity=their_identity,
    )
    if initiator:
        add_ratchet_chain(entry, their_signed, ChainType.SENDING, chunks=3)
    return entry


def add_ratchet_chain(entry: SessionEntry, remote_key: bytes, kind: ChainType, chunks: int) -> None:
    """One DH ratchet step: a new chain from our ephemeral and ``remote_key``; root advances.

    A sending chain is named by our ephemeral public key, a receiving one by ``remote_key``.
    """
    shared = agree(remote_key, entry.ephemeral.private, "msg.ephemeral_key")
    derived = derive_secrets(shared, entry.root_key, INFO_RATCHET, chunks)
    name = entry.ephemeral.public if kind is ChainType.SENDING else remote_key
    entry.add_chain(name, Chain(kind, -1, derived[1]))
    entry.root_key = derived[0]
