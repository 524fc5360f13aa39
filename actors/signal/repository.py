"""The Signal repository: Baileys' operations over a ``SignalStore`` and the account's creds.

Every operation runs in ONE store transaction (``run_transaction``: retried on
conflict, joined when the caller already holds one), locked by the Signal address
or the sender-key name it works on. Inside it the record is read, the pure cipher
code (``session_cipher``, ``group_cipher``) changes it, and the writes (session,
remote identity, consumed one-time pre-key, sender key) are set together: a failed
operation raises and its transaction discards every write, so nothing stored
changes. A phone-number JID resolves to its LID address whenever a ``lid-mapping``
entry exists, so one contact has one session and one lock.

Identity keys are trusted on first use and stored per address. A changed identity
(a ``pkmsg`` or a bundle with a different key) replaces the contact's sessions
and is reported to ``on_identity_change``; with ``IdentityPolicy.STRICT`` it is
refused with :class:`UntrustedIdentity` instead.

Since 0.2.0.
"""

from __future__ import annotations

import enum
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TypeVar

import structlog

from actors.signal import group_cipher, session_cipher
from actors.signal.address import (
    SignalAddress,
    is_pn_address,
    jid_to_signal_address,
    lid_address_for,
    sender_key_name,
    signal_address,
)
from actors.signal.crypto import KeyPairFactory, SignalKeyPair, random_key_pair
from actors.signal.errors import (
    InvalidAddress,
    InvalidMessage,
    InvalidRecord,
    NoSenderKey,
    SignalError,
    UntrustedIdentity,
)
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
from stores.creds import AuthCreds
from stores.errors import InvalidValueError
from stores.keys import key_pair_from_plain, signal_public_key
from stores.types import KeyWrites, SignalStore, Transaction

CredsSource = AuthCreds | Callable[[], AuthCreds]
"""The account's creds, or a function returning the current ones (they may rotate)."""

Clock = Callable[[], int]
"""Milliseconds since the epoch (libsignal stamps sessions with ``Date.now()``)."""

MAX_SENDER_KEY_ID = 2_147_483_647

T = TypeVar("T")

_MAX_ADDRESS_MOVES = 3
"""How often an operation follows its contact to a new address before giving up."""

_log = structlog.get_logger("actors.signal")


class _AddressMoved(Exception):
    """The contact's LID mapping changed after the lock was chosen: try again."""


class IdentityPolicy(enum.Enum):
    """What a changed remote identity key does."""

    REPLACE = "replace"
    """WhatsApp's rule: the new identity replaces the old sessions (and is reported)."""
    STRICT = "strict"
    """Refuse it with ``UntrustedIdentity``; nothing changes."""


@dataclass(frozen=True, slots=True)
class IdentityChange:
    """A contact's identity key changed (``previous`` None: first seen)."""

    address: str
    previous: bytes | None
    current: bytes

    def __repr__(self) -> str:
        return f"IdentityChange(address={self.address!r}, first_use={self.previous is None})"


@dataclass(frozen=True, slots=True)
class SessionValidation:
    """Whether a usable session exists, and if not, why (Baileys' ``validateSession``)."""

    exists: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class MigrationResult:
    """What ``migrate_session`` did: sessions moved to LID, left alone, and looked at."""

    migrated: int
    skipped: int
    total: int


@dataclass(frozen=True, slots=True)
class SenderKeySeed:
    """A fresh sender key: id, chain key and signing key pair."""

    key_id: int
    chain_key: bytes
    signing: SignalKeyPair

    def __repr__(self) -> str:
        return f"SenderKeySeed(key_id={self.key_id})"


