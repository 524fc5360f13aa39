"""Our Signal code talking to the reference: libsignal-node and Baileys' group cipher, live.

Every test pairs one of our devices (a ``SignalRepository`` over an auth state) with
parties in the node peer (``tests/signal/libsignal_peer.py``), in both directions:
sessions started by either side (with and without a one-time pre-key), ratchet turns,
out-of-order and late delivery, simultaneous initiation, sender keys with skipped
iterations, XEdDSA, identities, duplicates; and state handed over between the two
implementations (session records and sender-key records, in a multi-file directory too).

Two refusals pinned here belong to the reference, not to us: libsignal-node damages a
session it merely tried (so after a simultaneous start it loses delayed pkmsgs, with
itself too), and Baileys cannot open a late skipped skmsg once its record was reloaded.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from actors.signal import (
    BadMac,
    DuplicateMessage,
    PreKey,
    PreKeyBundle,
    SenderKeyRecord,
    SessionRecord,
    SignalError,
    SignalRepository,
    SignedPreKey,
    TooFarInFuture,
)
from actors.signal.crypto import chain_step, random_key_pair
from actors.signal.repository import SenderKeySeed
from actors.signal.wire import (
    build_pre_key_message,
    parse_pre_key_message,
    parse_sender_key_message,
)
from stores.auth import PersistedAuth, use_memory_auth_state, use_multi_file_auth_state
from stores.creds import AuthCreds, KeyPair, SignedKeyPair, init_auth_creds
from stores.keys import (
    MAX_KEY_ID,
    generate_pre_keys,
    public_from_private,
    sign,
    signal_public_key,
    signed_key_pair,
    verify,
)
from tests.signal.libsignal_peer import LibsignalPeer, PeerError

pytestmark = pytest.mark.peer

GROUP = "120363025246125486@g.us"
Sealed = tuple[str, bytes]
_serial = itertools.count(1)


def fresh_user() -> str:
    """A phone-number user not used before in this run (node party names derive from it)."""
    return f"4915{next(_serial):07d}"


def jid_of(user: str, lid: bool) -> str:
    """Device 1 of ``user``: a phone-number JID, or a LID one."""
    return f"{user}:1@lid" if lid else f"{user}:1@s.whatsapp.net"


def address_of(user: str, lid: bool) -> str:
    """The libsignal address Baileys uses for :func:`jid_of` (LID domain type 1)."""
    return f"{user}_1.1" if lid else f"{user}.1"


# -- the two kinds of party ------------------------------------------------------------------


@dataclass
class Ours:
    """One of our devices: auth state (memory or a multi-file directory), creds, repository."""

    user: str
    auth: PersistedAuth
    creds: AuthCreds
    repo: SignalRepository
    lid: bool = False

    @property
    def jid(self) -> str:
        return jid_of(self.user, self.lid)

    @property
    def address(self) -> str:
        return address_of(self.user, self.lid)

    @property
    def identity(self) -> bytes:
        return signal_public_key(self.creds.signed_identity_key.public)

    async def bundle(self, pre_key_id: int | None = 1) -> dict[str, Any]:
        """This device's bundle in the driver's shape (for node's process_bundle)."""
        spk = self.creds.signed_pre_key
        out: dict[str, Any] = {
            "registration_id": self.creds.registration_id,
            "identity_key": self.identity,
            "signed_pre_key": {
                "key_id": spk.key_id,
                "public_key": signal_public_key(spk.key_pair.public),
                "signature": spk.signature,
            },
        }
        if pre_key_id is not None:
            found = await self.auth.keys.get("pre-key", [str(pre_key_id)])
            public = found[str(pre_key_id)]["public"]
            out["pre_key"] = {"key_id": pre_key_id, "public_key": signal_public_key(public)}
        return out

    async def has_pre_key(self, key_id: int) -> bool:
        return str(key_id) in await self.auth.keys.get("pre-key", [str(key_id)])

    async def stored(self, type_: str, id_: str) -> Any:
        return (await self.auth.keys.get(type_, [id_])).get(id_)

    async def send(self, to: Theirs, plaintext: bytes) -> Sealed:
        sealed: Sealed = await self.repo.encrypt_message(to.jid, plaintext)
        return sealed

    async def receive(self, sender: Theirs, sealed: Sealed) -> bytes:
        plaintext: bytes = await self.repo.decrypt_message(sender.jid, *sealed)
        return plaintext

    def node_keys(self) -> dict[str, Any]:
        """new_party arguments giving a node party exactly this device's keys."""
        return {
            "registration_id": self.creds.registration_id,
            "identity_private": self.creds.signed_identity_key.private,
            "signed_pre_key_id": self.creds.signed_pre_key.key_id,
            "signed_pre_key_private": self.creds.signed_pre_key.key_pair.private,
        }


@dataclass
class Theirs:
    """A party in the node peer: libsignal-node sessions, Baileys' group cipher."""

    peer: LibsignalPeer
    user: str
    party: str
    keys: dict[str, Any]
    lid: bool = False

    @property
    def jid(self) -> str:
        return jid_of(self.user, self.lid)

    @property
    def address(self) -> str:
        return address_of(self.user, self.lid)

    def bundle(self, pre_key_id: int | None = 1) -> PreKeyBundle:
        """This party's bundle as our inject_e2e_session takes it."""
        spk = self.keys["signed_pre_key"]
        pre_key = None
        if pre_key_id is not None:
            (found,) = [k for k in self.keys["pre_keys"] if k["key_id"] == pre_key_id]
            pre_key = PreKey(pre_key_id, found["public_key"])
        return PreKeyBundle(
            registration_id=self.keys["registration_id"],
            identity_key=self.keys["identity_key"],
            signed_pre_key=SignedPreKey(spk["key_id"], spk["public_key"], spk["signature"]),
            pre_key=pre_key,
        )

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        return self.peer.call(op, party=self.party, **args)

    def send(self, to: Ours | Theirs, plaintext: bytes) -> Sealed:
        reply = self.call("encrypt", address=to.address, plaintext=plaintext)
        return reply["type"], reply["ciphertext"]

    def receive(self, sender: Ours | Theirs, sealed: Sealed) -> bytes:
        reply = self.call("decrypt", address=sender.address, type=sealed[0], ciphertext=sealed[1])
        plaintext: bytes = reply["plaintext"]
        return plaintext

    def session(self, of: Ours | Theirs) -> Any:
        return self.call("get_session", address=of.address)["session"]

    # groups: Baileys' sender keys, named by (GROUP, author address)
    def group_encrypt(self, plaintext: bytes) -> tuple[bytes, bytes]:
        reply = self.call("group_encrypt", group=GROUP, author=self.address, plaintext=plaintext)
        return reply["skdm"], reply["ciphertext"]

    def group_process(self, author: Ours | Theirs, skdm: bytes) -> None:
        self.call("group_process", group=GROUP, author=author.address, skdm=skdm)

    def group_decrypt(self, author: Ours | Theirs, skmsg: bytes) -> bytes:
        reply = self.call("group_decrypt", group=GROUP, author=author.address, ciphertext=skmsg)
        plaintext: bytes = reply["plaintext"]
        return plaintext


OpenOurs = Callable[..., Awaitable[Ours]]


@pytest.fixture
async def ours(tmp_path: Path) -> AsyncIterator[OpenOurs]:
    """Open our devices (memory, or a multi-file directory); closed at the test's end."""
    opened: list[Ours] = []

    async def opener(
        *,
        creds: AuthCreds | None = None,
        directory: Path | None = None,
        user: str | None = None,
        lid: bool = False,
    ) -> Ours:
        user = user or fresh_user()
        if directory is None:
            auth = await use_memory_auth_state(user)
        else:
            auth = await use_multi_file_auth_state(directory)
        creds = creds or init_auth_creds()
        if not await auth.keys.get("pre-key", ["1", "2", "3"]):  # a reopened directory keeps its
            await auth.keys.set({"pre-key": generate_pre_keys(1, 3)})
        device = Ours(user, auth, creds, SignalRepository(auth.keys, creds), lid)
        opened.append(device)
        return device

    yield opener
    for device in opened:
        await device.auth.aclose()  # closing twice is harmless


def theirs(
    peer: LibsignalPeer, *, user: str | None = None, lid: bool = False, **keys: Any
) -> Theirs:
    """A new node party with one-time pre-keys 1-3 (or the given fixed keys)."""
    user = user or fresh_user()
    party = f"node-{user}-{next(_serial)}"
    keys.setdefault("pre_keys", [{"id": 1}, {"id": 2}, {"id": 3}])
    reply = peer.call("new_party", party=party, **keys)
    return Theirs(peer, user, party, reply, lid)


def node_bundle(node: Theirs, pre_key_id: int | None = 1) -> dict[str, Any]:
    """A node party's bundle in the driver's shape (for another node party)."""
    bundle = {k: node.keys[k] for k in ("registration_id", "identity_key", "signed_pre_key")}
    if pre_key_id is not None:
        (bundle["pre_key"],) = [k for k in node.keys["pre_keys"] if k["key_id"] == pre_key_id]
    return bundle


def creds_from_node(node: Theirs) -> AuthCreds:
    """Our creds holding exactly a node party's identity, signed pre-key and registration id."""
    keys = node.call("party_keys")
    identity = KeyPair(
        private=keys["identity_private"], public=public_from_private(keys["identity_private"])
    )
    spk = keys["signed_pre_key"]
    signed = SignedKeyPair(
        key_pair=KeyPair(
            private=spk["private_key"], public=public_from_private(spk["private_key"])
        ),
        signature=spk["signature"],
        key_id=spk["key_id"],
    )
    base = init_auth_creds()
    base.signed_identity_key = identity
    base.signed_pre_key = signed
    base.registration_id = keys["registration_id"]
    return base


async def talk(me: Ours, node: Theirs, rounds: int = 3, per_turn: int = 2) -> None:
    """Ratchet turns: each side sends ``per_turn`` messages and the other reads them."""
    for r in range(rounds):
        for n in range(per_turn):
            sealed = await me.send(node, b"ours %d.%d" % (r, n))
            assert sealed[0] == "msg"
            assert node.receive(me, sealed) == b"ours %d.%d" % (r, n)
        for n in range(per_turn):
            sealed = node.send(me, b"node %d.%d" % (r, n))
            assert sealed[0] == "msg"
            assert await me.receive(node, sealed) == b"node %d.%d" % (r, n)


# -- 1:1 sessions -----------------------------------------------------------------------------

PRE_KEY = pytest.mark.parametrize("pre_key", [1, None], ids=["one-time-pre-key", "no-pre-key"])


@PRE_KEY
async def test_node_starts_the_session_we_decrypt_its_pkmsgs_and_talk(
    libsignal_peer: LibsignalPeer, ours: OpenOurs, pre_key: int | None
) -> None:
    """libsignal's pkmsgs decrypt here (identity stored, pre-key used), then ratchet turns."""
    me, node = await ours(), theirs(libsignal_peer)
    node.call("process_bundle", address=me.address, bundle=await me.bundle(pre_key))
    first, second = node.send(me, b"one"), node.send(me, b"two")
    assert (first[0], second[0]) == ("pkmsg", "pkmsg")
    parsed = parse_pre_key_message(first[1])
    assert (parsed.pre_key_id, parsed.registration_id) == (pre_key, node.keys["registration_id"])
    assert await me.receive(node, first) == b"one"
    assert await me.receive(node, second) == b"two"
    assert await me.stored("identity-key", node.address) == node.keys["identity_key"]
    assert await me.has_pre_key(1) is (pre_key is None)
    assert await me.has_pre_key(2)
    await talk(me, node)
    assert node.call("has_open_session", address=me.address)["open"] is True


@PRE_KEY
async def test_we_start_the_session_node_decrypts_our_pkmsgs_and_talks(
    libsignal_peer: LibsignalPeer, ours: OpenOurs, pre_key: int | None
) -> None:
    """Our pkmsgs decrypt in libsignal (identity stored, pre-key used), then ratchet turns."""
    me, node = await ours(), theirs(libsignal_peer)
    await me.repo.inject_e2e_session(node.jid, node.bundle(pre_key))
    first, second = await me.send(node, b"one"), await me.send(node, b"two")
    assert (first[0], second[0]) == ("pkmsg", "pkmsg")
    assert parse_pre_key_message(first[1]).registration_id == me.creds.registration_id
    assert node.receive(me, first) == b"one"
    assert node.receive(me, second) == b"two"
    assert node.call("get_identity", address=me.address)["identity_key"] == me.identity
    assert node.call("has_pre_key", key_id=1)["present"] is (pre_key is None)
    assert node.call("has_pre_key", key_id=2)["present"] is True
    reply = node.send(me, b"reply")
    assert reply[0] == "msg"
    assert await me.receive(node, reply) == b"reply"
    await talk(me, node)


@pytest.mark.parametrize("sender", ["node", "ours"])
async def test_out_of_order_delivery_across_ratchet_steps(
    libsignal_peer: LibsignalPeer, ours: OpenOurs, sender: str
) -> None:
    """Shuffled pkmsgs and msgs of two chains decrypt at the receiver; repeats are refused."""
    me, node = await ours(), theirs(libsignal_peer)

    async def send(text: bytes, *, from_sender: bool = True) -> Sealed:
        if (sender == "node") == from_sender:
            return node.send(me, text)
        return await me.send(node, text)

    async def receive(sealed: Sealed, *, by_receiver: bool = True) -> bytes:
        if (sender == "node") == by_receiver:
            return await me.receive(node, sealed)
        return node.receive(me, sealed)

    if sender == "node":
        node.call("process_bundle", address=me.address, bundle=await me.bundle())
    else:
        await me.repo.inject_e2e_session(node.jid, node.bundle())
    pkmsgs = [await send(b"pk%d" % n) for n in range(3)]
    assert {kind for kind, _ in pkmsgs} == {"pkmsg"}
    for n in (2, 0, 1):
        assert await receive(pkmsgs[n]) == b"pk%d" % n
    ack = await send(b"ack", from_sender=False)
    assert await receive(ack, by_receiver=False) == b"ack"
    early = [await send(b"early%d" % n) for n in range(2)]
    step = await send(b"step", from_sender=False)
    assert await receive(step, by_receiver=False) == b"step"
    late = [await send(b"late%d" % n) for n in range(4)]
    assert {kind for kind, _ in early + late} == {"msg"}
    order = [(late, 3), (early, 1), (late, 0), (early, 0), (late, 2), (late, 1)]
    for batch, n in order:
        name = b"late" if batch is late else b"early"
        assert await receive(batch[n]) == name + b"%d" % n
    for sealed in (pkmsgs[0], early[0], late[3]):
        with pytest.raises((DuplicateMessage, PeerError)):
            await receive(sealed)
    # The session goes on after the refusals.
    assert await receive(await send(b"after")) == b"after"
    assert await receive(await send(b"back", from_sender=False), by_receiver=False) == b"back"


async def test_duplicates_are_refused_on_both_sides(
    libsignal_peer: LibsignalPeer, ours: OpenOurs
) -> None:
    """A pkmsg or msg delivered twice is refused by both sides, leaving the session as it was."""
    me, node = await ours(), theirs(libsignal_peer)
    await me.repo.inject_e2e_session(node.jid, node.bundle())
    pkmsg = await me.send(node, b"pk")
    assert node.receive(me, pkmsg) == b"pk"
    with pytest.raises(PeerError) as dup_pkmsg:
        node.receive(me, pkmsg)
    assert dup_pkmsg.value.error == "MessageCounterError"
    from_node = node.send(me, b"msg from node")
    assert await me.receive(node, from_node) == b"msg from node"
    before = await me.stored("session", node.address)
    with pytest.raises(DuplicateMessage):
        await me.receive(node, from_node)
    assert await me.stored("session", node.address) == before
    from_us = await me.send(node, b"msg from us")
    assert node.receive(me, from_us) == b"msg from us"
    node_before = node.session(me)
    with pytest.raises(PeerError) as dup_msg:
        node.receive(me, from_us)
    assert dup_msg.value.error == "SessionError"
    assert node.session(me) == node_before

    # And the other way round: node's pkmsg twice at ours.
    other, node2 = await ours(), theirs(libsignal_peer)
    node2.call("process_bundle", address=other.address, bundle=await other.bundle())
    pkmsg = node2.send(other, b"pk")
    assert await other.receive(node2, pkmsg) == b"pk"
    with pytest.raises(DuplicateMessage):
        await other.receive(node2, pkmsg)


@pytest.mark.parametrize("sender", ["node", "ours"])
async def test_a_pkmsg_delivered_after_the_ratchet_moved_on_still_decrypts(
    libsignal_peer: LibsignalPeer, ours: OpenOurs, sender: str
) -> None:
    """A pkmsg delivered after the reply and a ratchet step decrypts from its kept key."""
    me, node = await ours(), theirs(libsignal_peer)
    if sender == "node":
        node.call("process_bundle", address=me.address, bundle=await me.bundle())
        first, second = node.send(me, b"pk0"), node.send(me, b"pk1")
        assert await me.receive(node, first) == b"pk0"
        assert node.receive(me, await me.send(node, b"reply")) == b"reply"
        assert await me.receive(node, node.send(me, b"next turn")) == b"next turn"
        assert await me.receive(node, second) == b"pk1"
        with pytest.raises(DuplicateMessage):
            await me.receive(node, second)
    else:
        await me.repo.inject_e2e_session(node.jid, node.bundle())
        first, second = await me.send(node, b"pk0"), await me.send(node, b"pk1")
        assert node.receive(me, first) == b"pk0"
        assert await me.receive(node, node.send(me, b"reply")) == b"reply"
        assert node.receive(me, await me.send(node, b"next turn")) == b"next turn"
        assert node.receive(me, second) == b"pk1"
        with pytest.raises(PeerError):
            node.receive(me, second)
    assert second[0] == "pkmsg"


@pytest.mark.parametrize("sender", ["node", "ours"])
async def test_both_refuse_a_counter_over_2000_ahead_and_take_2000(
    libsignal_peer: LibsignalPeer, ours: OpenOurs, sender: str
) -> None:
    """A msg over 2,000 ahead is refused, changing nothing; 2,000 ahead decrypts, then it too."""
    me, node = await ours(), theirs(libsignal_peer)
    await me.repo.inject_e2e_session(node.jid, node.bundle())
    assert node.receive(me, await me.send(node, b"hello")) == b"hello"
    assert await me.receive(node, node.send(me, b"hi")) == b"hi"
    if sender == "node":
        sealed = [node.send(me, b"n%d" % n) for n in range(2001)]
        before = await me.stored("session", node.address)
        with pytest.raises(TooFarInFuture):
            await me.receive(node, sealed[2000])
        assert await me.stored("session", node.address) == before
        assert await me.receive(node, sealed[1999]) == b"n1999"
        assert await me.receive(node, sealed[2000]) == b"n2000"
    else:
        sealed = [await me.send(node, b"o%d" % n) for n in range(2001)]
        before = node.session(me)
        with pytest.raises(PeerError, match="No matching sessions"):  # its 'Over 2000' wrapped
            node.receive(me, sealed[2000])
        assert node.session(me) == before
        assert node.receive(me, sealed[1999]) == b"o1999"
        assert node.receive(me, sealed[2000]) == b"o2000"


@pytest.mark.parametrize("initiator", ["node", "ours"])
async def test_both_keep_the_same_40_sessions_after_41_restarts(
    libsignal_peer: LibsignalPeer, ours: OpenOurs, initiator: str
) -> None:
    """41 sessions started one after another: both records keep the same 40 (oldest dropped)."""
    me, node = await ours(), theirs(libsignal_peer)
    for n in range(41):
        if initiator == "node":
            node.call("process_bundle", address=me.address, bundle=await me.bundle(None))
            assert await me.receive(node, node.send(me, b"s%d" % n)) == b"s%d" % n
        else:
            await me.repo.inject_e2e_session(node.jid, node.bundle(None))
            assert node.receive(me, await me.send(node, b"s%d" % n)) == b"s%d" % n
    ours_keys = list((await me.stored("session", node.address))["_sessions"])
    node_keys = list(node.session(me)["_sessions"])
    assert len(ours_keys) == 40
    assert ours_keys == node_keys


def _broken_mac(pkmsg: bytes) -> bytes:
    """The pkmsg with the last MAC byte of its inner msg flipped."""
    parsed = parse_pre_key_message(pkmsg)
    inner = parsed.message[:-1] + bytes([parsed.message[-1] ^ 1])
    return build_pre_key_message(dataclasses.replace(parsed, message=inner))


async def test_a_tampered_pkmsg_is_refused_and_consumes_nothing_on_either_side(
    libsignal_peer: LibsignalPeer, ours: OpenOurs
) -> None:
    """A pkmsg with a broken MAC stores no session and keeps the pre-key, here and in libsignal."""
    me, node = await ours(), theirs(libsignal_peer)
    node.call("process_bundle", address=me.address, bundle=await me.bundle(1))
    genuine = node.send(me, b"genuine")
    with pytest.raises(SignalError):
        await me.receive(node, ("pkmsg", _broken_mac(genuine[1])))
    assert await me.stored("session", node.address) is None
    assert await me.has_pre_key(1)
    assert await me.receive(node, genuine) == b"genuine"

    await me.repo.inject_e2e_session(node.jid, node.bundle(2))
    ours_genuine = await me.send(node, b"ours")
    with pytest.raises(PeerError):
        node.receive(me, ("pkmsg", _broken_mac(ours_genuine[1])))
    assert node.call("has_pre_key", key_id=2)["present"] is True
    assert node.receive(me, ours_genuine) == b"ours"
    assert node.call("has_pre_key", key_id=2)["present"] is False


@pytest.mark.parametrize(
    ("registration_id", "key_id", "pre_key_id", "sender_key_id"),
    [(0, 0, None, 0), (16383, MAX_KEY_ID, MAX_KEY_ID, 2**31 - 2)],
    ids=["zero", "largest"],
)
async def test_zero_and_largest_ids_cross_both_ways(
    libsignal_peer: LibsignalPeer,
    ours: OpenOurs,
    registration_id: int,
    key_id: int,
    pre_key_id: int | None,
    sender_key_id: int,
) -> None:
    """Registration, signed/one-time pre-key and sender-key ids at 0 or their maximum cross."""
    creds = init_auth_creds()
    creds.registration_id = registration_id
    creds.signed_pre_key = signed_key_pair(creds.signed_identity_key, key_id)
    me = await ours(creds=creds)
    seed = SenderKeySeed(sender_key_id, b"\x01" * 32, random_key_pair())
    me.repo = SignalRepository(me.auth.keys, creds, new_sender_key=lambda: seed)
    pre_keys = [] if pre_key_id is None else [{"id": pre_key_id}]
    node = theirs(
        libsignal_peer, registration_id=registration_id, signed_pre_key_id=key_id, pre_keys=pre_keys
    )
    if pre_key_id is not None:
        await me.auth.keys.set({"pre-key": generate_pre_keys(pre_key_id, 1)})

    node.call("process_bundle", address=me.address, bundle=await me.bundle(pre_key_id))
    sealed = node.send(me, b"to us")
    parsed = parse_pre_key_message(sealed[1])
    assert (parsed.registration_id, parsed.signed_pre_key_id) == (registration_id, key_id)
    assert parsed.pre_key_id == pre_key_id
    assert await me.receive(node, sealed) == b"to us"

    other = await ours(creds=creds)
    await other.repo.inject_e2e_session(node.jid, node.bundle(pre_key_id))
    sealed = await other.send(node, b"to node")
    parsed = parse_pre_key_message(sealed[1])
    assert (parsed.registration_id, parsed.signed_pre_key_id) == (registration_id, key_id)
    assert node.receive(other, sealed) == b"to node"

    skdm, message = await me.repo.encrypt_group_message(GROUP, me.jid, b"group")
    assert parse_sender_key_message(message).key_id == sender_key_id
    node.group_process(me, skdm)
    assert node.group_decrypt(me, message) == b"group"
    libsignal_peer.call("set_group_keys", sender_key_id=sender_key_id)
    skdm, message = node.group_encrypt(b"from baileys")
    assert parse_sender_key_message(message).key_id == sender_key_id
    await me.repo.process_sender_key_distribution_message(GROUP, node.jid, skdm)
    assert await me.repo.decrypt_group_message(GROUP, node.jid, message) == b"from baileys"


async def test_a_one_time_pre_key_with_id_0_is_unusable_here_unlike_libsignal(
    libsignal_peer: LibsignalPeer, ours: OpenOurs
) -> None:
    """Pinned difference: pre-key id 0 is left out of pkmsgs; libsignal reads it back, we don't."""
    # libsignal writes preKeyId only when truthy and reads an absent one as protobufjs' default
    # 0, so its receiver holding pre-key 0 uses it (and then fails every pkmsg made without a
    # one-time pre-key). We read "absent" as none. Neither Baileys nor we make pre-key id 0.
    me, node = await ours(), theirs(libsignal_peer, pre_keys=[{"id": 0}])
    await me.auth.keys.set({"pre-key": generate_pre_keys(0, 1)})
    node.call("process_bundle", address=me.address, bundle=await me.bundle(0))
    sealed = node.send(me, b"pre-key 0")
    assert parse_pre_key_message(sealed[1]).pre_key_id is None
    with pytest.raises(BadMac):
        await me.receive(node, sealed)
    assert await me.has_pre_key(0)

    other = await ours()
    await other.repo.inject_e2e_session(node.jid, node.bundle(0))
    sealed = await other.send(node, b"pre-key 0")
    assert parse_pre_key_message(sealed[1]).pre_key_id is None
    assert node.receive(other, sealed) == b"pre-key 0"  # libsignal takes its pre-key 0 anyway
    assert node.call("has_pre_key", key_id=0)["present"] is True  # ...and never removes it


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 1000, 70_000])
async def test_plaintexts_of_every_length_cross_both_ways(
    libsignal_peer: LibsignalPeer, ours: OpenOurs, size: int
) -> None:
    """Empty, block-sized and large plaintexts survive AES-CBC padding in either direction."""
    me, node = await ours(), theirs(libsignal_peer)
    await me.repo.inject_e2e_session(node.jid, node.bundle())
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert node.receive(me, await me.send(node, data)) == data
    assert await me.receive(node, node.send(me, data[::-1])) == data[::-1]


