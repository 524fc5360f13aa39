"""Encryption at rest: the one AEAD the native, SQLite and PostgreSQL backends share.

A store is encrypted under a 32-byte key the user supplies. What the store says
about it (native: every file header; SQLite/PostgreSQL: a metadata row per account)
is an ``Encryption``: the cipher, the key's id and a random store id, never the key.

* The cipher is ChaCha20-Poly1305 (``cryptography``) with a random 96-bit nonce per
  record: a record rewritten after a torn tail never reuses a nonce.
* The key id is ``k1-`` and 16 hex digits of a BLAKE2b keyed hash of a fixed message
  under the key: the same key always has the same id, and the id reveals nothing of
  the key. Opening checks the id before any record is read, so a wrong key is a
  ``WrongKeyError`` and never looks like damage (nothing is cut or salvaged).
* Every sealed record carries its identity (the store id and where the record
  belongs: native log seq, snapshot frame, SQLite/PostgreSQL row) as associated
  data, so a record moved to another place, another store or another row fails its
  tag. With the right key, a failed tag is damage: ``CorruptStateError``.

A key source (``KeySource``) is 32 raw bytes, the path of a key file (32 raw bytes,
or 64 hex digits and optional whitespace; readable by its owner only), or a callback
returning the bytes, sync or async (a KMS).

Since 0.2.0.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import json
import os
import secrets
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from stores.errors import CorruptStateError, EncryptionKeyError, WrongKeyError

__all__ = [
    "CIPHER",
    "Encryption",
    "KeySource",
    "RecordCipher",
    "StoreKey",
    "check_key",
    "key_from_env",
    "new_encryption",
    "read_key_file",
    "resolve_key",
]

CIPHER = "chacha20-poly1305"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
STORE_ID_BYTES = 16
OVERHEAD = NONCE_BYTES + TAG_BYTES
"""Bytes a sealed record has beyond its plaintext."""
_KEY_ID_PERSON = b"btrio-key-id-v1"
_AAD_PREFIX = b"btrio-at-rest-v1\0"
_MAX_KEY_FILE = 4096


@dataclass(frozen=True)
class StoreKey:
    """A 32-byte encryption key; its repr and ``key_id`` never show the key itself."""

    key_id: str
    _raw: bytes = field(repr=False)
    _aead: ChaCha20Poly1305 = field(repr=False, compare=False)

    @classmethod
    def from_bytes(cls, raw: bytes, what: str = "encryption_key") -> StoreKey:
        if not isinstance(raw, bytes | bytearray) or len(raw) != KEY_BYTES:
            size = len(raw) if isinstance(raw, bytes | bytearray) else type(raw).__name__
            raise EncryptionKeyError(what, f"must be {KEY_BYTES} bytes, got {size}")
        raw = bytes(raw)
        return cls(key_id(raw), raw, ChaCha20Poly1305(raw))

    @classmethod
    def generate(cls) -> StoreKey:
        """A fresh random key (tests, and ``rekey`` users who want one made)."""
        return cls.from_bytes(secrets.token_bytes(KEY_BYTES))

    def __repr__(self) -> str:
        return f"StoreKey({self.key_id})"


def key_id(raw: bytes) -> str:
    """The public fingerprint of a key: stable, and no help in guessing the key."""
    digest = hashlib.blake2b(b"key id", key=raw, digest_size=8, person=_KEY_ID_PERSON)
    return "k1-" + digest.hexdigest()


@dataclass(frozen=True)
class Encryption:
    """What a store records about its encryption: cipher, key id and store id."""

    key_id: str
    store_id: bytes
    cipher: str = CIPHER

    def to_plain(self) -> dict[str, Any]:
        return {"cipher": self.cipher, "key_id": self.key_id, "store_id": self.store_id.hex()}

    @classmethod
    def from_plain(cls, raw: object, location: str) -> Encryption:
        """Parse a header's or metadata row's encryption entry; damage is corruption."""
        if not isinstance(raw, dict):
            raise CorruptStateError(location, "encryption entry is not a map")
        cipher, kid, store_id = raw.get("cipher"), raw.get("key_id"), raw.get("store_id")
        if cipher != CIPHER:
            raise CorruptStateError(location, f"unknown cipher {cipher!r} (this build: {CIPHER})")
        if not isinstance(kid, str) or not kid.startswith("k1-") or len(kid) != 19:
            raise CorruptStateError(location, f"malformed key id {kid!r}")
        try:
            sid = bytes.fromhex(store_id) if isinstance(store_id, str) else b""
        except ValueError:
            sid = b""
        if len(sid) != STORE_ID_BYTES:
            raise CorruptStateError(location, "malformed store id in the encryption entry")
        return cls(kid, sid, cipher)


def encryption_to_text(encryption: Encryption) -> str:
    """The JSON a database metadata row holds."""
    return json.dumps(encryption.to_plain(), sort_keys=True)


def encryption_from_text(text: object, location: str) -> Encryption:
    try:
        raw = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        raw = None
    return Encryption.from_plain(raw, location)


@dataclass(frozen=True)
class AccountKeying:
    """A database account's cipher, and whether its encryption row is still unwritten."""

    cipher: RecordCipher | None
    meta_pending: bool = False


