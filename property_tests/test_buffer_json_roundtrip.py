"""Round trips of Baileys BufferJSON and of every key type's plain value, checked against the rules.

The model is the rule text of PROTOCOL.md and Baileys' BufferJSON, not our code:
bytes travel as ``{"type":"Buffer","data":base64}``; v7 also reads objects with
all-integer keys and number values, v6 ``data`` arrays and ``{"buffer":true,...}``;
JSON.stringify orders array-index keys first (ascending); numbers print as
JavaScript does.
"""

from __future__ import annotations

import base64
import json
import math
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stores import buffer_json, keys
from stores._multi_file_layout import decode_key, encode_key
from stores.creds import (
    AuthCreds,
    KeyPair,
    SignedKeyPair,
    creds_from_baileys_json,
    creds_to_baileys_json,
)
from stores.errors import CorruptStateError

# Keys that no reviver rule can mistake for a Buffer: they start with a letter and
# are not the tag names the rules look at.
safe_keys = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_@.:/+=-]{0,12}", fullmatch=True).filter(
    lambda k: k not in ("type", "buffer")
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.binary(max_size=64)
)
plain_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(safe_keys, inner, max_size=5),
    max_leaves=30,
)


def js_equal(a: Any, b: Any) -> bool:
    """Equality as JavaScript sees JSON: every number is a double."""
    number = (int, float)
    if isinstance(a, number) and isinstance(b, number) and not isinstance(a, bool | None):
        return not isinstance(b, bool) and float(a) == float(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(js_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(js_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@given(plain_values)
def test_plain_values_round_trip(value: Any) -> None:
    """loads(dumps(v)) equals v (numbers as doubles) when no object can pass for a Buffer."""
    assert js_equal(buffer_json.loads(buffer_json.dumps(value), "f"), value)


@given(st.binary(max_size=200))
def test_bytes_are_written_as_v7_tags(data: bytes) -> None:
    """Bytes are written as {"type":"Buffer","data":standard padded base64}."""
    text = buffer_json.dumps(data)
    assert json.loads(text) == {"type": "Buffer", "data": base64.b64encode(data).decode()}
    assert " " not in text


@given(st.binary(max_size=200), st.randoms(use_true_random=False))
def test_every_buffer_variant_reads_as_the_same_bytes(data: bytes, rnd: Any) -> None:
    """v7 base64, numeric-key objects (any order), v6 arrays and {"buffer":true} read as bytes."""
    b64 = base64.b64encode(data).decode()
    items = [(str(i), b) for i, b in enumerate(data)]
    rnd.shuffle(items)
    numeric = "{" + ",".join(f'"{k}":{v}' for k, v in items) + "}"
    variants = [
        json.dumps({"type": "Buffer", "data": b64}),
        json.dumps({"type": "Buffer", "data": list(data)}),
        json.dumps({"buffer": True, "value": b64}),
        json.dumps({"buffer": True, "value": list(data)}),
        json.dumps({"type": "Buffer", "data": base64.urlsafe_b64encode(data).decode().rstrip("=")}),
    ]
    if data:
        variants.append(numeric)
    for text in variants:
        assert buffer_json.loads(text, "f") == data, text
        assert buffer_json.loads(f'{{"x":[{text}]}}', "f") == {"x": [data]}


@given(st.lists(st.integers(min_value=-1000, max_value=1000), min_size=1, max_size=20))
def test_numeric_key_objects_wrap_modulo_256(values: list[int]) -> None:
    """Numbers in a numeric-key object become bytes modulo 256, as a Uint8Array stores them."""
    text = json.dumps({str(i): v for i, v in enumerate(values)})
    assert buffer_json.loads(text, "f") == bytes(v % 256 for v in values)


def _is_array_index(key: str) -> bool:
    return re.fullmatch(r"0|[1-9][0-9]*", key) is not None and int(key) <= 2**32 - 2


@given(st.lists(st.text(max_size=12) | st.integers(0, 2**33).map(str), unique=True, max_size=12))
def test_keys_are_written_in_javascript_property_order(names: list[str]) -> None:
    """Array-index keys come first in ascending numeric order, then the rest as inserted."""
    obj = {name: i for i, name in enumerate(names)}
    written = json.loads(
        buffer_json.dumps(obj), object_pairs_hook=lambda pairs: [k for k, _ in pairs]
    )
    indexes = sorted((k for k in names if _is_array_index(k)), key=int)
    assert written == indexes + [k for k in names if not _is_array_index(k)]


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_numbers_print_like_javascript(x: float) -> None:
    """A finite number reads back exactly; exponent form only below 1e-6 or from 1e21, no '.0'."""
    text = buffer_json.dumps(x)
    assert float(text) == x
    magnitude = abs(x)
    if magnitude == 0 or 1e-6 <= magnitude < 1e21:
        assert "e" not in text
    else:
        assert re.fullmatch(r"-?[0-9](\.[0-9]+)?e[+-][0-9]+", text), text
    if x.is_integer() and magnitude < 1e21:
        assert "." not in text
    assert not text.endswith(".0")
    assert math.isfinite(float(text))


# --- every key type's plain value, as Baileys v7 keeps it -------------------------------

u32 = st.integers(min_value=0, max_value=2**32 - 1)
digits = st.from_regex(r"[1-9][0-9]{0,14}", fullmatch=True)
jids = st.builds(lambda u, d: f"{u}:{d}@s.whatsapp.net", digits, st.integers(0, 99))
json_text = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(safe_keys, inner, max_size=4),
    max_leaves=20,
)

KEY_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "pre-key": st.fixed_dictionaries(
        {
            "private": st.binary(min_size=32, max_size=32),
            "public": st.binary(min_size=32, max_size=32),
        }
    ),
    "session": st.fixed_dictionaries(
        {"_sessions": st.dictionaries(safe_keys, json_text, max_size=3), "version": st.just("v1")}
    ),
    "sender-key": st.binary(max_size=300),
    "sender-key-memory": st.dictionaries(jids, st.booleans(), max_size=5),
    "app-state-sync-key": st.fixed_dictionaries(
        {},
        optional={
            "keyData": st.binary(max_size=32),
            "fingerprint": st.fixed_dictionaries(
                {},
                optional={
                    "rawId": u32,
                    "currentIndex": u32,
                    "deviceIndexes": st.lists(u32, max_size=4),
                },
            ),
            "timestamp": st.integers(min_value=-(2**63), max_value=2**63 - 1),
        },
    ),
    "app-state-sync-version": st.fixed_dictionaries(
        {
            "version": st.integers(0, 2**31),
            "hash": st.binary(min_size=128, max_size=128),
            "indexValueMap": st.dictionaries(
                st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode()),
                st.fixed_dictionaries({"valueMac": st.binary(min_size=32, max_size=32)}),
                max_size=4,
            ),
        }
    ),
    "lid-mapping": digits,
    "device-list": st.lists(st.integers(0, 99).map(str), max_size=6),
    "tctoken": st.fixed_dictionaries(
        {"token": st.binary(max_size=40)},
        optional={"timestamp": digits, "senderTimestamp": st.integers(0, 2**40)},
    ),
    "identity-key": st.binary(min_size=33, max_size=33).map(lambda b: b"\x05" + b[1:]),
}


