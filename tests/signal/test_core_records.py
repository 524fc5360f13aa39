"""Stored forms and wire forms: session records (libsignal's plain object), sender-key records
(Baileys' JSON bytes), the four messages' parse errors, and reprs that never show key bytes.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from actors.signal import group_cipher
from actors.signal.crypto import SignalKeyPair
from actors.signal.errors import InvalidMessage, InvalidRecord
from actors.signal.repository import IdentityChange, SignalRepository, random_sender_key
from actors.signal.sender_key_record import SenderKeyRecord, SenderKeyState
from actors.signal.session_cipher import PKMSG, decrypt_pre_key
from actors.signal.session_record import SessionRecord
from actors.signal.wire import (
    VERSION_BYTE,
    PreKeyWhisperMessage,
    SenderKeyDistributionMessage,
    build_distribution_message,
    build_pre_key_message,
    build_sender_key_body,
    build_whisper_body,
    parse_distribution_message,
    parse_pre_key_message,
    parse_sender_key_message,
    parse_whisper,
)
from stores.auth import use_memory_auth_state
from tests.signal.test_core_group import NAME, member_of, own_record
from tests.signal.test_core_session import Peer, key_pair, talking

# -- session records -----------------------------------------------------------------


def busy_record() -> tuple[Peer, Peer, SessionRecord]:
    """Alice's record with Bob: a closed session with kept message keys and an open one
    still waiting for its first reply (so it has a pending pre-key)."""
    alice, bob = talking()
    sealed = [bob.send(alice, f"b{i}".encode()) for i in range(4)]
    alice.receive(bob, *sealed[3])  # keys 0..2 kept
    alice.receive(bob, *sealed[1])
    alice.start(bob, pre_key_id=2)
    alice.send(bob, b"pending")
    return alice, bob, alice.record(bob)


def dumps(value: object) -> str:
    return json.dumps(value)


def test_a_session_record_round_trips_through_its_plain_form_key_order_included() -> None:
    """from_plain(to_plain()) gives the same plain object, keys in the same order."""
    _, _, record = busy_record()
    plain = record.to_plain()
    through_json = json.loads(json.dumps(plain))
    again = SessionRecord.from_plain(through_json).to_plain()
    assert dumps(again) == dumps(plain)
    entries = list(plain["_sessions"].values())
    assert len(entries) == 2 and any(
        e["_chains"][c]["messageKeys"] for e in entries for c in e["_chains"]
    )
    assert "pendingPreKey" in entries[1] and "pendingPreKey" not in entries[0]


def test_the_plain_form_has_libsignal_key_order() -> None:
    """Entries, ratchets, index info and chains list their keys in libsignal's serialize() order."""
    _, _, record = busy_record()
    plain = record.to_plain()
    assert list(plain) == ["_sessions", "version"] and plain["version"] == "v1"
    entry = list(plain["_sessions"].values())[1]
    assert list(entry) == [
        "registrationId",
        "currentRatchet",
        "indexInfo",
        "_chains",
        "pendingPreKey",
    ]
    assert list(entry["currentRatchet"]) == [
        "ephemeralKeyPair",
        "lastRemoteEphemeralKey",
        "previousCounter",
        "rootKey",
    ]
    assert list(entry["currentRatchet"]["ephemeralKeyPair"]) == ["pubKey", "privKey"]
    assert list(entry["indexInfo"]) == [
        "baseKey",
        "baseKeyType",
        "closed",
        "used",
        "created",
        "remoteIdentityKey",
    ]
    chain = next(iter(entry["_chains"].values()))
    assert list(chain) == ["chainKey", "chainType", "messageKeys"]
    assert list(entry["pendingPreKey"]) == ["signedKeyId", "baseKey", "preKeyId"]


def test_kept_message_key_indexes_are_listed_in_ascending_numeric_order() -> None:
    """messageKeys lists indexes as JavaScript does for integer keys: ascending numbers."""
    _, _, record = busy_record()
    entry = next(iter(record.sessions.values()))
    receiving = next(c for c in entry.chains.values() if c.message_keys)
    receiving.message_keys = {10: bytes(32), 9: bytes(32), 100: bytes(32)}
    plain = record.to_plain()
    keys = [
        list(chain["messageKeys"])
        for e in plain["_sessions"].values()
        for chain in e["_chains"].values()
        if chain["messageKeys"]
    ]
    assert keys == [["9", "10", "100"]]


