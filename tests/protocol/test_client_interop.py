"""The client protocol core against real Baileys v7 (one node run for the whole module).

Python prepares every input (creds, identities, keys, a phone-made pair-success and
our answers to it); one node script computes Baileys' side of each; the tests
compare. Checked here:

- login and registration ClientPayload bytes equal ``generateLoginNode`` /
  ``generateRegistrationNode`` encoded by ``proto.ClientPayload.encode``, and the
  decoded objects are equal;
- the QR string equals ``buildPairingQRData`` for the same creds, ref and browser;
- a pair-success made by node with Baileys' own Curve/hmacSign/proto verifies in
  ours, our creds change equals what ``configureSuccessfulPairing`` derives, and
  our reply equals Baileys' byte for byte once the (randomised) device signature
  is swapped;
- Baileys' ``configureSuccessfulPairing`` accepts a pair-success from our test
  phone and derives the same creds as we do, and libsignal's ``verifySignature``
  accepts the device signature of our reply;
- the pre-key upload node equals ``getNextPreKeysNode`` byte for byte for the same
  keys, and our plan's counters equal Baileys' ``update`` in every case.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from actors.connection.binary import BinaryNode, decode_node, encode_node
from actors.connection.client_state import RestartRequired, StreamError
from actors.connection.pairing import VerifiedPairing, verify_pair_success
from actors.connection.payload import (
    Browser,
    ClientIdentity,
    login_payload,
    registration_payload,
)
from actors.connection.prekeys import plan_upload, pre_key_node, signed_pre_key_node, upload_iq
from actors.connection.proto import wa_pb2
from actors.connection.qr import build_qr, parse_qr
from stores.creds import AuthCreds, KeyPair, init_auth_creds
from stores.keys import generate_key_pair, verify
from tests.baileys_peer import BaileysPeer
from tests.protocol.phone import HOSTED, pair_success_stanza
from tests.protocol.scripted_server import exchange
from tests.protocol.test_client import open_connection, paired_creds

pytestmark = pytest.mark.peer

SCRIPT = r"""
import { readFileSync } from 'node:fs';
import { proto, generateLoginNode, generateRegistrationNode, configureSuccessfulPairing,
         buildPairingQRData, getNextPreKeysNode, xmppPreKey, xmppSignedPreKey,
         encodeBinaryNode, decodeBinaryNode, Curve, hmacSign,
         getErrorCodeFromStreamError } from 'baileys';
import * as curve from 'libsignal/src/curve.js';

const input = JSON.parse(readFileSync(0, 'utf8'));
const hex = (b) => Buffer.from(b).toString('hex');
const unhex = (s) => Buffer.from(s, 'hex');
const pair = (p) => ({ private: unhex(p.private), public: unhex(p.public) });
const c = input.creds;
const creds = {
  registrationId: c.registrationId, advSecretKey: c.advSecretKey,
  noiseKey: pair(c.noiseKey), signedIdentityKey: pair(c.signedIdentityKey),
  signedPreKey: { keyId: c.signedPreKey.keyId, keyPair: pair(c.signedPreKey.keyPair),
                  signature: unhex(c.signedPreKey.signature) },
  nextPreKeyId: 1, firstUnuploadedPreKeyId: 1,
};
const cfg = (x) => ({ version: x.version, browser: x.browser, countryCode: x.country,
                      syncFullHistory: x.syncFullHistory, pushName: x.pushName ?? undefined });
const payloadObj = (bytes) => proto.ClientPayload.toObject(proto.ClientPayload.decode(bytes),
                                                           { bytes: String, enums: String });
const out = {};

out.login = input.logins.map(({ jid, config, ours }) => {
  const bytes = proto.ClientPayload.encode(generateLoginNode(jid, cfg(config))).finish();
  return { bytes: hex(bytes), same: JSON.stringify(payloadObj(bytes)) ===
                                    JSON.stringify(payloadObj(unhex(ours))) };
});
out.registration = input.registrations.map(({ config, ours }) => {
  const bytes = proto.ClientPayload.encode(generateRegistrationNode(creds, cfg(config))).finish();
  const mine = payloadObj(bytes), theirs = payloadObj(unhex(ours));
  const props = (o) => JSON.stringify(proto.DeviceProps.toObject(
      proto.DeviceProps.decode(Buffer.from(o.devicePairingData.deviceProps, 'base64'))));
  return { bytes: hex(bytes), same: JSON.stringify(mine) === JSON.stringify(theirs),
           sameProps: props(mine) === props(theirs) };
});