def _simultaneous_start(
    a_send: Callable[[bytes], Any], b_send: Callable[[bytes], Any]
) -> tuple[list[Any], list[Any]]:
    """Each side sends two pkmsgs on the session it started itself."""
    return [a_send(b"a1"), a_send(b"a2")], [b_send(b"b1"), b_send(b"b2")]


async def test_simultaneous_initiation_old_sessions_keep_decrypting(
    libsignal_peer: LibsignalPeer, ours: OpenOurs
) -> None:
    """Simultaneous start: after both replies, in-flight messages of the older sessions decrypt."""
    me, node = await ours(), theirs(libsignal_peer)
    await me.repo.inject_e2e_session(node.jid, node.bundle(1))
    node.call("process_bundle", address=me.address, bundle=await me.bundle(1))
    ours_first, ours_delayed = await me.send(node, b"o1"), await me.send(node, b"o2")
    node_first, node_delayed = node.send(me, b"n1"), node.send(me, b"n2")
    assert {ours_first[0], ours_delayed[0], node_first[0], node_delayed[0]} == {"pkmsg"}
    ours_base = parse_pre_key_message(ours_first[1]).base_key

    assert node.receive(me, ours_first) == b"o1"
    assert await me.receive(node, node_first) == b"n1"
    # Each side now holds both sessions, its own closed; each sends on the other's.
    ours_reply, node_reply = await me.send(node, b"o-reply"), node.send(me, b"n-reply")
    ours_late, node_late = await me.send(node, b"o-late"), node.send(me, b"n-late")
    assert ours_reply[0] == node_reply[0] == "msg"
    assert node.receive(me, ours_reply) == b"o-reply"
    before = SessionRecord.from_plain(await me.stored("session", node.address))
    assert await me.receive(node, node_reply) == b"n-reply"  # tries the newer session first
    after = SessionRecord.from_plain(await me.stored("session", node.address))
    (tried,) = [key for key in before.sessions if key != ours_base]
    assert SessionRecord({tried: after.sessions[tried]}).to_plain() == (
        SessionRecord({tried: before.sessions[tried]}).to_plain()
    )

    # Late and delayed messages of both sessions, after both replies.
    assert await me.receive(node, node_late) == b"n-late"  # on our own, closed session
    assert await me.receive(node, node_delayed) == b"n2"  # pkmsg on the session node started
    assert node.receive(me, ours_late) == b"o-late"  # on node's own, closed session
    # libsignal cannot open our delayed pkmsg any more: its failed trial of o-reply on this
    # session closed the chain in place (libsignal does the same to itself, see below).
    with pytest.raises(PeerError, match="Chain closed"):
        node.receive(me, ours_delayed)
    assert len(SessionRecord.from_plain(await me.stored("session", node.address)).sessions) == 2


