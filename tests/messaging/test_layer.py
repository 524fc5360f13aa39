"""The message layer end to end in memory: stanzas built by one account, decrypted by another."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from actors.connection.binary.node import BinaryNode
from actors.connection.proto import wa_pb2
from actors.messaging.content import (
    decode_padded,
    device_sent,
    encode_padded,
    text_of,
    to_message,
    unwrap_device_sent,
)
from actors.messaging.errors import ContentError, PaddingError, StanzaError
from actors.messaging.incoming import (
    RetryKeys,
    ack_for,
    delivery_receipt,
    parse_message_stanza,
    read_receipt,
    retry_receipt,
)
from actors.messaging.outgoing import (
    DeviceCiphertext,
    message_stanza,
    new_message_id,
    resend_stanza,
)
from actors.messaging.padding import pad_random_max16, unpad_random_max16
from actors.messaging.queries import (
    key_bundles_iq,
    parse_key_bundles,
    parse_usync_devices,
    usync_devices_iq,
)
from actors.messaging.receive import decrypt_stanza
from actors.messaging.send import device_jids, devices_without_session, encrypt_for_devices
from actors.signal import PreKey, PreKeyBundle, SignalRepository, SignedPreKey
from stores import PersistedAuth, use_memory_auth_state
from stores.keys import generate_pre_keys, signal_public_key


@dataclass
class Account:
    """One account: its jid, store and repository."""

    jid: str
    auth: PersistedAuth
    repo: SignalRepository

    async def bundle(self, pre_key_id: int | None = 1) -> PreKeyBundle:
        creds = self.auth.state.creds
        pre_key = None
        if pre_key_id is not None:
            keys = generate_pre_keys(pre_key_id, 1)
            await self.auth.keys.set({"pre-key": keys})
            pre_key = PreKey(pre_key_id, signal_public_key(keys[str(pre_key_id)]["public"]))
        return PreKeyBundle(
            registration_id=creds.registration_id,
            identity_key=signal_public_key(creds.signed_identity_key.public),
            signed_pre_key=SignedPreKey(
                creds.signed_pre_key.key_id,
                signal_public_key(creds.signed_pre_key.key_pair.public),
                creds.signed_pre_key.signature,
            ),
            pre_key=pre_key,
        )


async def account(jid: str) -> Account:
    auth = await use_memory_auth_state(jid)
    return Account(jid, auth, SignalRepository(auth.keys, auth.state.creds))


def received(stanza: BinaryNode, sender: str) -> BinaryNode:
    """What the server delivers for a stanza one account sent: ``from`` set, ``to`` gone."""
    attrs = {k: v for k, v in stanza.attrs.items() if k != "to"}
    attrs.update({"from": sender, "t": "1700000000", "notify": "Alice"})
    parts = []
    for child in stanza.children():
        if child.tag == "participants":
            parts.extend(child.children("to")[0].children("enc"))
        elif child.tag == "enc":
            parts.append(child)
    return BinaryNode("message", attrs, parts)


def group_received(stanza: BinaryNode, group: str, author: str, device: str) -> BinaryNode:
    """The server's copy of a group stanza for one member device: skdm part, then skmsg."""
    attrs = {"id": stanza.attrs["id"], "from": group, "participant": author, "t": "1"}
    parts = []
    for child in stanza.children():
        if child.tag == "participants":
            for target in child.children("to"):
                if target.attrs["jid"] == device:
                    parts.extend(target.children("enc"))
    parts.extend(stanza.children("enc"))
    return BinaryNode("message", attrs, parts)


