"""The creds of a linked device: every field Baileys v7 keeps in ``creds.json``.

Field names are snake_case here; ``stores.multi_file`` maps them to Baileys'
camelCase. ``to_plain``/``from_plain`` give the plain-data form the native and
SQLite backends store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, repr=False)
class KeyPair:
    """A Curve25519 key pair as Baileys stores it: 32 raw bytes each."""

    private: bytes
    public: bytes

    def __repr__(self) -> str:
        # Never show key bytes: a repr ends up in logs and tracebacks.
        return f"KeyPair(public={self.public[:4].hex()}…)"


@dataclass(frozen=True, repr=False)
class SignedKeyPair:
    """A signed pre-key: its pair, the signature over ``05 || public`` and its id."""

    key_pair: KeyPair
    signature: bytes
    key_id: int

    def __repr__(self) -> str:
        return f"SignedKeyPair(key_id={self.key_id}, key_pair={self.key_pair!r})"


@dataclass(repr=False)
class AuthCreds:
    """Every field of Baileys v7 ``initAuthCreds()`` plus what pairing adds."""

    noise_key: KeyPair
    pairing_ephemeral_key_pair: KeyPair
    signed_identity_key: KeyPair
    signed_pre_key: SignedKeyPair
    registration_id: int
    adv_secret_key: str
    processed_history_messages: list[Any] = field(default_factory=list)
    next_pre_key_id: int = 1
    first_unuploaded_pre_key_id: int = 1
    account_sync_counter: int = 0
    account_settings: dict[str, Any] = field(default_factory=lambda: {"unarchiveChats": False})
    registered: bool = False
    pairing_code: str | None = None
    last_prop_hash: str | None = None
    routing_info: bytes | None = None
    additional_data: Any = None
    me: dict[str, Any] | None = None
    account: dict[str, Any] | None = None
    signal_identities: list[dict[str, Any]] = field(default_factory=list)
    platform: str | None = None
    my_app_state_key_id: str | None = None
    last_account_sync_timestamp: int | None = None

    def __repr__(self) -> str:
        me = self.me.get("id") if self.me else None
        reg = self.registration_id
        return f"AuthCreds(me={me!r}, registration_id={reg}, registered={self.registered})"