def random_sender_key() -> SenderKeySeed:
    """A random sender key as Baileys' keyhelper makes one."""
    return SenderKeySeed(
        key_id=secrets.randbelow(MAX_SENDER_KEY_ID),
        chain_key=secrets.token_bytes(32),
        signing=random_key_pair(),
    )


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class SignalRepository:
    """Baileys' SignalRepository surface over a ``stores.SignalStore``. Since 0.2.0."""

    def __init__(
        self,
        keys: SignalStore,
        creds: CredsSource,
        *,
        clock: Clock = wall_clock_ms,
        new_key_pair: KeyPairFactory = random_key_pair,
        new_sender_key: Callable[[], SenderKeySeed] = random_sender_key,
        identity_policy: IdentityPolicy = IdentityPolicy.REPLACE,
        on_identity_change: Callable[[IdentityChange], None] | None = None,
    ) -> None:
        self._keys = keys
        self._creds = creds
        self._clock = clock
        self._new_key_pair = new_key_pair
        self._new_sender_key = new_sender_key
        self._policy = identity_policy
        self._on_identity_change = on_identity_change

    def __repr__(self) -> str:
        return f"SignalRepository(policy={self._policy.value})"

    # -- addresses ---------------------------------------------------------------

    @staticmethod
    def jid_to_signal_address(jid: str) -> str:
        """``"user.device"`` for a phone-number JID, ``"user_1.device"`` for a LID, ..."""
        return jid_to_signal_address(jid)

    async def resolve_address(self, jid: str) -> str:
        """The address whose record and lock serve ``jid``: its LID twin when mapped."""
        return await _resolve(self._keys.get, jid)

    # -- 1:1 sessions ------------------------------------------------------------------

    async def inject_e2e_session(self, jid: str, bundle: PreKeyBundle) -> None:
        """Start a session with a contact device from its pre-key bundle."""
        bundle = checked_bundle(bundle)

        async def op(tx: Transaction, address: str) -> list[IdentityChange]:
            writes, changes, replaced = await self._observe_identity(
                tx, address, bundle.identity_key
            )
            record = SessionRecord() if replaced else await _load_session(tx, address)
            start_outgoing(
                record, self._ours(), bundle, now_ms=self._clock(), new_key_pair=self._new_key_pair
            )
            writes["session"] = {address: record.to_plain()}
            await tx.set(writes)
            return changes

        self._report(await self._on_address(jid, op))

    async def encrypt_message(self, jid: str, plaintext: bytes) -> tuple[str, bytes]:
        """Encrypt for one device: ``("pkmsg" | "msg", ciphertext)``."""

        async def op(tx: Transaction, address: str) -> tuple[str, bytes]:
            record = await _load_session(tx, address)
            if self._policy is IdentityPolicy.STRICT:
                await self._check_trusted(tx, address, record)
            kind, ciphertext = session_cipher.encrypt(
                record, self._ours(), address, bytes(plaintext)
            )
            await tx.set({"session": {address: record.to_plain()}})
            return kind, ciphertext

        return await self._on_address(jid, op)

    async def decrypt_message(self, jid: str, kind: str, ciphertext: bytes) -> bytes:
        """Decrypt a ``pkmsg`` or ``msg`` from one device; the plaintext (still padded)."""
        if kind == session_cipher.PKMSG:
            return await self._decrypt_pre_key(jid, bytes(ciphertext))
        if kind != session_cipher.MSG:
            raise InvalidMessage("type", f"expected 'pkmsg' or 'msg', got {kind!r}")

        async def op(tx: Transaction, address: str) -> bytes:
            record = await _load_session(tx, address)
            plaintext, session = session_cipher.decrypt_whisper(
                record,
                self._ours(),
                address,
                bytes(ciphertext),
                now_ms=self._clock(),
                new_key_pair=self._new_key_pair,
            )
            if self._policy is IdentityPolicy.STRICT:
                await self._check_identity_strict(tx, address, session.remote_identity)
            await tx.set({"session": {address: record.to_plain()}})
            return plaintext

        return await self._on_address(jid, op)

    async def _decrypt_pre_key(self, jid: str, ciphertext: bytes) -> bytes:
        message = parse_pre_key_message(ciphertext)

        async def op(tx: Transaction, address: str) -> tuple[bytes, list[IdentityChange]]:
            writes, changes, replaced = await self._observe_identity(
                tx, address, message.identity_key
            )
            record = SessionRecord() if replaced else await _load_session(tx, address)
            one_time = await _load_pre_key(tx, message.pre_key_id)
            plaintext, consumed = session_cipher.decrypt_pre_key(
                record,
                self._ours(),
                address,
                message,
                one_time,
                now_ms=self._clock(),
                new_key_pair=self._new_key_pair,
            )
            writes["session"] = {address: record.to_plain()}
            if consumed:
                writes["pre-key"] = {str(consumed): None}
            await tx.set(writes)
            return plaintext, changes

        plaintext, changes = await self._on_address(jid, op)
        self._report(changes)
        return plaintext

    async def _on_address(self, jid: str, fn: Callable[[Transaction, str], Awaitable[T]]) -> T:
        """Run ``fn(tx, address)`` in one transaction locked by ``jid``'s address.

        The address is resolved again inside the transaction (the read is validated
        at commit): if a ``migrate_session`` moved the contact to its LID after the
        lock was chosen, the attempt is discarded and runs again on the new address,
        so an operation never works on a record that was just moved away.
        """
        for _ in range(_MAX_ADDRESS_MOVES):
            address = await self.resolve_address(jid)

            async def op(tx: Transaction, locked: str = address) -> T:
                if await _resolve(tx.get, jid) != locked:
                    raise _AddressMoved(locked)
                return await fn(tx, locked)

            try:
                return await self._keys.run_transaction(address, op)
            except _AddressMoved:
                continue
        raise InvalidAddress(jid, "its LID mapping kept changing while the operation ran")

    async def validate_session(self, jid: str) -> SessionValidation:
        """Whether an open session with ``jid`` exists (never raises for a bad record)."""
        address = await self.resolve_address(jid)
        found = await self._keys.get("session", [address])
        if address not in found:
            return SessionValidation(False, "no session")
        try:
            record = SessionRecord.from_plain(found[address], f"session {address}")
        except InvalidRecord as exc:
            return SessionValidation(False, f"unreadable record: {exc}")
        if not record.has_open_session():
            return SessionValidation(False, "no open session")
        return SessionValidation(True)

    async def delete_session(self, jids: Sequence[str]) -> None:
        """Delete the sessions of these devices, in one transaction."""
        addresses = sorted({await self.resolve_address(jid) for jid in jids})
        if addresses:
            await self._write_locked(addresses, {"session": dict.fromkeys(addresses)})

    async def migrate_session(self, pn_jid: str, lid_jid: str) -> MigrationResult:
        """Move a contact's phone-number sessions to its LID addresses, and record the mapping.

        Devices looked at: the contact's ``device-list`` plus ``pn_jid``'s own device.
        A device's open PN session moves to the LID address (the device kept) and the
        PN record is deleted; a device whose LID address has an open session already
        keeps that one. The identity key trusted under the PN address is trusted
        under the LID address too. The ``lid-mapping`` pair is written in the same transaction,
        so later lookups by either JID reach the LID session.
        """
        pn, lid = signal_address(pn_jid), signal_address(lid_jid)
        if not is_pn_address(pn) or is_pn_address(lid):
            raise InvalidAddress(f"{pn_jid} -> {lid_jid}", "migration goes from a PN to a LID JID")
        devices = await self._known_devices(pn)
        pairs = [
            (
                str(SignalAddress(pn.name, d)),
                str(lid_address_for(SignalAddress(pn.name, d), lid.user)),
            )
            for d in devices
        ]
        locks = sorted({address for pair in pairs for address in pair})

        async def op(tx: Transaction) -> MigrationResult:
            found = await tx.get("session", locks)
            identities = await tx.get("identity-key", locks)
            moves: dict[str, object] = {}
            trusted: dict[str, object] = {}
            for pn_address, lid_address in pairs:
                if _has_open(found.get(pn_address)) and not _has_open(found.get(lid_address)):
                    moves[lid_address] = found[pn_address]
                    moves[pn_address] = None
                # The identity trusted under the PN address stays trusted under the
                # LID one: a migration must not restart trust on first use.
                if pn_address in identities and lid_address not in identities:
                    trusted[lid_address] = identities[pn_address]
            migrated = len(moves) // 2
            mapping = {pn.user: lid.user, f"{lid.user}_reverse": pn.user}
            await tx.set({"session": moves, "identity-key": trusted, "lid-mapping": mapping})
            return MigrationResult(migrated, len(pairs) - migrated, len(pairs))

        return await self._locked(locks, op)

    # -- groups ------------------------------------------------------------------------

    async def encrypt_group_message(
        self, group: str, me_jid: str, plaintext: bytes
    ) -> tuple[bytes, bytes]:
        """Encrypt for a group: ``(skdm, skmsg)``; the skdm lets members read this message."""
        name = sender_key_name(group, me_jid)

        async def op(tx: Transaction) -> tuple[bytes, bytes]:
            record = await _load_sender_key(tx, name)
            self._ensure_own_sender_key(record)
            skdm = group_cipher.distribution_message(record, name)
            ciphertext = group_cipher.encrypt(record, name, bytes(plaintext))
            await tx.set({"sender-key": {name: record.to_bytes()}})
            return skdm, ciphertext

        return await self._keys.run_transaction(name, op)

    async def get_sender_key_distribution_message(self, group: str, me_jid: str) -> bytes:
        """Our ``skdm`` for a group, creating our sender key on first use."""
        name = sender_key_name(group, me_jid)

        async def op(tx: Transaction) -> bytes:
            record = await _load_sender_key(tx, name)
            if self._ensure_own_sender_key(record):
                await tx.set({"sender-key": {name: record.to_bytes()}})
            return group_cipher.distribution_message(record, name)

        return await self._keys.run_transaction(name, op)

    async def process_sender_key_distribution_message(
        self, group: str, author_jid: str, skdm: bytes
    ) -> None:
        """Take a member's ``skdm`` so their group messages decrypt."""
        name = sender_key_name(group, author_jid)

        async def op(tx: Transaction) -> None:
            record = await _load_sender_key(tx, name)
            if group_cipher.process_distribution(record, bytes(skdm)):
                await tx.set({"sender-key": {name: record.to_bytes()}})

        await self._keys.run_transaction(name, op)

    async def decrypt_group_message(self, group: str, author_jid: str, ciphertext: bytes) -> bytes:
        """Decrypt an ``skmsg`` a member sent to a group."""
        name = sender_key_name(group, author_jid)

        async def op(tx: Transaction) -> bytes:
            record = await _load_sender_key(tx, name)
            if not record.states:
                raise NoSenderKey(name)
            plaintext = group_cipher.decrypt(record, name, bytes(ciphertext))
            await tx.set({"sender-key": {name: record.to_bytes()}})
            return plaintext

        return await self._keys.run_transaction(name, op)

    async def has_sender_key(self, group: str, me_jid: str) -> bool:
        """Whether we hold a sender-key record for ``me_jid`` in ``group``."""
        name = sender_key_name(group, me_jid)
        return name in await self._keys.get("sender-key", [name])

    # -- internals ---------------------------------------------------------------------

    def _ours(self) -> LocalIdentity:
        creds = self._creds() if callable(self._creds) else self._creds
        identity = creds.signed_identity_key
        signed = creds.signed_pre_key
        return LocalIdentity(
            identity=SignalKeyPair(signal_public_key(identity.public), identity.private),
            registration_id=creds.registration_id,
            signed_pre_key_id=signed.key_id,
            signed_pre_key=SignalKeyPair(
                signal_public_key(signed.key_pair.public), signed.key_pair.private
            ),
        )

    def _ensure_own_sender_key(self, record: SenderKeyRecord) -> bool:
        if record.states:
            return False
        seed = self._new_sender_key()
        return group_cipher.ensure_own_state(record, seed.key_id, seed.chain_key, seed.signing)

    async def _observe_identity(
        self, tx: Transaction, address: str, identity: bytes
    ) -> tuple[dict[str, dict[str, object]], list[IdentityChange], bool]:
        """Trust on first use: ``(writes, changes to report, whether sessions are replaced)``."""
        found = await tx.get("identity-key", [address])
        stored = found.get(address)
        if stored == identity:
            return {}, [], False
        if stored is not None and self._policy is IdentityPolicy.STRICT:
            raise UntrustedIdentity(address)
        change = IdentityChange(address, stored, identity)
        return {"identity-key": {address: identity}}, [change], stored is not None

    async def _check_identity_strict(self, tx: Transaction, address: str, identity: bytes) -> None:
        found = await tx.get("identity-key", [address])
        stored = found.get(address)
        if stored is not None and stored != identity:
            raise UntrustedIdentity(address)

    async def _check_trusted(self, tx: Transaction, address: str, record: SessionRecord) -> None:
        session = record.open_session()
        if session is not None:
            await self._check_identity_strict(tx, address, session.remote_identity)

    def _report(self, changes: list[IdentityChange]) -> None:
        """Tell ``on_identity_change``; its failure must not cost the message already committed."""
        if self._on_identity_change is None:
            return
        for change in changes:
            try:
                self._on_identity_change(change)
            except Exception:
                _log.exception("on_identity_change_failed", address=change.address)

    async def _known_devices(self, pn: SignalAddress) -> list[int]:
        found = await self._keys.get("device-list", [pn.user])
        devices = {pn.device}
        listed = found.get(pn.user)
        if isinstance(listed, list):
            devices.update(int(d) for d in listed if isinstance(d, str) and d.isdigit())
        return sorted(devices)

    async def _write_locked(self, locks: list[str], writes: KeyWrites) -> None:
        async def op(tx: Transaction) -> None:
            await tx.set(writes)

        await self._locked(locks, op)

    async def _locked(self, locks: list[str], op: Callable[[Transaction], Awaitable[T]]) -> T:
        """Run ``op`` in one transaction holding every lock (taken in sorted order)."""

        async def nested(tx: Transaction) -> T:
            async with AsyncExitStack() as stack:
                for key in locks[1:]:
                    # Joining the open transaction takes one more lock; sorted order
                    # keeps every set of lockers deadlock-free.
                    tx = await stack.enter_async_context(self._keys.transaction(key))
                return await op(tx)

        return await self._keys.run_transaction(locks[0], nested)


