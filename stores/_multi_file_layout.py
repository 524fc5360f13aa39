"""Baileys' multi-file layout: file names and the on-disk shape of every key type.

Facts from Baileys v7 ``useMultiFileAuthState``: creds live in ``creds.json``, a key
in ``<type>-<id>.json`` where the whole name has ``/`` replaced by ``__`` and then
``:`` by ``-``. Values are ``JSON.stringify(value, BufferJSON.replacer)``, except that
``app-state-sync-key`` values are protobuf message objects, so their ``toJSON`` runs
first: protobuf-JSON, ``keyData`` a plain base64 string, int64 ``timestamp`` a
decimal string.

The name escaping is not one-to-one (``a:b`` and ``a-b`` share a file, as in
Baileys). Reading by id uses the forward mapping and is exact. Listing a directory
(``snapshot``) must guess ids back from names; it uses the id formats Baileys
produces for each type: sender-key names ``group::user::device`` come back with
``::``, app-state-sync-key ids (base64) with ``/``; every other id is taken verbatim.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from stores import buffer_json
from stores.errors import CorruptStateError, InvalidValueError
from stores.types import KEY_TYPES, check_key_type

Value = Any

CREDS_FILE = "creds.json"
LAST_GOOD_CREDS_FILE = ".creds.json.last-good"
"""A copy of the newest creds we validated or wrote; Baileys never reads dotfiles."""
JOURNAL_FILE = ".baileys-trio-journal"
EPOCH_FILE = ".baileys-trio-epoch"
"""How many times the directory was opened by us: sequence numbers are epoch << 32 | n."""
LOCK_FILE = ".baileys-trio.lock"
NAME_MAX = 255

_TYPES_LONGEST_FIRST = tuple(sorted(KEY_TYPES, key=len, reverse=True))
_APP_STATE_KEY = "app-state-sync-key"


def fix_file_name(name: str) -> str:
    """Baileys' ``fixFileName``: ``/`` → ``__``, then ``:`` → ``-``."""
    return name.replace("/", "__").replace(":", "-")


def key_file_name(type: str, id: str) -> str:
    """The file holding key ``type``/``id``; ``InvalidValueError`` for unusable ids."""
    check_key_type(type)
    if not isinstance(id, str) or not id:
        raise InvalidValueError(f"{type} id", f"expected a non-empty string, got {id!r}")
    if "\x00" in id:
        raise InvalidValueError(f"{type} id", "contains a NUL character")
    name = fix_file_name(f"{type}-{id}.json")
    if len(name.encode("utf-8", "surrogatepass")) > NAME_MAX:
        raise InvalidValueError(f"{type} id", f"file name longer than {NAME_MAX} bytes")
    return name


def parse_key_file_name(name: str) -> tuple[str, str] | None:
    """``(type, id)`` for a Baileys key file name, or ``None`` for any other file."""
    if not name.endswith(".json") or name == CREDS_FILE or name.startswith("."):
        return None
    stem = name[: -len(".json")]
    for type in _TYPES_LONGEST_FIRST:
        prefix = type + "-"
        if stem.startswith(prefix) and len(stem) > len(prefix):
            return type, _guess_id(type, stem[len(prefix) :])
    return None


def _guess_id(type: str, escaped: str) -> str:
    if type == "sender-key":
        return escaped.replace("--", "::")
    if type == _APP_STATE_KEY:
        return escaped.replace("__", "/")
    return escaped


# --- values --------------------------------------------------------------------------


def encode_key(type: str, id: str, value: Value) -> bytes:
    """The file content Baileys writes for ``value``; ``InvalidValueError`` if not plain."""
    if type == _APP_STATE_KEY:
        value = app_state_key_to_proto_json(value, f"{type} {id!r}")
    try:
        return buffer_json.dump_bytes(value)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"{type} {id!r}", str(exc)) from exc


def decode_key(type: str, data: bytes, location: str) -> Value:
    """The plain value of a key file's content; ``CorruptStateError`` naming the file."""
    value = buffer_json.loads(data, location)
    if type == _APP_STATE_KEY:
        return app_state_key_from_proto_json(value, location)
    return value


