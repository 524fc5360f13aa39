"""The iqs a send needs (sans-IO): a contact's devices (usync) and their pre-key bundles.

usync (Baileys v7 lib/WAUSync)::

    iq{to=s.whatsapp.net, type=get, xmlns=usync}
      > usync{context=message, mode=query, sid, last=true, index=0}
        > [query > [devices{version=2}, lid], list > user{jid}*]
    result: usync > list > user{jid} > [devices > device-list > device{id, key-index?}*,
                                         lid{val}?]

Bundles (Baileys lib/Utils/signal.js ``parseAndInjectE2ESessions``)::

    iq{to=s.whatsapp.net, type=get, xmlns=encrypt} > key > user{jid, reason=identity}*
    result: list > user{jid} > [registration(4 B), type(05), identity(32 B),
                                skey{id(3 B), value(32 B), signature(64 B)},
                                key{id(3 B), value(32 B)}?]

Parsers raise :class:`StanzaError` naming the node that is wrong.

Since 0.2.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from actors.connection.binary.jid import SERVER_JID
from actors.connection.binary.node import BinaryNode
from actors.messaging.errors import StanzaError
from actors.signal.session_builder import PreKey, PreKeyBundle, SignedPreKey
from stores.keys import signal_public_key


@dataclass(frozen=True, slots=True)
class UserDevices:
    """One user's devices from usync, and the LID the server maps them to."""

    jid: str
    devices: tuple[int, ...]
    lid: str | None = None


def usync_devices_iq(
    iq_id: str, sid: str, jids: Sequence[str], context: str = "message"
) -> BinaryNode:
    """Ask for the devices (and LIDs) of ``jids``."""
    usync = BinaryNode(
        "usync",
        {"context": context, "mode": "query", "sid": sid, "last": "true", "index": "0"},
        [
            BinaryNode(
                "query", {}, [BinaryNode("devices", {"version": "2"}), BinaryNode("lid", {})]
            ),
            BinaryNode("list", {}, [BinaryNode("user", {"jid": jid}) for jid in jids]),
        ],
    )
    return BinaryNode(
        "iq", {"id": iq_id, "to": SERVER_JID, "type": "get", "xmlns": "usync"}, [usync]
    )


def parse_usync_devices(result: BinaryNode) -> list[UserDevices]:
    """The users of a usync result with their device ids (0 is the phone)."""
    usync = _child(result, "usync", "iq")
    users: list[UserDevices] = []
    for index, user in enumerate(_child(usync, "list", "usync").children("user")):
        where = f"usync/list/user[{index}]"
        jid = user.attr("jid")
        if not jid:
            raise StanzaError(f"{where}[@jid]", "missing")
        devices: list[int] = []
        device_list = user.child("devices")
        listed = device_list.child("device-list") if device_list is not None else None
        for device in listed.children("device") if listed is not None else []:
            device_id = _int(device.attr("id"), f"{where}/devices/device-list/device[@id]")
            # Baileys' extractDeviceJids: a companion device without a key index is
            # not yet signed by the phone, so nothing is sent to it.
            if device_id == 0 or device.attr("key-index") is not None:
                devices.append(device_id)
        lid_node = user.child("lid")
        lid = lid_node.attr("val") if lid_node is not None else None
        users.append(UserDevices(jid, tuple(devices), lid or None))
    return users


def key_bundles_iq(iq_id: str, jids: Sequence[str]) -> BinaryNode:
    """Ask for a pre-key bundle of each device in ``jids``."""
    users = [BinaryNode("user", {"jid": jid, "reason": "identity"}) for jid in jids]
    return BinaryNode(
        "iq",
        {"id": iq_id, "to": SERVER_JID, "type": "get", "xmlns": "encrypt"},
        [BinaryNode("key", {}, users)],
    )


def parse_key_bundles(result: BinaryNode) -> dict[str, PreKeyBundle]:
    """Each device's bundle by JID, keys in their 33-byte form."""
    bundles: dict[str, PreKeyBundle] = {}
    for index, user in enumerate(_child(result, "list", "iq").children("user")):
        where = f"list/user[{index}]"
        jid = user.attr("jid")
        if not jid:
            raise StanzaError(f"{where}[@jid]", "missing")
        skey = _child(user, "skey", where)
        key = user.child("key")
        bundles[jid] = PreKeyBundle(
            registration_id=int.from_bytes(_bytes(user, "registration", where, 4), "big"),
            identity_key=signal_public_key(_bytes(user, "identity", where, 32)),
            signed_pre_key=SignedPreKey(
                key_id=int.from_bytes(_bytes(skey, "id", f"{where}/skey", 3), "big"),
                public_key=signal_public_key(_bytes(skey, "value", f"{where}/skey", 32)),
                signature=_bytes(skey, "signature", f"{where}/skey", 64),
            ),
            pre_key=None
            if key is None
            else PreKey(
                key_id=int.from_bytes(_bytes(key, "id", f"{where}/key", 3), "big"),
                public_key=signal_public_key(_bytes(key, "value", f"{where}/key", 32)),
            ),
        )
    return bundles


def _child(node: BinaryNode, tag: str, where: str) -> BinaryNode:
    child = node.child(tag)
    if child is None:
        raise StanzaError(f"{where}/{tag}", "missing")
    return child


def _bytes(node: BinaryNode, tag: str, where: str, size: int) -> bytes:
    content = _child(node, tag, where).content
    if not isinstance(content, bytes) or len(content) != size:
        got = len(content) if isinstance(content, bytes) else type(content).__name__
        raise StanzaError(f"{where}/{tag}", f"expected {size} bytes, got {got}")
    return content


def _int(value: str | None, where: str) -> int:
    if value is None or not value.isdigit():
        raise StanzaError(where, f"expected a number, got {value!r}")
    return int(value)


@dataclass(frozen=True, slots=True)
class GroupMetadata:
    """What ``w:g2`` says of a group: subject, addressing mode and participants."""

    jid: str
    subject: str
    addressing_mode: str
    participants: tuple[str, ...]


def group_metadata_iq(iq_id: str, group: str) -> BinaryNode:
    """Ask for a group's metadata (Baileys' groupMetadata: ``query{request=interactive}``)."""
    return BinaryNode(
        "iq",
        {"id": iq_id, "to": group, "type": "get", "xmlns": "w:g2"},
        [BinaryNode("query", {"request": "interactive"})],
    )


def parse_group_metadata(result: BinaryNode, group: str) -> GroupMetadata:
    """``group{id, subject, addressing_mode} > participant{jid}*`` from a ``w:g2`` result."""
    node = _child(result, "group", "iq")
    participants = []
    for index, participant in enumerate(node.children("participant")):
        jid = participant.attr("jid")
        if not jid:
            raise StanzaError(f"group/participant[{index}][@jid]", "missing")
        participants.append(jid)
    return GroupMetadata(
        jid=group,
        subject=node.attr("subject") or "",
        addressing_mode=node.attr("addressing_mode") or "pn",
        participants=tuple(participants),
    )