async def test_a_text_message_goes_from_one_account_to_another() -> None:
    """A 1:1 text encrypted for a device decrypts at that device as the same wa.Message."""
    alice, bob = await account("111@s.whatsapp.net"), await account("222@s.whatsapp.net")
    bundles = {bob.jid: await bob.bundle()}
    message = to_message({"text": "hello bob"})
    encrypted = await encrypt_for_devices(
        alice.auth.keys,
        alice.repo,
        message,
        destination=bob.jid,
        recipients=[bob.jid],
        bundles=bundles,
    )
    assert [part.kind for part in encrypted] == ["pkmsg"]
    stanza = message_stanza(new_message_id(), bob.jid, encrypted, device_identity=b"adv")
    assert stanza.child("device-identity") is not None
    incoming = parse_message_stanza(received(stanza, alice.jid), [bob.jid])
    result = await decrypt_stanza(bob.auth.keys, bob.repo, incoming)
    assert result.error is None
    assert result.text == "hello bob"
    assert result.key.remote_jid == alice.jid and not result.key.from_me
    assert result.push_name == "Alice" and result.timestamp == 1700000000
    # The one-time pre-key was consumed in the same transaction.
    assert await bob.auth.keys.get("pre-key", ["1"]) == {}


async def test_a_reply_is_a_msg_and_no_device_identity_travels() -> None:
    """After a reply the initiator sends ``msg``; a stanza without pkmsg has no device-identity."""
    alice, bob = await account("111@s.whatsapp.net"), await account("222@s.whatsapp.net")
    first = await encrypt_for_devices(
        alice.auth.keys,
        alice.repo,
        to_message({"text": "hi"}),
        destination=bob.jid,
        recipients=[bob.jid],
        bundles={bob.jid: await bob.bundle()},
    )
    await decrypt_stanza(
        bob.auth.keys,
        bob.repo,
        parse_message_stanza(received(message_stanza("1", bob.jid, first), alice.jid), [bob.jid]),
    )
    reply = await encrypt_for_devices(
        bob.auth.keys,
        bob.repo,
        to_message({"text": "yo"}),
        destination=alice.jid,
        recipients=[alice.jid],
    )
    assert [part.kind for part in reply] == ["msg"]
    got = await decrypt_stanza(
        alice.auth.keys,
        alice.repo,
        parse_message_stanza(received(message_stanza("2", alice.jid, reply), bob.jid), [alice.jid]),
    )
    assert got.text == "yo"
    again = await encrypt_for_devices(
        alice.auth.keys,
        alice.repo,
        to_message({"text": "ok"}),
        destination=bob.jid,
        recipients=[bob.jid],
    )
    assert [part.kind for part in again] == ["msg"]
    stanza = message_stanza("3", bob.jid, again, device_identity=b"adv")
    assert stanza.child("device-identity") is None


async def test_our_own_devices_get_the_device_sent_wrapper() -> None:
    """Copies for our own devices wrap the message in deviceSentMessage with the destination."""
    alice, alice_phone = await account("111:1@s.whatsapp.net"), await account("111@s.whatsapp.net")
    bob = await account("222@s.whatsapp.net")
    encrypted = await encrypt_for_devices(
        alice.auth.keys,
        alice.repo,
        to_message({"text": "to bob"}),
        destination=bob.jid,
        recipients=[bob.jid],
        own_devices=[alice_phone.jid],
        bundles={bob.jid: await bob.bundle(), alice_phone.jid: await alice_phone.bundle()},
    )
    copy = next(part for part in encrypted if part.jid == alice_phone.jid)
    plaintext = await alice_phone.repo.decrypt_message(alice.jid, copy.kind, copy.ciphertext)
    wrapped = decode_padded(plaintext)
    assert wrapped.deviceSentMessage.destinationJid == bob.jid
    assert text_of(unwrap_device_sent(wrapped)) == "to bob"


async def test_a_group_message_carries_the_sender_key_then_decrypts() -> None:
    """The skdm travels in a pkmsg part before the skmsg; both decrypt in one stanza."""
    group = "1203@g.us"
    alice, bob = await account("111@s.whatsapp.net"), await account("222@s.whatsapp.net")
    skdm, skmsg = await alice.repo.encrypt_group_message(
        group, alice.jid, encode_padded(to_message({"text": "hi all"}))
    )
    distribution = wa_pb2.Message(
        senderKeyDistributionMessage=wa_pb2.Message.SenderKeyDistributionMessage(
            groupId=group, axolotlSenderKeyDistributionMessage=skdm
        )
    )
    devices = await encrypt_for_devices(
        alice.auth.keys,
        alice.repo,
        distribution,
        destination=group,
        recipients=[bob.jid],
        bundles={bob.jid: await bob.bundle()},
    )
    stanza = message_stanza("G1", group, devices, group_ciphertext=skmsg, addressing_mode="pn")
    assert [child.tag for child in stanza.children()] == ["enc", "participants"]
    incoming = parse_message_stanza(group_received(stanza, group, alice.jid, bob.jid), [bob.jid])
    assert incoming.is_group and incoming.key.participant == alice.jid
    result = await decrypt_stanza(bob.auth.keys, bob.repo, incoming)
    assert result.error is None
    assert result.text == "hi all"


