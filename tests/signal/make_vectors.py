"""Generate the Signal test vectors in ``tests/signal/vectors/`` with libsignal-node.

Run ``.venv/bin/python -m tests.signal.make_vectors`` (needs node; it installs the
Baileys peer on first use). Everything is fixed: party keys, the keys libsignal draws
(``set_random_keys``), the clock (``set_clock``, one tick per step) and the group
keys (``set_group_keys``), so a run always writes the same files; ``test_vectors.py``
regenerates them and compares when node is present, and checks our implementation
against the committed files without node.

Files (bytes are lowercase hex; session records are libsignal's serialize() objects,
sender-key records the text of Baileys' stored JSON bytes):

- ``primitives.json``: HKDF (``deriveSecrets``) for the four info strings, and
  deterministic curve25519-js signatures.
- ``sessions.json``: the parties' fixed keys and one scripted conversation (a session
  with a one-time pre-key, ratchet turns, out-of-order delivery, a late message on a
  closed chain, then a new session from a bundle without one-time pre-key); after
  every step the acting party's session record, and every ciphertext.
- ``group.json``: Baileys' sender key from fixed keys: the skdm, the sender's record
  after creation and after each message, the skmsgs, and a receiver's record after
  each in-order decrypt.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from tests.signal.libsignal_peer import LibsignalPeer, open_libsignal_peer

VECTORS = Path(__file__).resolve().with_name("vectors")
FILES = ("primitives.json", "sessions.json", "group.json")

GROUP = "120363025246125486@g.us"
CLOCK_START = 1_700_000_000_000
CLOCK_STEP = 1_000
RANDOM_KEYS = [bytes([0x40 + n]) * 32 for n in range(24)]
"""The privates libsignal's ``generateKeyPair`` hands out, in order (base and ratchet keys)."""

PARTIES: dict[str, dict[str, Any]] = {
    "alice": {
        "user": "111",
        "device": 1,
        "registration_id": 1001,
        "identity_private": b"\x01" * 32,
        "signed_pre_key_id": 1,
        "signed_pre_key_private": b"\x02" * 32,
        "pre_keys": [],
    },
    "bob": {
        "user": "222",
        "device": 1,
        "registration_id": 2002,
        "identity_private": b"\x03" * 32,
        "signed_pre_key_id": 7,
        "signed_pre_key_private": b"\x04" * 32,
        "pre_keys": [{"id": 9, "private": b"\x05" * 32}],
    },
}

# The conversation: ("bundle", who, pre-key id | None) starts a session from the
# other's bundle; ("encrypt", who, text) sends message n (numbered in order);
# ("decrypt", who, n) delivers message n to its receiver.
SCRIPT: list[tuple[str, str, Any]] = [
    ("bundle", "alice", 9),
    ("encrypt", "alice", "hello bob"),  # 0: pkmsg with the one-time pre-key
    ("encrypt", "alice", "are you there?"),  # 1: pkmsg again (no reply yet)
    ("decrypt", "bob", 0),
    ("decrypt", "bob", 1),
    ("encrypt", "bob", "hi alice"),  # 2: msg, bob's first ratchet key
    ("decrypt", "alice", 2),  # alice's ratchet turn
    ("encrypt", "alice", "turn a"),  # 3
    ("encrypt", "alice", "turn b"),  # 4
    ("encrypt", "alice", "turn c"),  # 5
    ("decrypt", "bob", 5),  # out of order: keys for 3 and 4 are kept
    ("decrypt", "bob", 3),
    ("encrypt", "bob", "second turn"),  # 6
    ("encrypt", "bob", "and more"),  # 7
    ("decrypt", "alice", 7),
    ("decrypt", "alice", 6),
    ("encrypt", "alice", "third turn"),  # 8: a new ratchet key
    ("decrypt", "bob", 8),  # bob's old receiving chain closes, key 4 stays
    ("decrypt", "bob", 4),  # late, on the closed chain
    ("encrypt", "bob", "ok"),  # 9
    ("decrypt", "alice", 9),
    ("bundle", "alice", None),  # a new session, no one-time pre-key: the old one closes
    ("encrypt", "alice", "new session"),  # 10: pkmsg without preKeyId
    ("decrypt", "bob", 10),  # bob closes his old session too
    ("encrypt", "bob", "welcome"),  # 11
    ("decrypt", "alice", 11),
    ("encrypt", "alice", "bye"),  # 12
    ("decrypt", "bob", 12),
]

HKDF_INFOS = ("WhisperText", "WhisperRatchet", "WhisperMessageKeys", "WhisperGroup")
HKDF_INPUTS: list[tuple[bytes, bytes | None]] = [
    (b"\xaa" * 32, None),
    (bytes(range(160)), bytes(range(100, 132))),
]
SIGN_CASES: list[tuple[bytes, bytes]] = [
    (b"\x42" * 32, b""),
    (b"\x42" * 32, b"message"),
    (b"\x01" * 32, b"\x05" + bytes(range(32))),
    (b"\x99" * 32, bytes(range(256)) * 3),
]

