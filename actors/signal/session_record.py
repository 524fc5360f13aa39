"""Session records: the double-ratchet state with one contact device, as libsignal keeps it.

A :class:`SessionRecord` holds up to 40 :class:`SessionEntry` objects keyed by their
base key; at most one is open (``closed == -1``), the rest are kept so a message
sent on an older session still decrypts. Each entry has a current ratchet and its
chains, keyed by the ratchet public key that made them.

The plain form (:meth:`SessionRecord.to_plain` / :meth:`SessionRecord.from_plain`)
is exactly libsignal-node's ``SessionRecord.serialize()`` object, the value Baileys
writes to ``session-<address>.json``, keys in the same order::

    {"_sessions": {<b64 base key>: {
        "registrationId": int,
        "currentRatchet": {"ephemeralKeyPair": {"pubKey": b64, "privKey": b64},
                           "lastRemoteEphemeralKey": b64, "previousCounter": int,
                           "rootKey": b64},
        "indexInfo": {"baseKey": b64, "baseKeyType": 1 ours | 2 theirs,
                      "closed": -1 | ms, "used": ms, "created": ms,
                      "remoteIdentityKey": b64},
        "_chains": {<b64 ratchet key>: {"chainKey": {"counter": int, "key"?: b64},
                                        "chainType": 1 sending | 2 receiving,
                                        "messageKeys": {"<n>": b64 seed}}},
        "pendingPreKey"?: {"signedKeyId": int, "baseKey": b64, "preKeyId"?: int}}},
     "version": "v1"}

A chain key without ``key`` is closed. Records without ``version`` are migrated as
libsignal does (a top-level ``registrationId`` is copied into entries that lack one).
Reading is strict: anything else is :class:`InvalidRecord` naming the field path.

Since 0.2.0.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from actors.signal.crypto import SignalKeyPair
from actors.signal.errors import InvalidRecord
from actors.signal.plain import as_int, as_mapping, b64decode, b64encode

RECORD_VERSION = "v1"
MAX_SESSIONS = 40
"""libsignal's CLOSED_SESSIONS_MAX: a record keeps at most this many sessions."""
PUBLIC = 33
"""Public keys in records are libsignal's 33-byte ``05 ||`` form."""
SECRET = 32
"""Private keys, root keys, chain keys and message key seeds."""
MAX_RECEIVING_CHAINS = 5
"""Receiving chains a session keeps (Signal's libsignal; libsignal-node keeps all)."""
MAX_SKIP = 2000
"""How far ahead of its chain a message counter may be (libsignal refuses more)."""


class ChainType(enum.IntEnum):
    """Which way a chain runs (libsignal's ChainType)."""

    SENDING = 1
    RECEIVING = 2


class BaseKeyType(enum.IntEnum):
    """Whose base key named the session (libsignal's BaseKeyType)."""

    OURS = 1
    THEIRS = 2


_E = TypeVar("_E", ChainType, BaseKeyType)


@dataclass(slots=True)
class Chain:
    """One symmetric ratchet: the next chain key and the message keys kept for skipped counters."""

    chain_type: ChainType
    counter: int
    key: bytes | None
    message_keys: dict[int, bytes] = field(default_factory=dict)

    def clone(self) -> Chain:
        return Chain(self.chain_type, self.counter, self.key, dict(self.message_keys))

    def __repr__(self) -> str:
        state = "closed" if self.key is None else "open"
        return f"Chain({self.chain_type.name}, counter={self.counter}, {state})"


@dataclass(frozen=True, slots=True)
class PendingPreKey:
    """What an initiator repeats in every ``pkmsg`` until the first reply arrives."""

    signed_key_id: int
    base_key: bytes
    pre_key_id: int | None = None


@dataclass(slots=True)
class SessionEntry:
    """One session: the ratchet state, its chains and who is at the other end."""

    registration_id: int | None
    ephemeral: SignalKeyPair
    last_remote_ephemeral: bytes
    previous_counter: int
    root_key: bytes
    base_key: bytes
    base_key_type: BaseKeyType
    closed: int
    used: int
    created: int
    remote_identity: bytes
    chains: dict[bytes, Chain] = field(default_factory=dict)
    pending_pre_key: PendingPreKey | None = None

    @property
    def is_closed(self) -> bool:
        return self.closed != -1

    def clone(self) -> SessionEntry:
        """A copy whose chains can change without touching this entry."""
        copy = SessionEntry(
            self.registration_id,
            self.ephemeral,
            self.last_remote_ephemeral,
            self.previous_counter,
            self.root_key,
            self.base_key,
            self.base_key_type,
            self.closed,
            self.used,
            self.created,
            self.remote_identity,
            {key: chain.clone() for key, chain in self.chains.items()},
            self.pending_pre_key,
        )
        return copy

    def add_chain(self, ratchet_key: bytes, chain: Chain) -> None:
        if ratchet_key in self.chains:
            raise InvalidRecord("session._chains", "a chain for this ratchet key exists already")
        self.chains[ratchet_key] = chain

    def __repr__(self) -> str:
        state = "closed" if self.is_closed else "open"
        chains = len(self.chains)
        return f"SessionEntry({state}, chains={chains}, registration_id={self.registration_id})"


