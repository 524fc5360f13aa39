"""Our Signal code against vectors libsignal-node and Baileys made from fixed keys.

The files in ``tests/signal/vectors/`` come from ``tests/signal/make_vectors.py``
(libsignal-node 6.0.0 and Baileys' group cipher under node, every key, the clock and
the group keys fixed). The checks here need no node: our side is given the same
keys in the same order (``new_key_pair`` drawing from the vectors' list, one clock
tick per step) and must produce byte-identical ciphertexts and session JSON. The
one ``peer`` test regenerates the files with node and compares them to the
committed ones.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from actors.signal import (
    DuplicateMessage,
    PreKey,
    PreKeyBundle,
    SenderKeyRecord,
    SignalRepository,
    SignedPreKey,
    group_cipher,
)
from actors.signal.crypto import SignalKeyPair, derive_secrets
from actors.signal.wire import parse_pre_key_message, parse_sender_key_message
from stores.auth import PersistedAuth, use_memory_auth_state
from stores.creds import AuthCreds, KeyPair, SignedKeyPair
from stores.keys import public_from_private, signal_public_key, verify
from tests.signal.libsignal_peer import LibsignalPeer
from tests.signal.make_vectors import FILES, VECTORS, dump, generate

GROUP_SIGNATURE = 64


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


PRIMITIVES = load("primitives.json")
SESSIONS = load("sessions.json")
GROUP = load("group.json")


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# -- primitives ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    PRIMITIVES["hkdf"],
    ids=[f"{c['info']}-{len(c['ikm']) // 2}B-{len(c['chunks'])}" for c in PRIMITIVES["hkdf"]],
)
def test_derive_secrets_is_libsignal_derive_secrets(case: dict[str, Any]) -> None:
    """derive_secrets gives libsignal's deriveSecrets chunks for each info string and length."""
    chunks = derive_secrets(
        h(case["ikm"]), h(case["salt"]), case["info"].encode(), len(case["chunks"])
    )
    assert [chunk.hex() for chunk in chunks] == case["chunks"]


def test_the_vectors_cover_all_four_info_strings() -> None:
    """The HKDF vectors use WhisperText, WhisperRatchet, WhisperMessageKeys and WhisperGroup."""
    infos = {case["info"] for case in PRIMITIVES["hkdf"]}
    assert infos == {"WhisperText", "WhisperRatchet", "WhisperMessageKeys", "WhisperGroup"}


@pytest.mark.parametrize(
    "case", PRIMITIVES["signatures"], ids=lambda c: c["message"][:8] or "empty"
)
def test_curve25519_js_signatures_verify_in_stores_keys(case: dict[str, Any]) -> None:
    """curve25519-js signatures verify with stores.keys.verify; one flipped bit does not."""
    public = h(case["public"])
    assert signal_public_key(public_from_private(h(case["private"]))) == public
    message, signature = h(case["message"]), h(case["signature"])
    assert verify(public, message, signature)
    assert not verify(public, message + b"x", signature)
    assert not verify(public, message, signature[:10] + bytes([signature[10] ^ 1]) + signature[11:])


# -- 1:1 sessions ---------------------------------------------------------------------------


class Draws:
    """The key pairs libsignal's generateKeyPair handed out, in the same order."""

    def __init__(self, privates: list[str]) -> None:
        self._privates: Iterator[str] = iter(privates)
        self.count = 0

    def __call__(self) -> SignalKeyPair:
        private = h(next(self._privates))
        self.count += 1
        return SignalKeyPair(signal_public_key(public_from_private(private)), private)


def creds_for(party: dict[str, Any]) -> AuthCreds:
    """Creds whose identity, signed pre-key and registration id are the vector party's."""
    identity_private = h(party["identity_private"])
    identity = KeyPair(private=identity_private, public=public_from_private(identity_private))
    spk = party["signed_pre_key"]
    signed = SignedKeyPair(
        key_pair=KeyPair(private=h(spk["private"]), public=public_from_private(h(spk["private"]))),
        signature=h(spk["signature"]),
        key_id=spk["key_id"],
    )
    return AuthCreds(
        noise_key=identity,
        pairing_ephemeral_key_pair=identity,
        signed_identity_key=identity,
        signed_pre_key=signed,
        registration_id=party["registration_id"],
        adv_secret_key=base64.b64encode(bytes(32)).decode(),
    )