GROUP_KEYS: dict[str, Any] = {
    "sender_key_id": 4242,
    "sender_key": b"\x07" * 32,
    "signing_private": b"\x09" * 32,
}
GROUP_TEXTS = ["g0", "g1", "g2", "g3", "g4"]

_serial = itertools.count()


def address(name: str) -> str:
    """The libsignal address of a scripted party (as our side derives it from its JID)."""
    party = PARTIES[name]
    return f"{party['user']}.{party['device']}"


def other(name: str) -> str:
    return "bob" if name == "alice" else "alice"


def primitives(peer: LibsignalPeer) -> dict[str, Any]:
    """HKDF for the four info strings and deterministic XEdDSA signatures."""
    hkdf = []
    for info in HKDF_INFOS:
        for ikm, salt in HKDF_INPUTS:
            for chunks in (1, 2, 3):
                args: dict[str, Any] = {"ikm": ikm, "info": info, "chunks": chunks}
                if salt is not None:
                    args["salt"] = salt
                reply = peer.call("hkdf", **args)
                hkdf.append(
                    {
                        "info": info,
                        "ikm": ikm.hex(),
                        "salt": (salt or bytes(32)).hex(),
                        "chunks": [chunk.hex() for chunk in reply["chunks"]],
                    }
                )
    signatures = []
    for private, message in SIGN_CASES:
        public = peer.call("public_from_private", private=private)["public_key"]
        signature = peer.call("sign", private=private, message=message)["signature"]
        signatures.append(
            {
                "private": private.hex(),
                "public": public.hex(),
                "message": message.hex(),
                "signature": signature.hex(),
            }
        )
    return {"hkdf": hkdf, "signatures": signatures}


def _bundle(keys: dict[str, Any], pre_key_id: int | None) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "registration_id": keys["registration_id"],
        "identity_key": keys["identity_key"],
        "signed_pre_key": keys["signed_pre_key"],
    }
    if pre_key_id is not None:
        (pre_key,) = [k for k in keys["pre_keys"] if k["key_id"] == pre_key_id]
        bundle["pre_key"] = pre_key
    return bundle


def sessions(peer: LibsignalPeer) -> dict[str, Any]:
    """The scripted conversation under fixed keys and clock, every step recorded."""
    tag = next(_serial)
    node_name = {name: f"vector-{name}-{tag}" for name in PARTIES}
    keys: dict[str, dict[str, Any]] = {}
    parties_out: dict[str, Any] = {}
    for name, spec in PARTIES.items():
        keys[name] = peer.call(
            "new_party",
            party=node_name[name],
            registration_id=spec["registration_id"],
            identity_private=spec["identity_private"],
            signed_pre_key_id=spec["signed_pre_key_id"],
            signed_pre_key_private=spec["signed_pre_key_private"],
            pre_keys=spec["pre_keys"],
        )
        parties_out[name] = {
            "user": spec["user"],
            "device": spec["device"],
            "address": address(name),
            "registration_id": spec["registration_id"],
            "identity_private": spec["identity_private"].hex(),
            "identity_key": keys[name]["identity_key"].hex(),
            "signed_pre_key": {
                "key_id": spec["signed_pre_key_id"],
                "private": spec["signed_pre_key_private"].hex(),
                "public_key": keys[name]["signed_pre_key"]["public_key"].hex(),
                "signature": keys[name]["signed_pre_key"]["signature"].hex(),
            },
            "pre_keys": [
                {
                    "key_id": k["id"],
                    "private": k["private"].hex(),
                    "public_key": p["public_key"].hex(),
                }
                for k, p in zip(spec["pre_keys"], keys[name]["pre_keys"], strict=True)
            ],
        }
    peer.call("set_random_keys", privates=RANDOM_KEYS)
    messages: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    try:
        for index, (op, who, arg) in enumerate(SCRIPT):
            now = CLOCK_START + index * CLOCK_STEP
            peer.call("set_clock", ms=now)
            peer_address = address(other(who))
            step: dict[str, Any] = {"op": op, "by": who, "now": now}
            if op == "bundle":
                bundle = _bundle(keys[other(who)], arg)
                peer.call(
                    "process_bundle", party=node_name[who], address=peer_address, bundle=bundle
                )
                step["pre_key_id"] = arg
            elif op == "encrypt":
                sealed = peer.call(
                    "encrypt", party=node_name[who], address=peer_address, plaintext=arg.encode()
                )
                messages.append({"from": who, "plaintext": arg})
                step.update(
                    message=len(messages) - 1,
                    type=sealed["type"],
                    ciphertext=sealed["ciphertext"].hex(),
                )
            else:
                sent = messages[arg]
                reply = peer.call(
                    "decrypt",
                    party=node_name[who],
                    address=peer_address,
                    type=_find_type(steps, arg),
                    ciphertext=bytes.fromhex(_find_ciphertext(steps, arg)),
                )
                assert reply["plaintext"] == sent["plaintext"].encode()
                step.update(message=arg, plaintext=sent["plaintext"])
            step["session"] = peer.call("get_session", party=node_name[who], address=peer_address)[
                "session"
            ]
            steps.append(step)
        pending = peer.call("pending_random_keys")["count"]
        consumed = [
            k["key_id"]
            for k in parties_out["bob"]["pre_keys"]
            if not peer.call("has_pre_key", party=node_name["bob"], key_id=k["key_id"])["present"]
        ]
    finally:
        peer.call("set_clock", ms=None)
        peer.call("set_random_keys", privates=[])
        for name in node_name.values():
            peer.call("drop_party", party=name)
    return {
        "random_keys": [key.hex() for key in RANDOM_KEYS],
        "keys_drawn": len(RANDOM_KEYS) - pending,
        "parties": parties_out,
        "steps": steps,
        "pre_keys_consumed": consumed,
    }


