"""The server's side of pairing by code: the companion's two iqs and the phone's hello.

Rules (the stanzas are :mod:`actors.connection.pairing_code`'s):

- ``companion_hello`` is accepted only on a connection that is pairing, for an
  account the sandbox has, carrying the noise key the connection registered and a
  wrapped key of 80 bytes; the answer is a fresh ``link_code_pairing_ref``. The
  newest hello of an account is the one its phone answers;
- the phone's hello goes to the companion as ``notification
  type=link_code_companion_reg``;
- ``companion_finish`` must name that ref and the identity key the connection
  registered; the server answers it and hands the wrapped key bundle to the phone,
  which alone can open it (the server never sees the code).

Pure, no I/O. Since 0.2.0.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field

from actors.connection.binary import S_WHATSAPP_NET, BinaryNode, Jid, JidError
from actors.connection.pairing_code import LINK_CODE_TAG, WRAPPED_KEY_SIZE


class LinkCodeRefused(ValueError):
    """A link-code iq the server answers with an error: ``code`` and the message say why."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class CodeHello:
    """A companion's pending request for a code (what its phone's hello answers)."""

    user: str
    ref: str
    wrapped_companion_ephemeral: bytes = field(repr=False)
    platform_display: str


@dataclass(frozen=True)
class CodeTicket:
    """The phone of ``user`` took up connection ``conn_id``'s code request ``ref``."""

    ref: str
    conn_id: int
    user: str
    wrapped_companion_ephemeral: bytes = field(repr=False)


@dataclass(frozen=True)
class CodeFinished:
    """The companion answered the phone's hello: its key bundle, for the phone to open."""

    ref: str
    key_bundle: bytes = field(repr=False)
    companion_identity: bytes = field(repr=False)


def _bytes(reg: BinaryNode, tag: str) -> bytes:
    child = reg.child(tag)
    content = child.content if child is not None else None
    if isinstance(content, str):
        content = content.encode()
    if not isinstance(content, bytes) or not content:
        raise LinkCodeRefused(400, f"{LINK_CODE_TAG}/{tag} missing or empty")
    return content


def stage_of(iq: BinaryNode) -> str | None:
    """The ``stage`` of an ``iq > link_code_companion_reg``, or None if it is not one."""
    reg = iq.child(LINK_CODE_TAG)
    return reg.attrs.get("stage") if reg is not None else None


def parse_companion_hello(iq: BinaryNode, noise_key: bytes) -> CodeHello:
    """The companion's hello, checked against the connection's registered ``noise_key``."""
    reg = iq.child(LINK_CODE_TAG)
    assert reg is not None  # stage_of found it
    try:
        user = Jid.parse(reg.attrs.get("jid", "")).user
    except JidError as exc:
        raise LinkCodeRefused(400, f"{LINK_CODE_TAG}@jid: {exc}") from exc
    if not user.isdigit():
        raise LinkCodeRefused(400, f"{LINK_CODE_TAG}@jid: {user!r} is not a phone number")
    wrapped = _bytes(reg, "link_code_pairing_wrapped_companion_ephemeral_pub")
    if len(wrapped) != WRAPPED_KEY_SIZE:
        raise LinkCodeRefused(400, f"wrapped companion key: {len(wrapped)} bytes")
    if _bytes(reg, "companion_server_auth_key_pub") != noise_key:
        raise LinkCodeRefused(400, "companion_server_auth_key_pub is not the registered noise key")
    display = _bytes(reg, "companion_platform_display").decode("utf-8", "replace")
    ref = "2@" + base64.b64encode(os.urandom(24)).decode("ascii")
    return CodeHello(user, ref, wrapped, display)


def hello_result(iq: BinaryNode, ref: str) -> BinaryNode:
    """``iq type=result > link_code_companion_reg > link_code_pairing_ref``."""
    reg = BinaryNode(LINK_CODE_TAG, {}, [BinaryNode("link_code_pairing_ref", {}, ref.encode())])
    attrs = {"from": S_WHATSAPP_NET, "type": "result", "id": iq.require_attr("id")}
    return BinaryNode("iq", attrs, [reg])


def primary_hello(
    notification_id: str, ref: str, primary_identity: bytes, wrapped_primary: bytes, t: str
) -> BinaryNode:
    """The notification carrying the phone's hello to the companion."""
    children = [
        BinaryNode("link_code_pairing_ref", {}, ref.encode()),
        BinaryNode("primary_identity_pub", {}, primary_identity),
        BinaryNode("link_code_pairing_wrapped_primary_ephemeral_pub", {}, wrapped_primary),
    ]
    attrs = {"from": S_WHATSAPP_NET, "type": LINK_CODE_TAG, "id": notification_id, "t": t}
    reg = BinaryNode(LINK_CODE_TAG, {"stage": "primary_hello"}, children)
    return BinaryNode("notification", attrs, [reg])


def parse_companion_finish(iq: BinaryNode, hello: CodeHello, identity_key: bytes) -> CodeFinished:
    """The companion's finish, checked against its hello's ref and its registered identity."""
    reg = iq.child(LINK_CODE_TAG)
    assert reg is not None  # stage_of found it
    if _bytes(reg, "link_code_pairing_ref") != hello.ref.encode():
        raise LinkCodeRefused(400, "link_code_pairing_ref is not the one this connection got")
    identity = _bytes(reg, "companion_identity_public")
    if identity != identity_key:
        raise LinkCodeRefused(400, "companion_identity_public is not the registered identity")
    return CodeFinished(hello.ref, _bytes(reg, "link_code_pairing_wrapped_key_bundle"), identity)


__all__ = [
    "CodeFinished",
    "CodeHello",
    "CodeTicket",
    "LinkCodeRefused",
    "hello_result",
    "parse_companion_finish",
    "parse_companion_hello",
    "primary_hello",
    "stage_of",
]
