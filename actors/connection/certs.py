"""The Noise certificate chain: verify the server's, and make one for the sandbox.

The server's ServerHello payload is a ``CertChain``: an *intermediate*
certificate signed by the root key, and a *leaf* signed by the intermediate's
key, whose key must be the server's Noise static key. Baileys decodes the chain
but its signature checks always pass (libsignal's ``verifySignature`` returns
false instead of throwing); we really check, with these rules (also those of
whatsmeow's ``verifyServerCert``):

1. both certificates are present, each with ``details`` and a 64-byte ``signature``;
2. the intermediate's signature verifies under the root public key;
3. the intermediate's ``issuerSerial`` equals the root's serial (0 for WhatsApp);
4. the leaf's signature verifies under the intermediate's ``key``;
5. the leaf's ``issuerSerial`` equals the intermediate's ``serial``;
6. the leaf's ``key`` equals the server static key decrypted in the handshake;
7. when the caller passes ``now`` (unix seconds), it lies within each
   certificate's ``notBefore``..``notAfter`` (a bound of 0 means "unset").

Signatures are XEdDSA over Curve25519 keys, as libsignal makes them
(``stores.keys.sign`` / ``verify``). Since 0.1.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import DecodeError as ProtobufDecodeError

from actors.connection.errors import BAD_HANDSHAKE, RemoteProtocolError, UntrustedServerError
from actors.connection.proto import wa_pb2
from stores.keys import public_from_private, sign, verify

#: The real WhatsApp root public key (issuer ``WhatsAppLongTerm1``, serial 0).
WHATSAPP_ROOT_PUBLIC_KEY = bytes.fromhex(
    "142375574d0a587166aae71ebe516437c4a28b73e3695c6ce1f7f9545da8ee6b"
)
WHATSAPP_ROOT_SERIAL = 0
WHATSAPP_ROOT_ISSUER = "WhatsAppLongTerm1"

_M = TypeVar("_M", wa_pb2.CertChain, wa_pb2.CertChain.NoiseCertificate.Details)
_KEY_SIZE = 32
_SIGNATURE_SIZE = 64


@dataclass(frozen=True)
class RootKey:
    """A trust anchor: the public key that signs intermediates and its serial."""

    public_key: bytes
    serial: int = 0


#: The default trust anchor: WhatsApp's production root.
WHATSAPP_ROOT = RootKey(WHATSAPP_ROOT_PUBLIC_KEY, WHATSAPP_ROOT_SERIAL)


@dataclass(frozen=True)
class CertificateDetails:
    """The signed fields of one certificate."""

    serial: int
    issuer_serial: int
    key: bytes
    not_before: int
    not_after: int


@dataclass(frozen=True)
class VerifiedCertChain:
    """A chain that passed every rule; ``leaf.key`` is the server static key."""

    intermediate: CertificateDetails
    leaf: CertificateDetails


def verify_cert_chain(
    payload: bytes,
    *,
    server_static: bytes,
    root: RootKey = WHATSAPP_ROOT,
    now: int | None = None,
) -> VerifiedCertChain:
    """Check the encoded CertChain ``payload`` by the rules above; RemoteProtocolError if not."""
    chain = _parse(wa_pb2.CertChain, payload, "cert chain")
    intermediate_cert = _certificate(chain, "intermediate")
    leaf_cert = _certificate(chain, "leaf")
    if not verify(root.public_key, intermediate_cert.details, intermediate_cert.signature):
        raise UntrustedServerError(
            "intermediate certificate signature does not verify under the root key"
        )
    intermediate = _details(intermediate_cert.details, "intermediate")
    if intermediate.issuer_serial != root.serial:
        raise UntrustedServerError(
            f"intermediate issuerSerial is {intermediate.issuer_serial},"
            f" the root's serial is {root.serial}"
        )
    if not verify(intermediate.key, leaf_cert.details, leaf_cert.signature):
        raise _fail("leaf certificate signature does not verify under the intermediate key")
    leaf = _details(leaf_cert.details, "leaf")
    if leaf.issuer_serial != intermediate.serial:
        raise _fail(
            f"leaf issuerSerial is {leaf.issuer_serial},"
            f" the intermediate's serial is {intermediate.serial}"
        )
    if leaf.key != server_static:
        raise _fail("leaf certificate key is not the server's static key")
    if now is not None:
        _check_validity(intermediate, "intermediate", now)
        _check_validity(leaf, "leaf", now)
    return VerifiedCertChain(intermediate=intermediate, leaf=leaf)


def make_cert_chain(
    *,
    root_private_key: bytes,
    intermediate_private_key: bytes,
    server_static_public: bytes,
    root_serial: int = 0,
    intermediate_serial: int = 1,
    leaf_serial: int = 2,
    not_before: int = 0,
    not_after: int = 0,
) -> bytes:
    """An encoded CertChain for a server static key, signed from ``root_private_key``.

    For the sandbox and tests: the chain verifies under the root's public key.
    """
    intermediate = _encode_details(
        serial=intermediate_serial,
        issuer_serial=root_serial,
        key=public_from_private(intermediate_private_key),
        not_before=not_before,
        not_after=not_after,
    )
    leaf = _encode_details(
        serial=leaf_serial,
        issuer_serial=intermediate_serial,
        key=server_static_public,
        not_before=not_before,
        not_after=not_after,
    )
    chain = wa_pb2.CertChain(
        intermediate=wa_pb2.CertChain.NoiseCertificate(
            details=intermediate, signature=sign(root_private_key, intermediate)
        ),
        leaf=wa_pb2.CertChain.NoiseCertificate(
            details=leaf, signature=sign(intermediate_private_key, leaf)
        ),
    )
    return bytes(chain.SerializeToString())


def _encode_details(
    *, serial: int, issuer_serial: int, key: bytes, not_before: int, not_after: int
) -> bytes:
    details = wa_pb2.CertChain.NoiseCertificate.Details(
        serial=serial, issuerSerial=issuer_serial, key=key
    )
    if not_before:
        details.notBefore = not_before
    if not_after:
        details.notAfter = not_after
    return bytes(details.SerializeToString())


def _fail(reason: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"server cert chain: {reason}", error_status_hint=BAD_HANDSHAKE)


def _parse(cls: type[_M], data: bytes, what: str) -> _M:
    message = cls()
    try:
        message.ParseFromString(data)
    except ProtobufDecodeError as exc:
        raise _fail(f"{what} is not a valid protobuf ({exc})") from exc
    return message


def _certificate(chain: wa_pb2.CertChain, which: str) -> wa_pb2.CertChain.NoiseCertificate:
    if not chain.HasField(which):
        raise _fail(f"{which} certificate missing")
    cert: wa_pb2.CertChain.NoiseCertificate = getattr(chain, which)
    if not cert.HasField("details") or not cert.HasField("signature"):
        raise _fail(f"{which} certificate lacks details or signature")
    if len(cert.signature) != _SIGNATURE_SIZE:
        raise _fail(f"{which} signature is {len(cert.signature)} bytes, expected 64")
    return cert


def _details(data: bytes, which: str) -> CertificateDetails:
    details = _parse(wa_pb2.CertChain.NoiseCertificate.Details, data, f"{which} details")
    if len(details.key) != _KEY_SIZE:
        raise _fail(f"{which} key is {len(details.key)} bytes, expected 32")
    return CertificateDetails(
        serial=details.serial,
        issuer_serial=details.issuerSerial,
        key=bytes(details.key),
        not_before=details.notBefore,
        not_after=details.notAfter,
    )


def _check_validity(details: CertificateDetails, which: str, now: int) -> None:
    if details.not_before and now < details.not_before:
        raise _fail(f"{which} certificate not valid before {details.not_before} (now {now})")
    if details.not_after and now > details.not_after:
        raise _fail(f"{which} certificate expired at {details.not_after} (now {now})")