out.qr = input.qrs.map(({ ref, browser }) => buildPairingQRData(
  ref, creds.noiseKey.public.toString('base64'), creds.signedIdentityKey.public.toString('base64'),
  creds.advSecretKey, browser));

const credsOut = (u) => ({
  me: u.me, platform: u.platform ?? null,
  signalIdentities: u.signalIdentities.map((s) => ({ identifier: s.identifier,
                                                     identifierKey: hex(s.identifierKey) })),
  account: Object.fromEntries(
    ['details', 'accountSignatureKey', 'accountSignature', 'deviceSignature']
      .map((k) => [k, u.account[k] ? hex(u.account[k]) : null])),
});

// A phone built from Baileys' own helpers.
out.baileysPhone = input.phoneCases.map((pc) => {
  const account = Curve.generateKeyPair();
  const identity = { rawId: 77, timestamp: 1764250000, keyIndex: pc.keyIndex };
  if (pc.hosted) { identity.accountType = 1; identity.deviceType = 1; }
  const details = proto.ADVDeviceIdentity.encode(identity).finish();
  const prefix = Buffer.from(pc.hosted ? [6, 5] : [6, 0]);
  const accountSignature = Curve.sign(account.private,
      Buffer.concat([prefix, details, creds.signedIdentityKey.public]));
  const signed = proto.ADVSignedDeviceIdentity.encode(
      { details, accountSignatureKey: account.public, accountSignature }).finish();
  const hmac = hmacSign(Buffer.concat([Buffer.from(pc.hosted ? [6, 5] : []), signed]),
                        Buffer.from(creds.advSecretKey, 'base64'));
  const container = { details: signed, hmac };
  if (pc.hosted) container.accountType = 1;
  const children = [{ tag: 'device-identity', attrs: {},
                      content: proto.ADVSignedDeviceIdentityHMAC.encode(container).finish() }];
  if (pc.platform) children.push({ tag: 'platform', attrs: { name: pc.platform } });
  const device = { jid: pc.jid }; if (pc.lid) device.lid = pc.lid;
  children.push({ tag: 'device', attrs: device });
  if (pc.biz) children.push({ tag: 'biz', attrs: { name: pc.biz } });
  const stanza = { tag: 'iq', attrs: { from: 's.whatsapp.net', type: 'set', id: 'ps-' + pc.keyIndex,
                                       xmlns: 'md', t: '1764250000' },
                   content: [{ tag: 'pair-success', attrs: {}, content: children }] };
  const { creds: update, reply } = configureSuccessfulPairing(stanza, creds);
  return { stanza: hex(encodeBinaryNode(stanza)), creds: credsOut(update),
           reply: hex(encodeBinaryNode(reply)) };
});

// Our phone's stanza and our reply to it.
out.ourPhone = await (async () => {
  const stanza = await decodeBinaryNode(unhex(input.ourPhone.stanza));
  const { creds: update } = configureSuccessfulPairing(stanza, creds);
  const reply = await decodeBinaryNode(unhex(input.ourPhone.reply));
  const di = reply.content[0].content[0];
  const signed = proto.ADVSignedDeviceIdentity.decode(di.content);
  const account = unhex(input.ourPhone.accountPublic);
  const msg = Buffer.concat([Buffer.from([6, 1]), signed.details,
                             creds.signedIdentityKey.public, account]);
  const pub05 = Buffer.concat([Buffer.from([5]), creds.signedIdentityKey.public]);
  const flipped = Buffer.from(signed.deviceSignature); flipped[7] ^= 1;
  return {
    creds: credsOut(update),
    replyTag: reply.tag, replyAttrs: reply.attrs, signTag: reply.content[0].tag,
    keyIndex: di.attrs['key-index'],
    hasAccountKey: !!(signed.accountSignatureKey && signed.accountSignatureKey.length),
    deviceSignatureOk: curve.verifySignature(pub05, msg, signed.deviceSignature) === true,
    flippedOk: curve.verifySignature(pub05, msg, flipped) === true,
  };
})();