def test_a_record_without_version_is_migrated_copying_the_top_level_registration_id() -> None:
    """A pre-v1 record: entries lacking a registrationId take the top-level one."""
    _, _, record = busy_record()
    plain = record.to_plain()
    old = copy.deepcopy(plain)
    del old["version"]
    old["registrationId"] = 4321
    first, second = old["_sessions"].values()
    del first["registrationId"]
    second["registrationId"] = 55
    migrated = SessionRecord.from_plain(old)
    assert [e.registration_id for e in migrated.sessions.values()] == [4321, 55]
    out = migrated.to_plain()
    assert out["version"] == "v1" and "registrationId" not in out
    assert next(iter(out["_sessions"].values()))["registrationId"] == 4321


def test_a_record_without_version_or_registration_id_reads_with_none() -> None:
    """A pre-v1 record with no registrationId anywhere reads; the entry's id stays unknown."""
    _, _, record = busy_record()
    old = record.to_plain()
    del old["version"]
    for entry in old["_sessions"].values():
        del entry["registrationId"]
    migrated = SessionRecord.from_plain(old)
    assert [e.registration_id for e in migrated.sessions.values()] == [None, None]
    assert not migrated.has_open_session()


Mutation = Callable[[dict[str, Any], str, str], None]


def _entry(plain: dict[str, Any], key: str) -> dict[str, Any]:
    entry: dict[str, Any] = plain["_sessions"][key]
    return entry


def _set(path: Iterable[str], value: object) -> Mutation:
    def mutate(plain: dict[str, Any], key: str, chain: str) -> None:
        target: Any = _entry(plain, key)
        *parents, last = [chain if part == "<chain>" else part for part in path]
        for part in parents:
            target = target[part]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value

    return mutate


DELETE = object()

MALFORMED: list[tuple[str, Mutation, str]] = [
    ("unknown version", lambda p, k, c: p.update(version="v2"), "session.version"),
    ("sessions not an object", lambda p, k, c: p.update(_sessions=[]), "session._sessions"),
    (
        "base key not base64",
        lambda p, k, c: p.update(_sessions={"%%%": p["_sessions"][k]}),
        "session._sessions[%%%]",
    ),
    ("entry not an object", lambda p, k, c: p["_sessions"].update({k: 7}), "session._sessions[K]"),
    (
        "registration id a string",
        _set(["registrationId"], "12"),
        "session._sessions[K].registrationId",
    ),
    ("no current ratchet", _set(["currentRatchet"], DELETE), "session._sessions[K].currentRatchet"),
    (
        "root key missing",
        _set(["currentRatchet", "rootKey"], DELETE),
        "session._sessions[K].currentRatchet.rootKey",
    ),
    (
        "private key not base64",
        _set(["currentRatchet", "ephemeralKeyPair", "privKey"], "not*base64"),
        "session._sessions[K].currentRatchet.ephemeralKeyPair.privKey",
    ),
    (
        "previous counter a boolean",
        _set(["currentRatchet", "previousCounter"], True),
        "session._sessions[K].currentRatchet.previousCounter",
    ),
    (
        "closed a string",
        _set(["indexInfo", "closed"], "-1"),
        "session._sessions[K].indexInfo.closed",
    ),
    (
        "unknown base key type",
        _set(["indexInfo", "baseKeyType"], 3),
        "session._sessions[K].indexInfo.baseKeyType",
    ),
    (
        "remote identity a number",
        _set(["indexInfo", "remoteIdentityKey"], 5),
        "session._sessions[K].indexInfo.remoteIdentityKey",
    ),
    (
        "chain counter a float",
        _set(["_chains", "<chain>", "chainKey", "counter"], 1.5),
        "session._sessions[K]._chains[C].chainKey.counter",
    ),
    (
        "chain key not base64",
        _set(["_chains", "<chain>", "chainKey", "key"], "@@@@"),
        "session._sessions[K]._chains[C].chainKey.key",
    ),
    (
        "unknown chain type",
        _set(["_chains", "<chain>", "chainType"], 9),
        "session._sessions[K]._chains[C].chainType",
    ),
    (
        "message key index not a number",
        _set(["_chains", "<chain>", "messageKeys"], {"x": "AAAA"}),
        "session._sessions[K]._chains[C].messageKeys[x]",
    ),
    (
        "pending pre-key without signed key id",
        _set(["pendingPreKey", "signedKeyId"], DELETE),
        "session._sessions[K].pendingPreKey.signedKeyId",
    ),
]