async def test_a_part_that_fails_is_reported_and_the_rest_stays() -> None:
    """An undecryptable stanza yields a message with ``error`` and no content; nothing crashes."""
    alice, bob = await account("111@s.whatsapp.net"), await account("222@s.whatsapp.net")
    node = BinaryNode(
        "message",
        {"id": "X", "from": alice.jid, "t": "5"},
        [BinaryNode("enc", {"v": "2", "type": "msg"}, b"\x33" + b"\x00" * 40)],
    )
    result = await decrypt_stanza(bob.auth.keys, bob.repo, parse_message_stanza(node, [bob.jid]))
    assert result.message is None
    assert result.error is not None and "NoSession" in result.error


async def test_devices_without_session_lists_only_the_new_ones() -> None:
    """A device with an open session is not asked for a bundle again."""
    alice, bob = await account("111@s.whatsapp.net"), await account("222@s.whatsapp.net")
    await alice.repo.inject_e2e_session(bob.jid, await bob.bundle())
    assert await devices_without_session(alice.repo, [bob.jid, "222:3@s.whatsapp.net"]) == [
        "222:3@s.whatsapp.net"
    ]


def test_stanza_parsing_names_what_is_missing() -> None:
    """Missing id, a group without participant, unknown enc type: typed errors naming the part."""
    with pytest.raises(StanzaError, match=r"message\[@id\]"):
        parse_message_stanza(BinaryNode("message", {"from": "1@s.whatsapp.net"}), [])
    with pytest.raises(StanzaError, match=r"participant"):
        parse_message_stanza(BinaryNode("message", {"id": "1", "from": "g@g.us"}), [])
    bad = BinaryNode(
        "message",
        {"id": "1", "from": "1@s.whatsapp.net"},
        [BinaryNode("enc", {"type": "zz"}, b"x")],
    )
    with pytest.raises(StanzaError, match=r"@type"):
        parse_message_stanza(bad, [])


def test_our_copy_from_another_device_is_from_me_in_the_recipients_chat() -> None:
    """A stanza from our own user with ``recipient`` belongs to the recipient's chat, from_me."""
    node = BinaryNode(
        "message", {"id": "1", "from": "111:2@s.whatsapp.net", "recipient": "222@s.whatsapp.net"}
    )
    stanza = parse_message_stanza(node, ["111:5@s.whatsapp.net"])
    assert stanza.key.from_me and stanza.key.remote_jid == "222@s.whatsapp.net"
    stranger = BinaryNode(
        "message", {"id": "1", "from": "333@s.whatsapp.net", "recipient": "222@s.whatsapp.net"}
    )
    with pytest.raises(StanzaError, match="recipient"):
        parse_message_stanza(stranger, ["111@s.whatsapp.net"])


def test_lid_addressed_stanza_carries_the_phone_number_form() -> None:
    """With addressing_mode=lid the other form comes from participant_pn / sender_pn."""
    node = BinaryNode(
        "message",
        {
            "id": "1",
            "from": "g@g.us",
            "participant": "9@lid",
            "participant_pn": "5@s.whatsapp.net",
            "addressing_mode": "lid",
        },
    )
    stanza = parse_message_stanza(node, [])
    assert stanza.addressing_mode == "lid" and stanza.sender_alt == "5@s.whatsapp.net"


