"""A test-only phone: builds a pair-success for a scanned QR the way the primary device does.

Written from PROTOCOL.md ("Pairing"), independent of actors.connection.pairing's
checks: it computes the HMAC and the account signature itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from actors.connection.binary import BinaryNode
from actors.connection.proto import wa_pb2
from actors.connection.qr import QrData
from stores.creds import KeyPair
from stores.keys import generate_key_pair, sign

HOSTED = wa_pb2.ADVEncryptionType.HOSTED


def pair_success_stanza(
    scanned: QrData,
    *,
    account_key: KeyPair | None = None,
    jid: str = "15550001111:7@s.whatsapp.net",
    lid: str | None = "99887766:7@lid",
    platform: str | None = "android",
    biz_name: str | None = None,
    key_index: int = 3,
    account_type: int | None = None,
    device_type: int | None = None,
    iq_id: str = "pair-1",
    t: str = "1764250000",
) -> BinaryNode:
    """``iq > pair-success`` for the device whose QR was scanned, signed by ``account_key``."""
    account_key = account_key or generate_key_pair()
    identity = wa_pb2.ADVDeviceIdentity(rawId=1234, timestamp=1764250000, keyIndex=key_index)
    if account_type is not None:
        identity.accountType = account_type  # type: ignore[assignment]  # enum values are ints
    if device_type is not None:
        identity.deviceType = device_type  # type: ignore[assignment]  # enum values are ints
    details = identity.SerializeToString()
    prefix = b"\x06\x05" if device_type == HOSTED else b"\x06\x00"
    signed = wa_pb2.ADVSignedDeviceIdentity(
        details=details,
        accountSignatureKey=account_key.public,
        accountSignature=sign(account_key.private, prefix + details + scanned.identity_public),
    )
    signed_bytes = signed.SerializeToString()
    hmac_prefix = b"\x06\x05" if account_type == HOSTED else b""
    mac = hmac.new(
        base64.b64decode(scanned.adv_secret_key), hmac_prefix + signed_bytes, hashlib.sha256
    ).digest()
    container = wa_pb2.ADVSignedDeviceIdentityHMAC(details=signed_bytes, hmac=mac)
    if account_type is not None:
        container.accountType = account_type  # type: ignore[assignment]  # enum values are ints
    children = [BinaryNode("device-identity", {}, container.SerializeToString())]
    if platform is not None:
        children.append(BinaryNode("platform", {"name": platform}))
    device_attrs = {"jid": jid}
    if lid is not None:
        device_attrs["lid"] = lid
    children.append(BinaryNode("device", device_attrs))
    if biz_name is not None:
        children.append(BinaryNode("biz", {"name": biz_name}))
    return BinaryNode(
        "iq",
        {"from": "s.whatsapp.net", "type": "set", "id": iq_id, "xmlns": "md", "t": t},
        [BinaryNode("pair-success", {}, children)],
    )
