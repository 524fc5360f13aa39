"""The four Signal messages on the wire: parse and build, field checks named.

Layouts (libsignal-node 6.0.0, Baileys v7 group cipher); ``33`` is the version
byte (current version 3 in both nibbles):

``msg``     ``33 || WhisperMessage || mac[8]``
``pkmsg``   ``33 || PreKeyWhisperMessage`` (its ``message`` is a whole ``msg``)
``skmsg``   ``33 || SenderKeyMessage || signature[64]``
``skdm``    ``33 || SenderKeyDistributionMessage``

Parsing checks only the shape (version, presence and length of fields); MACs and
signatures are checked by the ciphers, which hold the keys.

Since 0.2.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import DecodeError

from actors.signal.errors import InvalidMessage
from actors.signal.proto import signal_pb2

VERSION = 3
VERSION_BYTE = bytes([(VERSION << 4) | VERSION])
MAC_LENGTH = 8
SIGNATURE_LENGTH = 64
PUBLIC_KEY_LENGTH = 33

_P = TypeVar(
    "_P",
    signal_pb2.WhisperMessage,
    signal_pb2.PreKeyWhisperMessage,
    signal_pb2.SenderKeyMessage,
    signal_pb2.SenderKeyDistributionMessage,
)


@dataclass(frozen=True, slots=True)
class WhisperMessage:
    """A ``msg``: one ratchet message. ``body`` is what the MAC covers (version + proto)."""

    ephemeral_key: bytes
    counter: int
    previous_counter: int
    ciphertext: bytes
    body: bytes
    mac: bytes


@dataclass(frozen=True, slots=True)
class PreKeyWhisperMessage:
    """A ``pkmsg``: a ``msg`` plus what the receiver needs to start the session."""

    registration_id: int
    pre_key_id: int | None
    signed_pre_key_id: int
    base_key: bytes
    identity_key: bytes
    message: bytes


@dataclass(frozen=True, slots=True)
class SenderKeyMessage:
    """An ``skmsg``: a group message under one sender-key state."""

    key_id: int
    iteration: int
    ciphertext: bytes
    signed: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class SenderKeyDistributionMessage:
    """An ``skdm``: the chain and signing key a group member needs to read a sender."""

    key_id: int
    iteration: int
    chain_key: bytes
    signing_key: bytes


def build_whisper_body(
    ephemeral_key: bytes, counter: int, previous_counter: int, ciphertext: bytes
) -> bytes:
    """``33 || WhisperMessage``: the part of a ``msg`` its MAC covers."""
    proto = signal_pb2.WhisperMessage(
        ephemeral_key=ephemeral_key,
        counter=counter,
        previous_counter=previous_counter,
        ciphertext=ciphertext,
    )
    return VERSION_BYTE + bytes(proto.SerializeToString())


def parse_whisper(data: bytes, field: str = "msg") -> WhisperMessage:
    """Parse a ``msg``; ``InvalidMessage`` naming the field for anything malformed."""
    _check_version(data, field)
    if len(data) < 1 + MAC_LENGTH:
        raise InvalidMessage(field, f"too short for a MAC ({len(data)} bytes)")
    body, mac = data[:-MAC_LENGTH], data[-MAC_LENGTH:]
    proto = _decode(signal_pb2.WhisperMessage(), body[1:], field)
    return WhisperMessage(
        ephemeral_key=_key(proto, "ephemeral_key", field),
        counter=_required_int(proto, "counter", field),
        previous_counter=proto.previous_counter,
        ciphertext=_required_bytes(proto, "ciphertext", field),
        body=bytes(body),
        mac=bytes(mac),
    )


def build_pre_key_message(message: PreKeyWhisperMessage) -> bytes:
    """Serialize a ``pkmsg``; the one-time pre-key id is left out when there is none."""
    proto = signal_pb2.PreKeyWhisperMessage(
        base_key=message.base_key,
        identity_key=message.identity_key,
        message=message.message,
        registration_id=message.registration_id,
        signed_pre_key_id=message.signed_pre_key_id,
    )
    if message.pre_key_id is not None:
        proto.pre_key_id = message.pre_key_id
    return VERSION_BYTE + bytes(proto.SerializeToString())


def parse_pre_key_message(data: bytes, field: str = "pkmsg") -> PreKeyWhisperMessage:
    """Parse a ``pkmsg``; a missing ``pre_key_id`` is valid (no one-time pre-key)."""
    _check_version(data, field)
    proto = _decode(signal_pb2.PreKeyWhisperMessage(), data[1:], field)
    return PreKeyWhisperMessage(
        registration_id=_required_int(proto, "registration_id", field),
        pre_key_id=proto.pre_key_id if proto.HasField("pre_key_id") else None,
        signed_pre_key_id=_required_int(proto, "signed_pre_key_id", field),
        base_key=_key(proto, "base_key", field),
        identity_key=_key(proto, "identity_key", field),
        message=_required_bytes(proto, "message", field),
    )


def build_sender_key_body(key_id: int, iteration: int, ciphertext: bytes) -> bytes:
    """``33 || SenderKeyMessage``: the part of an ``skmsg`` its signature covers."""
    proto = signal_pb2.SenderKeyMessage(id=key_id, iteration=iteration, ciphertext=ciphertext)
    return VERSION_BYTE + bytes(proto.SerializeToString())


def parse_sender_key_message(data: bytes, field: str = "skmsg") -> SenderKeyMessage:
    """Parse an ``skmsg``; the signature is the last 64 bytes."""
    _check_version(data, field)
    if len(data) < 1 + SIGNATURE_LENGTH:
        raise InvalidMessage(field, f"too short for a signature ({len(data)} bytes)")
    signed, signature = data[:-SIGNATURE_LENGTH], data[-SIGNATURE_LENGTH:]
    proto = _decode(signal_pb2.SenderKeyMessage(), signed[1:], field)
    return SenderKeyMessage(
        key_id=_required_int(proto, "id", field),
        iteration=_required_int(proto, "iteration", field),
        ciphertext=_required_bytes(proto, "ciphertext", field),
        signed=bytes(signed),
        signature=bytes(signature),
    )


def build_distribution_message(message: SenderKeyDistributionMessage) -> bytes:
    """Serialize an ``skdm``."""
    proto = signal_pb2.SenderKeyDistributionMessage(
        id=message.key_id,
        iteration=message.iteration,
        chain_key=message.chain_key,
        signing_key=message.signing_key,
    )
    return VERSION_BYTE + bytes(proto.SerializeToString())


def parse_distribution_message(data: bytes, field: str = "skdm") -> SenderKeyDistributionMessage:
    """Parse an ``skdm``; the chain key must be 32 bytes and the signing key 33."""
    _check_version(data, field)
    proto = _decode(signal_pb2.SenderKeyDistributionMessage(), data[1:], field)
    chain_key = _required_bytes(proto, "chain_key", field)
    if len(chain_key) != 32:
        raise InvalidMessage(f"{field}.chain_key", f"expected 32 bytes, got {len(chain_key)}")
    return SenderKeyDistributionMessage(
        key_id=_required_int(proto, "id", field),
        iteration=_required_int(proto, "iteration", field),
        chain_key=chain_key,
        signing_key=_key(proto, "signing_key", field),
    )


def _check_version(data: bytes, field: str) -> None:
    if not data:
        raise InvalidMessage(field, "empty")
    high, low = data[0] >> 4, data[0] & 0x0F
    # libsignal's rule: refuse when the sender's minimum is above 3 or its maximum below.
    if low > VERSION or high < VERSION:
        raise InvalidMessage(f"{field}.version", f"unsupported version byte 0x{data[0]:02x}")


def _decode(proto: _P, data: bytes, field: str) -> _P:
    try:
        proto.ParseFromString(data)
    except (DecodeError, ValueError) as exc:
        raise InvalidMessage(field, f"not a valid protobuf: {exc}") from exc
    return proto


def _required_int(proto: object, name: str, field: str) -> int:
    if not proto.HasField(name):  # type: ignore[attr-defined]
        raise InvalidMessage(f"{field}.{name}", "missing")
    value: int = getattr(proto, name)
    return value


def _required_bytes(proto: object, name: str, field: str) -> bytes:
    if not proto.HasField(name):  # type: ignore[attr-defined]
        raise InvalidMessage(f"{field}.{name}", "missing")
    return bytes(getattr(proto, name))


def _key(proto: object, name: str, field: str) -> bytes:
    value = _required_bytes(proto, name, field)
    if len(value) != PUBLIC_KEY_LENGTH or value[0] != 0x05:
        raise InvalidMessage(
            f"{field}.{name}", f"expected a 33-byte 05-prefixed key, got {len(value)} bytes"
        )
    if value[-1] & 0x80:
        # X25519 ignores this bit, so two spellings would name one key: a replayed
        # pkmsg with it flipped would look like a new session. Honest peers never set it.
        raise InvalidMessage(f"{field}.{name}", "the key's unused top bit is set")
    return value