def account_meta_name(account: str) -> str:
    """The metadata row (SQLite ``store_meta``, PostgreSQL ``baileys_store_meta``)."""
    return f"encryption:{account}"


def account_keying(
    where: str, found: Encryption | None, key: StoreKey | None, has_rows: bool
) -> AccountKeying:
    """The cipher for a database account under ``key``; ``WrongKeyError`` if it does not fit.

    An account with no rows and no encryption row is new: a key makes it encrypted (its
    row is written with the first commit, so no row is ever sealed without it).
    """
    if found is None and key is not None and not has_rows:
        return AccountKeying(RecordCipher(key, new_encryption(key)), True)
    return AccountKeying(check_key(where, found, key))


def new_encryption(key: StoreKey, store_id: bytes | None = None) -> Encryption:
    """The entry of a store newly encrypted under ``key`` (a fresh store id unless kept)."""
    return Encryption(key.key_id, store_id or secrets.token_bytes(STORE_ID_BYTES))


class RecordCipher:
    """A key bound to one store: seals and opens records, their identity as associated data."""

    def __init__(self, key: StoreKey, encryption: Encryption) -> None:
        if key.key_id != encryption.key_id:
            raise ValueError("the key is not the one the encryption entry names")
        self.key = key
        self.encryption = encryption
        self._aead = key._aead  # same package: the object is built once per key
        self._prefix = _AAD_PREFIX + encryption.store_id + b"\0"

    def __repr__(self) -> str:
        return f"RecordCipher({self.key.key_id})"

    def seal(self, plaintext: bytes, identity: bytes) -> bytes:
        """``nonce || ciphertext || tag`` of ``plaintext`` bound to ``identity``."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, self._prefix + identity)

    def open(
        self, sealed: bytes | memoryview, identity: bytes, location: str, offset: int | None = None
    ) -> bytes:
        """The plaintext of a sealed record; a failed tag is ``CorruptStateError``.

        The key was checked against the store's key id before, so a failed tag means
        the record was damaged, or moved from another place or another store.
        """
        data = bytes(sealed)
        if len(data) < OVERHEAD:
            raise CorruptStateError(location, "encrypted record is shorter than its tag", offset)
        aad = self._prefix + identity
        try:
            return self._aead.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], aad)
        except InvalidTag:
            raise CorruptStateError(
                location, "encrypted record fails its authentication tag (damaged or moved)", offset
            ) from None


def check_key(location: str, found: Encryption | None, key: StoreKey | None) -> RecordCipher | None:
    """The cipher for a store that says ``found``, given ``key``; else ``WrongKeyError``.

    A plain store opened with a key is refused too: silently ignoring the key would
    leave the user believing the data is encrypted (``rekey`` encrypts a plain store).
    """
    if found is None:
        if key is not None:
            raise WrongKeyError(location, None, key.key_id)
        return None
    if key is None or not hmac.compare_digest(key.key_id, found.key_id):
        raise WrongKeyError(location, found.key_id, None if key is None else key.key_id)
    return RecordCipher(key, found)


def refuse_multi_file_key(key: object) -> None:
    """The Baileys multi-file folder stays plain (Baileys must read it): a key is refused."""
    if key is not None:
        raise multi_file_key_error("encryption_key")


def multi_file_key_error(what: str) -> EncryptionKeyError:
    return EncryptionKeyError(
        what,
        "the Baileys multi-file folder is never encrypted (Baileys must read it); "
        "use the native, SQLite or PostgreSQL backend",
    )


# --- key sources ---------------------------------------------------------------------

KeyCallback = Callable[[], bytes | Awaitable[bytes]]
KeySource = bytes | str | os.PathLike[str] | StoreKey | KeyCallback
"""32 raw bytes, a key file path, a ``StoreKey``, or a callback (sync or async)."""


async def resolve_key(source: KeySource | None, what: str = "encryption_key") -> StoreKey | None:
    """The ``StoreKey`` a source names (``None`` for no encryption)."""
    if source is None or isinstance(source, StoreKey):
        return source
    if isinstance(source, bytes | bytearray):
        return StoreKey.from_bytes(bytes(source), what)
    if isinstance(source, str | os.PathLike):
        return read_key_file(source, what)
    if callable(source):
        try:
            got: object = source()
            if inspect.isawaitable(got):
                got = await got
        except EncryptionKeyError:
            raise
        except Exception as exc:
            raise EncryptionKeyError(what, f"the key callback failed: {exc!r}") from exc
        if not isinstance(got, bytes | bytearray):
            raise EncryptionKeyError(what, f"the key callback returned {type(got).__name__}")
        return StoreKey.from_bytes(bytes(got), what)
    raise EncryptionKeyError(
        what, f"must be 32 bytes, a key file path or a callback, got {type(source).__name__}"
    )


def check_key_source(source: object, what: str = "encryption_key") -> None:
    """Refuse a value that cannot be a key source, without reading files or calling."""
    if source is None or isinstance(source, StoreKey | str | os.PathLike) or callable(source):
        return
    if isinstance(source, bytes | bytearray):
        StoreKey.from_bytes(bytes(source), what)
        return
    raise EncryptionKeyError(
        what, f"must be 32 bytes, a key file path or a callback, got {type(source).__name__}"
    )


def read_key_file(path: str | os.PathLike[str], what: str = "key file") -> StoreKey:
    """The key in a file of 32 raw bytes or 64 hex digits; the file must be private."""
    file = Path(path)
    where = f"{what} {file}"
    try:
        st = file.stat()
        if not stat.S_ISREG(st.st_mode):
            raise EncryptionKeyError(where, "is not a regular file")
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise EncryptionKeyError(
                where, f"mode {stat.S_IMODE(st.st_mode):04o} lets others read it (chmod 600)"
            )
        with file.open("rb") as f:
            data = f.read(_MAX_KEY_FILE + 1)
    except OSError as exc:
        raise EncryptionKeyError(where, f"cannot be read: {exc.strerror or exc}") from exc
    return StoreKey.from_bytes(parse_key_text(data, where), where)


def key_from_env(name: str, what: str = "environment variable") -> StoreKey:
    """The key in environment variable ``name``: 64 hex digits."""
    where = f"{what} {name}"
    value = os.environ.get(name)
    if value is None:
        raise EncryptionKeyError(where, "is not set")
    return StoreKey.from_bytes(_hex_key(value.encode(), where), where)


def key_from_ref(ref: str, what: str = "key") -> StoreKey:
    """The key a command-line reference names: ``env:NAME``, ``file:PATH`` or ``PATH``.

    Key bytes are never taken from the command line itself (other users can read a
    process's arguments): 64 hex digits that are not a file name are refused as such.
    """
    if ref.startswith("env:"):
        return key_from_env(ref.removeprefix("env:"), f"{what} environment variable")
    path = ref.removeprefix("file:")
    if not ref.startswith("file:") and not os.path.exists(path):
        if len(ref) == 2 * KEY_BYTES and all(c in "0123456789abcdefABCDEF" for c in ref):
            raise EncryptionKeyError(
                what,
                "a key is never given on the command line; put it in a file (chmod 600) "
                "and pass file:PATH, or in an environment variable and pass env:NAME",
            )
    return read_key_file(path, f"{what} file")


def parse_key_text(data: bytes, where: str) -> bytes:
    """32 raw bytes as they are, or 64 hex digits with optional surrounding whitespace."""
    if len(data) == KEY_BYTES:
        return data
    return _hex_key(data, where)


def _hex_key(data: bytes, where: str) -> bytes:
    text = data.strip()
    if len(text) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    raise EncryptionKeyError(
        where, f"must hold {KEY_BYTES} raw bytes or {2 * KEY_BYTES} hex digits ({len(data)} bytes)"
    )
