"""Certificate chains: every rule really checked, chains made for the sandbox verify."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from actors.connection.certs import (
    WHATSAPP_ROOT,
    WHATSAPP_ROOT_PUBLIC_KEY,
    CertificateDetails,
    RootKey,
    make_cert_chain,
    verify_cert_chain,
)
from actors.connection.errors import BAD_HANDSHAKE, RemoteProtocolError
from actors.connection.noise import generate_key_pair
from actors.connection.proto import wa_pb2
from stores.creds import KeyPair
from stores.keys import sign, verify
from tests.baileys_peer import BaileysPeer

Cert = wa_pb2.CertChain.NoiseCertificate


def _keys() -> tuple[KeyPair, KeyPair, KeyPair]:
    return generate_key_pair(), generate_key_pair(), generate_key_pair()


def _chain(root: KeyPair, intermediate: KeyPair, static: KeyPair, **kw: int) -> bytes:
    return make_cert_chain(
        root_private_key=root.private,
        intermediate_private_key=intermediate.private,
        server_static_public=static.public,
        **kw,
    )


def test_default_root_is_the_real_whatsapp_key() -> None:
    """Without configuration the trust anchor is WhatsApp's root, serial 0."""
    assert WHATSAPP_ROOT_PUBLIC_KEY.hex() == (
        "142375574d0a587166aae71ebe516437c4a28b73e3695c6ce1f7f9545da8ee6b"
    )
    assert WHATSAPP_ROOT == RootKey(WHATSAPP_ROOT_PUBLIC_KEY, 0)


def test_made_chain_verifies_under_its_root() -> None:
    """A chain from make_cert_chain passes and reports both certificates' details."""
    root, intermediate, static = _keys()
    chain = _chain(root, intermediate, static, not_before=100, not_after=200)
    verified = verify_cert_chain(chain, server_static=static.public, root=RootKey(root.public))
    assert verified.intermediate == CertificateDetails(1, 0, intermediate.public, 100, 200)
    assert verified.leaf == CertificateDetails(2, 1, static.public, 100, 200)


def test_sandbox_chain_is_rejected_under_the_whatsapp_root() -> None:
    """With the default root, a chain signed by any other root fails."""
    root, intermediate, static = _keys()
    with pytest.raises(RemoteProtocolError, match="intermediate certificate signature") as info:
        verify_cert_chain(_chain(root, intermediate, static), server_static=static.public)
    assert info.value.error_status_hint == BAD_HANDSHAKE


def test_wrong_root_key_is_rejected() -> None:
    """A configured root that did not sign the intermediate is refused."""
    root, intermediate, static = _keys()
    other = generate_key_pair()
    with pytest.raises(RemoteProtocolError, match="under the root key"):
        verify_cert_chain(
            _chain(root, intermediate, static),
            server_static=static.public,
            root=RootKey(other.public),
        )


def test_intermediate_issuer_serial_must_be_the_roots() -> None:
    """The intermediate's issuerSerial must equal the root's serial."""
    root, intermediate, static = _keys()
    chain = _chain(root, intermediate, static, root_serial=7)
    with pytest.raises(RemoteProtocolError, match="issuerSerial is 7, the root's serial is 0"):
        verify_cert_chain(chain, server_static=static.public, root=RootKey(root.public))
    verified = verify_cert_chain(chain, server_static=static.public, root=RootKey(root.public, 7))
    assert verified.intermediate.issuer_serial == 7


def test_leaf_issuer_serial_must_be_the_intermediates_serial() -> None:
    """A leaf naming another issuer serial is refused even with valid signatures."""
    root, intermediate, static = _keys()
    leaf = wa_pb2.CertChain.NoiseCertificate.Details(
        serial=2, issuerSerial=9, key=static.public
    ).SerializeToString()
    chain = wa_pb2.CertChain.FromString(_chain(root, intermediate, static))
    chain.leaf.CopyFrom(Cert(details=leaf, signature=sign(intermediate.private, leaf)))
    with pytest.raises(RemoteProtocolError, match="leaf issuerSerial is 9"):
        verify_cert_chain(
            chain.SerializeToString(), server_static=static.public, root=RootKey(root.public)
        )


def test_leaf_must_certify_the_server_static_key() -> None:
    """A valid chain for another key does not vouch for this server's static key."""
    root, intermediate, static = _keys()
    with pytest.raises(RemoteProtocolError, match="not the server's static key"):
        verify_cert_chain(
            _chain(root, intermediate, static),
            server_static=generate_key_pair().public,
            root=RootKey(root.public),
        )


def test_leaf_signed_by_another_key_is_rejected() -> None:
    """The leaf must be signed by the intermediate's key, not any key."""
    root, intermediate, static = _keys()
    chain = wa_pb2.CertChain.FromString(_chain(root, intermediate, static))
    chain.leaf.signature = sign(generate_key_pair().private, chain.leaf.details)
    with pytest.raises(RemoteProtocolError, match="leaf certificate signature"):
        verify_cert_chain(
            chain.SerializeToString(), server_static=static.public, root=RootKey(root.public)
        )


