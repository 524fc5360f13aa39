"""The libsignal-node driver works: real libsignal sessions and Baileys' group cipher,
driven from Python, with the determinism hooks that test vectors rely on.

These tests check the driver, not our Signal code: every party here lives in node.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tests.signal.libsignal_peer import (
    LibsignalPeer,
    PeerDied,
    PeerError,
    b64,
    open_libsignal_peer,
)

pytestmark = pytest.mark.peer

_serial = itertools.count()
GROUP = "120363025246125486@g.us"


def fresh(*names: str) -> list[str]:
    """Party names unused so far in this node process (the fixture is shared)."""
    n = next(_serial)
    return [f"{name}{n}" for name in names]


def bundle(keys: dict[str, Any], pre_key: int | None = 0) -> dict[str, Any]:
    """A pre-key bundle from a new_party reply, with its pre_key-th one-time pre-key or none."""
    out = {
        "registration_id": keys["registration_id"],
        "identity_key": keys["identity_key"],
        "signed_pre_key": keys["signed_pre_key"],
    }
    if pre_key is not None:
        out["pre_key"] = keys["pre_keys"][pre_key]
    return out


def send(peer: LibsignalPeer, sender: str, receiver: str, text: bytes) -> dict[str, Any]:
    return peer.call("encrypt", party=sender, address=f"{receiver}.1", plaintext=text)


def receive(peer: LibsignalPeer, receiver: str, sender: str, sealed: dict[str, Any]) -> bytes:
    reply = peer.call(
        "decrypt",
        party=receiver,
        address=f"{sender}.1",
        type=sealed["type"],
        ciphertext=sealed["ciphertext"],
    )
    plaintext: bytes = reply["plaintext"]
    return plaintext


def connect(peer: LibsignalPeer, pre_key: int | None = 0) -> tuple[str, str]:
    """Two fresh parties; alice has processed bob's bundle."""
    alice, bob = fresh("alice", "bob")
    peer.call("new_party", party=alice)
    bob_keys = peer.call("new_party", party=bob, pre_keys=[{"id": 31}, {"id": 32}])
    peer.call("process_bundle", party=alice, address=f"{bob}.1", bundle=bundle(bob_keys, pre_key))
    return alice, bob


@pytest.mark.parametrize("pre_key", [0, None], ids=["one-time-pre-key", "no-one-time-pre-key"])
def test_session_from_bundle_pkmsg_then_msg_both_ways(
    libsignal_peer: LibsignalPeer, pre_key: int | None
) -> None:
    """A session from a bundle (with or without a one-time pre-key) carries pkmsgs until the
    first reply, then msgs both ways; the used one-time pre-key is consumed."""
    peer = libsignal_peer
    alice, bob = connect(peer, pre_key)
    first = send(peer, alice, bob, b"hello 1")
    second = send(peer, alice, bob, b"hello 2")
    assert (first["type"], second["type"]) == ("pkmsg", "pkmsg")
    assert receive(peer, bob, alice, first) == b"hello 1"
    assert receive(peer, bob, alice, second) == b"hello 2"
    assert peer.call("has_pre_key", party=bob, key_id=31)["present"] is (pre_key is None)
    assert peer.call("has_pre_key", party=bob, key_id=32)["present"] is True
    alice_identity = peer.call("party_keys", party=alice)["identity_key"]
    assert peer.call("get_identity", party=bob, address=f"{alice}.1")["identity_key"] == (
        alice_identity
    )

    reply = send(peer, bob, alice, b"hi back")
    assert reply["type"] == "msg"
    assert receive(peer, alice, bob, reply) == b"hi back"
    for n in range(3):
        sealed = send(peer, alice, bob, b"a%d" % n)
        assert sealed["type"] == "msg"
        assert receive(peer, bob, alice, sealed) == b"a%d" % n
        sealed = send(peer, bob, alice, b"b%d" % n)
        assert receive(peer, alice, bob, sealed) == b"b%d" % n