async def test_simultaneous_initiation_delayed_pkmsgs_decrypt_in_libsignal_before_a_trial(
    libsignal_peer: LibsignalPeer, ours: OpenOurs
) -> None:
    """Simultaneous start: delayed pkmsgs delivered before the replies decrypt on both sides."""
    me, node = await ours(), theirs(libsignal_peer)
    await me.repo.inject_e2e_session(node.jid, node.bundle(2))
    node.call("process_bundle", address=me.address, bundle=await me.bundle(2))
    ours_first, ours_delayed = await me.send(node, b"o1"), await me.send(node, b"o2")
    node_first, node_delayed = node.send(me, b"n1"), node.send(me, b"n2")
    assert node.receive(me, ours_first) == b"o1"
    assert await me.receive(node, node_first) == b"n1"
    ours_reply, node_reply = await me.send(node, b"o-reply"), node.send(me, b"n-reply")
    assert node.receive(me, ours_delayed) == b"o2"
    assert await me.receive(node, node_delayed) == b"n2"
    assert node.receive(me, ours_reply) == b"o-reply"
    assert await me.receive(node, node_reply) == b"n-reply"


def test_simultaneous_initiation_libsignal_with_itself_loses_delayed_pkmsgs(
    libsignal_peer: LibsignalPeer,
) -> None:
    """libsignal with itself fails a delayed pkmsg of a simultaneous start after the replies."""
    # Why: SessionCipher.decryptWithSessions tries each session in place, not on a copy. The
    # reply (on the receiver's own session) is tried first on the newer session, whose
    # maybeStepRatchet closes the chain the delayed pkmsg needs; the record is then stored
    # because the next session succeeded. Ours tries sessions on copies (session_cipher.py).
    a, b = theirs(libsignal_peer), theirs(libsignal_peer)
    a.call("process_bundle", address=b.address, bundle=node_bundle(b))
    b.call("process_bundle", address=a.address, bundle=node_bundle(a))
    (a1, a2), (b1, b2) = _simultaneous_start(lambda t: a.send(b, t), lambda t: b.send(a, t))
    assert b.receive(a, a1) == b"a1"
    assert a.receive(b, b1) == b"b1"
    a_reply, b_reply = a.send(b, b"a-reply"), b.send(a, b"b-reply")
    assert b.receive(a, a_reply) == b"a-reply"
    assert a.receive(b, b_reply) == b"b-reply"
    for receiver, sender, delayed in ((b, a, a2), (a, b, b2)):
        with pytest.raises(PeerError, match="Chain closed"):
            receiver.receive(sender, delayed)


