"""Pairing by phone-number code: the link-code crypto and stanzas of both sides. Sans-IO.

Facts (Baileys v7 ``lib/Socket/socket.js`` ``requestPairingCode`` /
``generatePairingKey``, ``lib/Socket/messages-recv.js`` ``link_code_companion_reg``,
``lib/Utils/crypto.js`` ``derivePairingCodeKey``, ``lib/Utils/generics.js``
``bytesToCrockford``)::

    code         8 characters of 123456789ABCDEFGHJKLMNPQRSTVWXYZ from 5 random
                 bytes (5 bits a character); shown as ABCD-EFGH
    code key     PBKDF2-HMAC-SHA256(code, salt, 131072 iterations, 32 bytes)
    wrapped key  salt(32) || iv(16) || AES-256-CTR(code key, iv, X25519 public)
                 (the companion wraps its pairing ephemeral public key, the
                 primary (the phone) its own ephemeral public key, each under
                 the one code)
    bundle key   HKDF-SHA256(DH(ephemerals), salt, "link_code_pairing_key_bundle_
                 encryption_key", 32)
    key bundle   salt(32) || iv(12) || AES-256-GCM(bundle key, iv, companion
                 identity pub || primary identity pub || random(32), no AAD)
    adv secret   HKDF-SHA256(DH(ephemerals) || DH(identities) || random, no salt,
                 "adv_secret", 32): what the phone HMACs the device identity
                 with, as the QR's adv secret is for a scan

The exchange, on the companion's one connection while it is pairing:

1. companion → server: ``iq type=set xmlns=md > link_code_companion_reg
   {jid=<phone>@s.whatsapp.net, stage=companion_hello,
   should_show_push_notification=true} > link_code_pairing_wrapped_companion_
   ephemeral_pub, companion_server_auth_key_pub (noise public),
   companion_platform_id, companion_platform_display, link_code_pairing_nonce "0"``;
   the server answers ``iq type=result > link_code_companion_reg >
   link_code_pairing_ref``;
2. the person types the code on the phone; server → companion: ``notification
   type=link_code_companion_reg > link_code_companion_reg{stage=primary_hello} >
   link_code_pairing_ref, primary_identity_pub,
   link_code_pairing_wrapped_primary_ephemeral_pub`` (acked like any notification);
3. companion → server: ``iq type=set xmlns=md > link_code_companion_reg{jid,
   stage=companion_finish} > link_code_pairing_wrapped_key_bundle,
   companion_identity_public, link_code_pairing_ref``;
4. then ``pair-success`` exactly as after a QR scan (:mod:`actors.connection.pairing`).

A wrong code cannot be seen until step 3: CTR has no integrity, so each side
decrypts a wrong code into some other key, and only the phone's GCM open of the
key bundle fails. Since 0.2.0.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from actors.connection.binary import S_WHATSAPP_NET, SERVER_JID, BinaryNode
from actors.connection.errors import BAD_SESSION, ProtocolError, RemoteProtocolError
from actors.connection.payload import Browser
from actors.connection.qr import companion_platform
from stores.creds import KeyPair
from stores.keys import shared_secret

#: The code's characters (Baileys' Crockford-like alphabet: no 0, I, O, U).
CODE_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTVWXYZ"
CODE_LENGTH = 8
#: PBKDF2 rounds of the code key (Baileys: ``2 << 16``).
CODE_KEY_ITERATIONS = 2 << 16
BUNDLE_INFO = b"link_code_pairing_key_bundle_encryption_key"
ADV_SECRET_INFO = b"adv_secret"
#: The stanza tag and the ``type`` of the notification carrying the phone's hello.
LINK_CODE_TAG = "link_code_companion_reg"

_SALT = 32
_CTR_IV = 16
_GCM_IV = 12
_KEY = 32
WRAPPED_KEY_SIZE = _SALT + _CTR_IV + _KEY
_BUNDLE_PLAIN = 3 * _KEY


class PairingCodeError(ProtocolError, ValueError):
    """A pairing code that is not 8 characters of the code alphabet (dash and spaces aside)."""


class KeyBundleError(ProtocolError, ValueError):
    """A key bundle that does not open: a wrong code on one side, or a mangled bundle."""


# --- the code -------------------------------------------------------------------------


def bytes_to_code(data: bytes) -> str:
    """Baileys' ``bytesToCrockford``: 5 bits a character, the last one zero-padded."""
    value = bits = 0
    out: list[str] = []
    for byte in data:
        value = (value << 8) | byte
        bits += 8
        while bits >= 5:
            out.append(CODE_ALPHABET[(value >> (bits - 5)) & 31])
            bits -= 5
    if bits:
        out.append(CODE_ALPHABET[(value << (5 - bits)) & 31])
    return "".join(out)


