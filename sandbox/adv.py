"""ADV (account-device verification) crypto of pairing, from the phone's and server's side.

Rules (PROTOCOL.md "Pairing", Baileys ``configureSuccessfulPairing``):

- the phone signs ``06 00 || details || device identity pub`` with its account
  identity key (prefix ``06 05`` for a hosted device type), where ``details`` is
  an encoded ADVDeviceIdentity;
- it wraps the ADVSignedDeviceIdentity {details, accountSignatureKey,
  accountSignature} in ADVSignedDeviceIdentityHMAC, whose ``hmac`` is
  HMAC-SHA256(adv secret, prefix || signed identity), prefix ``06 05`` for a
  HOSTED account type, else empty;
- the device answers with a deviceSignature over
  ``06 01 || details || device identity pub || account signature key``.

Since 0.1.0.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError as ProtobufDecodeError

from actors.connection.proto import wa_pb2
from stores.creds import KeyPair
from stores.keys import sign, verify

ACCOUNT_SIG_PREFIX = b"\x06\x00"
DEVICE_SIG_PREFIX = b"\x06\x01"
HOSTED_SIG_PREFIX = b"\x06\x05"
HOSTED = wa_pb2.HOSTED


class AdvError(ValueError):
    """ADV bytes that do not parse or do not verify; the message says which part."""


@dataclass(frozen=True)
class DeviceIdentityDetails:
    """The fields of an ADVDeviceIdentity."""

    raw_id: int
    timestamp: int
    key_index: int
    account_type: int = wa_pb2.E2EE
    device_type: int = wa_pb2.E2EE

    def encode(self) -> bytes:
        """The encoded ADVDeviceIdentity."""
        message = wa_pb2.ADVDeviceIdentity(
            rawId=self.raw_id,
            timestamp=self.timestamp,
            keyIndex=self.key_index,
            accountType=wa_pb2.ADVEncryptionType.Name(self.account_type),
            deviceType=wa_pb2.ADVEncryptionType.Name(self.device_type),
        )
        return bytes(message.SerializeToString())

    @classmethod
    def decode(cls, data: bytes) -> DeviceIdentityDetails:
        """Parse an ADVDeviceIdentity; AdvError if it is not one."""
        message = wa_pb2.ADVDeviceIdentity()
        _parse(message, data, "ADVDeviceIdentity")
        return cls(
            raw_id=message.rawId,
            timestamp=message.timestamp,
            key_index=message.keyIndex,
            account_type=message.accountType,
            device_type=message.deviceType,
        )


@dataclass(frozen=True)
class SignedDeviceIdentity:
    """An ADVSignedDeviceIdentity: details plus the account's (and later the device's) signature."""

    details: bytes = field(repr=False)
    account_signature_key: bytes = field(repr=False)
    account_signature: bytes = field(repr=False)
    device_signature: bytes = field(default=b"", repr=False)

    def encode(self, *, include_account_key: bool = True) -> bytes:
        """The encoded ADVSignedDeviceIdentity (the device's reply leaves the account key out)."""
        message = wa_pb2.ADVSignedDeviceIdentity(
            details=self.details, accountSignature=self.account_signature
        )
        if include_account_key:
            message.accountSignatureKey = self.account_signature_key
        if self.device_signature:
            message.deviceSignature = self.device_signature
        return bytes(message.SerializeToString())

    @classmethod
    def decode(cls, data: bytes) -> SignedDeviceIdentity:
        """Parse an ADVSignedDeviceIdentity; AdvError if it is not one or lacks details."""
        message = wa_pb2.ADVSignedDeviceIdentity()
        _parse(message, data, "ADVSignedDeviceIdentity")
        if not message.HasField("details"):
            raise AdvError("ADVSignedDeviceIdentity: details missing")
        return cls(
            details=bytes(message.details),
            account_signature_key=bytes(message.accountSignatureKey),
            account_signature=bytes(message.accountSignature),
            device_signature=bytes(message.deviceSignature),
        )


def account_signature_message(details: bytes, device_identity_public: bytes) -> bytes:
    """What the account key signs for ``details`` (prefix by the device type inside)."""
    decoded = DeviceIdentityDetails.decode(details)
    prefix = HOSTED_SIG_PREFIX if decoded.device_type == HOSTED else ACCOUNT_SIG_PREFIX
    return prefix + details + device_identity_public


def device_signature_message(
    details: bytes, device_identity_public: bytes, account_signature_key: bytes
) -> bytes:
    """What the device's identity key signs in its pair-device-sign reply."""
    return DEVICE_SIG_PREFIX + details + device_identity_public + account_signature_key


def sign_device_identity(
    account_key: KeyPair, details: DeviceIdentityDetails, device_identity_public: bytes
) -> SignedDeviceIdentity:
    """The phone's signed identity for a new device."""
    encoded = details.encode()
    signature = sign(
        account_key.private, account_signature_message(encoded, device_identity_public)
    )
    return SignedDeviceIdentity(
        details=encoded, account_signature_key=account_key.public, account_signature=signature
    )


def hmac_device_identity(
    signed: SignedDeviceIdentity, adv_secret: bytes, account_type: int = wa_pb2.E2EE
) -> bytes:
    """The encoded ADVSignedDeviceIdentityHMAC the server puts in ``pair-success``."""
    inner = signed.encode()
    prefix = HOSTED_SIG_PREFIX if account_type == HOSTED else b""
    mac = hmac.new(adv_secret, prefix + inner, hashlib.sha256).digest()
    message = wa_pb2.ADVSignedDeviceIdentityHMAC(
        details=inner, hmac=mac, accountType=wa_pb2.ADVEncryptionType.Name(account_type)
    )
    return bytes(message.SerializeToString())


def unwrap_hmac(data: bytes) -> tuple[SignedDeviceIdentity, bytes, int]:
    """Split an ADVSignedDeviceIdentityHMAC into (signed identity, hmac, account type)."""
    message = wa_pb2.ADVSignedDeviceIdentityHMAC()
    _parse(message, data, "ADVSignedDeviceIdentityHMAC")
    if not message.HasField("details") or not message.HasField("hmac"):
        raise AdvError("ADVSignedDeviceIdentityHMAC: details or hmac missing")
    return (
        SignedDeviceIdentity.decode(bytes(message.details)),
        bytes(message.hmac),
        message.accountType,
    )


def check_account_signature(signed: SignedDeviceIdentity, device_identity_public: bytes) -> None:
    """AdvError unless the account signature verifies under the enclosed account key."""
    message = account_signature_message(signed.details, device_identity_public)
    if not verify(signed.account_signature_key, message, signed.account_signature):
        raise AdvError("accountSignature does not verify under accountSignatureKey")


def check_device_signature(
    signed: SignedDeviceIdentity, device_identity_public: bytes, account_signature_key: bytes
) -> None:
    """AdvError unless the device signature verifies under the device's identity key."""
    message = device_signature_message(
        signed.details, device_identity_public, account_signature_key
    )
    if not verify(device_identity_public, message, signed.device_signature):
        raise AdvError("deviceSignature does not verify under the device identity key")


def _parse(message: object, data: bytes, what: str) -> None:
    try:
        message.ParseFromString(data)  # type: ignore[attr-defined]  # every protobuf message has it
    except ProtobufDecodeError as exc:
        raise AdvError(f"{what}: not a valid protobuf ({exc})") from exc
