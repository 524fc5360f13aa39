"""Sender-key records: the group chains of one sender in one group, as Baileys keeps them.

A :class:`SenderKeyRecord` holds up to 5 :class:`SenderKeyState` objects (oldest
dropped first); each has a key id, the chain at its next iteration, the sender's
signing key (its private half only in our own record) and up to 2,000 message keys
kept for skipped iterations.

Stored form (Baileys v7, ``sender-key-<group>::<user>::<device>``): the UTF-8 bytes
of ``JSON.stringify(record.serialize())``, Buffers as ``{"type":"Buffer","data":[n,...]}``::

    [{"senderKeyId": int,
      "senderChainKey": {"iteration": int, "seed": Buffer},
      "senderSigningKey": {"public": Buffer, "private": Buffer},
      "senderMessageKeys": [{"iteration": int, "seed": Buffer}, ...]}, ...]

Reading also takes the base64 Buffer form, seeds stored as plain base64 strings,
and Baileys v6's value (the list itself instead of its JSON bytes). Anything else
is :class:`InvalidRecord` naming the field.

Since 0.2.0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from actors.signal.errors import InvalidRecord
from actors.signal.plain import as_int, as_mapping, check_size
from stores.buffer_json import loads as buffer_json_loads
from stores.buffer_json import revive
from stores.errors import CorruptStateError

MAX_STATES = 5
"""Baileys' SenderKeyRecord.MAX_STATES."""
MAX_MESSAGE_KEYS = 2000
"""Baileys' SenderKeyState.MAX_MESSAGE_KEYS: skipped keys kept per state."""


@dataclass(slots=True)
class SenderKeyState:
    """One sender-key generation: chain, signing key, keys kept for skipped iterations."""

    key_id: int
    iteration: int
    chain_key: bytes
    signing_public: bytes
    signing_private: bytes = b""
    message_keys: list[tuple[int, bytes]] = field(default_factory=list)

    def clone(self) -> SenderKeyState:
        return SenderKeyState(
            self.key_id,
            self.iteration,
            self.chain_key,
            self.signing_public,
            self.signing_private,
            list(self.message_keys),
        )

    def signing_key_33(self) -> bytes:
        """The signing public key in its 33-byte form (Baileys' getSigningKeyPublic)."""
        if len(self.signing_public) == 32:
            return b"\x05" + self.signing_public
        return self.signing_public

    def __repr__(self) -> str:
        return (
            f"SenderKeyState(key_id={self.key_id}, iteration={self.iteration}, "
            f"kept={len(self.message_keys)}, own={bool(self.signing_private)})"
        )


@dataclass(slots=True)
class SenderKeyRecord:
    """Every sender-key state of one (group, sender), newest last."""

    states: list[SenderKeyState] = field(default_factory=list)

    def newest(self) -> SenderKeyState | None:
        return self.states[-1] if self.states else None

    def find(self, key_id: int) -> SenderKeyState | None:
        return next((state for state in self.states if state.key_id == key_id), None)

    def add(self, state: SenderKeyState) -> None:
        self.states.append(state)
        del self.states[:-MAX_STATES]

    def clone(self) -> SenderKeyRecord:
        return SenderKeyRecord([state.clone() for state in self.states])

    def __repr__(self) -> str:
        return f"SenderKeyRecord(states={len(self.states)})"

    # -- Baileys' stored form ---------------------------------------------------------

    def to_bytes(self) -> bytes:
        """``Buffer.from(JSON.stringify(record.serialize()))``, byte for byte."""
        plain = [_state_to_plain(state) for state in self.states]
        return json.dumps(plain, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_stored(cls, value: object, where: str = "sender-key") -> SenderKeyRecord:
        """Read a stored value: JSON bytes (v7) or the list itself (v6)."""
        try:
            if isinstance(value, bytes | bytearray):
                plain = buffer_json_loads(bytes(value), where)
            else:
                plain = revive(value, where)
        except CorruptStateError as exc:
            raise InvalidRecord(where, str(exc)) from exc
        if not isinstance(plain, list):
            raise InvalidRecord(where, f"expected a list of states, got {type(plain).__name__}")
        states = [_state_from_plain(item, f"{where}[{i}]") for i, item in enumerate(plain)]
        return cls(states)


def _buffer(data: bytes) -> dict[str, Any]:
    return {"type": "Buffer", "data": list(data)}


def _state_to_plain(state: SenderKeyState) -> dict[str, Any]:
    return {
        "senderKeyId": state.key_id,
        "senderChainKey": {"iteration": state.iteration, "seed": _buffer(state.chain_key)},
        "senderSigningKey": {
            "public": _buffer(state.signing_public),
            "private": _buffer(state.signing_private),
        },
        "senderMessageKeys": [
            {"iteration": iteration, "seed": _buffer(seed)}
            for iteration, seed in state.message_keys
        ],
    }


def _state_from_plain(value: object, where: str) -> SenderKeyState:
    data = as_mapping(value, where)
    chain = as_mapping(data.get("senderChainKey"), f"{where}.senderChainKey")
    signing = as_mapping(data.get("senderSigningKey"), f"{where}.senderSigningKey")
    kept = data.get("senderMessageKeys", [])
    # Baileys itself replaces a non-list with an empty list on load.
    keys = kept if isinstance(kept, list) else []
    private = signing.get("private")
    return SenderKeyState(
        key_id=as_int(data.get("senderKeyId"), f"{where}.senderKeyId"),
        iteration=as_int(chain.get("iteration"), f"{where}.senderChainKey.iteration"),
        chain_key=_bytes(chain.get("seed"), f"{where}.senderChainKey.seed", (32,)),
        signing_public=_bytes(signing.get("public"), f"{where}.senderSigningKey.public", (32, 33)),
        signing_private=b""
        if private is None
        else _bytes(private, f"{where}.senderSigningKey.private", (0, 32)),
        message_keys=[
            _kept_key(item, f"{where}.senderMessageKeys[{i}]") for i, item in enumerate(keys)
        ],
    )


def _kept_key(value: object, where: str) -> tuple[int, bytes]:
    data = as_mapping(value, where)
    return as_int(data.get("iteration"), f"{where}.iteration"), _bytes(
        data.get("seed"), f"{where}.seed", (32,)
    )


def _bytes(value: object, where: str, sizes: tuple[int, ...]) -> bytes:
    if isinstance(value, bytes | bytearray):
        data = bytes(value)
    elif isinstance(value, str):
        # Seeds that went through protobuf toJSON arrive as plain base64.
        try:
            data = bytes(revive({"type": "Buffer", "data": value}, where))
        except CorruptStateError as exc:
            raise InvalidRecord(where, str(exc)) from exc
    else:
        raise InvalidRecord(where, f"expected bytes, got {type(value).__name__}")
    check_size(data, where, sizes)
    return data