def test_out_of_order_messages_decrypt(libsignal_peer: LibsignalPeer) -> None:
    """pkmsgs and msgs delivered out of order (within and across ratchet steps) all decrypt."""
    peer = libsignal_peer
    alice, bob = connect(peer)
    pk = [send(peer, alice, bob, b"pk%d" % n) for n in range(3)]
    for n in (2, 0, 1):
        assert receive(peer, bob, alice, pk[n]) == b"pk%d" % n
    assert receive(peer, alice, bob, send(peer, bob, alice, b"ack")) == b"ack"
    early = [send(peer, alice, bob, b"early%d" % n) for n in range(2)]
    assert receive(peer, alice, bob, send(peer, bob, alice, b"step")) == b"step"
    late = [send(peer, alice, bob, b"late%d" % n) for n in range(4)]
    assert {s["type"] for s in early + late} == {"msg"}
    for sealed, text in [
        (late[3], b"late3"),
        (early[1], b"early1"),
        (late[0], b"late0"),
        (early[0], b"early0"),
        (late[2], b"late2"),
        (late[1], b"late1"),
    ]:
        assert receive(peer, bob, alice, sealed) == text


def test_refusals_are_replies_with_libsignal_error_names(libsignal_peer: LibsignalPeer) -> None:
    """Duplicates, a bad MAC, a missing pre-key and a missing session come back as PeerError
    carrying libsignal's class name, leave the stored session as it was, and the peer lives on."""
    peer = libsignal_peer
    alice, bob = connect(peer)
    first = send(peer, alice, bob, b"one")
    receive(peer, bob, alice, first)
    with pytest.raises(PeerError) as dup_pkmsg:
        receive(peer, bob, alice, first)
    assert dup_pkmsg.value.error == "MessageCounterError"

    receive(peer, alice, bob, send(peer, bob, alice, b"two"))
    sealed = send(peer, alice, bob, b"three")
    receive(peer, bob, alice, sealed)
    before = peer.call("get_session", party=bob, address=f"{alice}.1")["session"]
    # A msg is tried against every session of the record; libsignal reports any
    # failure (duplicate counter, bad MAC) as one SessionError.
    with pytest.raises(PeerError) as dup_msg:
        receive(peer, bob, alice, sealed)
    assert (dup_msg.value.error, dup_msg.value.message) == (
        "SessionError",
        "No matching sessions found for message",
    )
    tampered = dict(sealed, ciphertext=sealed["ciphertext"][:-1] + b"\x00")
    with pytest.raises(PeerError) as bad_mac:
        receive(peer, bob, alice, tampered)
    assert bad_mac.value.error == "SessionError"
    assert peer.call("get_session", party=bob, address=f"{alice}.1")["session"] == before

    carol, dave = fresh("carol", "dave")
    peer.call("new_party", party=carol)
    dave_keys = peer.call("new_party", party=dave, pre_keys=[{"id": 5}])
    wrong = bundle(dave_keys)
    wrong["pre_key"] = dict(wrong["pre_key"], key_id=6)  # dave has no pre-key 6
    peer.call("process_bundle", party=carol, address=f"{dave}.1", bundle=wrong)
    with pytest.raises(PeerError) as missing:
        receive(peer, dave, carol, send(peer, carol, dave, b"x"))
    assert (missing.value.error, missing.value.message) == ("PreKeyError", "Invalid PreKey ID")

    with pytest.raises(PeerError) as no_session:
        send(peer, carol, "nobody", b"x")
    assert (no_session.value.error, no_session.value.message) == ("SessionError", "No sessions")
    with pytest.raises(PeerError) as not_b64:
        peer.call("encrypt", party=carol, address=f"{dave}.1", plaintext="not base64!")
    assert not_b64.value.error == "TypeError"
    with pytest.raises(PeerError) as unknown:
        peer.call("no_such_op")
    assert unknown.value.error == "Error"
    assert peer.call("ping")["libsignal"] == "6.0.0"


def test_exported_session_keeps_working_in_a_fresh_party(libsignal_peer: LibsignalPeer) -> None:
    """A session taken out with get_session and put into a fresh party holding the same device
    keys (party_keys) goes on encrypting and decrypting, as after Baileys reloads its files."""
    peer = libsignal_peer
    alice, bob = connect(peer)
    receive(peer, bob, alice, send(peer, alice, bob, b"one"))
    receive(peer, alice, bob, send(peer, bob, alice, b"two"))
    unread = send(peer, bob, alice, b"unread")

    session = peer.call("get_session", party=alice, address=f"{bob}.1")["session"]
    assert session["version"] == "v1"
    assert len(session["_sessions"]) == 1
    keys = peer.call("party_keys", party=alice)
    (copy,) = fresh("alicecopy")
    peer.call(
        "new_party",
        party=copy,
        registration_id=keys["registration_id"],
        identity_private=keys["identity_private"],
        signed_pre_key_id=keys["signed_pre_key"]["key_id"],
        signed_pre_key_private=keys["signed_pre_key"]["private_key"],
    )
    assert peer.call("party_keys", party=copy)["identity_key"] == keys["identity_key"]
    peer.call("put_session", party=copy, address=f"{bob}.1", session=session)
    assert peer.call("has_open_session", party=copy, address=f"{bob}.1")["open"] is True

    assert receive(peer, copy, bob, unread) == b"unread"
    sealed = send(peer, copy, bob, b"from the copy")
    assert sealed["type"] == "msg"
    assert receive(peer, bob, alice, sealed) == b"from the copy"
    assert receive(peer, copy, bob, send(peer, bob, alice, b"to the copy")) == b"to the copy"