def test_acks_and_receipts_have_baileys_shape() -> None:
    """The ack echoes id/from/participant/type; receipts name the chat and author."""
    node = BinaryNode(
        "message", {"id": "M", "from": "g@g.us", "participant": "1@s.whatsapp.net", "type": "text"}
    )
    assert ack_for(node, "9:1@s.whatsapp.net").attrs == {
        "id": "M",
        "to": "g@g.us",
        "class": "message",
        "participant": "1@s.whatsapp.net",
        "type": "text",
        "from": "9:1@s.whatsapp.net",
    }
    receipt_node = BinaryNode("receipt", {"id": "R", "from": "1@s.whatsapp.net", "type": "read"})
    assert ack_for(receipt_node, "9@s.whatsapp.net").attrs == {
        "id": "R",
        "to": "1@s.whatsapp.net",
        "class": "receipt",
        "type": "read",
    }
    stanza = parse_message_stanza(node, [])
    assert delivery_receipt(stanza).attrs == {
        "id": "M",
        "to": "g@g.us",
        "participant": "1@s.whatsapp.net",
    }
    read = read_receipt("1@s.whatsapp.net", None, ["A", "B"], 7)
    assert read.attrs == {"id": "A", "t": "7", "to": "1@s.whatsapp.net", "type": "read"}
    assert [item.attrs["id"] for item in read.children("list")[0].children("item")] == ["B"]


def test_retry_receipt_carries_keys_only_when_given() -> None:
    """count and registration always; the keys bundle from the second retry on."""
    node = BinaryNode("message", {"id": "M", "from": "1@s.whatsapp.net", "t": "9"})
    first = retry_receipt(node, 1, 0x01020304, None)
    assert first.attrs == {"id": "M", "type": "retry", "to": "1@s.whatsapp.net"}
    assert first.children("retry")[0].attrs == {
        "count": "1",
        "id": "M",
        "t": "9",
        "v": "1",
        "error": "0",
    }
    assert first.children("registration")[0].content == b"\x01\x02\x03\x04"
    assert first.child("keys") is None
    keys = RetryKeys(b"i" * 32, 7, b"p" * 32, 1, b"s" * 32, b"g" * 64, b"adv")
    second = retry_receipt(node, 2, 5, keys)
    keys_node = second.child("keys")
    assert keys_node is not None
    assert [child.tag for child in keys_node.children()] == [
        "type",
        "identity",
        "key",
        "skey",
        "device-identity",
    ]
    assert keys_node.children("key")[0].children("id")[0].content == b"\x00\x00\x07"


def test_resend_repeats_the_id_with_a_retry_count() -> None:
    """A resend for a retry receipt carries enc{count}."""
    node = resend_stanza(
        "ID", "1@s.whatsapp.net", DeviceCiphertext("1@s.whatsapp.net", "msg", b"c"), 2
    )
    assert node.attrs["id"] == "ID"
    assert node.children("enc")[0].attrs == {"v": "2", "type": "msg", "count": "2"}


def test_message_ids_look_like_baileys() -> None:
    """3EB0 and 18 upper-case hex digits, different every time."""
    ids = {new_message_id() for _ in range(50)}
    assert len(ids) == 50
    for mid in ids:
        assert len(mid) == 22 and mid.startswith("3EB0") and mid == mid.upper()
        int(mid, 16)


def test_padding_round_trips_and_refuses_bad_counts() -> None:
    """1..16 bytes of value n; 0 or a count longer than the data is a PaddingError."""
    for n in range(1, 17):
        padded = pad_random_max16(b"abc", lambda n=n: n)
        assert padded.endswith(bytes([n]) * n) and unpad_random_max16(padded) == b"abc"
    for bad in (b"", b"abc\x00", b"\x05\x05"):
        with pytest.raises(PaddingError):
            unpad_random_max16(bad)


def test_content_accepts_text_or_a_message_and_refuses_the_rest() -> None:
    """{"text"} and wa_pb2.Message are content; unknown fields and non-text are ContentError."""
    assert to_message({"text": "x"}).conversation == "x"
    given = wa_pb2.Message(conversation="y")
    assert to_message(given) is given
    with pytest.raises(ContentError):
        to_message({"image": b""})
    with pytest.raises(ContentError):
        to_message({"text": 5})
    extended = wa_pb2.Message(extendedTextMessage=wa_pb2.Message.ExtendedTextMessage(text="z"))
    assert text_of(extended) == "z"
    assert text_of(device_sent("1@s.whatsapp.net", given)) is None