def _find_step(steps: list[dict[str, Any]], message: int) -> dict[str, Any]:
    return next(s for s in steps if s["op"] == "encrypt" and s["message"] == message)


def _find_type(steps: list[dict[str, Any]], message: int) -> str:
    kind: str = _find_step(steps, message)["type"]
    return kind


def _find_ciphertext(steps: list[dict[str, Any]], message: int) -> str:
    text: str = _find_step(steps, message)["ciphertext"]
    return text


def group(peer: LibsignalPeer) -> dict[str, Any]:
    """Baileys' sender key from fixed keys: skdm, records and messages, a receiver's records."""
    tag = next(_serial)
    sender, receiver = f"vector-gsender-{tag}", f"vector-greceiver-{tag}"
    author = address("alice")
    for name in (sender, receiver):
        peer.call("new_party", party=name)
    peer.call("set_random_keys", privates=[])
    peer.call("set_group_keys", **GROUP_KEYS)
    try:
        skdm = peer.call("group_create", party=sender, group=GROUP, author=author)["skdm"]
        created = peer.call("get_sender_key", party=sender, group=GROUP, author=author)["record"]
        peer.call("group_process", party=receiver, group=GROUP, author=author, skdm=skdm)
        processed = peer.call("get_sender_key", party=receiver, group=GROUP, author=author)[
            "record"
        ]
        messages = []
        for text in GROUP_TEXTS:
            sealed = peer.call(
                "group_encrypt", party=sender, group=GROUP, author=author, plaintext=text.encode()
            )
            sender_record = peer.call("get_sender_key", party=sender, group=GROUP, author=author)[
                "record"
            ]
            opened = peer.call(
                "group_decrypt",
                party=receiver,
                group=GROUP,
                author=author,
                ciphertext=sealed["ciphertext"],
            )
            assert opened["plaintext"] == text.encode()
            receiver_record = peer.call(
                "get_sender_key", party=receiver, group=GROUP, author=author
            )["record"]
            messages.append(
                {
                    "plaintext": text,
                    "skmsg": sealed["ciphertext"].hex(),
                    "skdm": sealed["skdm"].hex(),
                    "sender_record": sender_record.decode(),
                    "receiver_record": receiver_record.decode(),
                }
            )
    finally:
        peer.call("set_group_keys")
        peer.call("set_random_keys", privates=[])
        for name in (sender, receiver):
            peer.call("drop_party", party=name)
    signing_public = peer.call("public_from_private", private=GROUP_KEYS["signing_private"])
    return {
        "group": GROUP,
        "author": author,
        "sender_key_id": GROUP_KEYS["sender_key_id"],
        "chain_key": GROUP_KEYS["sender_key"].hex(),
        "signing_private": GROUP_KEYS["signing_private"].hex(),
        "signing_public": signing_public["public_key"].hex(),
        "skdm": skdm.hex(),
        "created_record": created.decode(),
        "processed_record": processed.decode(),
        "messages": messages,
    }


def generate(peer: LibsignalPeer) -> dict[str, Any]:
    """Every vector file's content, by file name."""
    return {
        "primitives.json": primitives(peer),
        "sessions.json": sessions(peer),
        "group.json": group(peer),
    }


def dump(content: Any) -> str:
    """The committed text of a vector file."""
    return json.dumps(content, indent=1, ensure_ascii=False) + "\n"


def main() -> None:
    with open_libsignal_peer() as peer:
        versions = peer.call("ping")
        files = generate(peer)
    VECTORS.mkdir(exist_ok=True)
    for name, content in files.items():
        (VECTORS / name).write_text(dump(content), encoding="utf-8")
        print(f"wrote {VECTORS / name}")
    print(f"libsignal {versions['libsignal']}, baileys {versions['baileys']}")


if __name__ == "__main__":
    main()
