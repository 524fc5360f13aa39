"""QR pairing: pair-device refs, pair-success verification, the pair-device-sign reply.

Facts (PROTOCOL.md "Pairing", Baileys ``lib/Utils/validate-connection.js``
``configureSuccessfulPairing``, ``lib/Utils/signal.js`` ``createSignalIdentity``):

- the server sends ``iq type=set > pair-device > ref*``; the client answers
  ``iq to=@s.whatsapp.net type=result id=<same>`` and shows one QR per ref;
- after the phone scans, ``iq > pair-success > [device-identity, platform{name}?,
  device{jid, lid?}, biz{name}?]``; device-identity holds
  ADVSignedDeviceIdentityHMAC{details, hmac, accountType};
- hmac must be HMAC-SHA256(key = base64-decoded advSecretKey, prefix || details),
  prefix ``06 05`` when accountType is HOSTED, else empty;
- details is ADVSignedDeviceIdentity{details (ADVDeviceIdentity), accountSignatureKey,
  accountSignature}; accountSignature must verify under accountSignatureKey over
  ``06 00 || identity details || our identity public`` (``06 05`` when the device
  identity's deviceType is HOSTED);
- deviceSignature = sign(identity private, ``06 01 || identity details || identity
  public || accountSignatureKey``);
- reply: ``iq to=@s.whatsapp.net type=result id=<same> > pair-device-sign >
  device-identity{key-index}`` holding the signed identity *without*
  accountSignatureKey;
- the creds change: account (the signed identity with the key and our device
  signature), me = {id: device jid, name: biz name?, lid: device lid?},
  signalIdentities += {identifier: {name: lid, deviceId: 0}, identifierKey:
  05 || accountSignatureKey}, platform = platform name.

Everything here is pure: the phone side (the sandbox) uses :func:`adv_hmac`,
:func:`account_signature_message` and :func:`device_signature_message` to make
and check the same bytes. Since 0.1.0.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError as ProtobufDecodeError

from actors.connection.binary import SERVER_JID, BinaryNode, Jid, JidError
from actors.connection.errors import BAD_SESSION, RemoteProtocolError
from actors.connection.proto import wa_pb2
from stores.creds import AuthCreds
from stores.keys import sign, signal_public_key, verify
from stores.types import Batch

#: Signature and HMAC prefixes (Baileys' WA_ADV_* constants).
ACCOUNT_SIGNATURE_PREFIX = b"\x06\x00"
DEVICE_SIGNATURE_PREFIX = b"\x06\x01"
HOSTED_ACCOUNT_SIGNATURE_PREFIX = b"\x06\x05"
HOSTED_DEVICE_SIGNATURE_PREFIX = b"\x06\x06"

_HOSTED = wa_pb2.ADVEncryptionType.HOSTED


def _fail(reason: str) -> RemoteProtocolError:
    # Baileys ends the connection with a plain error here: status 500 (bad session).
    return RemoteProtocolError(f"pair-success: {reason}", error_status_hint=BAD_SESSION)


# --- The crypto both sides compute ------------------------------------------------


def adv_hmac(adv_secret_key: str | bytes, details: bytes, account_type: int | None) -> bytes:
    """HMAC-SHA256 of ``details`` under the adv secret, prefixed ``06 05`` for HOSTED accounts.

    ``adv_secret_key`` is creds.advSecretKey (base64 text) or its decoded bytes.
    """
    key = base64.b64decode(adv_secret_key) if isinstance(adv_secret_key, str) else adv_secret_key
    prefix = HOSTED_ACCOUNT_SIGNATURE_PREFIX if account_type == _HOSTED else b""
    return hmac.new(key, prefix + details, hashlib.sha256).digest()


def account_signature_message(
    identity_details: bytes, identity_public: bytes, device_type: int | None
) -> bytes:
    """What the phone's account key signs: prefix || ADVDeviceIdentity bytes || our identity."""
    prefix = HOSTED_ACCOUNT_SIGNATURE_PREFIX if device_type == _HOSTED else ACCOUNT_SIGNATURE_PREFIX
    return prefix + identity_details + identity_public


def device_signature_message(
    identity_details: bytes, identity_public: bytes, account_signature_key: bytes
) -> bytes:
    """What our identity key signs: ``06 01 || details || identity public || account key``."""
    return DEVICE_SIGNATURE_PREFIX + identity_details + identity_public + account_signature_key


def verify_device_signature(
    signed: wa_pb2.ADVSignedDeviceIdentity, identity_public: bytes, account_signature_key: bytes
) -> bool:
    """Whether ``signed.deviceSignature`` is the companion's signature (the server's check)."""
    message = device_signature_message(signed.details, identity_public, account_signature_key)
    return verify(identity_public, message, signed.deviceSignature)


# --- pair-device ----------------------------------------------------------------


