"""Curve25519 key crypto, libsignal-compatible, and the plain shapes of every key type.

Keys are raw 32-byte values exactly as Baileys stores them: ``private`` is the
unclamped X25519 scalar bytes, ``public`` the 32-byte Montgomery u-coordinate.
Signed material and key bundles use the 33-byte form ``05 || public``.

Signatures: :func:`sign` makes an XEdDSA signature (the private scalar negated if
needed so the Edwards public key has sign bit 0, random 64-byte nonce), which
libsignal's ``curve.verifySignature`` accepts. :func:`verify` also accepts the
deterministic signatures Baileys makes through ``curve25519-js`` (which carry the
Edwards sign bit in the top bit of byte 63) and, unlike Baileys' ``Curve.verify``,
really verifies.

Plain value shape of every ``KEY_TYPES`` entry, as Baileys v7 keeps it in memory
after reading a multi-file directory (``JSON.parse`` with ``BufferJSON.reviver``);
``bytes`` stands for a Node Buffer:

``pre-key``
    ``{"private": bytes, "public": bytes}`` (32 bytes each); id is the decimal key id.
``session``
    libsignal ``SessionRecord.serialize()``: ``{"_sessions": {...}, "version": "v1"}``,
    nested dicts of str/int/bool/None with base64 *strings* inside. Opaque: stored and
    returned exactly. (Baileys' type says Uint8Array; the value it stores is this object.)
``sender-key``
    ``bytes``: the UTF-8 JSON of libsignal's ``SenderKeyRecord.serialize()``. Baileys
    v6 stored the serialised list itself (``[{"senderKeyId": ..., ...}]``); such values
    load as that list, unchanged.
``sender-key-memory``
    ``{jid: bool}``: which devices already hold our sender key for a group.
``app-state-sync-key``
    ``AppStateSyncKeyData`` as plain data, field names as protobuf-JSON:
    ``{"keyData": bytes, "fingerprint": {"rawId": int, "currentIndex": int,
    "deviceIndexes": [int]}, "timestamp": int}`` (every field optional). On disk
    (multi-file) it is protobuf-JSON: ``keyData`` a plain base64 string and the int64
    ``timestamp`` a decimal string; ``stores.multi_file`` converts.
``app-state-sync-version``
    LTHashState: ``{"version": int, "hash": bytes, "indexValueMap":
    {indexMacBase64: {"valueMac": bytes}}}``.
``lid-mapping``
    ``str``: id ``<pn user>`` maps to the LID user, id ``<lid user>_reverse`` back.
``device-list``
    ``list[str]``: the device ids of a user.
``tctoken``
    ``{"token": bytes, "timestamp": str, "senderTimestamp": int}`` (timestamps
    optional); the sentinel id Baileys uses for its index holds other plain data.
``received-message`` (ours; Baileys has no such type)
    ``{"ids": [stanza id, ...], "messages": {stanza id: bytes}}``, id the author's
    Signal address: the newest decrypted ``wa.Message`` bytes from that author, so a
    stanza the server delivers again after a crash is answered from here.
``sent-message`` (ours)
    the same shape, id the chat JID: our newest sent messages there, to encrypt again
    when a device asks with a retry receipt, also after a restart.
``identity-key``
    ``bytes``: the 33-byte ``05 || public`` identity key of a remote address.

Since 0.1.0.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

import xeddsa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from stores.creds import AuthCreds, KeyPair, SignedKeyPair
from stores.errors import CorruptStateError, InvalidValueError
from stores.types import Value

KEY_BUNDLE_TYPE = b"\x05"
"""The type byte of a Curve25519 public key in libsignal's serialised form."""

MAX_KEY_ID = (1 << 24) - 1
"""Pre-key and signed pre-key ids travel as 3 big-endian bytes."""

_SIGN_BIT = 0x80


def generate_key_pair() -> KeyPair:
    """Return a fresh X25519 key pair (raw 32-byte private and public keys)."""
    key = X25519PrivateKey.generate()
    private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return KeyPair(private=private, public=public)


