"""The creds model: initAuthCreds defaults, plain and Baileys forms, validation, secrecy."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from stores import buffer_json, keys
from stores.creds import (
    AuthCreds,
    CredsPatch,
    KeyPair,
    SignedKeyPair,
    creds_from_baileys_json,
    creds_to_baileys_json,
    init_auth_creds,
)
from stores.errors import CorruptStateError, InvalidValueError


def paired_creds() -> AuthCreds:
    """Fresh creds plus everything pairing and a few sessions add."""
    creds = init_auth_creds()
    creds.me = {"id": "15550001111:3@s.whatsapp.net", "lid": "99887766:3@lid", "name": "Bot"}
    creds.account = {
        "details": b"details",
        "accountSignatureKey": bytes(32),
        "accountSignature": bytes(64),
        "deviceSignature": bytes([1]) * 64,
    }
    creds.signal_identities = [
        {
            "identifier": {"name": "99887766:3@lid", "deviceId": 0},
            "identifierKey": b"\x05" + bytes(32),
        }
    ]
    creds.platform = "android"
    creds.registered = True
    creds.routing_info = b"\x08\x02"
    creds.my_app_state_key_id = "AAAAAB/c"
    creds.last_account_sync_timestamp = 1700000000
    creds.processed_history_messages = [{"key": {"id": "A"}, "messageTimestamp": 1}]
    creds.account_settings = {"unarchiveChats": True}
    creds.additional_data = {"anything": [1, b"x", None]}
    creds.pairing_code = "ABCD1234"
    creds.last_prop_hash = "h"
    creds.next_pre_key_id = 31
    creds.first_unuploaded_pre_key_id = 31
    return creds


def test_init_auth_creds_matches_baileys_defaults() -> None:
    """init_auth_creds sets every initAuthCreds field with Baileys v7's defaults."""
    creds = init_auth_creds()
    assert 0 <= creds.registration_id < 1 << 14
    assert len(base64.b64decode(creds.adv_secret_key, validate=True)) == 32
    assert creds.signed_pre_key.key_id == 1
    assert creds.processed_history_messages == []
    assert (creds.next_pre_key_id, creds.first_unuploaded_pre_key_id) == (1, 1)
    assert creds.account_sync_counter == 0
    assert creds.account_settings == {"unarchiveChats": False}
    assert creds.registered is False
    assert creds.pairing_code is None and creds.last_prop_hash is None
    assert creds.routing_info is None
    assert creds.additional_data is creds.me is creds.account is None


def test_init_auth_creds_keys_are_real_and_distinct() -> None:
    """Every key pair is a real X25519 pair, all distinct, and the signed pre-key verifies."""
    creds = init_auth_creds()
    pairs = [
        creds.noise_key,
        creds.pairing_ephemeral_key_pair,
        creds.signed_identity_key,
        creds.signed_pre_key.key_pair,
    ]
    assert len({p.private for p in pairs}) == 4
    for pair in pairs:
        assert keys.public_from_private(pair.private) == pair.public
    assert keys.verify_signed_key_pair(creds.signed_identity_key.public, creds.signed_pre_key)
    keys.check_creds_keys(creds, "memory")


def test_plain_form_round_trips_and_is_snake_case() -> None:
    """to_plain gives snake_case plain data with bytes and nested pairs; from_plain restores it."""
    creds = paired_creds()
    plain = creds.to_plain()
    assert plain["noise_key"] == {
        "private": creds.noise_key.private,
        "public": creds.noise_key.public,
    }
    assert plain["signed_pre_key"]["key_id"] == 1
    assert isinstance(plain["signed_pre_key"]["signature"], bytes)
    assert plain["routing_info"] == b"\x08\x02"
    assert AuthCreds.from_plain(plain, "db") == creds
    # The plain form shares nothing mutable with the creds.
    plain["me"]["id"] = "changed"
    assert creds.me is not None and creds.me["id"] == "15550001111:3@s.whatsapp.net"