def test_group_messages_between_two_parties(libsignal_peer: LibsignalPeer) -> None:
    """A sender key made by group_create and processed by another party decrypts that party's
    group messages in order, both ways; records are stored as Baileys' JSON bytes."""
    peer = libsignal_peer
    alice, bob = fresh("alice", "bob")
    for party in (alice, bob):
        peer.call("new_party", party=party)
    skdm = peer.call("group_create", party=alice, group=GROUP, author=f"{alice}.1")["skdm"]
    assert skdm[0] == 0x33
    assert peer.call("group_create", party=alice, group=GROUP, author=f"{alice}.1")["skdm"] == skdm
    peer.call("group_process", party=bob, group=GROUP, author=f"{alice}.1", skdm=skdm)
    for n in range(3):
        sealed = peer.call(
            "group_encrypt", party=alice, group=GROUP, author=f"{alice}.1", plaintext=b"g%d" % n
        )
        assert sealed["ciphertext"][0] == 0x33
        opened = peer.call(
            "group_decrypt",
            party=bob,
            group=GROUP,
            author=f"{alice}.1",
            ciphertext=sealed["ciphertext"],
        )
        assert opened["plaintext"] == b"g%d" % n

    # bob's first group_encrypt creates his sender key, as Baileys' encryptGroupMessage does.
    sealed = peer.call("group_encrypt", party=bob, group=GROUP, author=f"{bob}.1", plaintext=b"b")
    peer.call("group_process", party=alice, group=GROUP, author=f"{bob}.1", skdm=sealed["skdm"])
    opened = peer.call(
        "group_decrypt",
        party=alice,
        group=GROUP,
        author=f"{bob}.1",
        ciphertext=sealed["ciphertext"],
    )
    assert opened["plaintext"] == b"b"

    record = peer.call("get_sender_key", party=bob, group=GROUP, author=f"{alice}.1")["record"]
    (state,) = json.loads(record)
    assert state["senderChainKey"]["seed"]["type"] == "Buffer"
    assert isinstance(state["senderChainKey"]["seed"]["data"], list)
    assert state["senderSigningKey"]["private"]["data"] == []  # a receiver has no signing key
    assert peer.call("get_sender_key", party=bob, group=GROUP, author="nobody.1")["record"] is None

    # The stored bytes are the whole state: put into a fresh party they keep decrypting.
    (carol,) = fresh("carol")
    peer.call("new_party", party=carol)
    peer.call("put_sender_key", party=carol, group=GROUP, author=f"{alice}.1", record=record)
    sealed = peer.call(
        "group_encrypt", party=alice, group=GROUP, author=f"{alice}.1", plaintext=b"later"
    )
    opened = peer.call(
        "group_decrypt",
        party=carol,
        group=GROUP,
        author=f"{alice}.1",
        ciphertext=sealed["ciphertext"],
    )
    assert opened["plaintext"] == b"later"


def _iteration(sender_key_message: bytes) -> int:
    """The iteration field (2) of a SenderKeyMessage: 33 || protobuf || 64-byte signature."""
    body, i, fields = sender_key_message[1:-64], 0, {}
    while i < len(body):
        field, wire = body[i] >> 3, body[i] & 7
        i += 1
        value = shift = 0
        while True:  # a varint: the value, or the length of a bytes field
            value |= (body[i] & 0x7F) << shift
            shift += 7
            i += 1
            if not body[i - 1] & 0x80:
                break
        if wire == 2:
            i += value
        else:
            fields[field] = value
    return fields.get(2, 0)