async def test_a_new_session_from_libsignal_replaces_ours_and_old_messages_still_decrypt(
    libsignal_peer: LibsignalPeer, ours: OpenOurs
) -> None:
    """libsignal starting over replaces our open session; its old-session message decrypts."""
    me, node = await ours(), theirs(libsignal_peer)
    node.call("process_bundle", address=me.address, bundle=await me.bundle(1))
    assert await me.receive(node, node.send(me, b"old")) == b"old"
    await talk(me, node, rounds=1)
    late = node.send(me, b"late on the old session")
    node.call("process_bundle", address=me.address, bundle=await me.bundle(None))
    restart = node.send(me, b"new session")
    assert restart[0] == "pkmsg"
    assert await me.receive(node, restart) == b"new session"
    record = SessionRecord.from_plain(await me.stored("session", node.address))
    assert [entry.is_closed for entry in record.sessions.values()] == [True, False]
    assert await me.receive(node, late) == b"late on the old session"
    await talk(me, node, rounds=2)


async def test_a_new_session_from_us_replaces_libsignals_and_old_messages_still_decrypt(
    libsignal_peer: LibsignalPeer, ours: OpenOurs
) -> None:
    """Our starting over replaces libsignal's open session; our old-session message decrypts."""
    me, node = await ours(), theirs(libsignal_peer)
    await me.repo.inject_e2e_session(node.jid, node.bundle(1))
    assert node.receive(me, await me.send(node, b"old")) == b"old"
    assert await me.receive(node, node.send(me, b"ack")) == b"ack"
    await talk(me, node, rounds=1)
    late = await me.send(node, b"late on the old session")
    await me.repo.inject_e2e_session(node.jid, node.bundle(2))
    restart = await me.send(node, b"new session")
    assert restart[0] == "pkmsg"
    assert node.receive(me, restart) == b"new session"
    reply = node.send(me, b"on the new one")
    assert await me.receive(node, reply) == b"on the new one"
    assert node.receive(me, late) == b"late on the old session"
    closed = [e["indexInfo"]["closed"] == -1 for e in node.session(me)["_sessions"].values()]
    assert closed == [False, True]


