"""The simulated phone's pure parts: reading QR strings and building the signed device identity."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from actors.connection.proto import wa_pb2
from sandbox.errors import InvalidQRError
from sandbox.phone import build_device_identity, parse_qr
from stores.keys import generate_key_pair, verify
from tests.sandbox.fake_client import FakeDevice


def test_a_v7_qr_string_is_read_into_its_parts() -> None:
    """ref, noise key, identity key, adv secret and platform id come out of a v7 QR."""
    device = FakeDevice()
    scanned = parse_qr(device.qr("2@abc/+=", platform_id=7))
    assert scanned.ref == "2@abc/+="
    assert scanned.noise_key == device.noise_key.public
    assert scanned.identity_key == device.identity_key.public
    assert scanned.adv_secret == device.adv_secret
    assert scanned.platform_id == 7


def test_a_v6_qr_string_has_no_platform_id() -> None:
    """The four-field v6 form is read too, with platform_id None."""
    device = FakeDevice()
    v6 = device.qr("ref").rsplit(",", 1)[0]
    assert parse_qr(v6).platform_id is None


@pytest.mark.parametrize(
    ("mangle", "part"),
    [
        (lambda q: q.replace("https://wa.me", "https://example.com"), "prefix"),
        (lambda q: q.rsplit(",", 2)[0], "fields"),
        (lambda q: q.replace("#ref,", "#,"), "ref"),
        (lambda q: q.replace(q.split(",")[1], "@@@"), "noise key"),
        (lambda q: q.replace(q.split(",")[2], base64.b64encode(b"short").decode()), "identity key"),
        (lambda q: q.rsplit(",", 1)[0] + ",chrome", "platform id"),
    ],
)
def test_unreadable_qr_strings_name_the_bad_part(mangle: object, part: str) -> None:
    """Every malformed part raises InvalidQRError naming that part, never anything else."""
    qr = mangle(FakeDevice().qr("ref"))  # type: ignore[operator]  # a lambda
    with pytest.raises(InvalidQRError) as info:
        parse_qr(qr)
    assert info.value.part == part


def test_the_device_identity_is_hmaced_with_the_adv_secret_and_signed_by_the_account() -> None:
    """HMAC-SHA256(adv, details) matches; accountSignature covers 06 00 || details || identity."""
    account = generate_key_pair()
    device = FakeDevice()
    data = build_device_identity(
        account,
        key_index=3,
        device_identity_key=device.identity_key.public,
        adv_secret=device.adv_secret,
        timestamp=1_700_000_000,
        raw_id=42,
    )
    container = wa_pb2.ADVSignedDeviceIdentityHMAC()
    container.ParseFromString(data)
    expected = hmac.new(device.adv_secret, container.details, hashlib.sha256).digest()
    assert container.hmac == expected
    signed = wa_pb2.ADVSignedDeviceIdentity()
    signed.ParseFromString(container.details)
    assert signed.accountSignatureKey == account.public
    message = b"\x06\x00" + signed.details + device.identity_key.public
    assert verify(account.public, message, signed.accountSignature)
    identity = wa_pb2.ADVDeviceIdentity()
    identity.ParseFromString(signed.details)
    assert (identity.rawId, identity.keyIndex, identity.timestamp) == (42, 3, 1_700_000_000)
    assert identity.accountType == wa_pb2.E2EE and identity.deviceType == wa_pb2.E2EE