// Pre-keys: counters for several cases, and node bytes for keys that all exist.
const memoryKeys = (stored) => {
  const data = { ...stored };
  return {
    get: async (type, ids) =>
      Object.fromEntries(ids.filter((id) => data[id]).map((id) => [id, data[id]])),
    set: async (d) => { Object.assign(data, d['pre-key'] || {}); },
  };
};
out.prekeys = [];
for (const pk of input.prekeyCases) {
  const stored = Object.fromEntries(Object.entries(pk.stored).map(([id, p]) => [id, pair(p)]));
  const state = { creds: { ...creds, nextPreKeyId: pk.next, firstUnuploadedPreKeyId: pk.first },
                  keys: memoryKeys(stored) };
  const { update, node } = await getNextPreKeysNode(state, pk.count);
  node.attrs.id = pk.iqId;
  const ids = node.content[3].content.map(
    (k) => Buffer.from(k.content[0].content).readUIntBE(0, 3));
  out.prekeys.push({ update, ids, bytes: hex(encodeBinaryNode(node)) });
}
const k = pair(input.prekeyCases[0].stored[Object.keys(input.prekeyCases[0].stored)[0]]);
out.xmppPreKey = hex(encodeBinaryNode(xmppPreKey(k, 70000)));
out.xmppSignedPreKey = hex(encodeBinaryNode(xmppSignedPreKey(creds.signedPreKey)));
out.streamErrors = [];
for (const h of input.streamErrors) {
  const node = await decodeBinaryNode(unhex(h));
  out.streamErrors.push(node.tag === 'failure' ? +(node.attrs.reason || 500)
                                               : getErrorCodeFromStreamError(node).statusCode);
}
console.log(JSON.stringify(out));
"""

IDENTITIES = [
    ClientIdentity(),
    ClientIdentity(browser=Browser("Windows", "Desktop", "10.0.22631")),
    ClientIdentity(browser=Browser("Mac OS", "Desktop", "14.4.1"), sync_full_history=False),
    ClientIdentity(
        version=(2, 2413, 51),
        browser=Browser("Ubuntu", "Firefox", "22.04.4"),
        country="BR",
        sync_full_history=False,
        push_name="bot",
    ),
    ClientIdentity(browser=Browser("Baileys", "NoSuchBrowser", "6.5.0")),
]
LOGIN_JIDS = ["15550001111:7@s.whatsapp.net", "447700900123@s.whatsapp.net", "1:0@s.whatsapp.net"]
QR_BROWSERS = [
    Browser(),
    Browser("Windows", "Desktop"),
    Browser("Ubuntu", "Desktop"),
    Browser("Windows", "Edge"),
    Browser("Mac OS", "Safari"),
    Browser("Ubuntu", "Firefox"),
    Browser("Ubuntu", "Opera"),
    Browser("Windows", "IE"),
    Browser("Ubuntu", "Lynx"),
]
PHONE_CASES: list[dict[str, Any]] = [
    {
        "keyIndex": 3,
        "hosted": False,
        "platform": "android",
        "jid": "15550001111:7@s.whatsapp.net",
        "lid": "99887766:7@lid",
        "biz": None,
    },
    {
        "keyIndex": 9,
        "hosted": True,
        "platform": "smbi",
        "jid": "15550002222:3@s.whatsapp.net",
        "lid": "11223344:3@lid",
        "biz": "Shop",
    },
]
STREAM_ERRORS = [
    BinaryNode("stream:error", {"code": code})
    for code in ("515", "401", "440", "408", "428", "500", "503", "411", "403", "599")
] + [
    BinaryNode("stream:error", {}, [BinaryNode("conflict", {"type": "replaced"})]),
    BinaryNode("stream:error", {"code": "401"}, [BinaryNode("conflict")]),
    BinaryNode("stream:error", {}, [BinaryNode("ack", {"id": "1"})]),
    BinaryNode("stream:error", {}),
    BinaryNode("failure", {"reason": "401", "location": "frc"}),
    BinaryNode("failure", {}),
]
# (first unuploaded, next id, count, ids present in the store)
PREKEY_CASES = [
    (10, 20, 5, range(10, 20)),
    (1, 1, 812, range(0)),
    (5, 8, 5, range(5, 8)),
    (30, 30, 5, range(20, 30)),
]


def _hex_pair(pair: KeyPair) -> dict[str, str]:
    return {"private": pair.private.hex(), "public": pair.public.hex()}


def _identity_json(identity: ClientIdentity) -> dict[str, Any]:
    b = identity.browser
    return {
        "version": list(identity.version),
        "browser": [b.os, b.name, b.os_version],
        "country": identity.country,
        "syncFullHistory": identity.sync_full_history,
        "pushName": identity.push_name,
    }


class Run:
    """Everything both sides computed."""

    def __init__(self, peer: BaileysPeer) -> None:
        self.creds = init_auth_creds()
        creds = self.creds
        self.stored = {
            case: {key_id: generate_key_pair() for key_id in case[3]} for case in PREKEY_CASES
        }
        self.our_phone_account = generate_key_pair()
        qr = parse_qr(
            build_qr(
                "2@x",
                creds.noise_key.public,
                creds.signed_identity_key.public,
                creds.adv_secret_key,
                Browser(),
            )
        )
        self.our_stanza = pair_success_stanza(
            qr, account_key=self.our_phone_account, biz_name="Cafe", key_index=4
        )
        self.our_result = verify_pair_success(self.our_stanza, creds)
        signed = creds.signed_pre_key
        request: dict[str, Any] = {
            "creds": {
                "registrationId": creds.registration_id,
                "advSecretKey": creds.adv_secret_key,
                "noiseKey": _hex_pair(creds.noise_key),
                "signedIdentityKey": _hex_pair(creds.signed_identity_key),
                "signedPreKey": {
                    "keyId": signed.key_id,
                    "keyPair": _hex_pair(signed.key_pair),
                    "signature": signed.signature.hex(),
                },
            },
            "logins": [
                {
                    "jid": jid,
                    "config": _identity_json(identity),
                    "ours": login_payload(jid, identity).SerializeToString().hex(),
                }
                for jid in LOGIN_JIDS
                for identity in IDENTITIES
            ],
            "registrations": [
                {
                    "config": _identity_json(identity),
                    "ours": registration_payload(creds, identity).SerializeToString().hex(),
                }
                for identity in IDENTITIES
            ],
            "qrs": [
                {"ref": f"2@ref{i}+/=", "browser": [b.os, b.name, b.os_version]}
                for i, b in enumerate(QR_BROWSERS)
            ],
            "phoneCases": PHONE_CASES,
            "ourPhone": {
                "stanza": encode_node(self.our_stanza).hex(),
                "reply": encode_node(self.our_result.reply).hex(),
                "accountPublic": self.our_phone_account.public.hex(),
            },
            "streamErrors": [encode_node(node).hex() for node in STREAM_ERRORS],
            "prekeyCases": [
                {
                    "first": first,
                    "next": next_id,
                    "count": count,
                    "iqId": f"up-{i}",
                    "stored": {
                        str(key_id): _hex_pair(pair)
                        for key_id, pair in self.stored[(first, next_id, count, ids)].items()
                    }
                    or {"1": _hex_pair(generate_key_pair())},
                }
                for i, (first, next_id, count, ids) in enumerate(PREKEY_CASES)
            ],
        }
        self.request = request
        self.out: dict[str, Any] = peer.run_json(SCRIPT, stdin=request, timeout=120)


@pytest.fixture(scope="module")
def run(baileys_peer: BaileysPeer) -> Run:
    """One node run for the module."""
    return Run(baileys_peer)


def test_login_payload_bytes_equal_baileys(run: Run) -> None:
    """Our login ClientPayload is byte-equal to generateLoginNode for every identity and JID."""
    for case, theirs in zip(run.request["logins"], run.out["login"], strict=True):
        assert theirs["same"], case["jid"]
        assert case["ours"] == theirs["bytes"], (case["jid"], case["config"])


def test_registration_payload_bytes_equal_baileys(run: Run) -> None:
    """Our registration ClientPayload (with DeviceProps) is byte-equal to Baileys'."""
    for case, theirs in zip(run.request["registrations"], run.out["registration"], strict=True):
        assert theirs["same"] and theirs["sameProps"], case["config"]
        assert case["ours"] == theirs["bytes"], case["config"]


