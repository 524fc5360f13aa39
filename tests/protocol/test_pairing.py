"""QR pairing: pair-device refs, pair-success verification, the pair-device-sign reply."""

from __future__ import annotations

import pytest

from actors.connection.binary import BinaryNode, decode_node, encode_node
from actors.connection.errors import BAD_SESSION, RemoteProtocolError
from actors.connection.pairing import (
    account_signature_message,
    adv_hmac,
    device_signature_message,
    iq_result,
    parse_pair_device,
    verify_pair_success,
)
from actors.connection.payload import Browser
from actors.connection.proto import wa_pb2
from actors.connection.qr import QrData, build_qr, parse_qr
from stores.creds import AuthCreds, init_auth_creds
from stores.keys import generate_key_pair, verify
from tests.protocol.phone import HOSTED, pair_success_stanza


def _scan(creds: AuthCreds) -> QrData:
    return parse_qr(
        build_qr(
            "2@ref",
            creds.noise_key.public,
            creds.signed_identity_key.public,
            creds.adv_secret_key,
            Browser(),
        )
    )


def _pair_device(*refs: bytes | str | None) -> BinaryNode:
    children = [BinaryNode("ref", {}, ref) for ref in refs]
    return BinaryNode(
        "iq",
        {"from": "s.whatsapp.net", "type": "set", "id": "pd-1", "xmlns": "md"},
        [BinaryNode("pair-device", {}, children)],
    )


def test_pair_device_refs_are_read_in_order() -> None:
    """Every ref of pair-device is returned in the server's order, with the iq id to ack."""
    parsed = parse_pair_device(_pair_device(b"2@aaa", b"2@bbb", "2@ccc"))
    assert parsed.iq_id == "pd-1"
    assert parsed.refs == ("2@aaa", "2@bbb", "2@ccc")


def test_pair_device_ack_is_a_bare_result() -> None:
    """The ack of a server iq is iq{to=@s.whatsapp.net, type=result, id} without content."""
    assert iq_result("pd-1") == BinaryNode(
        "iq", {"to": "@s.whatsapp.net", "type": "result", "id": "pd-1"}
    )


@pytest.mark.parametrize(
    "stanza",
    [
        BinaryNode("iq", {"type": "set", "id": "x"}, [BinaryNode("other")]),
        BinaryNode("iq", {"type": "set"}, [BinaryNode("pair-device")]),
        _pair_device(None),
        _pair_device(b""),
        _pair_device(b"\xff\xfe"),
        _pair_device(b"has,comma"),
    ],
)
def test_malformed_pair_device_is_a_remote_error(stanza: BinaryNode) -> None:
    """A pair-device without id, child, or with an unusable ref raises RemoteProtocolError."""
    with pytest.raises(RemoteProtocolError) as info:
        parse_pair_device(stanza)
    assert info.value.error_status_hint == BAD_SESSION


def test_pair_success_gives_the_creds_change_baileys_makes() -> None:
    """A valid pair-success sets me, account, one signal identity and platform."""
    creds = init_auth_creds()
    account = generate_key_pair()
    stanza = pair_success_stanza(_scan(creds), account_key=account, biz_name="Shop")
    result = verify_pair_success(stanza, creds)
    update = result.update
    assert update.me == {
        "id": "15550001111:7@s.whatsapp.net",
        "name": "Shop",
        "lid": "99887766:7@lid",
    }
    assert update.platform == "android"
    assert update.signal_identities == [
        {
            "identifier": {"name": "99887766:7@lid", "deviceId": 0},
            "identifierKey": b"\x05" + account.public,
        }
    ]
    assert update.account["accountSignatureKey"] == account.public
    assert set(update.account) == {
        "details",
        "accountSignatureKey",
        "accountSignature",
        "deviceSignature",
    }
    assert result.key_index == 3
    assert result.server_time == 1764250000
    paired = update.apply(creds)
    assert creds.me is None, "apply returns a copy"
    assert AuthCreds.from_plain(paired.to_plain(), "test").me == update.me
    batch = update.batch(creds)
    assert batch.keys == {} and batch.creds is not None and batch.creds.me == update.me


def test_reply_carries_our_device_signature_without_the_account_key() -> None:
    """The pair-device-sign reply holds details, account signature and a valid device signature."""
    creds = init_auth_creds()
    account = generate_key_pair()
    result = verify_pair_success(pair_success_stanza(_scan(creds), account_key=account), creds)
    reply = decode_node(encode_node(result.reply))
    assert reply.tag == "iq"
    assert reply.attrs == {"to": "@s.whatsapp.net", "type": "result", "id": "pair-1"}
    identity_node = reply.require_child("pair-device-sign", "device-identity")
    assert identity_node.attrs == {"key-index": "3"}
    signed = wa_pb2.ADVSignedDeviceIdentity()
    signed.ParseFromString(identity_node.require_bytes())
    assert not signed.HasField("accountSignatureKey")
    assert signed.details == result.update.account["details"]
    message = b"\x06\x01" + signed.details + creds.signed_identity_key.public + account.public
    assert verify(creds.signed_identity_key.public, message, signed.deviceSignature)
    assert (
        device_signature_message(signed.details, creds.signed_identity_key.public, account.public)
        == message
    )