def test_usync_query_and_result() -> None:
    """The usync iq asks devices and lid; the result lists signed devices and the LID."""
    iq = usync_devices_iq("Q1", "S1", ["1@s.whatsapp.net"])
    usync = iq.children("usync")[0]
    assert usync.attrs == {
        "context": "message",
        "mode": "query",
        "sid": "S1",
        "last": "true",
        "index": "0",
    }
    assert [c.tag for c in usync.children("query")[0].children()] == ["devices", "lid"]
    result = BinaryNode(
        "iq",
        {"id": "Q1", "type": "result"},
        [
            BinaryNode(
                "usync",
                {},
                [
                    BinaryNode(
                        "list",
                        {},
                        [
                            BinaryNode(
                                "user",
                                {"jid": "1@s.whatsapp.net"},
                                [
                                    BinaryNode(
                                        "devices",
                                        {},
                                        [
                                            BinaryNode(
                                                "device-list",
                                                {},
                                                [
                                                    BinaryNode("device", {"id": "0"}),
                                                    BinaryNode(
                                                        "device", {"id": "3", "key-index": "1"}
                                                    ),
                                                    BinaryNode("device", {"id": "4"}),
                                                ],
                                            )
                                        ],
                                    ),
                                    BinaryNode("lid", {"val": "77@lid"}),
                                ],
                            )
                        ],
                    )
                ],
            )
        ],
    )
    [user] = parse_usync_devices(result)
    assert user.devices == (0, 3) and user.lid == "77@lid"
    assert device_jids(user.jid, user.devices, exclude="1@s.whatsapp.net") == ["1:3@s.whatsapp.net"]


def test_key_bundles_parse_into_33_byte_keys() -> None:
    """A bundle result becomes PreKeyBundle with 05-prefixed keys; a short field is named."""
    assert key_bundles_iq("K", ["1@s.whatsapp.net"]).children("key")[0].children("user")[
        0
    ].attrs == {
        "jid": "1@s.whatsapp.net",
        "reason": "identity",
    }

    def user(skey_value: bytes) -> BinaryNode:
        return BinaryNode(
            "user",
            {"jid": "1@s.whatsapp.net"},
            [
                BinaryNode("registration", {}, b"\x00\x00\x00\x2a"),
                BinaryNode("type", {}, b"\x05"),
                BinaryNode("identity", {}, b"i" * 32),
                BinaryNode(
                    "skey",
                    {},
                    [
                        BinaryNode("id", {}, b"\x00\x00\x01"),
                        BinaryNode("value", {}, skey_value),
                        BinaryNode("signature", {}, b"s" * 64),
                    ],
                ),
            ],
        )

    bundles = parse_key_bundles(BinaryNode("iq", {}, [BinaryNode("list", {}, [user(b"v" * 32)])]))
    bundle = bundles["1@s.whatsapp.net"]
    assert bundle.registration_id == 42 and bundle.pre_key is None
    assert bundle.identity_key == b"\x05" + b"i" * 32
    assert bundle.signed_pre_key.public_key == b"\x05" + b"v" * 32
    with pytest.raises(StanzaError, match=r"skey/value"):
        parse_key_bundles(BinaryNode("iq", {}, [BinaryNode("list", {}, [user(b"v" * 31)])]))


def test_resends_are_addressed_as_baileys_addresses_them() -> None:
    """A resend goes to the device; to our own device with recipient; in a group, participant."""
    device = DeviceCiphertext("1:3@s.whatsapp.net", "pkmsg", b"c")
    one = resend_stanza("ID", "1@s.whatsapp.net", device, 2)
    assert one.attrs == {"id": "ID", "type": "text", "to": "1:3@s.whatsapp.net"}
    own = resend_stanza("ID", "2@s.whatsapp.net", device, 2, own_device=True)
    assert own.attrs["to"] == "1:3@s.whatsapp.net" and own.attrs["recipient"] == "2@s.whatsapp.net"
    group = resend_stanza("ID", "12@g.us", device, 2, device_identity=b"adv")
    assert group.attrs["to"] == "12@g.us" and group.attrs["participant"] == "1:3@s.whatsapp.net"
    assert [c.tag for c in group.children()] == ["enc", "device-identity"]