@dataclass(slots=True)
class SessionRecord:
    """Every session with one address, keyed by base key, in libsignal's insertion order."""

    sessions: dict[bytes, SessionEntry] = field(default_factory=dict)

    def open_session(self) -> SessionEntry | None:
        """The open session, if any (libsignal's ``getOpenSession``)."""
        return next((entry for entry in self.sessions.values() if not entry.is_closed), None)

    def has_open_session(self) -> bool:
        """An open session with a registration id (libsignal's ``haveOpenSession``)."""
        entry = self.open_session()
        return entry is not None and entry.registration_id is not None

    def by_recent_use(self) -> list[SessionEntry]:
        """Sessions, most recently used first (a stable sort, as libsignal's)."""
        return sorted(self.sessions.values(), key=lambda entry: -entry.used)

    def put(self, entry: SessionEntry) -> None:
        self.sessions[entry.base_key] = entry

    def close_open_session(self, now_ms: int) -> None:
        entry = self.open_session()
        if entry is not None:
            entry.closed = now_ms

    def remove_old_sessions(self) -> None:
        """Drop the longest-closed sessions until at most ``MAX_SESSIONS`` remain."""
        while len(self.sessions) > MAX_SESSIONS:
            closed = [entry for entry in self.sessions.values() if entry.is_closed]
            if not closed:
                raise InvalidRecord("session._sessions", f"more than {MAX_SESSIONS} open sessions")
            oldest = min(closed, key=lambda entry: entry.closed)
            del self.sessions[oldest.base_key]

    def clone(self) -> SessionRecord:
        return SessionRecord({key: entry.clone() for key, entry in self.sessions.items()})

    def __repr__(self) -> str:
        return (
            f"SessionRecord(sessions={len(self.sessions)}, open={self.open_session() is not None})"
        )

    # -- libsignal's plain form ------------------------------------------------------

    def to_plain(self) -> dict[str, Any]:
        """libsignal-node's ``SessionRecord.serialize()`` object."""
        return {
            "_sessions": {
                b64encode(key): _entry_to_plain(entry) for key, entry in self.sessions.items()
            },
            "version": RECORD_VERSION,
        }

    @classmethod
    def from_plain(cls, value: object, where: str = "session") -> SessionRecord:
        """Read libsignal's plain form; :class:`InvalidRecord` names the first bad field."""
        data = as_mapping(value, where)
        version = data.get("version")
        fallback_registration: int | None = None
        if version is None:
            # libsignal's v1 migration: entries inherit a top-level registrationId.
            top = data.get("registrationId")
            fallback_registration = as_int(top, f"{where}.registrationId") if top else None
        elif version != RECORD_VERSION:
            raise InvalidRecord(f"{where}.version", f"unknown record version {version!r}")
        sessions_value = data.get("_sessions", {})
        sessions = as_mapping(sessions_value, f"{where}._sessions")
        record = cls()
        for key, entry_value in sessions.items():
            path = f"{where}._sessions[{key}]"
            entry = _entry_from_plain(entry_value, path, fallback_registration)
            record.sessions[b64decode(key, path, (PUBLIC,))] = entry
        return record


def _entry_to_plain(entry: SessionEntry) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if entry.registration_id is not None:
        out["registrationId"] = entry.registration_id
    out["currentRatchet"] = {
        "ephemeralKeyPair": {
            "pubKey": b64encode(entry.ephemeral.public),
            "privKey": b64encode(entry.ephemeral.private),
        },
        "lastRemoteEphemeralKey": b64encode(entry.last_remote_ephemeral),
        "previousCounter": entry.previous_counter,
        "rootKey": b64encode(entry.root_key),
    }
    out["indexInfo"] = {
        "baseKey": b64encode(entry.base_key),
        "baseKeyType": int(entry.base_key_type),
        "closed": entry.closed,
        "used": entry.used,
        "created": entry.created,
        "remoteIdentityKey": b64encode(entry.remote_identity),
    }
    out["_chains"] = {b64encode(key): _chain_to_plain(chain) for key, chain in entry.chains.items()}
    if entry.pending_pre_key is not None:
        pending = entry.pending_pre_key
        plain: dict[str, Any] = {
            "signedKeyId": pending.signed_key_id,
            "baseKey": b64encode(pending.base_key),
        }
        if pending.pre_key_id is not None:
            plain["preKeyId"] = pending.pre_key_id
        out["pendingPreKey"] = plain
    return out