def test_copy_is_deep() -> None:
    """copy() returns equal creds whose lists and dicts are independent of the original."""
    creds = paired_creds()
    clone = creds.copy()
    assert clone == creds
    clone.signal_identities.append({"x": 1})
    assert clone.account is not None
    clone.account["details"] = b"other"
    assert len(creds.signal_identities) == 1
    assert creds.account is not None and creds.account["details"] == b"details"


def test_a_copy_shares_the_immutable_key_pairs_and_nothing_mutable() -> None:
    """copy() shares the key pair objects (they cannot change) and makes new containers."""
    creds = paired_creds()
    clone = creds.copy()
    assert clone.noise_key is creds.noise_key
    assert clone.signed_identity_key is creds.signed_identity_key
    assert clone.signed_pre_key is creds.signed_pre_key
    assert clone.me is not creds.me and clone.account is not creds.account
    assert clone.signal_identities is not creds.signal_identities
    with pytest.raises(AttributeError):
        creds.noise_key.private = bytes(32)  # type: ignore[misc]  # the point: frozen
    with pytest.raises(AttributeError):
        creds.unknown_field = 1  # type: ignore[attr-defined]  # the point: slotted


def _broken(field: str, value: Any) -> dict[str, Any]:
    plain = paired_creds().to_plain()
    path = field.split(".")
    target = plain
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return plain


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("noise_key.private", bytes(31)),
        ("noise_key.public", "not bytes"),
        ("pairing_ephemeral_key_pair", None),
        ("signed_identity_key.public", bytes(33)),
        ("signed_pre_key.signature", bytes(63)),
        ("signed_pre_key.key_id", 1 << 24),
        ("signed_pre_key.key_id", True),
        ("registration_id", 1 << 14),
        ("registration_id", -1),
        ("registration_id", "5"),
        ("adv_secret_key", "not base64!"),
        ("adv_secret_key", base64.b64encode(bytes(16)).decode()),
        ("next_pre_key_id", -1),
        ("account_sync_counter", 1.5),
        ("registered", 1),
        ("account_settings", []),
        ("account_settings.unarchiveChats", "yes"),
        ("me", {"name": "no id"}),
        ("me.id", 5),
        ("account.details", "not bytes"),
        ("signal_identities", {}),
        ("signal_identities.0.identifierKey", bytes(10)),
        ("routing_info", "text"),
        ("platform", 7),
        ("processed_history_messages", [1]),
        ("additional_data", {1: "non-string key"}),
        ("additional_data", float("nan")),
        ("extra", {"noiseKey": 1}),
    ],
)
def test_from_plain_names_the_bad_field(field: str, value: Any) -> None:
    """Every wrong type, size or range is a CorruptStateError naming location and field."""
    plain = _broken_list(field, value) if ".0." in field else _broken(field, value)
    with pytest.raises(CorruptStateError) as info:
        AuthCreds.from_plain(plain, "acct.db")
    assert info.value.location == "acct.db"
    assert field.split(".")[0] in info.value.reason


def _broken_list(field: str, value: Any) -> dict[str, Any]:
    plain = paired_creds().to_plain()
    head, index, tail = field.split(".")
    plain[head][int(index)][tail] = value
    return plain


def test_from_plain_refuses_missing_and_unknown_fields() -> None:
    """A required field missing or a field we do not know is a CorruptStateError."""
    plain = init_auth_creds().to_plain()
    del plain["signed_pre_key"]
    with pytest.raises(CorruptStateError, match="signed_pre_key: missing"):
        AuthCreds.from_plain(plain, "x")
    plain = init_auth_creds().to_plain()
    plain["surprise"] = 1
    with pytest.raises(CorruptStateError, match="surprise"):
        AuthCreds.from_plain(plain, "x")
    with pytest.raises(CorruptStateError):
        AuthCreds.from_plain([], "x")  # type: ignore[arg-type]  # wrong type on purpose