def checked_bundle(bundle: PreKeyBundle) -> PreKeyBundle:
    """The bundle with every public key in its 33-byte form; a malformed key is refused."""
    try:
        pre_key = bundle.pre_key
        return PreKeyBundle(
            registration_id=bundle.registration_id,
            identity_key=signal_public_key(bundle.identity_key),
            signed_pre_key=SignedPreKey(
                bundle.signed_pre_key.key_id,
                signal_public_key(bundle.signed_pre_key.public_key),
                bytes(bundle.signed_pre_key.signature),
            ),
            pre_key=None
            if pre_key is None
            else PreKey(pre_key.key_id, signal_public_key(pre_key.public_key)),
        )
    except InvalidValueError as exc:
        raise InvalidMessage("bundle", str(exc)) from exc


async def _resolve(get: Callable[[str, list[str]], Awaitable[dict[str, object]]], jid: str) -> str:
    address = signal_address(jid)
    if is_pn_address(address):
        found = await get("lid-mapping", [address.user])
        lid_user = found.get(address.user)
        if isinstance(lid_user, str) and lid_user:
            address = lid_address_for(address, lid_user)
    return str(address)


async def _load_session(tx: Transaction, address: str) -> SessionRecord:
    found = await tx.get("session", [address])
    if address not in found:
        return SessionRecord()
    return SessionRecord.from_plain(found[address], f"session {address}")


async def _load_sender_key(tx: Transaction, name: str) -> SenderKeyRecord:
    found = await tx.get("sender-key", [name])
    if name not in found:
        return SenderKeyRecord()
    return SenderKeyRecord.from_stored(found[name], f"sender-key {name}")


async def _load_pre_key(tx: Transaction, key_id: int | None) -> SignalKeyPair | None:
    if key_id is None:
        return None
    found = await tx.get("pre-key", [str(key_id)])
    value = found.get(str(key_id))
    if value is None:
        return None
    try:
        pair = key_pair_from_plain(value, f"pre-key {key_id}")
    except InvalidValueError as exc:
        raise InvalidRecord(f"pre-key {key_id}", str(exc)) from exc
    return SignalKeyPair(signal_public_key(pair.public), pair.private)


def _has_open(value: object) -> bool:
    if value is None:
        return False
    try:
        return SessionRecord.from_plain(value).has_open_session()
    except SignalError:
        return False


__all__ = [
    "IdentityChange",
    "IdentityPolicy",
    "MigrationResult",
    "SenderKeySeed",
    "SessionValidation",
    "SignalRepository",
    "checked_bundle",
    "random_sender_key",
]