def test_qr_string_equals_baileys(run: Run) -> None:
    """Our QR string equals buildPairingQRData for each browser, and parses back."""
    creds = run.creds
    for case, theirs, browser in zip(run.request["qrs"], run.out["qr"], QR_BROWSERS, strict=True):
        ours = build_qr(
            case["ref"],
            creds.noise_key.public,
            creds.signed_identity_key.public,
            creds.adv_secret_key,
            browser,
        )
        assert ours == theirs
        parsed = parse_qr(theirs)
        assert parsed.ref == case["ref"]
        assert parsed.identity_public == creds.signed_identity_key.public


def _ours_as_baileys(result: VerifiedPairing) -> dict[str, Any]:
    update = result.update
    return {
        "me": update.me,
        "platform": update.platform,
        "signalIdentities": [
            {"identifier": s["identifier"], "identifierKey": s["identifierKey"].hex()}
            for s in update.signal_identities
        ],
        "account": {
            k: update.account[k].hex() if k in update.account else None
            for k in ("details", "accountSignatureKey", "accountSignature", "deviceSignature")
        },
    }


def _without_device_signature(creds: dict[str, Any]) -> dict[str, Any]:
    return {**creds, "account": {**creds["account"], "deviceSignature": None}}


def test_baileys_made_pair_success_verifies_in_ours(run: Run) -> None:
    """A pair-success built with Baileys' Curve/hmacSign verifies, giving Baileys' creds change."""
    for case, theirs in zip(PHONE_CASES, run.out["baileysPhone"], strict=True):
        stanza = decode_node(bytes.fromhex(theirs["stanza"]))
        result = verify_pair_success(stanza, run.creds)
        ours = _ours_as_baileys(result)
        assert _without_device_signature(ours) == _without_device_signature(theirs["creds"])
        account_key = result.update.account["accountSignatureKey"]
        for signature in (ours, theirs["creds"]):
            message = (
                b"\x06\x01"
                + result.update.account["details"]
                + run.creds.signed_identity_key.public
                + account_key
            )
            sig = bytes.fromhex(signature["account"]["deviceSignature"])
            assert verify(run.creds.signed_identity_key.public, message, sig), case


