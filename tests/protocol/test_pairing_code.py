"""The link-code crypto: the code, the wrapped keys, the key bundle and the adv secret.

The interop test feeds fixed inputs to Baileys' own functions under node
(``bytesToCrockford``, ``derivePairingCodeKey``, ``aesEncryptCTR``, ``hkdf``,
``aesEncryptGCM``, ``Curve.sharedKey``), composed as its ``generatePairingKey`` and
``link_code_companion_reg`` handler compose them, and compares every byte with ours.
"""

from __future__ import annotations

import base64

import pytest

from actors.connection.binary import BinaryNode
from actors.connection.errors import RemoteProtocolError
from actors.connection.pairing_code import (
    CODE_ALPHABET,
    CodeRequest,
    KeyBundle,
    KeyBundleError,
    PairingCodeError,
    adv_secret,
    bundle_key,
    bytes_to_code,
    code_key,
    display_code,
    new_code,
    normalize_code,
    open_key_bundle,
    parse_primary_hello,
    seal_key_bundle,
    unwrap_public_key,
    wrap_public_key,
)
from actors.connection.payload import Browser
from stores.keys import generate_key_pair, shared_secret
from tests.baileys_peer import BaileysPeer

SALT = bytes(range(32))
CTR_IV = bytes(range(100, 116))
GCM_IV = bytes(range(200, 212))
RANDOM = bytes(range(50, 82))


def test_a_new_code_is_8_characters_of_the_alphabet() -> None:
    """new_code: 8 characters, each from the code alphabet, fresh each time."""
    codes = {new_code() for _ in range(50)}
    assert len(codes) == 50
    assert all(len(c) == 8 and set(c) <= set(CODE_ALPHABET) for c in codes)


def test_a_code_is_shown_with_a_dash_and_read_back_as_typed() -> None:
    """display_code splits 4-4; normalize_code takes any case, dashes and spaces."""
    assert display_code("ABCDEFGH") == "ABCD-EFGH"
    assert normalize_code("abcd-efgh") == "ABCDEFGH"
    assert normalize_code(" ABCD EFGH ") == "ABCDEFGH"


@pytest.mark.parametrize(
    ("text", "says"),
    [("ABCD-EFG", "8 characters"), ("ABCD-EFG0", "'0'"), ("ABCDEFGHJ", "got 9"), ("", "got 0")],
)
def test_a_code_that_is_not_one_is_refused_naming_why(text: str, says: str) -> None:
    """Wrong length or a character outside the alphabet: PairingCodeError saying which."""
    with pytest.raises(PairingCodeError, match=says):
        normalize_code(text)


def test_a_wrapped_key_unwraps_under_the_same_code_only() -> None:
    """wrap then unwrap gives the key back; another code gives another key (CTR, no tag)."""
    key = generate_key_pair().public
    wrapped = wrap_public_key("ABCDEFGH", key)
    assert len(wrapped) == 80
    assert unwrap_public_key("ABCDEFGH", wrapped, "w") == key
    assert unwrap_public_key("ABCDEFGJ", wrapped, "w") != key
    with pytest.raises(RemoteProtocolError, match="w: 79 bytes"):
        unwrap_public_key("ABCDEFGH", wrapped[:-1], "w")


def test_the_bundle_opens_under_the_shared_key_and_refuses_any_other() -> None:
    """seal/open round trip; a different shared secret (a wrong code) is KeyBundleError."""
    bundle = KeyBundle(b"c" * 32, b"p" * 32, RANDOM)
    sealed = seal_key_bundle(b"s" * 32, bundle)
    assert open_key_bundle(b"s" * 32, sealed) == bundle
    with pytest.raises(KeyBundleError, match="wrong code"):
        open_key_bundle(b"t" * 32, sealed)
    with pytest.raises(KeyBundleError, match="bytes"):
        open_key_bundle(b"s" * 32, sealed[:-1])


def _primary_hello(ref: bytes, identity: bytes, wrapped: bytes) -> BinaryNode:
    children = [
        BinaryNode("link_code_pairing_ref", {}, ref),
        BinaryNode("primary_identity_pub", {}, identity),
        BinaryNode("link_code_pairing_wrapped_primary_ephemeral_pub", {}, wrapped),
    ]
    reg = BinaryNode("link_code_companion_reg", {"stage": "primary_hello"}, children)
    return BinaryNode("notification", {"type": "link_code_companion_reg", "id": "1"}, [reg])