def test_optional_plain_fields_take_baileys_defaults() -> None:
    """Plain data holding only the required fields loads with the initAuthCreds defaults."""
    full = init_auth_creds().to_plain()
    required = ("noise_key", "pairing_ephemeral_key_pair", "signed_identity_key")
    minimal = {
        k: full[k] for k in (*required, "signed_pre_key", "registration_id", "adv_secret_key")
    }
    creds = AuthCreds.from_plain(minimal, "x")
    assert creds.account_settings == {"unarchiveChats": False}
    assert creds.next_pre_key_id == 1 and creds.signal_identities == [] and creds.extra == {}


def test_baileys_form_is_camel_case_with_protobuf_json_account() -> None:
    """The Baileys form uses Baileys' names; account bytes are base64 strings, as Baileys writes."""
    creds = paired_creds()
    obj = creds_to_baileys_json(creds)
    assert list(obj)[:6] == [
        "noiseKey",
        "pairingEphemeralKeyPair",
        "signedIdentityKey",
        "signedPreKey",
        "registrationId",
        "advSecretKey",
    ]
    assert obj["signedPreKey"]["keyPair"]["public"] == creds.signed_pre_key.key_pair.public
    assert obj["signedPreKey"]["keyId"] == 1
    assert obj["account"]["details"] == base64.b64encode(b"details").decode()
    assert obj["routingInfo"] == b"\x08\x02"
    assert creds_from_baileys_json(obj, "creds.json") == creds


def test_baileys_form_leaves_out_undefined_fields() -> None:
    """Fields Baileys leaves undefined in initAuthCreds are absent, not null."""
    obj = creds_to_baileys_json(init_auth_creds())
    for absent in ("pairingCode", "lastPropHash", "routingInfo", "additionalData", "me", "account"):
        assert absent not in obj
    assert "signalIdentities" not in obj
    assert obj["accountSettings"] == {"unarchiveChats": False}


def test_unknown_baileys_fields_survive_a_round_trip() -> None:
    """Fields we do not model (e.g. v6's phoneId) are kept in extra and written back."""
    obj = creds_to_baileys_json(init_auth_creds())
    obj["phoneId"] = "7c2f"
    obj["backupToken"] = b"\x01\x02"
    creds = creds_from_baileys_json(obj, "creds.json")
    assert creds.extra == {"phoneId": "7c2f", "backupToken": b"\x01\x02"}
    again = creds_to_baileys_json(creds)
    assert again == obj
    assert AuthCreds.from_plain(creds.to_plain(), "db").extra == creds.extra


def test_baileys_form_errors_name_the_camel_case_field() -> None:
    """A bad creds.json field is reported under the name it has in creds.json."""
    obj = creds_to_baileys_json(init_auth_creds())
    obj["signedPreKey"]["signature"] = bytes(12)
    with pytest.raises(CorruptStateError) as info:
        creds_from_baileys_json(obj, "auth/creds.json")
    assert info.value.location == "auth/creds.json"
    assert info.value.reason.startswith("creds.signedPreKey.signature")
    obj = creds_to_baileys_json(init_auth_creds())
    del obj["noiseKey"]
    with pytest.raises(CorruptStateError, match=r"creds\.noiseKey: missing"):
        creds_from_baileys_json(obj, "auth/creds.json")
    obj = creds_to_baileys_json(init_auth_creds())
    obj["account"] = {"details": "@@not base64"}
    with pytest.raises(CorruptStateError, match=r"account\.details"):
        creds_from_baileys_json(obj, "auth/creds.json")


def test_baileys_json_text_round_trips() -> None:
    """creds → Buffer JSON text → creds is the identity."""
    creds = paired_creds()
    text = buffer_json.dumps(creds_to_baileys_json(creds))
    assert creds_from_baileys_json(buffer_json.loads(text, "f"), "f") == creds