def new_code() -> str:
    """A fresh random 8-character code (40 bits)."""
    return bytes_to_code(secrets.token_bytes(5))


def normalize_code(text: str) -> str:
    """The 8 characters of a code as typed (``abcd-efgh``, ``ABCD EFGH``); PairingCodeError."""
    if not isinstance(text, str):
        raise PairingCodeError(f"pairing code: expected a string, got {type(text).__name__}")
    code = text.replace("-", "").replace(" ", "").upper()
    if len(code) != CODE_LENGTH:
        raise PairingCodeError(f"pairing code: expected {CODE_LENGTH} characters, got {len(code)}")
    bad = sorted({c for c in code if c not in CODE_ALPHABET})
    if bad:
        raise PairingCodeError(f"pairing code: characters {''.join(bad)!r} are not in a code")
    return code


def display_code(code: str) -> str:
    """How a person is shown the code: ``ABCD-EFGH``."""
    return f"{code[:4]}-{code[4:]}"


# --- the crypto -----------------------------------------------------------------------


def code_key(code: str, salt: bytes) -> bytes:
    """PBKDF2-HMAC-SHA256 of the code's ASCII under ``salt`` (Baileys' derivePairingCodeKey)."""
    kdf = PBKDF2HMAC(
        algorithm=hashes.SHA256(), length=_KEY, salt=salt, iterations=CODE_KEY_ITERATIONS
    )
    return kdf.derive(code.encode("ascii"))


def _ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return cipher.update(data) + cipher.finalize()


def wrap_public_key(
    code: str, public: bytes, *, salt: bytes | None = None, iv: bytes | None = None
) -> bytes:
    """``salt || iv || AES-CTR(code key, iv, public)``; salt and IV fresh unless given (tests)."""
    salt = secrets.token_bytes(_SALT) if salt is None else salt
    iv = secrets.token_bytes(_CTR_IV) if iv is None else iv
    return salt + iv + _ctr(code_key(code, salt), iv, public)


def unwrap_public_key(code: str, wrapped: bytes, what: str) -> bytes:
    """The public key inside a wrapped key; RemoteProtocolError naming ``what`` if mis-sized."""
    if len(wrapped) != WRAPPED_KEY_SIZE:
        raise RemoteProtocolError(
            f"{what}: {len(wrapped)} bytes, expected {WRAPPED_KEY_SIZE}",
            error_status_hint=BAD_SESSION,
        )
    salt, iv, body = wrapped[:_SALT], wrapped[_SALT : _SALT + _CTR_IV], wrapped[_SALT + _CTR_IV :]
    return _ctr(code_key(code, salt), iv, body)


def _hkdf(material: bytes, salt: bytes | None, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=_KEY, salt=salt, info=info).derive(material)


def bundle_key(ephemeral_shared: bytes, salt: bytes) -> bytes:
    """The AES-GCM key of the key bundle."""
    return _hkdf(ephemeral_shared, salt, BUNDLE_INFO)


def adv_secret(ephemeral_shared: bytes, identity_shared: bytes, random: bytes) -> bytes:
    """The 32-byte adv secret both sides derive (creds.advSecretKey is its base64)."""
    return _hkdf(ephemeral_shared + identity_shared + random, None, ADV_SECRET_INFO)