def bundle_of(party: dict[str, Any], pre_key_id: int | None) -> PreKeyBundle:
    spk = party["signed_pre_key"]
    pre_key = None
    if pre_key_id is not None:
        (found,) = [k for k in party["pre_keys"] if k["key_id"] == pre_key_id]
        pre_key = PreKey(pre_key_id, h(found["public_key"]))
    return PreKeyBundle(
        registration_id=party["registration_id"],
        identity_key=h(party["identity_key"]),
        signed_pre_key=SignedPreKey(spk["key_id"], h(spk["public_key"]), h(spk["signature"])),
        pre_key=pre_key,
    )


@dataclass
class Side:
    """One scripted party on our side: its auth state, repository and JID."""

    jid: str
    address: str
    auth: PersistedAuth
    repo: SignalRepository

    async def session(self, address: str) -> Any:
        return (await self.auth.keys.get("session", [address])).get(address)


@dataclass
class Replay:
    sides: dict[str, Side]
    draws: Draws
    clock: list[int]


@pytest.fixture
async def replay() -> AsyncIterator[Replay]:
    """Alice and Bob on our side with the vector parties' keys, one key list, one clock."""
    draws = Draws(SESSIONS["random_keys"])
    clock = [0]
    sides: dict[str, Side] = {}
    for name, party in SESSIONS["parties"].items():
        auth = await use_memory_auth_state(f"vector-{name}")
        await auth.keys.set(
            {
                "pre-key": {
                    str(k["key_id"]): {
                        "private": h(k["private"]),
                        "public": public_from_private(h(k["private"])),
                    }
                    for k in party["pre_keys"]
                }
            }
        )
        repo = SignalRepository(
            auth.keys, creds_for(party), clock=lambda: clock[0], new_key_pair=draws
        )
        jid = f"{party['user']}:{party['device']}@s.whatsapp.net"
        sides[name] = Side(jid, party["address"], auth, repo)
    yield Replay(sides, draws, clock)
    for side in sides.values():
        await side.auth.aclose()


def _other(name: str) -> str:
    return "bob" if name == "alice" else "alice"


def _sealed(message: int) -> tuple[str, bytes]:
    step = next(s for s in SESSIONS["steps"] if s["op"] == "encrypt" and s["message"] == message)
    return step["type"], h(step["ciphertext"])


async def test_every_ciphertext_and_session_record_of_the_conversation_is_libsignals(
    replay: Replay,
) -> None:
    """Every pkmsg/msg and the session JSON after every step is byte-identical to libsignal's."""
    for index, step in enumerate(SESSIONS["steps"]):
        replay.clock[0] = step["now"]
        me, peer = replay.sides[step["by"]], replay.sides[_other(step["by"])]
        where = f"step {index} ({step['op']} by {step['by']})"
        if step["op"] == "bundle":
            party = SESSIONS["parties"][_other(step["by"])]
            await me.repo.inject_e2e_session(peer.jid, bundle_of(party, step["pre_key_id"]))
        elif step["op"] == "encrypt":
            kind, ciphertext = await me.repo.encrypt_message(peer.jid, step_plaintext(step))
            assert (kind, ciphertext.hex()) == (step["type"], step["ciphertext"]), where
        else:
            plaintext = await me.repo.decrypt_message(peer.jid, *_sealed(step["message"]))
            assert plaintext == step["plaintext"].encode(), where
        ours = await me.session(peer.address)
        assert ours == step["session"], where
        assert json.dumps(ours) == json.dumps(step["session"]), f"{where}: key order"
    assert replay.draws.count == SESSIONS["keys_drawn"]


def step_plaintext(step: dict[str, Any]) -> bytes:
    """The plaintext an encrypt step sent (the message it decrypts to, at its receiver)."""
    n = step["message"]
    received = next(s for s in SESSIONS["steps"] if s["op"] == "decrypt" and s["message"] == n)
    text: str = received["plaintext"]
    return text.encode()