def test_our_reply_equals_baileys_reply_but_for_the_signature(run: Run) -> None:
    """Our pair-device-sign reply equals Baileys' byte for byte once its signature is swapped in."""
    for theirs in run.out["baileysPhone"]:
        stanza = decode_node(bytes.fromhex(theirs["stanza"]))
        result = verify_pair_success(stanza, run.creds)
        their_reply = decode_node(bytes.fromhex(theirs["reply"]))
        their_signed = wa_pb2.ADVSignedDeviceIdentity.FromString(
            their_reply.require_child("pair-device-sign", "device-identity").require_bytes()
        )
        ours = result.reply
        node = ours.require_child("pair-device-sign", "device-identity")
        signed = wa_pb2.ADVSignedDeviceIdentity.FromString(node.require_bytes())
        signed.deviceSignature = their_signed.deviceSignature
        swapped = BinaryNode(
            ours.tag,
            ours.attrs,
            [
                BinaryNode(
                    "pair-device-sign",
                    {},
                    [BinaryNode("device-identity", node.attrs, signed.SerializeToString())],
                )
            ],
        )
        assert encode_node(swapped).hex() == theirs["reply"]


def test_baileys_accepts_our_phone_and_our_reply(run: Run) -> None:
    """Baileys derives our creds from our phone's stanza; libsignal verifies our reply."""
    theirs = run.out["ourPhone"]
    ours = _ours_as_baileys(run.our_result)
    assert _without_device_signature(ours) == _without_device_signature(theirs["creds"])
    assert theirs["replyTag"] == "iq"
    assert theirs["replyAttrs"] == {"to": "@s.whatsapp.net", "type": "result", "id": "pair-1"}
    assert theirs["signTag"] == "pair-device-sign"
    assert theirs["keyIndex"] == "4"
    assert theirs["hasAccountKey"] is False
    assert theirs["deviceSignatureOk"] is True
    assert theirs["flippedOk"] is False