@given(st.sampled_from(sorted(KEY_VALUES)).flatmap(lambda t: st.tuples(st.just(t), KEY_VALUES[t])))
def test_every_key_type_value_round_trips_through_its_file(item: tuple[str, Any]) -> None:
    """Each key type's plain value survives its multi-file encoding unchanged."""
    type, value = item
    data = encode_key(type, "id", value)
    assert decode_key(type, data, "file") == value


# --- creds: plain and Baileys forms ----------------------------------------------------


def _pair(seed: bytes) -> KeyPair:
    return KeyPair(private=seed, public=keys.public_from_private(seed))


seeds = st.binary(min_size=32, max_size=32)
pairs = seeds.map(_pair)


def _account(phone_seed: bytes, details: bytes, identity: KeyPair) -> dict[str, bytes]:
    """A paired account with real signatures (as pairing stores it)."""
    phone = _pair(phone_seed)
    return {
        "details": details,
        "accountSignatureKey": phone.public,
        "accountSignature": keys.sign(phone.private, b"\x06\x00" + details + identity.public),
        "deviceSignature": keys.sign(
            identity.private, b"\x06\x01" + details + identity.public + phone.public
        ),
    }


@st.composite
def creds_values(draw: st.DrawFn) -> AuthCreds:
    identity = draw(pairs)
    pre_key = draw(pairs)
    signed = SignedKeyPair(
        key_pair=pre_key,
        signature=keys.sign(identity.private, b"\x05" + pre_key.public),
        key_id=draw(st.integers(0, 2**24 - 1)),
    )
    optional_text = st.none() | st.text(max_size=10)
    return AuthCreds(
        noise_key=draw(pairs),
        pairing_ephemeral_key_pair=draw(pairs),
        signed_identity_key=identity,
        signed_pre_key=signed,
        registration_id=draw(st.integers(0, 2**14 - 1)),
        adv_secret_key=base64.b64encode(draw(seeds)).decode(),
        processed_history_messages=draw(
            st.lists(st.dictionaries(safe_keys, json_text, max_size=3), max_size=3)
        ),
        next_pre_key_id=draw(u32),
        first_unuploaded_pre_key_id=draw(u32),
        account_sync_counter=draw(u32),
        account_settings={"unarchiveChats": draw(st.booleans())},
        registered=draw(st.booleans()),
        pairing_code=draw(optional_text),
        last_prop_hash=draw(optional_text),
        routing_info=draw(st.none() | st.binary(max_size=20)),
        additional_data=draw(st.none() | json_text.filter(lambda v: v is not None)),
        me=draw(
            st.none() | st.fixed_dictionaries({"id": jids}, optional={"lid": st.text(max_size=10)})
        ),
        account=_account(draw(seeds), draw(st.binary(max_size=40)), identity)
        if draw(st.booleans())
        else None,
        signal_identities=draw(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "identifier": st.fixed_dictionaries(
                            {"name": jids, "deviceId": st.integers(0, 99)}
                        ),
                        "identifierKey": st.binary(min_size=33, max_size=33),
                    }
                ),
                max_size=2,
            )
        ),
        platform=draw(optional_text),
        my_app_state_key_id=draw(optional_text),
        last_account_sync_timestamp=draw(st.none() | st.integers(0, 2**40)),
        extra=draw(
            st.dictionaries(
                st.sampled_from(["phoneId", "deviceId", "backupToken"]), json_text, max_size=2
            )
        ),
    )


