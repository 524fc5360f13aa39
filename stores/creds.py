"""The creds of a linked device: every field Baileys v7 keeps in ``creds.json``.

Field names are snake_case here. Three forms exist:

* ``AuthCreds`` itself (validated on construction from data, see ``from_plain``);
* the *plain* form, ``to_plain``/``from_plain``: a ``dict[str, Value]`` with the
  snake_case field names as keys, bytes kept as bytes, key pairs as
  ``{"private": bytes, "public": bytes}`` and the signed pre-key as
  ``{"key_pair": ..., "signature": bytes, "key_id": int}`` (plus ``"timestamp_s"``
  when set). This is what the native and SQLite backends store (CBOR-able);
* the *Baileys* form, ``creds_to_baileys_json``/``creds_from_baileys_json``: the
  object Baileys holds in memory, camelCase, bytes as bytes, ready for
  ``stores.buffer_json.dumps`` (which writes exactly Baileys' ``creds.json``).

Nested Baileys structures (``me``, ``account``, ``signal_identities``,
``account_settings``, ``processed_history_messages``, ``additional_data``) keep
Baileys' own camelCase keys inside, in both forms. ``account`` is
ADVSignedDeviceIdentity with its byte fields (``details``, ``accountSignatureKey``,
``accountSignature``, ``deviceSignature``) as bytes; in ``creds.json`` Baileys writes
them as plain base64 strings (protobuf-JSON), and the Baileys form does the same.

Fields Baileys writes that this model does not name (older versions wrote e.g.
``deviceId``, ``phoneId``, ``identityId``, ``backupToken``) are kept, revived, in
``extra`` (camelCase keys) and written back unchanged, so a Baileys → us → Baileys
round trip loses nothing.

Since 0.1.0.
"""

from __future__ import annotations

import base64
import binascii
import copy as _copy
import math
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from stores.errors import CorruptStateError, InvalidValueError

Plain = Any
"""Plain data (see ``stores.types.Value``); repeated here to keep imports one-way."""