def public_from_private(private: bytes) -> bytes:
    """Return the 32-byte public key of a raw X25519 private key."""
    _check_len("private key", private, 32)
    key = X25519PrivateKey.from_private_bytes(private)
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def signal_public_key(public: bytes) -> bytes:
    """Return ``05 || public`` for a 32-byte key; a 33-byte key is returned unchanged."""
    return KEY_BUNDLE_TYPE + _raw_public(public)


def sign(private: bytes, message: bytes) -> bytes:
    """Sign ``message`` with a Curve25519 private key; a 64-byte XEdDSA signature."""
    _check_len("private key", private, 32)
    adjusted = xeddsa.priv_force_sign(private, False)
    return bytes(xeddsa.ed25519_priv_sign(adjusted, bytes(message), secrets.token_bytes(64)))


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid Curve25519 signature of ``message`` by ``public``.

    ``public`` may be 32 raw bytes or the 33-byte ``05 || public`` form. Malformed
    keys or signatures are invalid (``False``), never an exception.
    """
    try:
        raw = _raw_public(public)
    except InvalidValueError:
        return False
    if len(signature) != 64:
        return False
    # curve25519-js (and libsignal) carry the Edwards sign bit in sig[63]'s top bit.
    sign_bit = bool(signature[63] & _SIGN_BIT)
    clean = signature[:63] + bytes([signature[63] & ~_SIGN_BIT & 0xFF])
    try:
        ed_public = xeddsa.curve25519_pub_to_ed25519_pub(raw, sign_bit)
        return bool(xeddsa.ed25519_verify(clean, ed_public, bytes(message)))
    except xeddsa.XEdDSAException:
        return False


def signed_key_pair(identity: KeyPair, key_id: int) -> SignedKeyPair:
    """A fresh pre-key signed by ``identity`` over ``05 || public``, as Baileys' signedKeyPair."""
    _check_key_id(key_id)
    pair = generate_key_pair()
    signature = sign(identity.private, KEY_BUNDLE_TYPE + pair.public)
    return SignedKeyPair(key_pair=pair, signature=signature, key_id=key_id)


def verify_signed_key_pair(identity_public: bytes, signed: SignedKeyPair) -> bool:
    """Whether ``signed``'s signature over ``05 || public`` verifies under ``identity_public``."""
    return verify(identity_public, KEY_BUNDLE_TYPE + signed.key_pair.public, signed.signature)


def shared_secret(private: bytes, public: bytes) -> bytes:
    """X25519 agreement; ``public`` may be 32 raw bytes or ``05 || public``.

    Raises ``InvalidValueError`` for a malformed key or a low-order public key.
    """
    _check_len("private key", private, 32)
    raw = _raw_public(public)
    try:
        key = X25519PrivateKey.from_private_bytes(private)
        return key.exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError as exc:
        raise InvalidValueError("public key", f"X25519 agreement refused it: {exc}") from exc


def generate_pre_keys(start_id: int, count: int) -> dict[str, Value]:
    """``count`` fresh pre-keys with ids ``start_id ..``, as plain ``pre-key`` values by id."""
    if count < 0:
        raise InvalidValueError("pre-key count", f"must not be negative, got {count}")
    if count:
        _check_key_id(start_id)
        _check_key_id(start_id + count - 1)
    return {str(start_id + i): key_pair_to_plain(generate_key_pair()) for i in range(count)}


def key_pair_to_plain(pair: KeyPair) -> dict[str, Value]:
    """The plain ``pre-key`` shape of a key pair: ``{"private": bytes, "public": bytes}``."""
    return {"private": pair.private, "public": pair.public}


def key_pair_from_plain(value: Value, what: str = "key pair") -> KeyPair:
    """A ``KeyPair`` from ``{"private": bytes, "public": bytes}``; ``InvalidValueError`` if not."""
    if not isinstance(value, Mapping):
        raise InvalidValueError(
            what, f"expected an object with private and public, got {_kind(value)}"
        )
    extra = set(value) - {"private", "public"}
    if extra:
        raise InvalidValueError(what, f"unexpected fields {sorted(extra)}")
    for name in ("private", "public"):
        part = value.get(name)
        if not isinstance(part, bytes | bytearray):
            raise InvalidValueError(f"{what}.{name}", f"expected 32 bytes, got {_kind(part)}")
        _check_len(f"{what}.{name}", part, 32)
    return KeyPair(private=bytes(value["private"]), public=bytes(value["public"]))