def test_the_conversation_covers_both_pkmsg_kinds_and_closed_sessions() -> None:
    """The script has pkmsgs with and without a one-time pre-key and a closed session."""
    pkmsgs = [
        parse_pre_key_message(h(s["ciphertext"]))
        for s in SESSIONS["steps"]
        if s["op"] == "encrypt" and s["type"] == "pkmsg"
    ]
    assert {m.pre_key_id for m in pkmsgs} == {9, None}
    assert {m.registration_id for m in pkmsgs} == {SESSIONS["parties"]["alice"]["registration_id"]}
    last = SESSIONS["steps"][-1]["session"]["_sessions"]
    assert sorted(entry["indexInfo"]["closed"] == -1 for entry in last.values()) == [False, True]
    assert SESSIONS["pre_keys_consumed"] == [9]


async def test_the_pkmsg_stores_the_identity_and_consumes_the_pre_key_as_libsignal(
    replay: Replay,
) -> None:
    """Replaying stores Alice's identity at Bob and deletes pre-key 9, as libsignal does."""
    for step in SESSIONS["steps"]:
        replay.clock[0] = step["now"]
        me, peer = replay.sides[step["by"]], replay.sides[_other(step["by"])]
        if step["op"] == "bundle":
            party = SESSIONS["parties"][_other(step["by"])]
            await me.repo.inject_e2e_session(peer.jid, bundle_of(party, step["pre_key_id"]))
        elif step["op"] == "encrypt":
            await me.repo.encrypt_message(peer.jid, step_plaintext(step))
        else:
            await me.repo.decrypt_message(peer.jid, *_sealed(step["message"]))
    bob, alice = replay.sides["bob"], replay.sides["alice"]
    identity = await bob.auth.keys.get("identity-key", [alice.address])
    assert identity == {alice.address: h(SESSIONS["parties"]["alice"]["identity_key"])}
    consumed = [str(k) for k in SESSIONS["pre_keys_consumed"]]
    assert await bob.auth.keys.get("pre-key", consumed) == {}
    with pytest.raises(DuplicateMessage):
        await bob.repo.decrypt_message(alice.jid, *_sealed(12))


# -- groups ----------------------------------------------------------------------------------

NAME = f"{GROUP['group']}::{GROUP['author'].split('.')[0]}::{GROUP['author'].split('.')[1]}"
AUTHOR_JID = "{}:{}@s.whatsapp.net".format(*GROUP["author"].split("."))


def own_record() -> SenderKeyRecord:
    """Our own sender-key record made from the vectors' fixed group keys."""
    record = SenderKeyRecord()
    signing_private = h(GROUP["signing_private"])
    signing = SignalKeyPair(
        signal_public_key(public_from_private(signing_private)), signing_private
    )
    assert signing.public == h(GROUP["signing_public"])
    group_cipher.ensure_own_state(record, GROUP["sender_key_id"], h(GROUP["chain_key"]), signing)
    return record


def test_our_skdm_and_new_record_from_the_same_keys_are_baileys_bytes() -> None:
    """From Baileys' group keys our skdm and new sender-key record are Baileys' bytes."""
    record = own_record()
    assert group_cipher.distribution_message(record, NAME).hex() == GROUP["skdm"]
    assert record.to_bytes() == GROUP["created_record"].encode()
    assert SenderKeyRecord.from_stored(GROUP["created_record"].encode()).to_bytes() == (
        record.to_bytes()
    )


def test_baileys_skmsgs_carry_signatures_stores_keys_verifies() -> None:
    """Every Baileys skmsg's XEdDSA signature verifies under the signing key with stores.keys."""
    public = h(GROUP["signing_public"])
    for message in GROUP["messages"]:
        skmsg = h(message["skmsg"])
        assert verify(public, skmsg[:-GROUP_SIGNATURE], skmsg[-GROUP_SIGNATURE:])
        assert not verify(public, skmsg[:-GROUP_SIGNATURE] + b"\0", skmsg[-GROUP_SIGNATURE:])