_KEY_DATA_FIELDS = ("keyData", "fingerprint", "timestamp")


def app_state_key_to_proto_json(value: Value, what: str) -> dict[str, Value]:
    """AppStateSyncKeyData plain → the protobuf-JSON object Baileys' ``toJSON`` gives."""
    if not isinstance(value, Mapping):
        raise InvalidValueError(what, f"expected an AppStateSyncKeyData object, got {_kind(value)}")
    out: dict[str, Value] = {}
    key_data = value.get("keyData")
    if key_data is not None:
        if not isinstance(key_data, bytes | bytearray):
            raise InvalidValueError(f"{what}.keyData", f"expected bytes, got {_kind(key_data)}")
        out["keyData"] = base64.b64encode(bytes(key_data)).decode("ascii")
    if value.get("fingerprint") is not None:
        out["fingerprint"] = _fingerprint(value["fingerprint"], what)
    stamp = value.get("timestamp")
    if stamp is not None:
        if isinstance(stamp, bool) or not isinstance(stamp, int):
            raise InvalidValueError(f"{what}.timestamp", f"expected an int, got {_kind(stamp)}")
        out["timestamp"] = str(stamp)
    for key, item in value.items():
        if key not in _KEY_DATA_FIELDS:
            out[key] = item
    return out


def _fingerprint(value: Value, what: str) -> dict[str, Value]:
    if not isinstance(value, Mapping):
        raise InvalidValueError(f"{what}.fingerprint", f"expected an object, got {_kind(value)}")
    ordered: dict[str, Value] = {}
    for key in ("rawId", "currentIndex", "deviceIndexes"):
        if key in value:
            ordered[key] = value[key]
    ordered.update((k, v) for k, v in value.items() if k not in ordered)
    return ordered


def app_state_key_from_proto_json(value: Value, location: str) -> dict[str, Value]:
    """Protobuf-JSON (or Buffer-tagged) AppStateSyncKeyData → plain, bytes and ints."""
    if not isinstance(value, dict):
        raise CorruptStateError(
            location, f"app-state-sync-key: expected an object, got {_kind(value)}"
        )
    out: dict[str, Value] = {}
    key_data = value.get("keyData")
    if key_data is not None:
        if isinstance(key_data, str):
            try:
                key_data = base64.b64decode(key_data, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise CorruptStateError(location, f"keyData: invalid base64 ({exc})") from exc
        if not isinstance(key_data, bytes):
            raise CorruptStateError(location, f"keyData: expected base64, got {_kind(key_data)}")
        out["keyData"] = key_data
    if value.get("fingerprint") is not None:
        fingerprint = value["fingerprint"]
        if not isinstance(fingerprint, dict):
            raise CorruptStateError(location, "fingerprint: expected an object")
        out["fingerprint"] = fingerprint
    if value.get("timestamp") is not None:
        out["timestamp"] = _int64(value["timestamp"], location)
    for key, item in value.items():
        if key not in _KEY_DATA_FIELDS:
            out[key] = item
    return out


def _int64(value: Value, location: str) -> int:
    # protobuf-JSON writes int64 as a string; a plain object may hold a number or a
    # Long ({low, high, unsigned}) if Baileys stored a non-message object.
    if isinstance(value, bool):
        raise CorruptStateError(location, "timestamp: expected an integer, got bool")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value, 10)
        except ValueError:
            raise CorruptStateError(location, f"timestamp: {value!r} is not an integer") from None
    if (
        isinstance(value, dict)
        and isinstance(value.get("low"), int)
        and isinstance(value.get("high"), int)
    ):
        high: int = value["high"]
        low: int = value["low"]
        number = ((high & 0xFFFFFFFF) << 32) | (low & 0xFFFFFFFF)
        if not value.get("unsigned") and number >= 1 << 63:
            number -= 1 << 64
        return number
    raise CorruptStateError(location, f"timestamp: expected an integer, got {_kind(value)}")


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__