def test_hosted_case_was_exercised(run: Run) -> None:
    """The Baileys-made hosted pair-success really used the hosted HMAC and signature prefixes."""
    stanza = decode_node(bytes.fromhex(run.out["baileysPhone"][1]["stanza"]))
    body = stanza.require_child("pair-success", "device-identity").require_bytes()
    container = wa_pb2.ADVSignedDeviceIdentityHMAC.FromString(body)
    assert container.accountType == HOSTED
    identity = wa_pb2.ADVDeviceIdentity.FromString(
        wa_pb2.ADVSignedDeviceIdentity.FromString(container.details).details
    )
    assert identity.deviceType == HOSTED


def test_close_codes_equal_baileys(run: Run) -> None:
    """Our code for each stream:error / failure equals Baileys' getErrorCodeFromStreamError."""
    ours = []
    for node in STREAM_ERRORS:
        client, server = open_connection(paired_creds())
        [event] = exchange(client, server, node)[0]
        assert isinstance(event, RestartRequired | StreamError)
        ours.append(event.code)
    assert ours == run.out["streamErrors"]


def test_prekey_plan_counters_equal_baileys(run: Run) -> None:
    """Our plan moves nextPreKeyId/firstUnuploadedPreKeyId and picks upload ids as Baileys does."""
    for case, theirs in zip(PREKEY_CASES, run.out["prekeys"], strict=True):
        first, next_id, count, _ = case
        creds = _with_counters(run.creds, first, next_id)
        plan = plan_upload(creds, count)
        assert {
            "nextPreKeyId": plan.next_pre_key_id,
            "firstUnuploadedPreKeyId": plan.first_unuploaded_pre_key_id,
        } == theirs["update"], case
        assert list(plan.upload_ids) == theirs["ids"], case
        assert set(plan.new_keys) == set(range(next_id, max(next_id, first + count))), case


def test_prekey_upload_node_bytes_equal_baileys(run: Run) -> None:
    """With every key already stored, our upload iq is byte-equal to getNextPreKeysNode's."""
    first, next_id, count, _ = PREKEY_CASES[0]
    creds = _with_counters(run.creds, first, next_id)
    plan = plan_upload(creds, count)
    assert not plan.new_keys
    stored = run.stored[PREKEY_CASES[0]]
    keys = {key_id: stored[key_id] for key_id in plan.upload_ids}
    assert encode_node(upload_iq("up-0", creds, keys)).hex() == run.out["prekeys"][0]["bytes"]


def test_key_and_skey_nodes_equal_baileys(run: Run) -> None:
    """xmppPreKey and xmppSignedPreKey encode to the same bytes as ours."""
    case = run.request["prekeyCases"][0]
    first_id = next(iter(case["stored"]))
    pair = case["stored"][first_id]
    key = KeyPair(private=bytes.fromhex(pair["private"]), public=bytes.fromhex(pair["public"]))
    assert encode_node(pre_key_node(70000, key)).hex() == run.out["xmppPreKey"]
    assert (
        encode_node(signed_pre_key_node(run.creds.signed_pre_key)).hex()
        == (run.out["xmppSignedPreKey"])
    )


def _with_counters(creds: AuthCreds, first: int, next_id: int) -> AuthCreds:
    out = creds.copy()
    out.first_unuploaded_pre_key_id = first
    out.next_pre_key_id = next_id
    return out


def test_qr_adv_secret_is_the_stored_base64(run: Run) -> None:
    """The QR's fourth field is creds.advSecretKey exactly as stored (no re-encoding)."""
    parsed = parse_qr(run.out["qr"][0])
    assert parsed.adv_secret_key == run.creds.adv_secret_key
    assert base64.b64decode(parsed.adv_secret_key) == base64.b64decode(run.creds.adv_secret_key)