def test_without_lid_or_biz_me_has_only_the_id() -> None:
    """No lid and no biz: me is {id}, and the signal identity is named by the device jid."""
    creds = init_auth_creds()
    result = verify_pair_success(pair_success_stanza(_scan(creds), lid=None, platform=None), creds)
    assert result.update.me == {"id": "15550001111:7@s.whatsapp.net"}
    assert result.update.platform is None
    assert result.update.signal_identities[0]["identifier"]["name"] == (
        "15550001111:7@s.whatsapp.net"
    )


def test_hosted_accounts_use_the_hosted_prefixes() -> None:
    """HOSTED account type prefixes the HMAC with 06 05; HOSTED device type the signature."""
    creds = init_auth_creds()
    stanza = pair_success_stanza(_scan(creds), account_type=HOSTED, device_type=HOSTED)
    assert verify_pair_success(stanza, creds).update.me["id"].startswith("15550001111")
    details = b"d"
    assert adv_hmac(creds.adv_secret_key, details, HOSTED) != adv_hmac(
        creds.adv_secret_key, details, None
    )
    assert account_signature_message(details, b"k", HOSTED)[:2] == b"\x06\x05"
    assert account_signature_message(details, b"k", None)[:2] == b"\x06\x00"


def test_a_qr_of_other_creds_fails_the_hmac() -> None:
    """A pair-success made for another device's adv secret is rejected (hint 500)."""
    creds = init_auth_creds()
    stanza = pair_success_stanza(_scan(init_auth_creds()))
    with pytest.raises(RemoteProtocolError, match="HMAC") as info:
        verify_pair_success(stanza, creds)
    assert info.value.error_status_hint == BAD_SESSION


def test_an_account_signature_over_another_identity_fails() -> None:
    """The account signature must cover our identity key: one over another key is rejected."""
    creds = init_auth_creds()
    scanned = _scan(creds)
    forged = QrData(
        ref=scanned.ref,
        noise_public=scanned.noise_public,
        identity_public=generate_key_pair().public,
        adv_secret_key=scanned.adv_secret_key,
        platform=scanned.platform,
    )
    with pytest.raises(RemoteProtocolError, match="account signature"):
        verify_pair_success(pair_success_stanza(forged), creds)


def test_a_hosted_device_signed_with_the_plain_prefix_fails() -> None:
    """A HOSTED device type needs the 06 05 account-signature prefix; 06 00 is rejected."""
    creds = init_auth_creds()
    stanza = pair_success_stanza(_scan(creds), device_type=HOSTED)
    good = verify_pair_success(stanza, creds)
    assert good.update.account["accountSignature"]
    # Re-sign the same details with the non-hosted prefix: must not verify.
    body = stanza.require_child("pair-success", "device-identity").require_bytes()
    container = wa_pb2.ADVSignedDeviceIdentityHMAC.FromString(body)
    signed = wa_pb2.ADVSignedDeviceIdentity.FromString(container.details)
    key = generate_key_pair()
    from stores.keys import sign

    signed.accountSignatureKey = key.public
    signed.accountSignature = sign(
        key.private, b"\x06\x00" + signed.details + creds.signed_identity_key.public
    )
    details = signed.SerializeToString()
    container = wa_pb2.ADVSignedDeviceIdentityHMAC(
        details=details, hmac=adv_hmac(creds.adv_secret_key, details, None)
    )
    bad = BinaryNode(
        "iq",
        stanza.attrs,
        [
            BinaryNode(
                "pair-success",
                {},
                [
                    BinaryNode("device-identity", {}, container.SerializeToString()),
                    BinaryNode("device", {"jid": "1:2@s.whatsapp.net"}),
                ],
            )
        ],
    )
    with pytest.raises(RemoteProtocolError, match="account signature"):
        verify_pair_success(bad, creds)


def _replace_children(stanza: BinaryNode, children: list[BinaryNode]) -> BinaryNode:
    return BinaryNode("iq", stanza.attrs, [BinaryNode("pair-success", {}, children)])


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s, c: BinaryNode("iq", {"type": "set"}, s.content),
        lambda s, c: BinaryNode("iq", s.attrs, [BinaryNode("other")]),
        lambda s, c: _replace_children(s, [x for x in c if x.tag != "device"]),
        lambda s, c: _replace_children(s, [x for x in c if x.tag != "device-identity"]),
        lambda s, c: _replace_children(
            s, [BinaryNode("device-identity", {}, b"\xff\xff\xff"), *c[1:]]
        ),
        lambda s, c: _replace_children(s, [BinaryNode("device-identity"), *c[1:]]),
        lambda s, c: _replace_children(s, [*c[:-1], BinaryNode("device", {"jid": "nojid"})]),
        lambda s, c: _replace_children(s, [*c[:-1], BinaryNode("device", {})]),
    ],
    ids=[
        "no-id",
        "no-pair-success",
        "no-device",
        "no-device-identity",
        "garbage-identity",
        "empty-identity",
        "bad-jid",
        "no-jid",
    ],
)
def test_malformed_pair_success_is_a_remote_error(mutate: object) -> None:
    """Missing or undecodable parts of pair-success raise RemoteProtocolError, nothing else."""
    creds = init_auth_creds()
    stanza = pair_success_stanza(_scan(creds), platform=None)
    children = stanza.require_child("pair-success").children()
    bad = mutate(stanza, children)  # type: ignore[operator]  # parametrized lambdas
    with pytest.raises(RemoteProtocolError):
        verify_pair_success(bad, creds)