@settings(deadline=None)
@given(creds_values())
def test_creds_round_trip_through_plain_and_baileys_forms(creds: AuthCreds) -> None:
    """Any valid creds survive to_plain/from_plain and creds.json text unchanged."""
    assert AuthCreds.from_plain(creds.to_plain(), "db") == creds
    text = buffer_json.dumps(creds_to_baileys_json(creds))
    assert creds_from_baileys_json(buffer_json.loads(text, "creds.json"), "creds.json") == creds
    keys.check_creds_keys(creds, "creds.json")
    keys.check_account_signatures(creds, "creds.json")


# --- fuzz: the Baileys JSON readers raise only typed errors -----------------------------

_SAMPLE_CREDS = buffer_json.dump_bytes(
    {
        "noiseKey": {"private": bytes(32), "public": bytes(range(32))},
        "signedPreKey": {
            "keyPair": {"private": bytes(32), "public": bytes(32)},
            "signature": bytes(64),
            "keyId": 1,
        },
        "registrationId": 7,
        "advSecretKey": base64.b64encode(bytes(32)).decode(),
        "account": {"details": "AQID"},
        "me": {"id": "1@s.whatsapp.net"},
        "signalIdentities": [
            {"identifier": {"name": "x", "deviceId": 0}, "identifierKey": bytes(33)}
        ],
        "processedHistoryMessages": [],
        "accountSettings": {"unarchiveChats": False},
        "x": {"0": 1, "1": 2},
        "y": {"buffer": True, "value": [1, 2]},
    }
)


_JUNK = [b"{", b"}", b"[", b'"', b",", b"0", b"null", b"\xff", b'{"0":1}', b"1e999"]


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(
                st.sampled_from([b"{", b"}", b"[", b'"', b",", b"0", b"null", b"\xff"])
            )
        elif data:
            del data[at]
    return bytes(data)


@settings(deadline=None)
@given(st.binary(max_size=300) | mutated(_SAMPLE_CREDS))
def test_creds_reader_raises_only_typed_errors(data: bytes) -> None:
    """Any bytes as creds.json: creds, or CorruptStateError naming the file (nothing else)."""
    try:
        value = buffer_json.loads(data, "creds.json")
        creds_from_baileys_json(value, "creds.json")
    except CorruptStateError as exc:
        assert exc.location == "creds.json"


@settings(deadline=None)
@given(st.sampled_from(sorted(KEY_VALUES)), st.binary(max_size=200) | mutated(_SAMPLE_CREDS))
def test_key_file_reader_raises_only_typed_errors(type: str, data: bytes) -> None:
    """Any bytes as a key file: a value, or CorruptStateError naming the file (nothing else)."""
    try:
        decode_key(type, data, "k.json")
    except CorruptStateError as exc:
        assert exc.location == "k.json"