async def test_a_reinstalled_libsignal_device_replaces_the_identity_here(
    libsignal_peer: LibsignalPeer, ours: OpenOurs
) -> None:
    """A libsignal device with a new identity: stored here, old session dropped, talk goes on."""
    me, old = await ours(), theirs(libsignal_peer)
    old.call("process_bundle", address=me.address, bundle=await me.bundle(1))
    assert await me.receive(old, old.send(me, b"before")) == b"before"
    new = theirs(libsignal_peer, user=old.user)
    assert new.keys["identity_key"] != old.keys["identity_key"]
    new.call("process_bundle", address=me.address, bundle=await me.bundle(2))
    assert await me.receive(new, new.send(me, b"after")) == b"after"
    assert await me.stored("identity-key", new.address) == new.keys["identity_key"]
    assert len(SessionRecord.from_plain(await me.stored("session", new.address)).sessions) == 1
    assert new.receive(me, await me.send(new, b"welcome back")) == b"welcome back"


async def test_a_reinstalled_device_of_ours_replaces_the_identity_in_libsignal(
    libsignal_peer: LibsignalPeer, ours: OpenOurs
) -> None:
    """Our device with new creds: libsignal stores the new identity and the talk goes on."""
    old, node = await ours(), theirs(libsignal_peer)
    await old.repo.inject_e2e_session(node.jid, node.bundle(1))
    assert node.receive(old, await old.send(node, b"before")) == b"before"
    new = await ours(user=old.user)
    await new.repo.inject_e2e_session(node.jid, node.bundle(2))
    assert node.receive(new, await new.send(node, b"after")) == b"after"
    assert node.call("get_identity", address=new.address)["identity_key"] == new.identity
    assert len(node.session(new)["_sessions"]) == 1
    assert await new.receive(node, node.send(new, b"welcome back")) == b"welcome back"


async def test_lid_addresses_name_the_same_session_and_sender_key_as_baileys(
    libsignal_peer: LibsignalPeer, ours: OpenOurs
) -> None:
    """LID JIDs: sessions work both ways and sender-key records share Baileys' name."""
    me, node = await ours(lid=True), theirs(libsignal_peer, lid=True)
    assert (me.address, node.address) == (f"{me.user}_1.1", f"{node.user}_1.1")
    await me.repo.inject_e2e_session(node.jid, node.bundle(1))
    assert node.receive(me, await me.send(node, b"lid")) == b"lid"
    assert await me.receive(node, node.send(me, b"ack")) == b"ack"
    await talk(me, node, rounds=1)
    assert await me.stored("session", node.address) is not None
    assert node.session(me) is not None

    skdm, message = await me.repo.encrypt_group_message(GROUP, me.jid, b"lid group")
    node.group_process(me, skdm)
    assert node.group_decrypt(me, message) == b"lid group"
    stored = node.call("get_sender_key", group=GROUP, author=me.address)["record"]
    assert _sender_key_name(me) == f"{GROUP}::{me.user}_1::1"
    member = await ours(lid=True)
    await member.auth.keys.set({"sender-key": {_sender_key_name(me): stored}})
    _, newer = await me.repo.encrypt_group_message(GROUP, me.jid, b"newer")
    assert await member.repo.decrypt_group_message(GROUP, me.jid, newer) == b"newer"
    assert await me.stored("sender-key", _sender_key_name(me)) is not None


# -- sender keys ------------------------------------------------------------------------------