def check_creds_keys(creds: AuthCreds, location: str) -> None:
    """Check the creds' key material is self-consistent, or raise ``CorruptStateError``.

    Every key pair's public key must be the one its private key gives, and the
    signed pre-key's signature must verify under the identity key. Baileys JSON has
    no checksum: this is what turns a flipped bit in key material into an error
    instead of a device that silently fails to log in.
    """
    pairs = {
        "noise_key": creds.noise_key,
        "pairing_ephemeral_key_pair": creds.pairing_ephemeral_key_pair,
        "signed_identity_key": creds.signed_identity_key,
        "signed_pre_key.key_pair": creds.signed_pre_key.key_pair,
    }
    for name, pair in pairs.items():
        if public_from_private(pair.private) != pair.public:
            raise CorruptStateError(
                location, f"creds.{name}: public key does not match private key"
            )
    if not verify_signed_key_pair(creds.signed_identity_key.public, creds.signed_pre_key):
        raise CorruptStateError(
            location, "creds.signed_pre_key.signature: does not verify under signed_identity_key"
        )


ADV_ACCOUNT_SIG_PREFIXES = (b"\x06\x00", b"\x06\x05")
"""``accountSignature`` covers prefix || details || our identity key (06 05: hosted)."""
ADV_DEVICE_SIG_PREFIXES = (b"\x06\x01", b"\x06\x06")
"""``deviceSignature`` covers prefix || details || our identity key || account key."""


def check_account_signatures(creds: AuthCreds, location: str) -> None:
    """Check a paired account's ``accountSignature`` and ``deviceSignature``, or raise.

    Both tie the account to our identity key (Baileys verifies the first and makes
    the second at pairing), so a damaged account is a ``CorruptStateError`` here
    instead of a device whose messages peers reject. Fields that are absent are
    not checked. Not part of ``check_creds_keys`` (yet): test data in the tree uses
    made-up account bytes.
    """
    if creds.account is not None:
        _check_account(creds.account, creds.signed_identity_key.public, location)


def _check_account(account: Mapping[str, object], identity: bytes, location: str) -> None:
    details = account.get("details")
    account_key = account.get("accountSignatureKey")
    if not isinstance(details, bytes) or not isinstance(account_key, bytes):
        return
    checks = (
        ("accountSignature", account_key, ADV_ACCOUNT_SIG_PREFIXES, details + identity),
        ("deviceSignature", identity, ADV_DEVICE_SIG_PREFIXES, details + identity + account_key),
    )
    for name, signer, prefixes, body in checks:
        signature = account.get(name)
        if not isinstance(signature, bytes):
            continue
        if not any(verify(signer, prefix + body, signature) for prefix in prefixes):
            raise CorruptStateError(location, f"creds.account.{name}: does not verify")


def _raw_public(public: bytes) -> bytes:
    if len(public) == 33 and public[:1] == KEY_BUNDLE_TYPE:
        return bytes(public[1:])
    if len(public) == 32:
        return bytes(public)
    raise InvalidValueError("public key", f"expected 32 bytes or 05 + 32 bytes, got {len(public)}")


def _check_len(what: str, value: bytes | bytearray, size: int) -> None:
    if len(value) != size:
        raise InvalidValueError(what, f"expected {size} bytes, got {len(value)}")


def _check_key_id(key_id: int) -> None:
    if isinstance(key_id, bool) or not isinstance(key_id, int) or not 0 <= key_id <= MAX_KEY_ID:
        raise InvalidValueError("key id", f"expected an int in 0..{MAX_KEY_ID}, got {key_id!r}")


def _kind(value: object) -> str:
    return type(value).__name__