def test_baileys_group_quirks_show_through(libsignal_peer: LibsignalPeer) -> None:
    """Sender keys live as Baileys keeps them, so its quirks show: a sender uses iterations
    0, 2, 4... (keeping the skipped keys itself), and a skipped key reloaded from the JSON
    bytes is a Buffer-JSON object that breaks an out-of-order decrypt with a TypeError."""
    peer = libsignal_peer
    alice, bob = fresh("alice", "bob")
    for party in (alice, bob):
        peer.call("new_party", party=party)
    author = f"{alice}.1"
    skdm = peer.call("group_create", party=alice, group=GROUP, author=author)["skdm"]
    peer.call("group_process", party=bob, group=GROUP, author=author, skdm=skdm)
    sealed = [
        peer.call("group_encrypt", party=alice, group=GROUP, author=author, plaintext=b"%d" % n)[
            "ciphertext"
        ]
        for n in range(4)
    ]
    assert [_iteration(c) for c in sealed] == [0, 2, 4, 6]
    (state,) = json.loads(
        peer.call("get_sender_key", party=alice, group=GROUP, author=author)["record"]
    )
    assert [key["iteration"] for key in state["senderMessageKeys"]] == [1, 3, 5]

    def open_(ciphertext: bytes) -> bytes:
        reply = peer.call(
            "group_decrypt", party=bob, group=GROUP, author=author, ciphertext=ciphertext
        )
        plaintext: bytes = reply["plaintext"]
        return plaintext

    assert open_(sealed[0]) == b"0"
    assert open_(sealed[2]) == b"2"
    with pytest.raises(PeerError) as late:
        open_(sealed[1])
    assert (late.value.error, late.value.message) == (
        "TypeError",
        "Expected Buffer instead of: Object",
    )
    with pytest.raises(PeerError) as again:
        open_(sealed[2])
    assert again.value.message == "Received message with old counter: 5, 4"
    assert open_(sealed[3]) == b"3"


def _scripted_run(peer: LibsignalPeer) -> dict[str, Any]:
    """One fixed conversation under fixed keys, clock and group keys; everything it produced."""
    alice, bob = fresh("alice", "bob")
    base = 0x11
    # Drawn in order: alice's base key and first ratchet key (process_bundle), bob's
    # ratchet key (decrypting "one"), alice's (decrypting "two"), bob's ("three"); one spare.
    peer.call("set_random_keys", privates=[bytes([base + n]) * 32 for n in range(6)])
    peer.call("set_clock", ms=1_700_000_000_000)
    peer.call(
        "set_group_keys", sender_key_id=4242, sender_key=b"\x07" * 32, signing_private=b"\x09" * 32
    )
    peer.call(
        "new_party",
        party=alice,
        registration_id=1001,
        identity_private=b"\x01" * 32,
        signed_pre_key_private=b"\x02" * 32,
    )
    bob_keys = peer.call(
        "new_party",
        party=bob,
        registration_id=2002,
        identity_private=b"\x03" * 32,
        signed_pre_key_private=b"\x04" * 32,
        pre_keys=[{"id": 9, "private": b"\x05" * 32}],
    )
    peer.call("process_bundle", party=alice, address=f"{bob}.1", bundle=bundle(bob_keys))
    out: dict[str, Any] = {"bob_keys": bob_keys, "sealed": []}
    for sender, receiver, text in [
        (alice, bob, b"one"),
        (bob, alice, b"two"),
        (alice, bob, b"three"),
    ]:
        sealed = send(peer, sender, receiver, text)
        assert receive(peer, receiver, sender, sealed) == text
        out["sealed"].append(sealed)
    out["alice_session"] = peer.call("get_session", party=alice, address=f"{bob}.1")["session"]
    out["bob_session"] = peer.call("get_session", party=bob, address=f"{alice}.1")["session"]
    out["pending"] = peer.call("pending_random_keys")["count"]
    out["skdm"] = peer.call("group_create", party=alice, group=GROUP, author=f"{alice}.1")["skdm"]
    out["created_sender_key"] = peer.call(
        "get_sender_key", party=alice, group=GROUP, author=f"{alice}.1"
    )["record"]
    out["group"] = peer.call(
        "group_encrypt", party=alice, group=GROUP, author=f"{alice}.1", plaintext=b"g"
    )["ciphertext"]
    out["sender_key"] = peer.call("get_sender_key", party=alice, group=GROUP, author=f"{alice}.1")[
        "record"
    ]
    return out