async def test_our_sender_key_messages_decrypt_in_baileys_with_skipped_iterations(
    libsignal_peer: LibsignalPeer, ours: OpenOurs
) -> None:
    """Baileys decrypts our skmsgs in order and across gaps; repeats refused; late joiners too."""
    me, node = await ours(), theirs(libsignal_peer)
    sealed = [await me.repo.encrypt_group_message(GROUP, me.jid, b"g%d" % n) for n in range(8)]
    skdm = sealed[0][0]
    assert [parse_sender_key_message(m).iteration for _, m in sealed] == list(range(8))
    node.group_process(me, skdm)
    for n in (0, 1, 3, 6):  # 2, 4 and 5 never arrive
        assert node.group_decrypt(me, sealed[n][1]) == b"g%d" % n
    with pytest.raises(PeerError, match="old counter"):
        node.group_decrypt(me, sealed[6][1])
    assert node.group_decrypt(me, sealed[7][1]) == b"g7"

    late = theirs(libsignal_peer)
    newer = await me.repo.get_sender_key_distribution_message(GROUP, me.jid)
    late.group_process(me, newer)
    _, message = await me.repo.encrypt_group_message(GROUP, me.jid, b"for the newcomer")
    assert late.group_decrypt(me, message) == b"for the newcomer"
    assert node.group_decrypt(me, message) == b"for the newcomer"


async def test_baileys_decrypts_our_skipped_skmsg_late_only_where_baileys_can(
    libsignal_peer: LibsignalPeer, ours: OpenOurs
) -> None:
    """Our late skipped skmsg fails in Baileys only by its own reload quirk; in order it works."""
    me, node = await ours(), theirs(libsignal_peer)
    sealed = [await me.repo.encrypt_group_message(GROUP, me.jid, b"g%d" % n) for n in range(3)]
    node.group_process(me, sealed[0][0])
    assert node.group_decrypt(me, sealed[2][1]) == b"g2"
    with pytest.raises(PeerError) as late:
        node.group_decrypt(me, sealed[0][1])
    assert (late.value.error, late.value.message) == (
        "TypeError",
        "Expected Buffer instead of: Object",
    )
    # A fresh Baileys receiver taking our messages in order never needs a kept key.
    fresh = theirs(libsignal_peer)
    fresh.group_process(me, sealed[0][0])
    assert [fresh.group_decrypt(me, m) for _, m in sealed] == [b"g0", b"g1", b"g2"]


async def test_baileys_sender_key_messages_decrypt_here_in_any_order(
    libsignal_peer: LibsignalPeer, ours: OpenOurs
) -> None:
    """Baileys' skmsgs decrypt here shuffled and backwards; each one again is a duplicate."""
    me, node = await ours(), theirs(libsignal_peer)
    sealed = [node.group_encrypt(b"b%d" % n) for n in range(6)]
    skdm = sealed[0][0]
    await me.repo.process_sender_key_distribution_message(GROUP, node.jid, skdm)
    for n in (3, 0, 5, 2, 1, 4):
        assert await me.repo.decrypt_group_message(GROUP, node.jid, sealed[n][1]) == b"b%d" % n
    for _, message in sealed:
        with pytest.raises(DuplicateMessage):
            await me.repo.decrypt_group_message(GROUP, node.jid, message)


async def test_a_group_both_ways_with_both_implementations_as_members(
    libsignal_peer: LibsignalPeer, ours: OpenOurs
) -> None:
    """Two of ours and two Baileys members: every skmsg decrypts at every other member."""
    mine = [await ours(), await ours()]
    nodes = [theirs(libsignal_peer), theirs(libsignal_peer)]
    for round_ in range(2):
        for ours_sender in mine:
            text = b"%s %d" % (ours_sender.user.encode(), round_)
            skdm, message = await ours_sender.repo.encrypt_group_message(
                GROUP, ours_sender.jid, text
            )
            for node in nodes:
                node.group_process(ours_sender, skdm)
                assert node.group_decrypt(ours_sender, message) == text
            for other in mine:
                if other is not ours_sender:
                    repo = other.repo
                    await repo.process_sender_key_distribution_message(GROUP, ours_sender.jid, skdm)
                    assert await repo.decrypt_group_message(GROUP, ours_sender.jid, message) == text
        for node_sender in nodes:
            text = b"%s %d" % (node_sender.user.encode(), round_)
            skdm, message = node_sender.group_encrypt(text)
            for node in nodes:
                if node is not node_sender:
                    node.group_process(node_sender, skdm)
                    assert node.group_decrypt(node_sender, message) == text
            for member in mine:
                repo = member.repo
                await repo.process_sender_key_distribution_message(GROUP, node_sender.jid, skdm)
                assert await repo.decrypt_group_message(GROUP, node_sender.jid, message) == text


async def test_a_tampered_skmsg_is_refused_on_both_sides(
    libsignal_peer: LibsignalPeer, ours: OpenOurs
) -> None:
    """An skmsg whose signed part changed fails signature verification in Baileys and here."""
    me, node = await ours(), theirs(libsignal_peer)
    skdm, message = await me.repo.encrypt_group_message(GROUP, me.jid, b"signed")
    node.group_process(me, skdm)
    bad = message[:-70] + bytes([message[-70] ^ 1]) + message[-69:]
    with pytest.raises(PeerError):
        node.group_decrypt(me, bad)
    assert node.group_decrypt(me, message) == b"signed"
    node_skdm, node_message = node.group_encrypt(b"theirs")
    await me.repo.process_sender_key_distribution_message(GROUP, node.jid, node_skdm)
    bad = node_message[:-70] + bytes([node_message[-70] ^ 1]) + node_message[-69:]
    with pytest.raises(SignalError):
        await me.repo.decrypt_group_message(GROUP, node.jid, bad)
    assert await me.repo.decrypt_group_message(GROUP, node.jid, node_message) == b"theirs"


@pytest.mark.parametrize("sender", ["node", "ours"])
async def test_a_recreated_sender_key_is_taken_and_the_old_one_still_decrypts(
    libsignal_peer: LibsignalPeer, ours: OpenOurs, sender: str
) -> None:
    """A re-created sender key is taken and a late message under the old key still decrypts."""
    me, node = await ours(), theirs(libsignal_peer)
    if sender == "node":
        skdm, old_first = node.group_encrypt(b"old 0")
        _, old_late = node.group_encrypt(b"old 1")
        await me.repo.process_sender_key_distribution_message(GROUP, node.jid, skdm)
        assert await me.repo.decrypt_group_message(GROUP, node.jid, old_first) == b"old 0"
        node.call("put_sender_key", group=GROUP, author=node.address, record=None)
        new_skdm, new_message = node.group_encrypt(b"new 0")
        await me.repo.process_sender_key_distribution_message(GROUP, node.jid, new_skdm)
        assert await me.repo.decrypt_group_message(GROUP, node.jid, new_message) == b"new 0"
        assert await me.repo.decrypt_group_message(GROUP, node.jid, old_late) == b"old 1"
        record = SenderKeyRecord.from_stored(await me.stored("sender-key", _sender_key_name(node)))
    else:
        skdm, old_first = await me.repo.encrypt_group_message(GROUP, me.jid, b"old 0")
        _, old_late = await me.repo.encrypt_group_message(GROUP, me.jid, b"old 1")
        node.group_process(me, skdm)
        assert node.group_decrypt(me, old_first) == b"old 0"
        await me.auth.keys.set({"sender-key": {_sender_key_name(me): None}})
        new_skdm, new_message = await me.repo.encrypt_group_message(GROUP, me.jid, b"new 0")
        node.group_process(me, new_skdm)
        assert node.group_decrypt(me, new_message) == b"new 0"
        assert node.group_decrypt(me, old_late) == b"old 1"
        stored = node.call("get_sender_key", group=GROUP, author=me.address)["record"]
        record = SenderKeyRecord.from_stored(stored)
    old_id = parse_sender_key_message(old_first).key_id
    new_id = parse_sender_key_message(new_message).key_id
    assert old_id != new_id
    assert [state.key_id for state in record.states] == [old_id, new_id]


