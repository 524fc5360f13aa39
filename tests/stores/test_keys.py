"""Curve25519 key crypto: generation, XEdDSA signatures, real verification, X25519, pre-keys."""

from __future__ import annotations

import pytest

from stores import keys
from stores.creds import KeyPair, init_auth_creds
from stores.errors import CorruptStateError, InvalidValueError


def test_generated_key_pairs_are_raw_32_byte_x25519_keys() -> None:
    """A key pair is 32 raw bytes each, and the public key is the private key's."""
    pair = keys.generate_key_pair()
    assert len(pair.private) == len(pair.public) == 32
    assert keys.public_from_private(pair.private) == pair.public
    assert keys.generate_key_pair().private != pair.private


def test_signatures_verify_and_carry_no_sign_bit() -> None:
    """sign() makes 64-byte XEdDSA signatures (top bit of byte 63 clear) that verify."""
    pair = keys.generate_key_pair()
    for i in range(20):
        message = b"message %d" % i
        signature = keys.sign(pair.private, message)
        assert len(signature) == 64
        assert signature[63] & 0x80 == 0
        assert keys.verify(pair.public, message, signature)
        assert keys.verify(b"\x05" + pair.public, message, signature)


def test_verify_rejects_any_change() -> None:
    """verify() really verifies: another message, key or any flipped bit fails."""
    pair = keys.generate_key_pair()
    other = keys.generate_key_pair()
    signature = keys.sign(pair.private, b"hello")
    assert not keys.verify(pair.public, b"hellO", signature)
    assert not keys.verify(other.public, b"hello", signature)
    for bit in range(0, 512, 7):
        bad = bytearray(signature)
        bad[bit // 8] ^= 1 << (bit % 8)
        assert not keys.verify(pair.public, b"hello", bytes(bad)), bit


def test_verify_says_false_for_malformed_input() -> None:
    """Wrong sizes or a wrong key-type byte give False, never an exception."""
    pair = keys.generate_key_pair()
    signature = keys.sign(pair.private, b"m")
    assert not keys.verify(pair.public[:31], b"m", signature)
    assert not keys.verify(b"\x06" + pair.public, b"m", signature)
    assert not keys.verify(pair.public, b"m", signature[:63])
    assert not keys.verify(pair.public, b"m", signature + b"\x00")


def test_signed_key_pair_signs_the_05_prefixed_public_key() -> None:
    """signed_key_pair signs 05 || public with the identity key, as Baileys' signedKeyPair."""
    identity = keys.generate_key_pair()
    signed = keys.signed_key_pair(identity, 42)
    assert signed.key_id == 42
    assert keys.verify(identity.public, b"\x05" + signed.key_pair.public, signed.signature)
    assert not keys.verify(identity.public, signed.key_pair.public, signed.signature)
    assert keys.verify_signed_key_pair(identity.public, signed)
    with pytest.raises(InvalidValueError):
        keys.signed_key_pair(identity, 1 << 24)


def test_shared_secret_is_symmetric_x25519() -> None:
    """shared_secret(a, B) == shared_secret(b, A); 05-prefixed public keys work too."""
    a, b = keys.generate_key_pair(), keys.generate_key_pair()
    secret = keys.shared_secret(a.private, b.public)
    assert len(secret) == 32
    assert secret == keys.shared_secret(b.private, b"\x05" + a.public)


def test_shared_secret_refuses_low_order_points() -> None:
    """An all-zero (low-order) public key is an InvalidValueError, not a zero secret."""
    a = keys.generate_key_pair()
    with pytest.raises(InvalidValueError):
        keys.shared_secret(a.private, bytes(32))
    with pytest.raises(InvalidValueError):
        keys.shared_secret(a.private, bytes(31))


def test_generate_pre_keys_gives_plain_values_by_decimal_id() -> None:
    """generate_pre_keys(start, n) returns n plain pre-key values keyed "start".."start+n-1"."""
    made = keys.generate_pre_keys(30, 3)
    assert list(made) == ["30", "31", "32"]
    for value in made.values():
        pair = keys.key_pair_from_plain(value)
        assert keys.public_from_private(pair.private) == pair.public
        assert keys.key_pair_to_plain(pair) == value
    assert keys.generate_pre_keys(5, 0) == {}
    with pytest.raises(InvalidValueError):
        keys.generate_pre_keys((1 << 24) - 1, 2)
    with pytest.raises(InvalidValueError):
        keys.generate_pre_keys(1, -1)


def test_plain_key_pairs_are_validated() -> None:
    """key_pair_from_plain names what is wrong: type, size, or extra fields."""
    good = {"private": bytes(32), "public": bytes(32)}
    assert keys.key_pair_from_plain(good) == KeyPair(private=bytes(32), public=bytes(32))
    bad_values: list[object] = [
        None,
        {"private": bytes(32)},
        {"private": bytes(31), "public": bytes(32)},
        {"private": "x" * 32, "public": bytes(32)},
        {**good, "extra": 1},
    ]
    for bad in bad_values:
        with pytest.raises(InvalidValueError):
            keys.key_pair_from_plain(bad, "pre-key 7")


def test_creds_key_consistency_check_catches_tampering() -> None:
    """check_creds_keys refuses a public key not matching its private key or a bad signature."""
    creds = init_auth_creds()
    keys.check_creds_keys(creds, "creds.json")
    broken = creds.copy()
    broken.noise_key = KeyPair(
        private=creds.noise_key.private, public=creds.signed_identity_key.public
    )
    with pytest.raises(CorruptStateError, match="noise_key"):
        keys.check_creds_keys(broken, "creds.json")
    broken = creds.copy()
    broken.signed_identity_key = keys.generate_key_pair()
    with pytest.raises(CorruptStateError, match="signature"):
        keys.check_creds_keys(broken, "creds.json")


def paired_account(identity: KeyPair) -> dict[str, bytes]:
    """An account as pairing stores it, with real signatures both ways."""
    phone = keys.generate_key_pair()
    details = b"\x08\x01\x10\x80\xe2\xb6\xaa\x06\x18\x01"
    return {
        "details": details,
        "accountSignatureKey": phone.public,
        "accountSignature": keys.sign(phone.private, b"\x06\x00" + details + identity.public),
        "deviceSignature": keys.sign(
            identity.private, b"\x06\x01" + details + identity.public + phone.public
        ),
    }


def test_paired_account_signatures_are_checked() -> None:
    """check_account_signatures verifies the account's accountSignature and deviceSignature."""
    creds = init_auth_creds()
    creds.account = paired_account(creds.signed_identity_key)
    keys.check_account_signatures(creds, "creds.json")
    for field in ("details", "accountSignature", "deviceSignature", "accountSignatureKey"):
        broken = creds.copy()
        assert broken.account is not None
        damaged = bytearray(broken.account[field])
        damaged[len(damaged) // 2] ^= 0x10
        broken.account[field] = bytes(damaged)
        with pytest.raises(CorruptStateError, match=r"creds\.account"):
            keys.check_account_signatures(broken, "creds.json")
    # An account of another identity does not verify either.
    stranger = creds.copy()
    stranger.account = paired_account(keys.generate_key_pair())
    with pytest.raises(CorruptStateError):
        keys.check_account_signatures(stranger, "creds.json")