def test_reprs_never_show_key_bytes() -> None:
    """No private or public key bytes appear in any repr (reprs reach logs)."""
    creds = paired_creds()
    shown = repr(creds) + repr(creds.signed_pre_key) + repr(creds.noise_key) + str(creds)
    for pair in (creds.noise_key, creds.signed_identity_key, creds.signed_pre_key.key_pair):
        assert pair.private.hex() not in shown
        assert pair.private.hex()[:8] not in shown
        assert pair.public.hex() not in shown
    assert creds.adv_secret_key not in shown
    assert creds.signed_pre_key.signature.hex()[:8] not in shown


def test_key_pair_types_refuse_wrong_sizes() -> None:
    """KeyPair and SignedKeyPair refuse wrong sizes and ids at construction."""
    with pytest.raises(InvalidValueError):
        KeyPair(private=bytes(31), public=bytes(32))
    pair = KeyPair(private=bytes(32), public=bytes(32))
    with pytest.raises(InvalidValueError):
        SignedKeyPair(key_pair=pair, signature=bytes(63), key_id=1)
    with pytest.raises(InvalidValueError):
        SignedKeyPair(key_pair=pair, signature=bytes(64), key_id=-1)


def test_a_damaged_field_name_is_an_error_not_a_silent_default() -> None:
    """An unknown field one character away from an absent known field is refused."""
    obj = creds_to_baileys_json(init_auth_creds())
    obj["nextPreKeyIe"] = obj.pop("nextPreKeyId")
    with pytest.raises(CorruptStateError, match="nextPreKeyId"):
        creds_from_baileys_json(obj, "creds.json")
    obj = creds_to_baileys_json(init_auth_creds())
    obj["noiseKez"] = obj.pop("noiseKey")
    with pytest.raises(CorruptStateError, match="noiseKey"):
        creds_from_baileys_json(obj, "creds.json")
    # A name close to a field that is present is just an unknown field.
    obj = creds_to_baileys_json(init_auth_creds())
    obj["nextPreKeyIe"] = 5
    assert creds_from_baileys_json(obj, "creds.json").extra == {"nextPreKeyIe": 5}


def test_a_patch_between_two_creds_names_only_the_changed_fields_and_applies_back() -> None:
    """CredsPatch.between(old, new) holds the changed fields; apply(old) equals new."""
    old = paired_creds()
    new = old.copy()
    new.next_pre_key_id = 40
    new.me = {"id": "15550001111:3@s.whatsapp.net"}
    patch = CredsPatch.between(old, new)
    assert patch.fields == {"next_pre_key_id", "me"}
    assert patch.apply(old) == new and old.next_pre_key_id != 40
    assert not CredsPatch.between(new, new)


def test_a_patch_copies_its_values_and_merges_later_fields_over_earlier_ones() -> None:
    """A patch never aliases the caller's objects; then() keeps the later value of a field."""
    me = {"id": "a@s.whatsapp.net"}
    patch = CredsPatch.of(me=me, next_pre_key_id=2)
    me["id"] = "changed"
    applied = patch.apply(init_auth_creds())
    assert applied.me == {"id": "a@s.whatsapp.net"}
    merged = patch.then(CredsPatch.of(next_pre_key_id=3))
    assert dict(merged.changes) == {"me": {"id": "a@s.whatsapp.net"}, "next_pre_key_id": 3}


def test_a_patch_refuses_unknown_fields_and_never_shows_values() -> None:
    """Unknown field names raise InvalidValueError; the repr names fields, not key bytes."""
    with pytest.raises(InvalidValueError, match="nonsense"):
        CredsPatch.of(nonsense=1)
    secret = init_auth_creds().noise_key
    text = repr(CredsPatch.of(noise_key=secret))
    assert text == "CredsPatch(['noise_key'])" and secret.private.hex() not in text