@dataclass(frozen=True)
class PairDevice:
    """A parsed ``iq > pair-device``: the iq id to acknowledge and the refs, in order."""

    iq_id: str
    refs: tuple[str, ...]


def parse_pair_device(stanza: BinaryNode) -> PairDevice:
    """Read the refs of ``iq type=set > pair-device > ref*``; RemoteProtocolError if malformed."""
    iq_id = stanza.attrs.get("id")
    if not iq_id:
        raise RemoteProtocolError("pair-device: iq has no id", error_status_hint=BAD_SESSION)
    node = stanza.child("pair-device")
    if node is None:
        raise RemoteProtocolError(
            "pair-device: iq has no pair-device child", error_status_hint=BAD_SESSION
        )
    refs: list[str] = []
    for i, ref in enumerate(node.children("ref")):
        content = ref.content
        if isinstance(content, bytes):
            try:
                text = content.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RemoteProtocolError(
                    f"pair-device/ref[{i}]: not UTF-8", error_status_hint=BAD_SESSION
                ) from exc
        elif isinstance(content, str):
            text = content
        else:
            raise RemoteProtocolError(
                f"pair-device/ref[{i}]: no text content", error_status_hint=BAD_SESSION
            )
        if not text or "," in text:
            raise RemoteProtocolError(
                f"pair-device/ref[{i}]: empty or holds a comma (cannot go in a QR)",
                error_status_hint=BAD_SESSION,
            )
        refs.append(text)
    return PairDevice(iq_id=iq_id, refs=tuple(refs))


def iq_result(iq_id: str) -> BinaryNode:
    """The bare ``iq to=@s.whatsapp.net type=result id=...`` acknowledging a server iq."""
    return BinaryNode("iq", {"to": SERVER_JID, "type": "result", "id": iq_id})


# --- pair-success ----------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class PairingCredsUpdate:
    """The creds fields pairing sets, in the shapes ``AuthCreds`` keeps (Baileys' shapes).

    ``account``, ``signal_identities`` and ``adv_secret_key`` hold key material; never
    logged. ``adv_secret_key`` and ``registered`` are those the pair-success was checked
    with: unchanged after a QR scan, derived and set by a pairing code (Baileys sets
    ``registered`` after its companion_finish).
    """

    me: dict[str, Any]
    account: dict[str, Any]
    signal_identities: list[dict[str, Any]]
    platform: str | None
    adv_secret_key: str
    registered: bool

    def __repr__(self) -> str:
        return f"PairingCredsUpdate(me={self.me.get('id')!r}, platform={self.platform!r})"

    def apply(self, creds: AuthCreds) -> AuthCreds:
        """A copy of ``creds`` with the pairing fields set (``creds`` itself is untouched)."""
        out = creds.copy()
        out.me = dict(self.me)
        out.account = dict(self.account)
        out.signal_identities = [dict(item) for item in self.signal_identities]
        out.platform = self.platform
        out.adv_secret_key = self.adv_secret_key
        out.registered = self.registered
        return out

    def batch(self, creds: AuthCreds) -> Batch:
        """The durable commit to make before ``confirm_pairing()``: the paired creds."""
        return Batch(creds=self.apply(creds))


@dataclass(frozen=True, repr=False)
class VerifiedPairing:
    """A verified pair-success: the creds change and the reply to send once it is durable."""

    iq_id: str
    update: PairingCredsUpdate
    key_index: int
    reply: BinaryNode = field(repr=False)
    server_time: int | None = None

    def __repr__(self) -> str:
        return f"VerifiedPairing(iq_id={self.iq_id!r}, update={self.update!r})"