def _chain_to_plain(chain: Chain) -> dict[str, Any]:
    chain_key: dict[str, Any] = {"counter": chain.counter}
    if chain.key is not None:
        chain_key["key"] = b64encode(chain.key)
    # JavaScript lists integer-like object keys in ascending numeric order.
    keys = {str(n): b64encode(chain.message_keys[n]) for n in sorted(chain.message_keys)}
    return {"chainKey": chain_key, "chainType": int(chain.chain_type), "messageKeys": keys}


def _entry_from_plain(value: object, where: str, fallback_registration: int | None) -> SessionEntry:
    data = as_mapping(value, where)
    ratchet = as_mapping(data.get("currentRatchet"), f"{where}.currentRatchet")
    pair = as_mapping(ratchet.get("ephemeralKeyPair"), f"{where}.currentRatchet.ephemeralKeyPair")
    info = as_mapping(data.get("indexInfo"), f"{where}.indexInfo")
    registration = data.get("registrationId")
    entry = SessionEntry(
        registration_id=(
            as_int(registration, f"{where}.registrationId")
            if registration is not None
            else fallback_registration
        ),
        ephemeral=SignalKeyPair(
            public=_b64_field(pair, "pubKey", f"{where}.currentRatchet.ephemeralKeyPair", PUBLIC),
            private=_b64_field(pair, "privKey", f"{where}.currentRatchet.ephemeralKeyPair", SECRET),
        ),
        last_remote_ephemeral=_b64_field(
            ratchet, "lastRemoteEphemeralKey", f"{where}.currentRatchet", PUBLIC
        ),
        previous_counter=as_int(
            ratchet.get("previousCounter"), f"{where}.currentRatchet.previousCounter"
        ),
        root_key=_b64_field(ratchet, "rootKey", f"{where}.currentRatchet", SECRET),
        base_key=_b64_field(info, "baseKey", f"{where}.indexInfo", PUBLIC),
        base_key_type=_enum(BaseKeyType, info.get("baseKeyType"), f"{where}.indexInfo.baseKeyType"),
        closed=as_int(info.get("closed"), f"{where}.indexInfo.closed"),
        used=as_int(info.get("used", 0), f"{where}.indexInfo.used"),
        created=as_int(info.get("created", 0), f"{where}.indexInfo.created"),
        remote_identity=_b64_field(info, "remoteIdentityKey", f"{where}.indexInfo", PUBLIC),
    )
    chains = as_mapping(data.get("_chains", {}), f"{where}._chains")
    for key, chain_value in chains.items():
        path = f"{where}._chains[{key}]"
        entry.chains[b64decode(key, path, (PUBLIC,))] = _chain_from_plain(chain_value, path)
    pending = data.get("pendingPreKey")
    if pending is not None:
        entry.pending_pre_key = _pending_from_plain(pending, f"{where}.pendingPreKey")
    return entry


def _chain_from_plain(value: object, where: str) -> Chain:
    data = as_mapping(value, where)
    chain_key = as_mapping(data.get("chainKey"), f"{where}.chainKey")
    key_value = chain_key.get("key")
    message_keys: dict[int, bytes] = {}
    for index, seed in as_mapping(data.get("messageKeys", {}), f"{where}.messageKeys").items():
        path = f"{where}.messageKeys[{index}]"
        if not isinstance(index, str) or not index.lstrip("-").isdigit():
            raise InvalidRecord(path, "a message key index must be a decimal number")
        message_keys[int(index)] = b64decode(seed, path, (SECRET,))
    return Chain(
        chain_type=_enum(ChainType, data.get("chainType"), f"{where}.chainType"),
        counter=as_int(chain_key.get("counter"), f"{where}.chainKey.counter"),
        key=None if key_value is None else b64decode(key_value, f"{where}.chainKey.key", (SECRET,)),
        message_keys=message_keys,
    )


def _pending_from_plain(value: object, where: str) -> PendingPreKey:
    data = as_mapping(value, where)
    pre_key = data.get("preKeyId")
    return PendingPreKey(
        signed_key_id=as_int(data.get("signedKeyId"), f"{where}.signedKeyId"),
        base_key=_b64_field(data, "baseKey", where, PUBLIC),
        pre_key_id=None if pre_key is None else as_int(pre_key, f"{where}.preKeyId"),
    )


def _b64_field(data: Mapping[str, Any], name: str, where: str, size: int) -> bytes:
    return b64decode(data.get(name), f"{where}.{name}", (size,))


def _enum(kind: type[_E], value: object, where: str) -> _E:
    number = as_int(value, where)
    try:
        return kind(number)
    except ValueError as exc:
        raise InvalidRecord(where, f"unknown {kind.__name__} {number}") from exc