def test_fixed_keys_and_clock_give_byte_identical_runs(libsignal_peer: LibsignalPeer) -> None:
    """Same set_random_keys, set_clock, set_group_keys and party keys give byte-identical
    ciphertexts, session JSON and sender keys; the queued keys are the ones libsignal used."""
    peer = libsignal_peer
    try:
        first = _scripted_run(peer)
        second = _scripted_run(peer)
    finally:
        peer.call("reset")
    assert first == second
    assert first["pending"] == 1

    def public(private: bytes) -> str:
        key: bytes = peer.call("public_from_private", private=private)["public_key"]
        return b64(key)

    alice_entry = next(iter(first["alice_session"]["_sessions"].values()))
    assert alice_entry["indexInfo"]["baseKey"] == public(b"\x11" * 32)
    assert alice_entry["indexInfo"]["created"] == 1_700_000_000_000
    assert alice_entry["currentRatchet"]["ephemeralKeyPair"]["pubKey"] == public(b"\x14" * 32)
    bob_entry = next(iter(first["bob_session"]["_sessions"].values()))
    assert bob_entry["currentRatchet"]["ephemeralKeyPair"]["pubKey"] == public(b"\x15" * 32)

    (created,) = json.loads(first["created_sender_key"])
    assert bytes(created["senderChainKey"]["seed"]["data"]) == b"\x07" * 32
    assert created["senderChainKey"]["iteration"] == 0
    (state,) = json.loads(first["sender_key"])
    assert state["senderKeyId"] == 4242
    assert bytes(state["senderSigningKey"]["private"]["data"]) == b"\x09" * 32


def test_hkdf_is_libsignal_derive_secrets(libsignal_peer: LibsignalPeer) -> None:
    """hkdf returns 32 bytes per chunk (1 to 3), equal to RFC 5869 HKDF-SHA256 of that length."""
    ikm, salt = b"\xaa" * 32, b"\x5a" * 32
    for chunks in (1, 2, 3):
        reply = libsignal_peer.call("hkdf", ikm=ikm, salt=salt, info="WhisperText", chunks=chunks)
        assert [len(c) for c in reply["chunks"]] == [32] * chunks
        expected = HKDF(
            algorithm=hashes.SHA256(), length=32 * chunks, salt=salt, info=b"WhisperText"
        ).derive(ikm)
        assert reply["output"] == expected
    zero_salt = libsignal_peer.call("hkdf", ikm=ikm, info="WhisperRatchet", chunks=2)["output"]
    assert zero_salt == HKDF(
        algorithm=hashes.SHA256(), length=64, salt=b"\0" * 32, info=b"WhisperRatchet"
    ).derive(ikm)


def test_sign_and_verify(libsignal_peer: LibsignalPeer) -> None:
    """sign makes a deterministic 64-byte signature that verify accepts; a changed message,
    another key or a malformed signature is reported invalid, not as an error."""
    peer = libsignal_peer
    private = b"\x42" * 32
    public = peer.call("public_from_private", private=private)["public_key"]
    assert len(public) == 33 and public[0] == 5
    signature = peer.call("sign", private=private, message=b"message")["signature"]
    assert len(signature) == 64
    assert peer.call("sign", private=private, message=b"message")["signature"] == signature

    def valid(**args: Any) -> bool:
        merged = {"public": public, "message": b"message", "signature": signature, **args}
        result: bool = peer.call("verify", **merged)["valid"]
        return result

    assert valid()
    assert not valid(message=b"messagE")
    other = peer.call("public_from_private", private=b"\x43" * 32)["public_key"]
    assert not valid(public=other)
    assert not valid(signature=signature[:63])  # libsignal throws here; the driver says False
    assert not valid(public=b"\x05" * 5)

    # new_party signs its signed pre-key the same way, over 05 || public.
    (party,) = fresh("signer")
    keys = peer.call(
        "new_party", party=party, identity_private=private, signed_pre_key_private=b"\x44" * 32
    )
    assert keys["identity_key"] == public
    spk = keys["signed_pre_key"]
    assert valid(message=spk["public_key"], signature=spk["signature"])


def test_a_dead_node_process_raises_peer_died(libsignal_peer: LibsignalPeer) -> None:
    """When node dies, the next call raises PeerDied naming the exit (stderr attached), and
    every later call raises PeerDied at once instead of hanging."""
    with open_libsignal_peer(timeout=10) as peer:
        peer.call("new_party", party="doomed")
        os.kill(peer.pid, signal.SIGKILL)
        with pytest.raises(PeerDied, match="node exited with code -9") as died:
            peer.call("party_keys", party="doomed")
        assert "--- node stderr (tail) ---" in str(died.value)
        with pytest.raises(PeerDied, match="unusable"):
            peer.call("ping")