@dataclass(frozen=True, repr=False)
class KeyBundle:
    """What the companion's wrapped key bundle holds."""

    companion_identity: bytes
    primary_identity: bytes
    random: bytes

    def __repr__(self) -> str:
        return "KeyBundle(<identities and random>)"


def seal_key_bundle(
    ephemeral_shared: bytes,
    bundle: KeyBundle,
    *,
    salt: bytes | None = None,
    iv: bytes | None = None,
) -> bytes:
    """``salt || iv || AES-GCM(bundle key, iv, companion id || primary id || random)``."""
    salt = secrets.token_bytes(_SALT) if salt is None else salt
    iv = secrets.token_bytes(_GCM_IV) if iv is None else iv
    plain = bundle.companion_identity + bundle.primary_identity + bundle.random
    return salt + iv + AESGCM(bundle_key(ephemeral_shared, salt)).encrypt(iv, plain, b"")


def open_key_bundle(ephemeral_shared: bytes, wrapped: bytes) -> KeyBundle:
    """The phone's side: open the companion's bundle; KeyBundleError if it does not open."""
    if len(wrapped) != _SALT + _GCM_IV + _BUNDLE_PLAIN + 16:
        raise KeyBundleError(f"key bundle: {len(wrapped)} bytes, expected {_SALT + _GCM_IV + 112}")
    salt, iv, body = wrapped[:_SALT], wrapped[_SALT : _SALT + _GCM_IV], wrapped[_SALT + _GCM_IV :]
    try:
        plain = AESGCM(bundle_key(ephemeral_shared, salt)).decrypt(iv, body, b"")
    except InvalidTag:
        raise KeyBundleError("key bundle does not open (a wrong code?)") from None
    return KeyBundle(plain[:_KEY], plain[_KEY : 2 * _KEY], plain[2 * _KEY :])


# --- the companion's side ----------------------------------------------------------------


@dataclass(frozen=True)
class PrimaryHello:
    """The phone's answer to the code, as the notification carries it."""

    notification: BinaryNode = field(repr=False)
    ref: bytes = field(repr=False)
    primary_identity: bytes = field(repr=False)
    wrapped_primary_ephemeral: bytes = field(repr=False)


def _child_bytes(parent: BinaryNode, tag: str, where: str) -> bytes:
    child = parent.child(tag)
    content = child.content if child is not None else None
    if isinstance(content, str):
        content = content.encode()
    if not isinstance(content, bytes) or not content:
        raise RemoteProtocolError(f"{where}: {tag} missing or empty", error_status_hint=BAD_SESSION)
    return content


def parse_primary_hello(notification: BinaryNode) -> PrimaryHello:
    """Read the phone's hello from ``notification > link_code_companion_reg``."""
    where = f"notification {LINK_CODE_TAG}"
    reg = notification.child(LINK_CODE_TAG)
    if reg is None:
        raise RemoteProtocolError(
            f"{where}: no {LINK_CODE_TAG} child", error_status_hint=BAD_SESSION
        )
    identity = _child_bytes(reg, "primary_identity_pub", where)
    if len(identity) != _KEY:
        raise RemoteProtocolError(
            f"{where}: primary_identity_pub is {len(identity)} bytes, expected 32",
            error_status_hint=BAD_SESSION,
        )
    return PrimaryHello(
        notification=notification,
        ref=_child_bytes(reg, "link_code_pairing_ref", where),
        primary_identity=identity,
        wrapped_primary_ephemeral=_child_bytes(
            reg, "link_code_pairing_wrapped_primary_ephemeral_pub", where
        ),
    )


def notification_ack(notification: BinaryNode) -> BinaryNode:
    """The ``ack`` of the primary-hello notification, as Baileys acks every notification.

    (The message layer's ``ack_for`` builds the same; the connection core cannot
    import it: the message layer imports this package.)
    """
    attrs = {"class": notification.tag}
    for name, key in (("id", "id"), ("to", "from"), ("type", "type")):
        value = notification.attrs.get(key)
        if value:
            attrs[name] = value
    return BinaryNode("ack", attrs)


def phone_jid(phone: str) -> str:
    """``<digits>@s.whatsapp.net``: the account the code is for."""
    return f"{phone}@{S_WHATSAPP_NET}"