@dataclass(frozen=True, repr=False, slots=True)
class KeyPair:
    """A Curve25519 key pair as Baileys stores it: 32 raw bytes each.

    Immutable, so a copy of it is itself (``copy.deepcopy`` included): every copy
    of the creds shares its key pairs instead of holding another instance.
    """

    private: bytes
    public: bytes

    def __copy__(self) -> KeyPair:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> KeyPair:
        return self

    def __post_init__(self) -> None:
        for name in ("private", "public"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != 32:
                got = len(value) if isinstance(value, bytes) else type(value).__name__
                raise InvalidValueError(f"KeyPair.{name}", f"expected 32 bytes, got {got}")

    def __repr__(self) -> str:
        # Never show key bytes: a repr ends up in logs and tracebacks.
        return f"KeyPair(public={self.public[:4].hex()}…)"


@dataclass(frozen=True, repr=False, slots=True)
class SignedKeyPair:
    """A signed pre-key: its pair, the signature over ``05 || public`` and its id.

    ``timestamp_s`` mirrors Baileys' optional ``timestampS`` (Baileys v7 never sets it).
    Immutable: a copy of it is itself, as for ``KeyPair``.
    """

    key_pair: KeyPair
    signature: bytes
    key_id: int
    timestamp_s: int | None = None

    def __copy__(self) -> SignedKeyPair:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> SignedKeyPair:
        return self

    def __post_init__(self) -> None:
        if not isinstance(self.signature, bytes) or len(self.signature) != 64:
            raise InvalidValueError("SignedKeyPair.signature", "expected 64 bytes")
        if not _is_int(self.key_id) or not 0 <= self.key_id < 1 << 24:
            raise InvalidValueError(
                "SignedKeyPair.key_id", f"expected 0..2^24-1, got {self.key_id!r}"
            )

    def __repr__(self) -> str:
        return f"SignedKeyPair(key_id={self.key_id}, key_pair={self.key_pair!r})"


@dataclass(repr=False, slots=True)
class AuthCreds:
    """Every field of Baileys v7 ``initAuthCreds()`` plus what pairing adds.

    Mutable like Baileys' creds object; ``copy()`` returns a deep copy that shares
    nothing mutable with the original (key pairs are immutable and shared, not
    copied). Slotted: a session holds a few of these for as long as it runs.
    """

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
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        me = self.me.get("id") if self.me else None
        reg = self.registration_id
        return f"AuthCreds(me={me!r}, registration_id={reg}, registered={self.registered})"

    def copy(self) -> AuthCreds:
        """A deep copy: mutating the copy's lists and dicts never touches this one."""
        return _copy.deepcopy(self)

    def to_plain(self) -> dict[str, Plain]:
        """The plain snake_case form the native and SQLite backends store."""
        out: dict[str, Plain] = {}
        for name in _FIELDS:
            value = getattr(self, name)
            if isinstance(value, KeyPair):
                value = _pair_plain(value)
            elif isinstance(value, SignedKeyPair):
                value = _signed_plain(value)
            else:
                value = _copy.deepcopy(value)
            out[name] = value
        return out

    @classmethod
    def from_plain(cls, d: Mapping[str, Plain], location: str) -> AuthCreds:
        """Validate plain data (as ``to_plain`` writes it) into ``AuthCreds``.

        Raises ``CorruptStateError(location, reason naming the field)`` on any wrong
        type, size, range or unknown field.
        """
        if not isinstance(d, Mapping):
            raise CorruptStateError(location, f"creds: expected an object, got {_kind(d)}")
        unknown = sorted(str(k) for k in d if k not in _FIELDS)
        if unknown:
            raise CorruptStateError(location, f"creds: unknown fields {unknown}")
        missing = [name for name in _REQUIRED if name not in d]
        if missing:
            raise CorruptStateError(location, f"creds.{missing[0]}: missing")
        values: dict[str, Any] = {}
        for name in _FIELDS:
            if name not in d:
                continue
            values[name] = _VALIDATORS[name](d[name], _Where(location, f"creds.{name}"))
        return cls(**values)


@dataclass(frozen=True, repr=False)
class CredsPatch:
    """A creds change: the fields that changed and their new values. Since 0.2.0.

    Creds have one owner (the persister in a session, ``PersistedAuth`` as a
    library) that merges patches in the order they arrive. A component sends only
    the fields it changed, so it never undoes a field another component changed
    after it last read the creds (a whole snapshot would). Values are deep-copied
    in and out: a patch never aliases a caller's object. The repr names the fields,
    never their values (some hold key bytes).
    """

    changes: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(str(name) for name in self.changes if name not in _FIELDS)
        if unknown:
            raise InvalidValueError("creds patch", f"unknown creds fields {unknown}")
        frozen = MappingProxyType({k: _copy.deepcopy(v) for k, v in self.changes.items()})
        object.__setattr__(self, "changes", frozen)

    def __repr__(self) -> str:
        return f"CredsPatch({sorted(self.changes)})"

    def __bool__(self) -> bool:
        return bool(self.changes)

    @classmethod
    def of(cls, **changes: Any) -> CredsPatch:
        """``CredsPatch.of(routing_info=b"...")``: a patch of the named fields."""
        return cls(changes)

    @classmethod
    def between(cls, old: AuthCreds | None, new: AuthCreds) -> CredsPatch:
        """The fields of ``new`` that differ from ``old`` (every field when ``old`` is None)."""
        return cls(
            {
                name: getattr(new, name)
                for name in _FIELDS
                if old is None or getattr(old, name) != getattr(new, name)
            }
        )

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(self.changes)

    def apply(self, creds: AuthCreds) -> AuthCreds:
        """A copy of ``creds`` with this patch's fields set; ``creds`` is left unchanged."""
        out = creds.copy()
        for name, value in self.changes.items():
            setattr(out, name, _copy.deepcopy(value))
        return out

    def then(self, later: CredsPatch) -> CredsPatch:
        """One patch with the effect of this one followed by ``later``."""
        return CredsPatch({**self.changes, **later.changes})


def init_auth_creds() -> AuthCreds:
    """Fresh creds for a new device, as Baileys v7 ``initAuthCreds()`` makes them."""
    # stores.keys imports KeyPair from this module, so import it late.
    from stores import keys

    identity = keys.generate_key_pair()
    return AuthCreds(
        noise_key=keys.generate_key_pair(),
        pairing_ephemeral_key_pair=keys.generate_key_pair(),
        signed_identity_key=identity,
        signed_pre_key=keys.signed_key_pair(identity, 1),
        registration_id=secrets.randbelow(1 << 14),
        adv_secret_key=base64.b64encode(secrets.token_bytes(32)).decode("ascii"),
    )


# --- the Baileys (camelCase) form ----------------------------------------------------

_CAMEL: dict[str, str] = {
    "noise_key": "noiseKey",
    "pairing_ephemeral_key_pair": "pairingEphemeralKeyPair",
    "signed_identity_key": "signedIdentityKey",
    "signed_pre_key": "signedPreKey",
    "registration_id": "registrationId",
    "adv_secret_key": "advSecretKey",
    "processed_history_messages": "processedHistoryMessages",
    "next_pre_key_id": "nextPreKeyId",
    "first_unuploaded_pre_key_id": "firstUnuploadedPreKeyId",
    "account_sync_counter": "accountSyncCounter",
    "account_settings": "accountSettings",
    "registered": "registered",
    "pairing_code": "pairingCode",
    "last_prop_hash": "lastPropHash",
    "routing_info": "routingInfo",
    "additional_data": "additionalData",
    "account": "account",
    "me": "me",
    "signal_identities": "signalIdentities",
    "platform": "platform",
    "my_app_state_key_id": "myAppStateKeyId",
    "last_account_sync_timestamp": "lastAccountSyncTimestamp",
}
"""Field names in the order Baileys writes them (initAuthCreds, then pairing)."""

BAILEYS_FIELD_NAMES: Mapping[str, str] = MappingProxyType(_CAMEL)
"""snake_case field name → the camelCase name Baileys gives it in ``creds.json``."""

_SNAKE = {camel: snake for snake, camel in _CAMEL.items()}
_ACCOUNT_BYTES = ("details", "accountSignatureKey", "accountSignature", "deviceSignature")


def creds_to_baileys_json(creds: AuthCreds) -> dict[str, Plain]:
    """The creds object as Baileys holds it: camelCase, bytes as bytes.

    ``stores.buffer_json.dumps`` of the result is Baileys' ``creds.json``. Fields
    that are ``None`` are left out, as Baileys' ``undefined`` fields are, and so is an
    empty ``signal_identities`` (undefined in Baileys until pairing adds one).
    """
    out: dict[str, Plain] = {}
    for name, camel in _CAMEL.items():
        value = getattr(creds, name)
        if value is None or (name == "signal_identities" and not value):
            # Baileys leaves signalIdentities undefined until pairing adds one.
            continue
        if isinstance(value, KeyPair):
            value = {"private": value.private, "public": value.public}
        elif isinstance(value, SignedKeyPair):
            value = _signed_baileys(value)
        elif name == "account":
            value = _account_to_baileys(value)
        else:
            value = _copy.deepcopy(value)
        out[camel] = value
    for camel, value in creds.extra.items():
        out[camel] = _copy.deepcopy(value)
    return out


def creds_from_baileys_json(obj: Mapping[str, Plain], location: str) -> AuthCreds:
    """Validate Baileys' revived ``creds.json`` object into ``AuthCreds``.

    ``obj`` is what ``stores.buffer_json.loads`` returns for the file. Unknown
    fields go to ``extra``. Raises ``CorruptStateError`` naming the field.
    """
    if not isinstance(obj, Mapping):
        raise CorruptStateError(location, f"creds: expected an object, got {_kind(obj)}")
    plain: dict[str, Plain] = {}
    extra: dict[str, Plain] = {}
    for key, value in obj.items():
        name = _SNAKE.get(key)
        if name is None:
            extra[key] = value
            continue
        where = _Where(location, f"creds.{key}")
        if name == "signed_pre_key":
            value = _signed_from_baileys(value, where)
        elif name == "account" and value is not None:
            value = _account_from_baileys(value, where)
        plain[name] = value
    for key in extra:
        damaged = _damaged_name_of(key, plain)
        if damaged is not None:
            # An optional field silently falling back to its default (a pre-key counter
            # reset to 1) would be worse than an error.
            raise CorruptStateError(location, f"creds.{key}: looks like a damaged {damaged!r}")
    missing = [_CAMEL[name] for name in _REQUIRED if name not in plain]
    if missing:
        # A damaged key name shows up as an unknown field: say so, it is the likely culprit.
        hint = f" (unrecognised fields: {sorted(extra)})" if extra else ""
        raise CorruptStateError(location, f"creds.{missing[0]}: missing{hint}")
    plain["extra"] = extra
    try:
        return AuthCreds.from_plain(plain, location)
    except CorruptStateError as exc:
        raise CorruptStateError(location, _camel_reason(exc.reason), exc.offset) from exc


def _damaged_name_of(key: str, present: Mapping[str, Plain]) -> str | None:
    """The known field ``key`` is one character away from, if that field is absent."""
    for snake, camel in _CAMEL.items():
        if snake in present or len(camel) != len(key):
            continue
        if sum(a != b for a, b in zip(camel, key, strict=True)) == 1:
            return camel
    return None


def _camel_reason(reason: str) -> str:
    # Name the field as the user sees it in creds.json.
    head, sep, rest = reason.partition(":")
    if head.startswith("creds."):
        parts = head.split(".")
        parts[1] = _CAMEL.get(parts[1], parts[1])
        head = ".".join(parts)
    return head + sep + rest


def _signed_baileys(value: SignedKeyPair) -> dict[str, Plain]:
    out: dict[str, Plain] = {
        "keyPair": {"private": value.key_pair.private, "public": value.key_pair.public},
        "signature": value.signature,
        "keyId": value.key_id,
    }
    if value.timestamp_s is not None:
        out["timestampS"] = value.timestamp_s
    return out


def _signed_from_baileys(value: Plain, where: _Where) -> Plain:
    if not isinstance(value, Mapping):
        raise where.error(f"expected an object, got {_kind(value)}")
    names = {"keyPair": "key_pair", "signature": "signature", "keyId": "key_id"}
    names["timestampS"] = "timestamp_s"
    unknown = sorted(set(value) - set(names))
    if unknown:
        raise where.error(f"unknown fields {unknown}")
    return {names[k]: v for k, v in value.items()}


def _account_to_baileys(value: Mapping[str, Plain]) -> dict[str, Plain]:
    out = dict(_copy.deepcopy(value))
    for key in _ACCOUNT_BYTES:
        if isinstance(out.get(key), bytes):
            out[key] = base64.b64encode(out[key]).decode("ascii")
    return out


def _account_from_baileys(value: Plain, where: _Where) -> Plain:
    if not isinstance(value, Mapping):
        raise where.error(f"expected an object, got {_kind(value)}")
    out = dict(value)
    for key in _ACCOUNT_BYTES:
        if isinstance(out.get(key), str):
            out[key] = _b64(out[key], where.child(key))
    return out


# --- validation ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Where:
    location: str
    path: str

    def child(self, name: str | int) -> _Where:
        suffix = f"[{name}]" if isinstance(name, int) else f".{name}"
        return _Where(self.location, self.path + suffix)

    def error(self, reason: str) -> CorruptStateError:
        return CorruptStateError(self.location, f"{self.path}: {reason}")


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _b64(text: str, where: _Where) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise where.error(f"invalid base64 ({exc})") from exc


def _bytes(value: Plain, where: _Where, sizes: tuple[int, ...] | None = None) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise where.error(f"expected bytes, got {_kind(value)}")
    if sizes is not None and len(value) not in sizes:
        want = " or ".join(str(s) for s in sizes)
        raise where.error(f"expected {want} bytes, got {len(value)}")
    return bytes(value)


def _pair(value: Plain, where: _Where) -> KeyPair:
    if isinstance(value, KeyPair):
        return value
    if not isinstance(value, Mapping):
        raise where.error(f"expected a key pair object, got {_kind(value)}")
    unknown = sorted(str(k) for k in set(value) - {"private", "public"})
    if unknown:
        raise where.error(f"unknown fields {unknown}")
    private = _bytes(value.get("private"), where.child("private"), (32,))
    public = _bytes(value.get("public"), where.child("public"), (32,))
    return KeyPair(private=private, public=public)


def _signed(value: Plain, where: _Where) -> SignedKeyPair:
    if isinstance(value, SignedKeyPair):
        return value
    if not isinstance(value, Mapping):
        raise where.error(f"expected a signed key pair object, got {_kind(value)}")
    unknown = sorted(
        str(k) for k in set(value) - {"key_pair", "signature", "key_id", "timestamp_s"}
    )
    if unknown:
        raise where.error(f"unknown fields {unknown}")
    pair = _pair(value.get("key_pair"), where.child("key_pair"))
    signature = _bytes(value.get("signature"), where.child("signature"), (64,))
    key_id = _int(value.get("key_id"), where.child("key_id"), 0, (1 << 24) - 1)
    stamp = _opt(_int_any)(value.get("timestamp_s"), where.child("timestamp_s"))
    return SignedKeyPair(key_pair=pair, signature=signature, key_id=key_id, timestamp_s=stamp)


def _int(value: Plain, where: _Where, low: int, high: int) -> int:
    if not _is_int(value):
        raise where.error(f"expected an integer, got {_kind(value)}")
    if not low <= value <= high:
        raise where.error(f"expected {low}..{high}, got {value}")
    return int(value)


def _int_any(value: Plain, where: _Where) -> int:
    # JS numbers: an integral float (1.7e9 written as 1700000000.0) is still an int.
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return _int(value, where, -(1 << 63), (1 << 63) - 1)


def _counter(value: Plain, where: _Where) -> int:
    return _int(value, where, 0, (1 << 32) - 1)


def _registration_id(value: Plain, where: _Where) -> int:
    return _int(value, where, 0, (1 << 14) - 1)


def _str(value: Plain, where: _Where) -> str:
    if not isinstance(value, str):
        raise where.error(f"expected a string, got {_kind(value)}")
    return value


def _adv_secret(value: Plain, where: _Where) -> str:
    text = _str(value, where)
    if len(_b64(text, where)) != 32:
        raise where.error("expected base64 of 32 bytes")
    return text


def _bool(value: Plain, where: _Where) -> bool:
    if not isinstance(value, bool):
        raise where.error(f"expected true or false, got {_kind(value)}")
    return value


def _plain(value: Plain, where: _Where, depth: int = 0) -> Plain:
    """Check ``value`` is plain data (CBOR-able, JSON-like plus bytes); return a copy."""
    if depth > 64:
        raise where.error("nested more than 64 levels")
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise where.error("non-finite number")
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, list | tuple):
        return [_plain(v, where.child(i), depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out: dict[str, Plain] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise where.error(f"object key {k!r} is not a string")
            out[k] = _plain(v, where.child(k), depth + 1)
        return out
    raise where.error(f"not plain data: {_kind(value)}")


def _object(value: Plain, where: _Where) -> dict[str, Plain]:
    if not isinstance(value, Mapping):
        raise where.error(f"expected an object, got {_kind(value)}")
    result: dict[str, Plain] = _plain(value, where)
    return result


def _list_of_objects(value: Plain, where: _Where) -> list[Plain]:
    if not isinstance(value, list | tuple):
        raise where.error(f"expected a list, got {_kind(value)}")
    return [_object(v, where.child(i)) for i, v in enumerate(value)]


def _account_settings(value: Plain, where: _Where) -> dict[str, Plain]:
    out = _object(value, where)
    if "unarchiveChats" in out:
        _bool(out["unarchiveChats"], where.child("unarchiveChats"))
    return out


def _me(value: Plain, where: _Where) -> dict[str, Plain]:
    out = _object(value, where)
    _str(out.get("id"), where.child("id"))
    for key, item in out.items():
        if item is not None and not isinstance(item, str):
            raise where.child(key).error(f"expected a string, got {_kind(item)}")
    return out


def _account(value: Plain, where: _Where) -> dict[str, Plain]:
    out = _object(value, where)
    for key in _ACCOUNT_BYTES:
        if out.get(key) is not None:
            _bytes(out[key], where.child(key))
    return out


def _signal_identities(value: Plain, where: _Where) -> list[Plain]:
    out = _list_of_objects(value, where)
    for i, item in enumerate(out):
        here = where.child(i)
        ident = _object(item.get("identifier"), here.child("identifier"))
        _str(ident.get("name"), here.child("identifier").child("name"))
        _int(ident.get("deviceId"), here.child("identifier").child("deviceId"), 0, 1 << 31)
        _bytes(item.get("identifierKey"), here.child("identifierKey"), (32, 33))
    return out


def _extra(value: Plain, where: _Where) -> dict[str, Plain]:
    out = _object(value, where)
    clash = sorted(set(out) & set(_SNAKE))
    if clash:
        raise where.error(f"holds known fields {clash}")
    return out


_Validator = Callable[[Plain, _Where], Any]


def _opt(fn: _Validator) -> _Validator:
    def check(value: Plain, where: _Where) -> Any:
        return None if value is None else fn(value, where)

    return check


_VALIDATORS: dict[str, _Validator] = {
    "noise_key": _pair,
    "pairing_ephemeral_key_pair": _pair,
    "signed_identity_key": _pair,
    "signed_pre_key": _signed,
    "registration_id": _registration_id,
    "adv_secret_key": _adv_secret,
    "processed_history_messages": _list_of_objects,
    "next_pre_key_id": _counter,
    "first_unuploaded_pre_key_id": _counter,
    "account_sync_counter": _counter,
    "account_settings": _account_settings,
    "registered": _bool,
    "pairing_code": _opt(_str),
    "last_prop_hash": _opt(_str),
    "routing_info": _opt(_bytes),
    "additional_data": _plain,
    "me": _opt(_me),
    "account": _opt(_account),
    "signal_identities": _signal_identities,
    "platform": _opt(_str),
    "my_app_state_key_id": _opt(_str),
    "last_account_sync_timestamp": _opt(_int_any),
    "extra": _extra,
}

_FIELDS: tuple[str, ...] = tuple(_VALIDATORS)
_REQUIRED: tuple[str, ...] = (
    "noise_key",
    "pairing_ephemeral_key_pair",
    "signed_identity_key",
    "signed_pre_key",
    "registration_id",
    "adv_secret_key",
)


def _pair_plain(pair: KeyPair) -> dict[str, Plain]:
    return {"private": pair.private, "public": pair.public}


def _signed_plain(value: SignedKeyPair) -> dict[str, Plain]:
    out: dict[str, Plain] = {
        "key_pair": _pair_plain(value.key_pair),
        "signature": value.signature,
        "key_id": value.key_id,
    }
    if value.timestamp_s is not None:
        out["timestamp_s"] = value.timestamp_s
    return out