@pytest.mark.parametrize("sender", ["node", "ours"])
async def test_both_refuse_a_group_iteration_over_2000_ahead(
    libsignal_peer: LibsignalPeer, ours: OpenOurs, sender: str
) -> None:
    """An skmsg over 2,000 iterations ahead is refused on both sides; 2,000 ahead decrypts."""
    me, node = await ours(), theirs(libsignal_peer)
    if sender == "node":
        skdm, _ = node.group_encrypt(b"n0")
        await me.repo.process_sender_key_distribution_message(GROUP, node.jid, skdm)

        (start,) = json.loads(
            node.call("get_sender_key", group=GROUP, author=node.address)["record"]
        )
        assert start["senderChainKey"]["iteration"] == 1  # after its first message

        def baileys_at(iteration: int, text: bytes) -> bytes:
            """Baileys' skmsg at ``iteration``: its record is moved along its own chain first."""
            seed = bytes(start["senderChainKey"]["seed"]["data"])
            for _ in range(1, iteration - 1):
                _, seed = chain_step(seed)
            state = dict(start, senderMessageKeys=[])
            state["senderChainKey"] = {
                "iteration": iteration - 1,  # Baileys asks for iteration + 1 past the first
                "seed": {"type": "Buffer", "data": list(seed)},
            }
            record = json.dumps([state], separators=(",", ":")).encode()
            node.call("put_sender_key", group=GROUP, author=node.address, record=record)
            message = node.group_encrypt(text)[1]
            assert parse_sender_key_message(message).iteration == iteration
            return message

        at_2000, at_2001 = baileys_at(2000, b"n2000"), baileys_at(2001, b"n2001")
        with pytest.raises(TooFarInFuture):
            await me.repo.decrypt_group_message(GROUP, node.jid, at_2001)
        assert await me.repo.decrypt_group_message(GROUP, node.jid, at_2000) == b"n2000"
        assert await me.repo.decrypt_group_message(GROUP, node.jid, at_2001) == b"n2001"
    else:
        sealed = [
            await me.repo.encrypt_group_message(GROUP, me.jid, b"o%d" % n) for n in range(2002)
        ]
        node.group_process(me, sealed[0][0])
        with pytest.raises(PeerError, match="Over 2000 messages into the future"):
            node.group_decrypt(me, sealed[2001][1])
        assert node.group_decrypt(me, sealed[2000][1]) == b"o2000"
        assert node.group_decrypt(me, sealed[2001][1]) == b"o2001"


async def test_sender_key_files_move_between_baileys_and_a_multi_file_directory(
    libsignal_peer: LibsignalPeer, ours: OpenOurs, tmp_path: Path
) -> None:
    """Sender-key files of our multi-file directory and Baileys' go across both ways."""
    directory = tmp_path / "ours"
    me = await ours(directory=directory)
    await me.repo.encrypt_group_message(GROUP, me.jid, b"first")
    await me.auth.aclose()
    name = _sender_key_name(me)
    path = directory / f"sender-key-{name.replace(':', '-')}.json"
    on_disk = json.loads(path.read_text())
    assert on_disk["type"] == "Buffer"
    own = base64.b64decode(on_disk["data"])
    as_node = theirs(libsignal_peer, user=me.user, **me.node_keys())
    as_node.call("put_sender_key", group=GROUP, author=me.address, record=own)
    skdm, message = as_node.group_encrypt(b"sent by baileys")

    # A member whose directory Baileys wrote: the record file as Baileys' writeData makes it.
    member_dir = tmp_path / "member"
    member = await ours(directory=member_dir)
    await member.auth.aclose()
    member_node = theirs(libsignal_peer)
    member_node.group_process(me, skdm)
    received = member_node.call("get_sender_key", group=GROUP, author=me.address)["record"]
    buffer = {"type": "Buffer", "data": base64.b64encode(received).decode()}
    (member_dir / f"sender-key-{name.replace(':', '-')}.json").write_text(json.dumps(buffer))
    member = await ours(directory=member_dir, creds=member.creds, user=member.user)
    assert await member.repo.decrypt_group_message(GROUP, me.jid, message) == b"sent by baileys"


# -- XEdDSA -------------------------------------------------------------------------------------


def test_xeddsa_signatures_verify_across_implementations(libsignal_peer: LibsignalPeer) -> None:
    """XEdDSA: our signatures verify in curve25519-js and its signatures verify here."""
    peer = libsignal_peer
    for seed in range(16):
        private = bytes([seed * 37 % 256 or 1]) * 31 + bytes([seed])
        public = signal_public_key(public_from_private(private))
        assert peer.call("public_from_private", private=private)["public_key"] == public
        message = bytes(n % 256 for n in range(seed * 40))
        ours_signature = sign(private, message)
        assert peer.call("verify", public=public, message=message, signature=ours_signature)[
            "valid"
        ]
        assert not peer.call(
            "verify", public=public, message=message + b"!", signature=ours_signature
        )["valid"]
        theirs_signature = peer.call("sign", private=private, message=message)["signature"]
        assert verify(public, message, theirs_signature)
        assert verify(public[1:], message, theirs_signature)
        assert not verify(public, message + b"!", theirs_signature)


# -- handing state over -------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["memory", "multi-file"])
async def test_a_session_made_in_libsignal_continues_here(
    libsignal_peer: LibsignalPeer, ours: OpenOurs, tmp_path: Path, store: str
) -> None:
    """A libsignal session record stored here with its party's keys goes on in both directions."""
    contact, before = theirs(libsignal_peer), theirs(libsignal_peer)
    before.call("process_bundle", address=contact.address, bundle=node_bundle(contact, 1))
    assert contact.receive(before, before.send(contact, b"hello")) == b"hello"
    assert before.receive(contact, contact.send(before, b"hi")) == b"hi"
    assert contact.receive(before, before.send(contact, b"turn")) == b"turn"
    in_flight = [contact.send(before, b"in flight %d" % n) for n in range(3)]
    assert before.receive(contact, in_flight[1]) == b"in flight 1"  # leaves a kept key for 0
    session = before.session(contact)

    directory = tmp_path / "ours" if store == "multi-file" else None
    me = await ours(creds=creds_from_node(before), user=before.user, directory=directory)
    await me.auth.keys.set({"session": {contact.address: session}})
    if directory is not None:
        await me.auth.aclose()
        on_disk = json.loads((directory / f"session-{contact.address}.json").read_text())
        assert on_disk == session
        me = await ours(creds=me.creds, user=me.user, directory=directory)
    assert await me.receive(contact, in_flight[2]) == b"in flight 2"
    assert await me.receive(contact, in_flight[0]) == b"in flight 0"
    sealed = await me.send(contact, b"from python")
    assert sealed[0] == "msg"
    assert contact.receive(me, sealed) == b"from python"
    assert await me.receive(contact, contact.send(me, b"to python")) == b"to python"
    await talk(me, contact, rounds=2)