@dataclass(frozen=True, repr=False)
class CodeRequest:
    """One code the companion asked for: the phone number, the code and the keys it wraps.

    ``ephemeral`` is creds.pairingEphemeralKeyPair, ``identity`` creds.signedIdentityKey.
    """

    phone: str
    code: str
    ephemeral: KeyPair
    identity: KeyPair

    def __repr__(self) -> str:
        return f"CodeRequest(phone={self.phone!r})"

    def hello(self, iq_id: str, noise_public: bytes, browser: Browser) -> BinaryNode:
        """The ``companion_hello`` iq (step 1)."""
        wrapped = wrap_public_key(self.code, self.ephemeral.public)
        children = [
            BinaryNode("link_code_pairing_wrapped_companion_ephemeral_pub", {}, wrapped),
            BinaryNode("companion_server_auth_key_pub", {}, noise_public),
            BinaryNode("companion_platform_id", {}, str(int(companion_platform(browser))).encode()),
            BinaryNode("companion_platform_display", {}, f"{browser.name} ({browser.os})".encode()),
            BinaryNode("link_code_pairing_nonce", {}, b"0"),
        ]
        attrs = {
            "jid": phone_jid(self.phone),
            "stage": "companion_hello",
            "should_show_push_notification": "true",
        }
        return _md_iq(iq_id, BinaryNode(LINK_CODE_TAG, attrs, children))

    def finish(self, iq_id: str, hello: PrimaryHello) -> tuple[BinaryNode, str]:
        """The ``companion_finish`` iq (step 3) and the adv secret (base64) it implies."""
        primary_ephemeral = unwrap_public_key(
            self.code,
            hello.wrapped_primary_ephemeral,
            "link_code_pairing_wrapped_primary_ephemeral_pub",
        )
        ephemeral_shared = _agree(self.ephemeral.private, primary_ephemeral, "primary ephemeral")
        random = secrets.token_bytes(_KEY)
        bundle = KeyBundle(self.identity.public, hello.primary_identity, random)
        sealed = seal_key_bundle(ephemeral_shared, bundle)
        identity_shared = _agree(self.identity.private, hello.primary_identity, "primary identity")
        secret = adv_secret(ephemeral_shared, identity_shared, random)
        children = [
            BinaryNode("link_code_pairing_wrapped_key_bundle", {}, sealed),
            BinaryNode("companion_identity_public", {}, self.identity.public),
            BinaryNode("link_code_pairing_ref", {}, hello.ref),
        ]
        attrs = {"jid": phone_jid(self.phone), "stage": "companion_finish"}
        node = _md_iq(iq_id, BinaryNode(LINK_CODE_TAG, attrs, children))
        return node, base64.b64encode(secret).decode("ascii")


def _agree(private: bytes, public: bytes, what: str) -> bytes:
    try:
        return shared_secret(private, public)
    except ValueError as exc:
        raise RemoteProtocolError(
            f"link code: {what} key refused: {exc}", error_status_hint=BAD_SESSION
        ) from exc


def _md_iq(iq_id: str, child: BinaryNode) -> BinaryNode:
    attrs = {"to": SERVER_JID, "type": "set", "id": iq_id, "xmlns": "md"}
    return BinaryNode("iq", attrs, [child])


__all__ = [
    "ADV_SECRET_INFO",
    "BUNDLE_INFO",
    "CODE_ALPHABET",
    "CODE_KEY_ITERATIONS",
    "CODE_LENGTH",
    "LINK_CODE_TAG",
    "WRAPPED_KEY_SIZE",
    "CodeRequest",
    "KeyBundle",
    "KeyBundleError",
    "PairingCodeError",
    "PrimaryHello",
    "adv_secret",
    "bundle_key",
    "bytes_to_code",
    "code_key",
    "display_code",
    "new_code",
    "normalize_code",
    "notification_ack",
    "open_key_bundle",
    "parse_primary_hello",
    "phone_jid",
    "seal_key_bundle",
    "unwrap_public_key",
    "wrap_public_key",
]