def test_any_flipped_bit_in_the_chain_is_rejected() -> None:
    """Flipping any single bit of an encoded chain makes verification fail, typed."""
    root, intermediate, static = _keys()
    chain = _chain(root, intermediate, static)
    for index in range(len(chain)):
        for bit in (0, 7):
            mutated = bytearray(chain)
            mutated[index] ^= 1 << bit
            with pytest.raises(RemoteProtocolError):
                verify_cert_chain(
                    bytes(mutated), server_static=static.public, root=RootKey(root.public)
                )


Mutation = Callable[[wa_pb2.CertChain], None]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda c: c.ClearField("leaf"), "leaf certificate missing"),
        (lambda c: c.ClearField("intermediate"), "intermediate certificate missing"),
        (lambda c: c.leaf.ClearField("signature"), "leaf certificate lacks"),
        (lambda c: c.intermediate.ClearField("details"), "intermediate certificate lacks"),
        (lambda c: setattr(c.leaf, "signature", b"\x00" * 63), "63 bytes, expected 64"),
    ],
)
def test_incomplete_chains_are_rejected(mutate: Mutation, reason: str) -> None:
    """Missing certificates, details or signatures are named in the error."""
    root, intermediate, static = _keys()
    chain = wa_pb2.CertChain.FromString(_chain(root, intermediate, static))
    mutate(chain)
    with pytest.raises(RemoteProtocolError, match=reason):
        verify_cert_chain(
            chain.SerializeToString(), server_static=static.public, root=RootKey(root.public)
        )


def test_garbage_is_a_remote_error() -> None:
    """Bytes that are not a CertChain protobuf give a typed error."""
    with pytest.raises(RemoteProtocolError, match="not a valid protobuf"):
        verify_cert_chain(b"\xff\xff\xff", server_static=bytes(32))


def test_validity_window_is_checked_when_time_is_given() -> None:
    """With ``now``, a chain outside notBefore..notAfter is refused; 0 bounds mean unset."""
    root, intermediate, static = _keys()
    anchor = RootKey(root.public)
    dated = _chain(root, intermediate, static, not_before=100, not_after=200)
    verify_cert_chain(dated, server_static=static.public, root=anchor, now=150)
    with pytest.raises(RemoteProtocolError, match="not valid before 100"):
        verify_cert_chain(dated, server_static=static.public, root=anchor, now=99)
    with pytest.raises(RemoteProtocolError, match="expired at 200"):
        verify_cert_chain(dated, server_static=static.public, root=anchor, now=201)
    undated = _chain(root, intermediate, static)
    verify_cert_chain(undated, server_static=static.public, root=anchor, now=10**10)


def test_signatures_verify_only_for_the_signer_and_message() -> None:
    """Our XEdDSA signature verifies under the signer's key and nothing else."""
    signer, other = generate_key_pair(), generate_key_pair()
    signature = sign(signer.private, b"details")
    assert verify(signer.public, b"details", signature)
    assert not verify(other.public, b"details", signature)
    assert not verify(signer.public, b"detailz", signature)
    assert not verify(signer.public, b"details", signature[:63])


def test_signatures_cross_with_libsignal(baileys_peer: BaileysPeer) -> None:
    """libsignal accepts our chain signatures, and its signatures verify in ours."""
    root, intermediate, static = _keys()
    chain = wa_pb2.CertChain.FromString(_chain(root, intermediate, static))
    script = r"""
import { readFileSync } from 'node:fs';
import { Curve } from 'baileys';
import * as curve from 'libsignal/src/curve.js';
const input = JSON.parse(readFileSync(0, 'utf8'));
const b = (s) => Buffer.from(s, 'hex');
const pub = (k) => Buffer.concat([Buffer.from([5]), b(k)]);
const check = (k, m, s) => curve.verifySignature(pub(k), b(m), b(s)) === true;
const tampered = b(input.details); tampered[0] ^= 1;
const signer = Curve.generateKeyPair();
const message = Buffer.from('signed by libsignal');
console.log(JSON.stringify({
  ours: check(input.root, input.details, input.signature),
  oursTampered: curve.verifySignature(pub(input.root), tampered, b(input.signature)) === true,
  theirs: { key: signer.public.toString('hex'), message: message.toString('hex'),
            signature: Buffer.from(Curve.sign(signer.private, message)).toString('hex') },
}));
"""
    result = baileys_peer.run_json(
        script,
        stdin={
            "root": root.public.hex(),
            "details": chain.intermediate.details.hex(),
            "signature": chain.intermediate.signature.hex(),
        },
    )
    assert result["ours"] is True
    assert result["oursTampered"] is False
    theirs = result["theirs"]
    key, message, signature = (bytes.fromhex(theirs[k]) for k in ("key", "message", "signature"))
    assert verify(key, message, signature)
    assert not verify(key, message + b"!", signature)
