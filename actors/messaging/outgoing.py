"""Outgoing ``<message>`` stanzas (sans-IO): ids, per-device encryptions, groups.

Shapes (Baileys v7 lib/Socket/messages-send.js ``relayMessage``)::

    1:1    message{id, to=<user jid>, type=text}
             > [participants > to{jid=<device jid>} > enc{v=2, type=pkmsg|msg}*,
                device-identity?]
    group  message{id, to=<group jid>, type=text, addressing_mode?}
             > [enc{v=2, type=skmsg}, participants > to{jid} > enc*, device-identity?]

``device-identity`` (our ADVSignedDeviceIdentity) goes along whenever any part is a
``pkmsg``, so a device that starts a session with us can check who we are. A
resend after a retry receipt repeats the id with ``enc{count=N}``.

Since 0.2.0.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from actors.connection.binary.node import BinaryNode

MESSAGE_ID_PREFIX = "3EB0"
ENC_VERSION = "2"


def new_message_id() -> str:
    """A message id as Baileys makes them: ``3EB0`` and 18 upper-case hex digits."""
    return MESSAGE_ID_PREFIX + secrets.token_hex(9).upper()


@dataclass(frozen=True, slots=True)
class DeviceCiphertext:
    """One recipient device's encryption of the message."""

    jid: str
    kind: str
    ciphertext: bytes

    def __repr__(self) -> str:
        return f"DeviceCiphertext({self.jid}, {self.kind}, {len(self.ciphertext)} bytes)"


def enc_node(kind: str, ciphertext: bytes, retry_count: int | None = None) -> BinaryNode:
    attrs = {"v": ENC_VERSION, "type": kind}
    if retry_count:
        attrs["count"] = str(retry_count)
    return BinaryNode("enc", attrs, ciphertext)


def message_stanza(
    message_id: str,
    to: str,
    devices: Sequence[DeviceCiphertext],
    *,
    device_identity: bytes | None = None,
    group_ciphertext: bytes | None = None,
    addressing_mode: str | None = None,
    message_type: str = "text",
) -> BinaryNode:
    """The stanza carrying one message to every device (and the group's ``skmsg``)."""
    attrs = {"id": message_id, "to": to, "type": message_type}
    if addressing_mode:
        attrs["addressing_mode"] = addressing_mode
    content: list[BinaryNode] = []
    if group_ciphertext is not None:
        content.append(enc_node("skmsg", group_ciphertext))
    if devices:
        targets = [
            BinaryNode("to", {"jid": d.jid}, [enc_node(d.kind, d.ciphertext)]) for d in devices
        ]
        content.append(BinaryNode("participants", {}, targets))
    if device_identity is not None and any(d.kind == "pkmsg" for d in devices):
        content.append(BinaryNode("device-identity", {}, device_identity))
    return BinaryNode("message", attrs, content)


def resend_stanza(
    message_id: str,
    destination: str,
    device: DeviceCiphertext,
    retry_count: int,
    *,
    own_device: bool = False,
    device_identity: bytes | None = None,
) -> BinaryNode:
    """Answer a retry receipt: the message again, one ``enc{count}``, to the device that asked.

    As Baileys' relayMessage for a retry: in a group ``to`` is the group and
    ``participant`` the device; to one of our own devices ``to`` is the device and
    ``recipient`` the chat; else ``to`` is the device.
    """
    attrs = {"id": message_id, "type": "text"}
    if destination.endswith("@g.us"):
        attrs.update(to=destination, participant=device.jid)
    elif own_device:
        attrs.update(to=device.jid, recipient=destination)
    else:
        attrs["to"] = device.jid
    content = [enc_node(device.kind, device.ciphertext, retry_count)]
    if device_identity is not None and device.kind == "pkmsg":
        content.append(BinaryNode("device-identity", {}, device_identity))
    return BinaryNode("message", attrs, content)
