"""Received ``<message>`` stanzas, and the acks and receipts that answer them (sans-IO).

A stanza (Baileys v7, lib/Utils/decode-wa-message.js)::

    message{id, from, t, type, notify?, participant? (groups), recipient? (our own
            copies), addressing_mode?, participant_pn|sender_pn|... (the other form)}
      > enc{v=2, type=pkmsg|msg|skmsg, count?}*  (or plaintext)

:func:`parse_message_stanza` turns it into an :class:`IncomingStanza`: who wrote it
(``author``, a device JID), the chat it belongs to (``key.remote_jid``: the user JID
for 1:1, the group JID for groups), and its encrypted parts in
order (a group message carries the sender-key distribution in a ``pkmsg``/``msg``
part before its ``skmsg``). The answers: :func:`ack_for` (every stanza class the
server expects an ack for), :func:`delivery_receipt`, :func:`retry_receipt`.

Since 0.2.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from actors.connection.binary.errors import JidError
from actors.connection.binary.jid import G_US, HOSTED, HOSTED_LID, LID, S_WHATSAPP_NET, Jid
from actors.connection.binary.node import BinaryNode
from actors.messaging.errors import StanzaError

ENC_KINDS = ("pkmsg", "msg", "skmsg")
PLAINTEXT = "plaintext"
_USER_SERVERS = (S_WHATSAPP_NET, LID, HOSTED, HOSTED_LID)
_PN_ALT_ATTRS = ("participant_pn", "sender_pn", "peer_recipient_pn")
_LID_ALT_ATTRS = ("participant_lid", "sender_lid", "peer_recipient_lid")


@dataclass(frozen=True, slots=True)
class MessageKey:
    """What names a message across restarts: chat, direction, id, and author in groups."""

    remote_jid: str
    from_me: bool
    id: str
    participant: str | None = None


@dataclass(frozen=True, slots=True)
class EncryptedPart:
    """One ``<enc>`` (or ``<plaintext>``) child: its kind and bytes."""

    kind: str
    ciphertext: bytes

    def __repr__(self) -> str:
        return f"EncryptedPart({self.kind}, {len(self.ciphertext)} bytes)"


@dataclass(frozen=True, slots=True)
class IncomingStanza:
    """A parsed ``<message>``: addressing, metadata and encrypted parts."""

    key: MessageKey
    author: str
    sender_alt: str | None
    addressing_mode: str
    timestamp: int | None
    push_name: str | None
    message_type: str | None
    retry_count: int
    parts: tuple[EncryptedPart, ...]
    attrs: dict[str, str]

    @property
    def is_group(self) -> bool:
        return self.key.remote_jid.endswith("@" + G_US)


def parse_message_stanza(node: BinaryNode, me: Sequence[str]) -> IncomingStanza:
    """Parse a ``<message>``; ``me`` holds our own JIDs (PN and LID) to tell our copies."""
    if node.tag != "message":
        raise StanzaError(node.tag, "not a message stanza")
    msg_id = _required(node, "id")
    sender = _required(node, "from")
    participant = node.attr("participant")
    recipient = node.attr("recipient")
    own_users = {_user(jid) for jid in me if jid}
    server = _server(sender)
    if server in _USER_SERVERS:
        from_me = _user(sender) in own_users
        if recipient and not from_me:
            raise StanzaError("message[@recipient]", "present on a message not from us")
        # The chat is the user, not the device that wrote (a bot answers the chat).
        chat, author = _user_jid(recipient if recipient else sender), sender
        participant = None
    elif server == G_US:
        if not participant:
            raise StanzaError("message[@participant]", "a group message needs its author")
        chat, author, from_me = sender, participant, _user(participant) in own_users
    else:
        raise StanzaError("message[@from]", f"unsupported chat server {server!r}")
    mode = node.attr("addressing_mode") or ("lid" if author.endswith("@" + LID) else "pn")
    alt_attrs = _PN_ALT_ATTRS if mode == "lid" else _LID_ALT_ATTRS
    sender_alt = next((node.attrs[a] for a in alt_attrs if node.attrs.get(a)), None)
    parts, retry_count = _parts(node)
    return IncomingStanza(
        key=MessageKey(chat, from_me, msg_id, participant),
        author=author,
        sender_alt=sender_alt,
        addressing_mode=mode,
        timestamp=_int_attr(node, "t"),
        push_name=node.attr("notify"),
        message_type=node.attr("type"),
        retry_count=retry_count,
        parts=parts,
        attrs=dict(node.attrs),
    )


def ack_for(node: BinaryNode, me_id: str | None = None, error: int | None = None) -> BinaryNode:
    """The ``<ack>`` a received stanza of any class gets (Baileys' buildAckStanza)."""
    attrs = {"id": _required(node, "id"), "to": _required(node, "from"), "class": node.tag}
    if error is not None:
        attrs["error"] = str(error)
    for name in ("participant", "recipient", "type"):
        value = node.attr(name)
        if value:
            attrs[name] = value
    if node.tag == "message" and me_id:
        attrs["from"] = me_id
    return BinaryNode("ack", attrs)


def delivery_receipt(stanza: IncomingStanza, receipt_type: str | None = None) -> BinaryNode:
    """The receipt telling the sender the message arrived (``type`` None: plain delivery)."""
    attrs = {"id": stanza.key.id, "to": stanza.key.remote_jid}
    if stanza.key.participant:
        attrs["participant"] = stanza.key.participant
    if receipt_type:
        attrs["type"] = receipt_type
    return BinaryNode("receipt", attrs)


def read_receipt(
    chat: str, participant: str | None, message_ids: Sequence[str], now_s: int
) -> BinaryNode:
    """A ``read`` receipt for messages of one chat (and author, in groups)."""
    if not message_ids:
        raise ValueError("a receipt needs at least one message id")
    attrs = {"id": message_ids[0], "t": str(now_s), "to": chat, "type": "read"}
    if participant:
        attrs["participant"] = participant
    rest = [BinaryNode("item", {"id": mid}) for mid in message_ids[1:]]
    return BinaryNode("receipt", attrs, [BinaryNode("list", {}, rest)] if rest else None)


def read_receipts(keys: Sequence[MessageKey], now_s: int) -> list[BinaryNode]:
    """Read receipts for received messages: one per chat and author, ids in order."""
    grouped: dict[tuple[str, str | None], list[str]] = {}
    for key in keys:
        if key.from_me:
            continue  # our own messages are not ours to mark read
        grouped.setdefault((key.remote_jid, key.participant), []).append(key.id)
    return [
        read_receipt(chat, participant, ids, now_s) for (chat, participant), ids in grouped.items()
    ]


@dataclass(frozen=True, slots=True)
class RetryKeys:
    """The key bundle a retry receipt carries from the second retry on."""

    identity: bytes
    pre_key_id: int
    pre_key: bytes
    signed_pre_key_id: int
    signed_pre_key: bytes
    signed_pre_key_signature: bytes
    device_identity: bytes

    def __repr__(self) -> str:
        return (
            f"RetryKeys(pre_key_id={self.pre_key_id}, signed_pre_key_id={self.signed_pre_key_id})"
        )


def retry_receipt(
    node: BinaryNode, count: int, registration_id: int, keys: RetryKeys | None
) -> BinaryNode:
    """Ask the sender to encrypt a message again (Baileys' sendRetryRequest)."""
    msg_id = _required(node, "id")
    attrs = {"id": msg_id, "type": "retry", "to": _required(node, "from")}
    for name in ("recipient", "participant"):
        value = node.attr(name)
        if value:
            attrs[name] = value
    retry_attrs = {
        "count": str(count),
        "id": msg_id,
        "t": node.attr("t") or "0",
        "v": "1",
        "error": "0",
    }
    content = [
        BinaryNode("retry", retry_attrs),
        BinaryNode("registration", {}, registration_id.to_bytes(4, "big")),
    ]
    if keys is not None:
        content.append(_keys_node(keys))
    return BinaryNode("receipt", attrs, content)


def _keys_node(keys: RetryKeys) -> BinaryNode:
    return BinaryNode(
        "keys",
        {},
        [
            BinaryNode("type", {}, b"\x05"),
            BinaryNode("identity", {}, keys.identity),
            BinaryNode(
                "key",
                {},
                [
                    BinaryNode("id", {}, keys.pre_key_id.to_bytes(3, "big")),
                    BinaryNode("value", {}, keys.pre_key),
                ],
            ),
            BinaryNode(
                "skey",
                {},
                [
                    BinaryNode("id", {}, keys.signed_pre_key_id.to_bytes(3, "big")),
                    BinaryNode("value", {}, keys.signed_pre_key),
                    BinaryNode("signature", {}, keys.signed_pre_key_signature),
                ],
            ),
            BinaryNode("device-identity", {}, keys.device_identity),
        ],
    )


def _parts(node: BinaryNode) -> tuple[tuple[EncryptedPart, ...], int]:
    parts: list[EncryptedPart] = []
    retry_count = 0
    for index, child in enumerate(node.children()):
        if child.tag not in ("enc", PLAINTEXT):
            continue
        where = f"message/{child.tag}[{index}]"
        if child.tag == "enc" and child.attr("count"):
            retry_count = _int_attr(child, "count") or 0
        if not isinstance(child.content, bytes):
            raise StanzaError(where, "has no bytes content")
        kind = PLAINTEXT if child.tag == PLAINTEXT else child.attr("type") or ""
        if kind not in ENC_KINDS and kind != PLAINTEXT:
            raise StanzaError(f"{where}[@type]", f"unknown encryption type {kind!r}")
        parts.append(EncryptedPart(kind, child.content))
    return tuple(parts), retry_count


def _required(node: BinaryNode, name: str) -> str:
    value = node.attr(name)
    if not value:
        raise StanzaError(f"{node.tag}[@{name}]", "missing")
    return value


def _int_attr(node: BinaryNode, name: str) -> int | None:
    value = node.attr(name)
    if value is None:
        return None
    if not value.isdigit():
        raise StanzaError(f"{node.tag}[@{name}]", f"expected a number, got {value!r}")
    return int(value)


def _server(jid: str) -> str:
    return jid.rpartition("@")[2]


def _user_jid(jid: str) -> str:
    try:
        return str(Jid.parse(jid).user_jid())
    except JidError as exc:
        raise StanzaError("message[@from]", f"not a JID: {jid!r}") from exc


def _user(jid: str) -> str:
    try:
        return Jid.parse(jid).user
    except JidError:
        return jid.partition("@")[0].partition(":")[0]
