"""The primitives libsignal-node builds on: HKDF chunks, HMAC chain steps, AES-CBC.

``derive_secrets`` is libsignal's ``crypto.deriveSecrets``: RFC 5869 HKDF-SHA256
that returns up to three 32-byte chunks and insists on a 32-byte salt. The chain
step (message key seed = HMAC(key, 01), next chain key = HMAC(key, 02)) serves
both the double ratchet and sender keys. Curve25519 itself lives in
``stores.keys``; here a key pair keeps libsignal's shape, the public key in its
33-byte ``05 ||`` form.

Since 0.2.0.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.padding import PKCS7

from actors.signal.errors import InvalidMessage
from stores.errors import InvalidValueError
from stores.keys import generate_key_pair, shared_secret, signal_public_key

ZERO_SALT = bytes(32)
INFO_TEXT = b"WhisperText"
INFO_RATCHET = b"WhisperRatchet"
INFO_MESSAGE_KEYS = b"WhisperMessageKeys"
INFO_GROUP = b"WhisperGroup"
MESSAGE_KEY_SEED = b"\x01"
CHAIN_KEY_SEED = b"\x02"


@dataclass(frozen=True, slots=True)
class SignalKeyPair:
    """A Curve25519 key pair as libsignal keeps it: ``public`` is 33 bytes (``05 ||``)."""

    public: bytes
    private: bytes = b""

    def __repr__(self) -> str:
        return f"SignalKeyPair(public={self.public.hex()[:16]}…)"


KeyPairFactory = Callable[[], SignalKeyPair]
"""Where fresh ratchet and base keys come from (random by default; fixed in vectors)."""


def random_key_pair() -> SignalKeyPair:
    """A fresh random Curve25519 key pair, libsignal's ``curve.generateKeyPair``."""
    pair = generate_key_pair()
    return SignalKeyPair(public=signal_public_key(pair.public), private=pair.private)


def agree(public: bytes, private: bytes, field: str = "public key") -> bytes:
    """X25519 agreement of our ``private`` key with a 33-byte (or 32-byte) ``public`` key.

    A public key X25519 refuses (a low-order point) is ``InvalidMessage(field)``: it
    came from a peer's message or bundle.
    """
    try:
        return shared_secret(private, public)
    except InvalidValueError as exc:
        raise InvalidMessage(field, str(exc)) from exc


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256, libsignal's ``calculateMAC``."""
    return hmac.digest(key, data, "sha256")


def derive_secrets(ikm: bytes, salt: bytes, info: bytes, chunks: int = 3) -> list[bytes]:
    """HKDF-SHA256 as libsignal's ``deriveSecrets``: ``chunks`` (1 to 3) blocks of 32 bytes."""
    if len(salt) != 32:
        raise ValueError(f"salt must be 32 bytes, got {len(salt)}")
    if not 1 <= chunks <= 3:
        raise ValueError(f"chunks must be 1..3, got {chunks}")
    prk = hmac_sha256(salt, ikm)
    out: list[bytes] = []
    previous = b""
    for index in range(1, chunks + 1):
        previous = hmac_sha256(prk, previous + info + bytes([index]))
        out.append(previous)
    return out


def chain_step(chain_key: bytes) -> tuple[bytes, bytes]:
    """``(message key seed, next chain key)`` of one symmetric-ratchet step."""
    return hmac_sha256(chain_key, MESSAGE_KEY_SEED), hmac_sha256(chain_key, CHAIN_KEY_SEED)


def aes_cbc_encrypt(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """AES-256-CBC with PKCS#7 padding (node's ``aes-256-cbc`` cipher)."""
    padder = PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(padded) + encryptor.finalize()


def aes_cbc_decrypt(key: bytes, iv: bytes, ciphertext: bytes, field: str) -> bytes:
    """Undo :func:`aes_cbc_encrypt`; a wrong length or padding is ``InvalidMessage(field)``."""
    if not ciphertext or len(ciphertext) % 16:
        raise InvalidMessage(field, f"AES-CBC needs whole 16-byte blocks, got {len(ciphertext)}")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise InvalidMessage(field, "bad PKCS#7 padding") from exc