@pytest.mark.parametrize("store", ["memory", "multi-file"])
async def test_a_session_made_here_continues_in_libsignal(
    libsignal_peer: LibsignalPeer, ours: OpenOurs, tmp_path: Path, store: str
) -> None:
    """Our session record (and session file) put into libsignal goes on in both directions."""
    directory = tmp_path / "ours" if store == "multi-file" else None
    me, contact = await ours(directory=directory), theirs(libsignal_peer)
    await me.repo.inject_e2e_session(contact.jid, contact.bundle(2))
    assert contact.receive(me, await me.send(contact, b"hello")) == b"hello"
    assert await me.receive(contact, contact.send(me, b"hi")) == b"hi"
    assert contact.receive(me, await me.send(contact, b"turn")) == b"turn"
    in_flight = [contact.send(me, b"in flight %d" % n) for n in range(3)]
    assert await me.receive(contact, in_flight[1]) == b"in flight 1"
    session = await me.stored("session", contact.address)
    if directory is not None:
        await me.auth.aclose()
        text = (directory / f"session-{contact.address}.json").read_text()
        assert json.loads(text) == session
        session = json.loads(text)

    after = theirs(libsignal_peer, user=me.user, **me.node_keys())
    assert after.keys["identity_key"] == me.identity
    after.call("put_session", address=contact.address, session=session)
    assert after.call("has_open_session", address=contact.address)["open"] is True
    assert after.receive(contact, in_flight[2]) == b"in flight 2"
    assert after.receive(contact, in_flight[0]) == b"in flight 0"
    sealed = after.send(contact, b"from node")
    assert sealed[0] == "msg"
    assert contact.receive(after, sealed) == b"from node"
    assert after.receive(contact, contact.send(after, b"to node")) == b"to node"


async def test_a_pending_pkmsg_session_made_here_continues_in_libsignal(
    libsignal_peer: LibsignalPeer, ours: OpenOurs
) -> None:
    """Our unanswered session handed to libsignal still sends pkmsgs the contact decrypts."""
    me, contact = await ours(), theirs(libsignal_peer)
    await me.repo.inject_e2e_session(contact.jid, contact.bundle(3))
    first = await me.send(contact, b"first")
    session = await me.stored("session", contact.address)
    assert "pendingPreKey" in next(iter(session["_sessions"].values()))
    after = theirs(libsignal_peer, user=me.user, **me.node_keys())
    after.call("put_session", address=contact.address, session=session)
    second = after.send(contact, b"second")
    assert second[0] == "pkmsg"
    assert contact.receive(after, first) == b"first"
    assert contact.receive(after, second) == b"second"
    assert after.receive(contact, contact.send(after, b"reply")) == b"reply"


async def test_a_pending_pkmsg_session_made_in_libsignal_continues_here(
    libsignal_peer: LibsignalPeer, ours: OpenOurs
) -> None:
    """libsignal's unanswered session handed to us still sends pkmsgs the contact decrypts."""
    before, contact = theirs(libsignal_peer), theirs(libsignal_peer)
    before.call("process_bundle", address=contact.address, bundle=node_bundle(contact, None))
    first = before.send(contact, b"first")
    session = before.session(contact)
    assert "pendingPreKey" in next(iter(session["_sessions"].values()))
    me = await ours(creds=creds_from_node(before), user=before.user)
    await me.auth.keys.set({"session": {contact.address: session}})
    second = await me.send(contact, b"second")
    assert second[0] == "pkmsg"
    parsed = parse_pre_key_message(second[1])
    assert (parsed.pre_key_id, parsed.registration_id) == (None, before.keys["registration_id"])
    assert contact.receive(me, second) == b"second"
    assert contact.receive(me, first) == b"first"
    assert await me.receive(contact, contact.send(me, b"reply")) == b"reply"
    assert (await me.send(contact, b"now a msg"))[0] == "msg"


def _sender_key_name(author: Ours | Theirs) -> str:
    """Baileys' SenderKeyName for ``author`` in GROUP (the address's name and device)."""
    name, _, device = author.address.rpartition(".")
    return f"{GROUP}::{name}::{device}"


async def test_baileys_sender_key_records_continue_here(
    libsignal_peer: LibsignalPeer, ours: OpenOurs
) -> None:
    """Baileys' sender and member records continue here, late skipped messages included."""
    sender, member = theirs(libsignal_peer), theirs(libsignal_peer)
    sealed = [sender.group_encrypt(b"s%d" % n) for n in range(4)]  # iterations 0, 2, 4, 6
    skdm, messages = sealed[0][0], [m for _, m in sealed]
    member.group_process(sender, skdm)
    assert member.group_decrypt(sender, messages[0]) == b"s0"
    assert member.group_decrypt(sender, messages[2]) == b"s2"  # keeps the keys of 1-3
    received = member.call("get_sender_key", group=GROUP, author=sender.address)["record"]
    with pytest.raises(PeerError, match="Expected Buffer"):
        member.group_decrypt(sender, messages[1])  # Baileys' reload quirk

    # The sender's own record: we continue as that sender, under its key id.
    own = sender.call("get_sender_key", group=GROUP, author=sender.address)["record"]
    as_sender = await ours(creds=creds_from_node(sender), user=sender.user)
    await as_sender.auth.keys.set({"sender-key": {_sender_key_name(sender): own}})
    _, continued = await as_sender.repo.encrypt_group_message(GROUP, as_sender.jid, b"cont")
    assert (
        parse_sender_key_message(continued).key_id == parse_sender_key_message(messages[0]).key_id
    )
    assert parse_sender_key_message(continued).iteration == 7
    assert member.group_decrypt(sender, messages[3]) == b"s3"
    assert member.group_decrypt(sender, continued) == b"cont"

    # The member's record: the late message opens here, then the newer ones.
    as_member = await ours()
    await as_member.auth.keys.set({"sender-key": {_sender_key_name(sender): received}})
    assert SenderKeyRecord.from_stored(received).states[0].message_keys
    for message, text in [(messages[1], b"s1"), (messages[3], b"s3"), (continued, b"cont")]:
        assert await as_member.repo.decrypt_group_message(GROUP, sender.jid, message) == text
    with pytest.raises(DuplicateMessage):
        await as_member.repo.decrypt_group_message(GROUP, sender.jid, messages[2])


async def test_our_sender_key_records_continue_in_baileys(
    libsignal_peer: LibsignalPeer, ours: OpenOurs
) -> None:
    """Our sender and member records continue in Baileys: it sends and decrypts from them."""
    me, member = await ours(), await ours()
    sealed = [await me.repo.encrypt_group_message(GROUP, me.jid, b"m%d" % n) for n in range(3)]
    await member.repo.process_sender_key_distribution_message(GROUP, me.jid, sealed[0][0])
    assert await member.repo.decrypt_group_message(GROUP, me.jid, sealed[0][1]) == b"m0"
    assert await member.repo.decrypt_group_message(GROUP, me.jid, sealed[2][1]) == b"m2"

    own = await me.stored("sender-key", _sender_key_name(me))
    as_node = theirs(libsignal_peer, user=me.user, **me.node_keys())
    as_node.call("put_sender_key", group=GROUP, author=me.address, record=own)
    _, continued = as_node.group_encrypt(b"from baileys")
    first = parse_sender_key_message(sealed[0][1])
    assert parse_sender_key_message(continued).key_id == first.key_id
    assert await member.repo.decrypt_group_message(GROUP, me.jid, continued) == b"from baileys"
    assert await member.repo.decrypt_group_message(GROUP, me.jid, sealed[1][1]) == b"m1"

    received = await member.stored("sender-key", _sender_key_name(me))
    assert SenderKeyRecord.from_stored(received).states[0].message_keys  # a skipped key kept
    node_member = theirs(libsignal_peer)
    node_member.call("put_sender_key", group=GROUP, author=me.address, record=received)
    _, newest = as_node.group_encrypt(b"newest")
    assert node_member.group_decrypt(me, newest) == b"newest"
    assert await member.repo.decrypt_group_message(GROUP, me.jid, newest) == b"newest"