def verify_pair_success(stanza: BinaryNode, creds: AuthCreds) -> VerifiedPairing:
    """Check a ``pair-success`` iq against our creds and build the creds change and the reply.

    Raises RemoteProtocolError (hint 500) naming what is wrong: missing nodes or
    attributes, undecodable protobufs, a wrong HMAC (the QR was not ours), an
    account signature that does not verify, a JID that is not a device JID.
    """
    iq_id = stanza.attrs.get("id")
    if not iq_id:
        raise _fail("iq has no id")
    success = stanza.child("pair-success")
    if success is None:
        raise _fail("iq has no pair-success child")
    identity_node = success.child("device-identity")
    device_node = success.child("device")
    if identity_node is None or device_node is None:
        raise _fail("device-identity or device missing")
    jid = device_node.attrs.get("jid")
    if not jid:
        raise _fail("device has no jid")
    try:
        parsed = Jid.parse(jid)
    except JidError as exc:
        raise _fail(f"device jid {jid!r} is not a JID") from exc
    if not parsed.user.isdigit():
        raise _fail(f"device jid {jid!r} has no numeric user")
    lid = device_node.attrs.get("lid")
    content = identity_node.content
    if not isinstance(content, bytes):
        raise _fail("device-identity has no bytes content")

    container = _parse(wa_pb2.ADVSignedDeviceIdentityHMAC, content, "device-identity")
    account_type = container.accountType if container.HasField("accountType") else None
    expected = adv_hmac(creds.adv_secret_key, container.details, account_type)
    if not hmac.compare_digest(container.hmac, expected):
        raise _fail("HMAC does not match our adv secret (invalid account signature)")

    signed = _parse(wa_pb2.ADVSignedDeviceIdentity, container.details, "signed device identity")
    identity = _parse(wa_pb2.ADVDeviceIdentity, signed.details, "device identity details")
    account_key = bytes(signed.accountSignatureKey)
    if len(account_key) != 32:
        raise _fail(f"accountSignatureKey is {len(account_key)} bytes, expected 32")
    our_public = creds.signed_identity_key.public
    device_type = identity.deviceType if identity.HasField("deviceType") else None
    message = account_signature_message(signed.details, our_public, device_type)
    if not verify(account_key, message, signed.accountSignature):
        raise _fail("account signature does not verify")

    signed.deviceSignature = sign(
        creds.signed_identity_key.private,
        device_signature_message(signed.details, our_public, account_key),
    )
    key_index = identity.keyIndex
    reply = pair_device_sign_reply(iq_id, signed, key_index)
    update = PairingCredsUpdate(
        me=_me(jid, success, lid),
        account=_account(signed),
        signal_identities=[
            *(dict(item) for item in creds.signal_identities),
            signal_identity(lid or jid, account_key),
        ],
        platform=_platform(success),
        adv_secret_key=creds.adv_secret_key,
        registered=creds.registered,
    )
    t = stanza.attrs.get("t")
    return VerifiedPairing(
        iq_id=iq_id,
        update=update,
        key_index=key_index,
        reply=reply,
        server_time=int(t) if t is not None and t.isdecimal() else None,
    )


def pair_device_sign_reply(
    iq_id: str, signed: wa_pb2.ADVSignedDeviceIdentity, key_index: int
) -> BinaryNode:
    """``iq type=result > pair-device-sign > device-identity{key-index}`` (no account key)."""
    without_key = wa_pb2.ADVSignedDeviceIdentity()
    without_key.CopyFrom(signed)
    without_key.ClearField("accountSignatureKey")
    return BinaryNode(
        "iq",
        {"to": SERVER_JID, "type": "result", "id": iq_id},
        [
            BinaryNode(
                "pair-device-sign",
                {},
                [
                    BinaryNode(
                        "device-identity",
                        {"key-index": str(key_index)},
                        bytes(without_key.SerializeToString()),
                    )
                ],
            )
        ],
    )


def signal_identity(name: str, account_signature_key: bytes) -> dict[str, Any]:
    """The creds.signalIdentities entry for the account key (Baileys' createSignalIdentity)."""
    return {
        "identifier": {"name": name, "deviceId": 0},
        "identifierKey": signal_public_key(account_signature_key),
    }


def _me(jid: str, success: BinaryNode, lid: str | None) -> dict[str, Any]:
    me: dict[str, Any] = {"id": jid}
    biz = success.child("biz")
    name = biz.attrs.get("name") if biz is not None else None
    # Baileys writes {id, name, lid} and JSON drops the undefined ones: do the same.
    if name is not None:
        me["name"] = name
    if lid is not None:
        me["lid"] = lid
    return me


def _account(signed: wa_pb2.ADVSignedDeviceIdentity) -> dict[str, Any]:
    account: dict[str, Any] = {}
    for name in ("details", "accountSignatureKey", "accountSignature", "deviceSignature"):
        if signed.HasField(name):
            account[name] = bytes(getattr(signed, name))
    return account


def _platform(success: BinaryNode) -> str | None:
    node = success.child("platform")
    return node.attrs.get("name") if node is not None else None


def _parse(cls: Any, data: bytes, what: str) -> Any:
    message = cls()
    try:
        message.ParseFromString(data)
    except ProtobufDecodeError as exc:
        raise _fail(f"{what}: not a {cls.__name__} ({exc})") from exc
    return message


def decode_adv_secret(adv_secret_key: str) -> bytes:
    """The 32 bytes of creds.advSecretKey; RemoteProtocolError if it is not base64 (phone side)."""
    try:
        return base64.b64decode(adv_secret_key, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RemoteProtocolError("adv secret: not base64") from exc


__all__ = [
    "ACCOUNT_SIGNATURE_PREFIX",
    "DEVICE_SIGNATURE_PREFIX",
    "HOSTED_ACCOUNT_SIGNATURE_PREFIX",
    "HOSTED_DEVICE_SIGNATURE_PREFIX",
    "PairDevice",
    "PairingCredsUpdate",
    "VerifiedPairing",
    "account_signature_message",
    "adv_hmac",
    "decode_adv_secret",
    "device_signature_message",
    "iq_result",
    "pair_device_sign_reply",
    "parse_pair_device",
    "signal_identity",
    "verify_device_signature",
    "verify_pair_success",
]