def test_companion_and_phone_derive_the_same_adv_secret() -> None:
    """The companion's finish and the phone's own derivation agree on the adv secret."""
    code = new_code()
    companion = CodeRequest("15551234567", code, generate_key_pair(), generate_key_pair())
    hello = companion.hello("1", b"n" * 32, Browser())
    reg = hello.child("link_code_companion_reg")
    assert reg is not None and reg.attrs["jid"] == "15551234567@s.whatsapp.net"
    wrapped_companion = reg.child("link_code_pairing_wrapped_companion_ephemeral_pub")
    assert wrapped_companion is not None and isinstance(wrapped_companion.content, bytes)
    # The phone's side.
    account, ephemeral = generate_key_pair(), generate_key_pair()
    companion_ephemeral = unwrap_public_key(code, wrapped_companion.content, "companion")
    node = _primary_hello(b"ref", account.public, wrap_public_key(code, ephemeral.public))
    finish, secret = companion.finish("2", parse_primary_hello(node))
    freg = finish.child("link_code_companion_reg")
    assert freg is not None and freg.attrs["stage"] == "companion_finish"
    sealed = freg.child("link_code_pairing_wrapped_key_bundle")
    assert sealed is not None and isinstance(sealed.content, bytes)
    shared = shared_secret(ephemeral.private, companion_ephemeral)
    bundle = open_key_bundle(shared, sealed.content)
    assert bundle.companion_identity == companion.identity.public
    assert bundle.primary_identity == account.public
    phone_secret = adv_secret(
        shared, shared_secret(account.private, bundle.companion_identity), bundle.random
    )
    assert base64.b64decode(secret) == phone_secret


def test_a_primary_hello_missing_a_part_is_a_remote_error_naming_it() -> None:
    """No ref, or an identity of the wrong size: RemoteProtocolError naming the child."""
    node = _primary_hello(b"", b"i" * 32, b"w" * 80)
    with pytest.raises(RemoteProtocolError, match="link_code_pairing_ref missing"):
        parse_primary_hello(node)
    with pytest.raises(RemoteProtocolError, match="31 bytes"):
        parse_primary_hello(_primary_hello(b"r", b"i" * 31, b"w" * 80))


BAILEYS = r"""
import { bytesToCrockford, derivePairingCodeKey, aesEncryptCTR, aesEncryptGCM, hkdf, Curve }
  from 'baileys';
const input = JSON.parse(await new Promise((ok) => {
  let s = ''; process.stdin.on('data', (d) => s += d); process.stdin.on('end', () => ok(s));
}));
const unhex = (s) => Buffer.from(s, 'hex');
const hex = (b) => Buffer.from(b).toString('hex');
const salt = unhex(input.salt), iv = unhex(input.ctr_iv);
const key = await derivePairingCodeKey(input.code, salt);
const wrapped = Buffer.concat([salt, iv, aesEncryptCTR(unhex(input.public), key, iv)]);
const shared = Curve.sharedKey(unhex(input.private), unhex(input.peer));
const bkey = hkdf(shared, 32, { salt, info: 'link_code_pairing_key_bundle_encryption_key' });
const payload = Buffer.concat([unhex(input.public), unhex(input.peer), unhex(input.random)]);
const sealed = Buffer.concat([salt, unhex(input.gcm_iv),
  aesEncryptGCM(payload, bkey, unhex(input.gcm_iv), Buffer.alloc(0))]);
const adv = hkdf(Buffer.concat([shared, shared, unhex(input.random)]), 32, { info: 'adv_secret' });
console.log(JSON.stringify({
  code: bytesToCrockford(unhex(input.code_bytes)), key: hex(key), wrapped: hex(wrapped),
  shared: hex(shared), bundle_key: hex(bkey), sealed: hex(sealed), adv: hex(adv) }));
"""


@pytest.mark.peer
def test_every_derivation_matches_baileys_byte_for_byte(baileys_peer: BaileysPeer) -> None:
    """Code from bytes, code key, wrapped key, DH, bundle key, sealed bundle, adv secret."""
    mine, peer = generate_key_pair(), generate_key_pair()
    code_bytes = bytes.fromhex("a1b2c3d4e5")
    code = bytes_to_code(code_bytes)
    got = baileys_peer.run_json(
        BAILEYS,
        stdin={
            "code": code,
            "code_bytes": code_bytes.hex(),
            "salt": SALT.hex(),
            "ctr_iv": CTR_IV.hex(),
            "gcm_iv": GCM_IV.hex(),
            "public": mine.public.hex(),
            "private": mine.private.hex(),
            "peer": peer.public.hex(),
            "random": RANDOM.hex(),
        },
    )
    assert got["code"] == code
    assert bytes.fromhex(got["key"]) == code_key(code, SALT)
    assert bytes.fromhex(got["wrapped"]) == wrap_public_key(code, mine.public, salt=SALT, iv=CTR_IV)
    shared = shared_secret(mine.private, peer.public)
    assert bytes.fromhex(got["shared"]) == shared
    assert bytes.fromhex(got["bundle_key"]) == bundle_key(shared, SALT)
    bundle = KeyBundle(mine.public, peer.public, RANDOM)
    assert bytes.fromhex(got["sealed"]) == seal_key_bundle(shared, bundle, salt=SALT, iv=GCM_IV)
    assert bytes.fromhex(got["adv"]) == adv_secret(shared, shared, RANDOM)