@pytest.mark.parametrize(("name", "mutate", "field"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_session_record_is_invalid_record_naming_the_field(
    name: str, mutate: Mutation, field: str
) -> None:
    """Wrong types, bad base64, an unknown version or a missing field: InvalidRecord at its path."""
    _, _, record = busy_record()
    plain = record.to_plain()
    key = list(plain["_sessions"])[1]  # the open session, with its pending pre-key
    chain = next(iter(plain["_sessions"][key]["_chains"]))
    mutate(plain, key, chain)
    with pytest.raises(InvalidRecord) as caught:
        SessionRecord.from_plain(plain)
    assert caught.value.field == field.replace("[K]", f"[{key}]").replace("[C]", f"[{chain}]")


def test_a_record_that_is_not_an_object_is_invalid_record() -> None:
    """A list where the record should be is refused naming the record itself."""
    with pytest.raises(InvalidRecord) as caught:
        SessionRecord.from_plain([], "session 111.0")
    assert caught.value.field == "session 111.0"


def test_a_root_key_of_the_wrong_length_is_invalid_record() -> None:
    """A 31-byte root key is malformed: InvalidRecord naming currentRatchet.rootKey."""
    _, _, record = busy_record()
    plain = record.to_plain()
    key = list(plain["_sessions"])[1]
    plain["_sessions"][key]["currentRatchet"]["rootKey"] = base64.b64encode(bytes(31)).decode()
    with pytest.raises(InvalidRecord) as caught:
        SessionRecord.from_plain(plain)
    assert caught.value.field.endswith("currentRatchet.rootKey")


# -- sender-key records --------------------------------------------------------------


def member_with_kept_keys() -> SenderKeyRecord:
    """A member's record with two states, one holding keys kept for skipped iterations."""
    sender = own_record(key_id=5)
    member = member_of(sender)
    sealed = [group_cipher.encrypt(sender, NAME, b"x") for _ in range(3)]
    group_cipher.decrypt(member, NAME, sealed[2])
    group_cipher.process_distribution(
        member, group_cipher.distribution_message(own_record(key_id=6), NAME)
    )
    return member


def test_sender_key_to_bytes_is_compact_json_with_node_buffers() -> None:
    """to_bytes() is JSON.stringify(serialize()): compact, Buffers as {type: Buffer, data: [..]}."""
    record = member_with_kept_keys()
    raw = record.to_bytes()
    plain = json.loads(raw)
    assert raw == json.dumps(plain, separators=(",", ":")).encode()
    assert b" " not in raw
    first = plain[0]
    assert list(first) == ["senderKeyId", "senderChainKey", "senderSigningKey", "senderMessageKeys"]
    assert list(first["senderChainKey"]) == ["iteration", "seed"]
    assert first["senderChainKey"]["seed"] == {
        "type": "Buffer",
        "data": list(record.states[0].chain_key),
    }
    assert first["senderSigningKey"]["public"]["data"] == list(record.states[0].signing_public)
    assert [k["iteration"] for k in first["senderMessageKeys"]] == [0, 1]
    assert first["senderMessageKeys"][0]["seed"]["type"] == "Buffer"


def _b64_buffers(value: Any) -> Any:
    """The same JSON with every Buffer's data as a base64 string (the other form Baileys reads)."""
    if isinstance(value, dict):
        if value.get("type") == "Buffer" and isinstance(value.get("data"), list):
            return {"type": "Buffer", "data": base64.b64encode(bytes(value["data"])).decode()}
        return {k: _b64_buffers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_b64_buffers(v) for v in value]
    return value


def _revived(value: Any) -> Any:
    """The same JSON with every Buffer turned into bytes (Baileys v6's stored list)."""
    if isinstance(value, dict):
        if value.get("type") == "Buffer":
            return bytes(value["data"])
        return {k: _revived(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_revived(v) for v in value]
    return value


def test_sender_key_from_stored_reads_every_stored_form() -> None:
    """from_stored reads v7 bytes, base64-Buffer JSON, the v6 list and plain base64 seeds."""
    record = member_with_kept_keys()
    raw = record.to_bytes()
    plain = json.loads(raw)
    as_base64 = json.dumps(_b64_buffers(plain)).encode()
    v6_list = _revived(plain)
    v6_buffer_objects = copy.deepcopy(plain)
    plain_seeds = copy.deepcopy(plain)
    plain_seeds[0]["senderChainKey"]["seed"] = base64.b64encode(record.states[0].chain_key).decode()
    for stored in (raw, as_base64, v6_list, v6_buffer_objects, plain_seeds):
        assert SenderKeyRecord.from_stored(stored).to_bytes() == raw


@pytest.mark.parametrize(
    ("stored", "field"),
    [
        (b"{not json", "sender-key"),
        (b'{"a":1}', "sender-key"),
        (
            b'[{"senderChainKey":{"iteration":0,"seed":"AAAA"},"senderSigningKey":{"public":"AAAA"}}]',
            "sender-key[0].senderKeyId",
        ),
        (
            b'[{"senderKeyId":1,"senderChainKey":{"iteration":"0","seed":"AAAA"},"senderSigningKey":{"public":"AAAA"}}]',
            "sender-key[0].senderChainKey.iteration",
        ),
        (
            b'[{"senderKeyId":1,"senderChainKey":{"iteration":0,"seed":7},"senderSigningKey":{"public":"AAAA"}}]',
            "sender-key[0].senderChainKey.seed",
        ),
        (
            b'[{"senderKeyId":1,"senderChainKey":{"iteration":0,"seed":"AAAA"}}]',
            "sender-key[0].senderSigningKey",
        ),
    ],
)
def test_a_malformed_sender_key_record_is_invalid_record_naming_the_field(
    stored: bytes, field: str
) -> None:
    """Invalid JSON, a non-list, or a missing or mistyped field: InvalidRecord at its path."""
    with pytest.raises(InvalidRecord) as caught:
        SenderKeyRecord.from_stored(stored)
    assert caught.value.field == field


# -- wire ----------------------------------------------------------------------------

KEY = b"\x05" + bytes(range(32))


def _proto_bytes(*fields: tuple[int, int | bytes]) -> bytes:
    """A hand-made protobuf message (varint and bytes fields only)."""
    out = bytearray()
    for number, value in fields:
        if isinstance(value, int):
            out.append(number << 3)
            out += _varint(value)
        else:
            out.append(number << 3 | 2)
            out += _varint(len(value)) + value
    return bytes(out)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


MAC = bytes(8)
SIG = bytes(64)
V = VERSION_BYTE

WIRE_ERRORS: list[tuple[str, Callable[[bytes], object], bytes, str]] = [
    ("msg empty", parse_whisper, b"", "msg"),
    (
        "msg version 2",
        parse_whisper,
        b"\x22" + _proto_bytes((1, KEY), (2, 0), (4, b"c")) + MAC,
        "msg.version",
    ),
    (
        "msg version 4",
        parse_whisper,
        b"\x44" + _proto_bytes((1, KEY), (2, 0), (4, b"c")) + MAC,
        "msg.version",
    ),
    ("msg too short", parse_whisper, V + bytes(7), "msg"),
    ("msg not protobuf", parse_whisper, V + b"\xff\xff\xff" + MAC, "msg"),
    (
        "msg no ratchet key",
        parse_whisper,
        V + _proto_bytes((2, 0), (4, b"c")) + MAC,
        "msg.ephemeral_key",
    ),
    (
        "msg 32-byte ratchet key",
        parse_whisper,
        V + _proto_bytes((1, KEY[1:]), (2, 0), (4, b"c")) + MAC,
        "msg.ephemeral_key",
    ),
    (
        "msg ratchet key type",
        parse_whisper,
        V + _proto_bytes((1, b"\x06" + KEY[1:]), (2, 0), (4, b"c")) + MAC,
        "msg.ephemeral_key",
    ),
    ("msg no counter", parse_whisper, V + _proto_bytes((1, KEY), (4, b"c")) + MAC, "msg.counter"),
    (
        "msg no ciphertext",
        parse_whisper,
        V + _proto_bytes((1, KEY), (2, 3)) + MAC,
        "msg.ciphertext",
    ),
    ("pkmsg version", parse_pre_key_message, b"\x23" + _proto_bytes((2, KEY)), "pkmsg.version"),
    ("pkmsg not protobuf", parse_pre_key_message, V + b"\x0a\x05ab", "pkmsg"),
    (
        "pkmsg short base key",
        parse_pre_key_message,
        V + _proto_bytes((2, KEY[:20]), (3, KEY), (4, b"m"), (5, 1), (6, 1)),
        "pkmsg.base_key",
    ),
    (
        "pkmsg no identity",
        parse_pre_key_message,
        V + _proto_bytes((2, KEY), (4, b"m"), (5, 1), (6, 1)),
        "pkmsg.identity_key",
    ),
    (
        "pkmsg no message",
        parse_pre_key_message,
        V + _proto_bytes((2, KEY), (3, KEY), (5, 1), (6, 1)),
        "pkmsg.message",
    ),
    (
        "pkmsg no registration",
        parse_pre_key_message,
        V + _proto_bytes((2, KEY), (3, KEY), (4, b"m"), (6, 1)),
        "pkmsg.registration_id",
    ),
    (
        "pkmsg no signed pre-key",
        parse_pre_key_message,
        V + _proto_bytes((2, KEY), (3, KEY), (4, b"m"), (5, 1)),
        "pkmsg.signed_pre_key_id",
    ),
    ("skmsg empty", parse_sender_key_message, b"", "skmsg"),
    (
        "skmsg version",
        parse_sender_key_message,
        b"\x13" + _proto_bytes((1, 1), (2, 0), (3, b"c")) + SIG,
        "skmsg.version",
    ),
    ("skmsg too short", parse_sender_key_message, V + bytes(63), "skmsg"),
    (
        "skmsg no id",
        parse_sender_key_message,
        V + _proto_bytes((2, 0), (3, b"c")) + SIG,
        "skmsg.id",
    ),
    (
        "skmsg no iteration",
        parse_sender_key_message,
        V + _proto_bytes((1, 1), (3, b"c")) + SIG,
        "skmsg.iteration",
    ),
    (
        "skmsg no ciphertext",
        parse_sender_key_message,
        V + _proto_bytes((1, 1), (2, 0)) + SIG,
        "skmsg.ciphertext",
    ),
    ("skdm version", parse_distribution_message, b"\x20", "skdm.version"),
    (
        "skdm short chain key",
        parse_distribution_message,
        V + _proto_bytes((1, 1), (2, 0), (3, bytes(31)), (4, KEY)),
        "skdm.chain_key",
    ),
    (
        "skdm no chain key",
        parse_distribution_message,
        V + _proto_bytes((1, 1), (2, 0), (4, KEY)),
        "skdm.chain_key",
    ),
    (
        "skdm no signing key",
        parse_distribution_message,
        V + _proto_bytes((1, 1), (2, 0), (3, bytes(32))),
        "skdm.signing_key",
    ),
    (
        "skdm bad signing key",
        parse_distribution_message,
        V + _proto_bytes((1, 1), (2, 0), (3, bytes(32)), (4, KEY[:-1])),
        "skdm.signing_key",
    ),
    (
        "skdm no id",
        parse_distribution_message,
        V + _proto_bytes((2, 0), (3, bytes(32)), (4, KEY)),
        "skdm.id",
    ),
    (
        "skdm no iteration",
        parse_distribution_message,
        V + _proto_bytes((1, 1), (3, bytes(32)), (4, KEY)),
        "skdm.iteration",
    ),
]


@pytest.mark.parametrize(
    ("name", "parse", "data", "field"), WIRE_ERRORS, ids=[case[0] for case in WIRE_ERRORS]
)
def test_a_malformed_message_is_invalid_message_naming_the_part(
    name: str, parse: Callable[[bytes], object], data: bytes, field: str
) -> None:
    """Each shape error of msg, pkmsg, skmsg, skdm is InvalidMessage whose field names the part."""
    with pytest.raises(InvalidMessage) as caught:
        parse(data)
    assert type(caught.value) is InvalidMessage
    assert caught.value.field == field


def test_the_hand_made_messages_differ_from_a_valid_one_only_in_the_named_part() -> None:
    """The encoder behind the malformed cases builds messages that parse when complete."""
    parsed = parse_whisper(V + _proto_bytes((1, KEY), (2, 3), (3, 2), (4, b"c")) + MAC)
    assert (parsed.ephemeral_key, parsed.counter, parsed.previous_counter) == (KEY, 3, 2)
    pre_key = parse_pre_key_message(V + _proto_bytes((2, KEY), (3, KEY), (4, b"m"), (5, 1), (6, 1)))
    assert (pre_key.pre_key_id, pre_key.message) == (None, b"m")
    skmsg = parse_sender_key_message(V + _proto_bytes((1, 1), (2, 0), (3, b"c")) + SIG)
    assert (skmsg.key_id, skmsg.iteration, skmsg.ciphertext) == (1, 0, b"c")
    skdm = parse_distribution_message(V + _proto_bytes((1, 1), (2, 0), (3, bytes(32)), (4, KEY)))
    assert (skdm.key_id, skdm.signing_key) == (1, KEY)


def test_built_messages_parse_back_to_what_was_built() -> None:
    """build then parse gives the same fields, a pkmsg's pre-key id present or absent."""
    body = build_whisper_body(KEY, 7, 3, b"cipher")
    parsed = parse_whisper(body + MAC)
    assert (parsed.counter, parsed.previous_counter, parsed.ciphertext, parsed.body) == (
        7,
        3,
        b"cipher",
        body,
    )
    for pre_key_id in (None, 9):
        message = PreKeyWhisperMessage(11, pre_key_id, 4, KEY, KEY, body + MAC)
        assert parse_pre_key_message(build_pre_key_message(message)) == message
    signed = build_sender_key_body(3, 8, b"c")
    assert parse_sender_key_message(signed + SIG).signed == signed
    skdm = SenderKeyDistributionMessage(3, 8, bytes(32), KEY)
    assert parse_distribution_message(build_distribution_message(skdm)) == skdm


def test_every_prefix_of_a_real_message_parses_or_is_invalid_message() -> None:
    """Truncated msg, pkmsg, skmsg and skdm bytes never raise anything but InvalidMessage."""
    alice, bob = talking()
    sender = own_record()
    samples = [
        (parse_whisper, alice.send(bob, b"a msg")[1]),
        (parse_pre_key_message, _fresh_pkmsg()),
        (parse_sender_key_message, group_cipher.encrypt(sender, NAME, b"group")),
        (parse_distribution_message, group_cipher.distribution_message(sender, NAME)),
    ]
    for parse, data in samples:
        for end in range(len(data)):
            try:
                parse(data[:end])
            except InvalidMessage:
                pass


def _fresh_pkmsg() -> bytes:
    alice, bob = Peer.make("alice", 1), Peer.make("bob", 2)
    alice.start(bob)
    kind, ciphertext = alice.send(bob, b"pk")
    assert kind == PKMSG
    return ciphertext


def test_a_malformed_msg_inside_a_pkmsg_is_named_under_pkmsg_message() -> None:
    """The msg a pkmsg wraps is parsed as pkmsg.message: its errors say so."""
    alice, bob = Peer.make("alice", 1), Peer.make("bob", 2)
    alice.start(bob)
    outer = parse_pre_key_message(alice.send(bob, b"x")[1])
    broken = PreKeyWhisperMessage(
        outer.registration_id,
        outer.pre_key_id,
        outer.signed_pre_key_id,
        outer.base_key,
        outer.identity_key,
        b"\x22" + outer.message[1:],
    )
    with pytest.raises(InvalidMessage) as caught:
        decrypt_pre_key(
            SessionRecord(),
            bob.ours,
            "alice",
            broken,
            bob.pre_keys[1],
            now_ms=1,
            new_key_pair=key_pair,
        )
    assert caught.value.field == "pkmsg.message.version"


# -- reprs ---------------------------------------------------------------------------


def fragments(secret: bytes) -> set[str]:
    """Every way 8+ consecutive bytes of ``secret`` could show in text: hex, base64, repr, list."""
    found: set[str] = set()
    for start in range(len(secret) - 7):
        window = secret[start : start + 8]
        found |= {window.hex(), window.hex().upper(), repr(window)[2:-1]}
        found |= {",".join(map(str, window)), ", ".join(map(str, window))}
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(secret[offset:]).decode().rstrip("=")
            found |= {text[i : i + 11] for i in range(0, len(text) - 10, 4)}
    return found


def assert_no_secret(text: str, secrets: Iterable[bytes]) -> None:
    for secret in secrets:
        leaked = [fragment for fragment in fragments(secret) if fragment in text]
        assert not leaked, f"{text!r} shows key bytes {leaked[:3]}"


def test_fragments_finds_a_key_in_any_encoding() -> None:
    """The leak check itself catches hex, base64 at any alignment, bytes repr and Buffer data."""
    secret = key_pair().private
    for shown in (
        secret.hex(),
        "x" + base64.b64encode(b"\x01" + secret).decode(),
        repr(secret),
        json.dumps({"data": list(secret)}),
        secret[5:15].hex(),
    ):
        with pytest.raises(AssertionError):
            assert_no_secret(shown, [secret])
    assert_no_secret(secret[:7].hex(), [secret])


async def test_reprs_show_no_key_bytes() -> None:
    """Records, sessions, chains, states, key pairs, LocalIdentity and the repository hide keys."""
    alice, _, record = busy_record()
    entries = list(record.sessions.values())
    chains = [chain for entry in entries for chain in entry.chains.values()]
    session_secrets = [alice.ours.identity.private, alice.ours.signed_pre_key.private]
    for entry in entries:
        session_secrets += [entry.ephemeral.private, entry.root_key]
    for chain in chains:
        session_secrets += [chain.key or b"", *chain.message_keys.values()]
    sender = own_record()
    member = member_with_kept_keys()
    states: list[SenderKeyState] = sender.states + member.states
    group_secrets = [sender.states[0].signing_private]
    for state in states:
        group_secrets += [state.chain_key] + [seed for _, seed in state.message_keys]
    auth = await use_memory_auth_state("reprs")
    repository = SignalRepository(auth.keys, auth.state.creds)
    creds = auth.state.creds
    account_secrets = [creds.signed_identity_key.private, creds.signed_pre_key.key_pair.private]
    shown = [
        repr(record),
        *map(repr, entries),
        *map(repr, chains),
        repr(alice.ours),
        repr(alice.ours.identity),
        repr(SignalKeyPair(b"\x05" + bytes(32), alice.ours.identity.private)),
        repr(sender),
        repr(member),
        *map(repr, states),
        repr(repository),
        repr(IdentityChange("111.0", None, alice.ours.identity.public)),
        str(record.sessions),
    ]
    assert_no_secret(
        "\n".join(shown), [s for s in session_secrets + group_secrets + account_secrets if s]
    )


def test_a_fresh_sender_key_seed_repr_shows_no_key_bytes() -> None:
    """repository.SenderKeySeed (a new sender key) hides its chain key and signing private key."""
    seed = random_sender_key()
    assert_no_secret(repr(seed), [seed.chain_key, seed.signing.private])