async def test_our_receiver_record_after_each_baileys_message_is_baileys_bytes() -> None:
    """Our receiver record after each Baileys skmsg is byte-identical to Baileys' own."""
    auth = await use_memory_auth_state("vector-group")
    try:
        repo = SignalRepository(auth.keys, creds_for(SESSIONS["parties"]["bob"]))
        await repo.process_sender_key_distribution_message(
            GROUP["group"], AUTHOR_JID, h(GROUP["skdm"])
        )
        stored = (await auth.keys.get("sender-key", [NAME]))[NAME]
        assert stored == GROUP["processed_record"].encode()
        for index, message in enumerate(GROUP["messages"]):
            plaintext = await repo.decrypt_group_message(
                GROUP["group"], AUTHOR_JID, h(message["skmsg"])
            )
            assert plaintext == message["plaintext"].encode()
            stored = (await auth.keys.get("sender-key", [NAME]))[NAME]
            assert stored == message["receiver_record"].encode(), f"after message {index}"
    finally:
        await auth.aclose()


def test_baileys_skmsgs_decrypt_in_ours_in_any_order_and_only_once() -> None:
    """Baileys' skmsgs decrypt in our group cipher in any order, each only once."""
    messages = GROUP["messages"]
    for order in (list(reversed(range(len(messages)))), [2, 0, 4, 1, 3]):
        record = SenderKeyRecord()
        group_cipher.process_distribution(record, h(GROUP["skdm"]))
        for index in order:
            plaintext = group_cipher.decrypt(record, NAME, h(messages[index]["skmsg"]))
            assert plaintext == messages[index]["plaintext"].encode()
        for index in order:
            with pytest.raises(DuplicateMessage):
                group_cipher.decrypt(record, NAME, h(messages[index]["skmsg"]))


def _shape(value: Any) -> Any:
    """The JSON shape of a record: keys and value types, lists by their items' shapes."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return sorted({json.dumps(_shape(item)) for item in value})
    return type(value).__name__


def test_our_sender_record_keeps_baileys_shape_and_our_first_skmsg_body_is_baileys() -> None:
    """Our first skmsg's signed part is Baileys'; our sender record has Baileys' JSON shape."""
    record = own_record()
    ours = [group_cipher.encrypt(record, NAME, m["plaintext"].encode()) for m in GROUP["messages"]]
    first = h(GROUP["messages"][0]["skmsg"])
    assert ours[0][:-GROUP_SIGNATURE] == first[:-GROUP_SIGNATURE]
    assert [parse_sender_key_message(m).iteration for m in ours] == [0, 1, 2, 3, 4]
    theirs = [parse_sender_key_message(h(m["skmsg"])).iteration for m in GROUP["messages"]]
    assert theirs == [0, 2, 4, 6, 8]  # Baileys' encrypt skips one iteration per message
    # Baileys keeps the skipped keys (a list of objects); ours keeps none, so compare the
    # state without that list, and the list's item shape against a receiver's record.
    (our_state,) = json.loads(record.to_bytes())
    (baileys_state,) = json.loads(GROUP["messages"][-1]["sender_record"])
    assert _shape({**our_state, "senderMessageKeys": []}) == _shape(
        {**baileys_state, "senderMessageKeys": []}
    )
    assert our_state["senderMessageKeys"] == []
    receiver = SenderKeyRecord()
    group_cipher.process_distribution(
        receiver, group_cipher.distribution_message(own_record(), NAME)
    )
    assert group_cipher.decrypt(receiver, NAME, ours[-1]) == b"g4"  # keeps keys 0-3
    (kept_state,) = json.loads(receiver.to_bytes())
    (baileys_receiver,) = json.loads(GROUP["messages"][-1]["receiver_record"])
    assert len(kept_state["senderMessageKeys"]) == 4
    assert _shape(kept_state) == _shape(baileys_receiver)


# -- the files are what libsignal makes ----------------------------------------------------------


@pytest.mark.peer
def test_committed_vectors_equal_a_fresh_libsignal_run(libsignal_peer: LibsignalPeer) -> None:
    """make_vectors run now under node writes exactly the committed files."""
    fresh = generate(libsignal_peer)
    assert sorted(fresh) == sorted(FILES)
    for name in FILES:
        committed = (VECTORS / name).read_text(encoding="utf-8")
        assert dump(fresh[name]) == committed, f"{name} differs: rerun make_vectors and review"


def test_the_vectors_folder_says_how_it_is_made() -> None:
    """The vectors README names the generator command."""
    readme = (Path(VECTORS) / "README.md").read_text(encoding="utf-8")
    assert "python -m tests.signal.make_vectors" in readme
