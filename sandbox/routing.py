"""Message routing, sans-IO: who gets a stanza in which form, and the offline queues.

The rules (PROTOCOL.md "Messages on the wire"), for a stanza a device D of
account A sends:

================  =============================================================
stanza            what the server does
================  =============================================================
``message`` 1:1   ``ack{class=message, id, from=<to>, t}`` to D; each
                  ``participants > to{jid}`` device of the recipient gets
                  ``message{id, from=<D>, t, type, notify?} > enc
                  [, device-identity]``; each one of A's other devices gets the
                  same with ``recipient=<to>`` (its own copy)
``message`` group every listed device of every participant but D gets
                  ``message{id, from=<group>, participant=<D>, t, type, notify?,
                  addressing_mode=pn} > [enc pkmsg|msg (if addressed to it),
                  enc skmsg]``; unknown group → ack ``error=404``, D's account
                  not a participant → ``error=403``
resend            Baileys' shape after a retry receipt, ``message{to=<device>
                  (recipient=<chat> for an own device) | to=<group>,
                  participant=<device>} > enc{count}``: that one device only
                  (in the 1:1 or group form above); a group stanza whose encs
                  carry ``count`` reaches only the devices it addresses
``receipt``       ``ack{class=receipt, id, from=<to>, type?}`` to D; a plain or
                  read receipt goes to every listed device of the message's
                  original sender (``from=<D's user>``; groups ``from=<group>,
                  participant=<D's user>``); one from the sender's own account
                  goes nowhere. It also removes the messages it names (``id``,
                  ``list > item{id}``) from D's offline queue: Baileys v7 sends
                  a receipt, not an ack, for a message it decrypted
``receipt retry`` to the one device that sent the message (``to``, or
                  ``participant`` in a group), ``from=<D>`` (device JID: the
                  resend is encrypted for exactly that device)
``ack``           removes the stanza it names from D's offline queue
================  =============================================================

``from`` names D with its device (``user:device@s.whatsapp.net``): it is the
Signal address the receiver decrypts under. Every routed stanza waits in its
device's :class:`OfflineQueues` entry until that device acks it (``class``,
``id``, ``to`` = the stanza's ``from``, and its ``type`` when the ack names one);
the core sends it at once when the device is logged in and again, in order,
after each later login until then.

usync and pre-key bundles are answered from the registry
(:func:`usync_result`, :func:`key_bundle_result`); a bundle fetch consumes the
device's lowest one-time pre-key, and a device with none left gets a bundle
without ``key``.

Since 0.2.0.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from actors.connection.binary import G_US, BinaryNode
from actors.connection.binary.errors import JidError
from sandbox.accounts import Account, Device, Registry
from sandbox.errors import UnknownTargetError
from sandbox.groups import Groups
from stores.keys import KEY_BUNDLE_TYPE

DeviceKey = tuple[str, int]
"""A device as queues know it: (account user, device id)."""

#: How many sent message ids the router remembers to route receipts back.
SENT_INDEX_SIZE = 50_000
#: Group stanzas name participants by phone number (the sandbox has no LID groups).
ADDRESSING_MODE = "pn"


def key_of(device: Device) -> DeviceKey:
    """The queue key of ``device``."""
    return (device.user, device.device_id)


@dataclass(frozen=True)
class Delivery:
    """``node`` is for ``device``."""

    device: Device
    node: BinaryNode


@dataclass(frozen=True)
class Routed:
    """What a stanza from a device produced: the reply to it, and deliveries."""

    reply: BinaryNode | None
    deliveries: list[Delivery] = field(default_factory=list)


@dataclass(frozen=True)
class _Sent:
    sender_user: str
    chat: str


class OfflineQueues:
    """Per device, the routed stanzas it has not acked yet, oldest first."""

    def __init__(self) -> None:
        self._queues: dict[DeviceKey, list[BinaryNode]] = {}

    def __repr__(self) -> str:
        return f"OfflineQueues(devices={len(self._queues)}, stanzas={self.total})"

    @property
    def total(self) -> int:
        """How many stanzas wait in all queues."""
        return sum(len(q) for q in self._queues.values())

    def push(self, key: DeviceKey, node: BinaryNode) -> None:
        """Queue ``node`` for the device ``key``."""
        self._queues.setdefault(key, []).append(node)

    def pending(self, key: DeviceKey) -> list[BinaryNode]:
        """The device's unacked stanzas in order (a copy)."""
        return list(self._queues.get(key, ()))

    def ack(self, key: DeviceKey, ack: BinaryNode) -> BinaryNode | None:
        """Remove and return the first queued stanza ``ack`` names, or None."""
        queue = self._queues.get(key, [])
        for index, node in enumerate(queue):
            if _acks(ack, node):
                del queue[index]
                if not queue:
                    del self._queues[key]
                return node
        return None

    def receipted(self, key: DeviceKey, ids: set[str]) -> None:
        """Remove the queued ``message`` stanzas with these ids: the device receipted them."""
        queue = self._queues.get(key, [])
        queue[:] = [n for n in queue if n.tag != "message" or n.attr("id") not in ids]
        if not queue:
            self._queues.pop(key, None)

    def drop(self, key: DeviceKey) -> None:
        """Forget a device's queue (the device is gone)."""
        self._queues.pop(key, None)


def _acks(ack: BinaryNode, node: BinaryNode) -> bool:
    if ack.attr("class") != node.tag or ack.attr("id") != node.attr("id"):
        return False
    if ack.attr("to") is not None and ack.attr("to") != node.attr("from"):
        return False
    kind = ack.attr("type")
    return kind is None or kind == node.attr("type")


class Router:
    """Routes message and receipt stanzas between the registry's devices (pure state)."""

    def __init__(self, registry: Registry, groups: Groups) -> None:
        self.registry = registry
        self.groups = groups
        self.queues = OfflineQueues()
        self._sent: OrderedDict[str, _Sent] = OrderedDict()
        self.messages_routed = 0
        self.receipts_routed = 0
        self.stanzas_dropped = 0

    def __repr__(self) -> str:
        return f"Router(queued={self.queues.total}, routed={self.messages_routed})"

    # --- messages -------------------------------------------------------------------

    def on_message(self, sender: Device, node: BinaryNode, t: str) -> Routed:
        """Route a ``message`` stanza ``sender`` sent; the ack for it and the deliveries."""
        msg_id = node.attr("id")
        to = node.attr("to")
        if not msg_id or not to:
            return Routed(None)
        account = self.registry.account(sender.user)
        if to.endswith("@" + G_US):
            return self._group_message(sender, account, node, msg_id, to, t)
        ack = _message_ack(msg_id, to, t)
        try:
            recipient = self.registry.account_of(to)
        except UnknownTargetError:
            return Routed(_with_error(ack, 404))
        targets = _addressed(node)
        deliveries = []
        for jid, enc in targets:
            device = self._device(jid)
            if device is None or device is sender:
                self.stanzas_dropped += 1
                continue
            own = device.user == account.user
            if not own and device.user != recipient.user:
                self.stanzas_dropped += 1
                continue
            attrs = {"id": msg_id, "from": sender.jid, "t": t, "type": node.attr("type") or "text"}
            if own:
                # A resend to one own device names the chat in ``recipient`` (``to`` is
                # the device then); otherwise the chat is ``to``.
                attrs["recipient"] = node.attr("recipient") or recipient.jid
            elif account.push_name:
                attrs["notify"] = account.push_name
            deliveries.append(
                Delivery(device, BinaryNode("message", attrs, _enc_content(node, enc)))
            )
        self._remember(msg_id, account.user, recipient.jid)
        self.messages_routed += 1
        return Routed(ack, deliveries)

    def _group_message(
        self, sender: Device, account: Account, node: BinaryNode, msg_id: str, to: str, t: str
    ) -> Routed:
        ack = _message_ack(msg_id, to, t)
        group = self.groups.get(to)
        if group is None:
            return Routed(_with_error(ack, 404))
        if account.jid not in group.participants:
            return Routed(_with_error(ack, 403))
        addressed = {key_of(d): enc for jid, enc in _addressed(node) if (d := self._device(jid))}
        # A resend after a retry receipt (its encs carry count) is for the addressed only.
        resend = any(enc.attr("count") for enc in node.children("enc")) or any(
            enc.attr("count") for _, enc in _addressed(node)
        )
        skmsg = next((c for c in node.children("enc") if c.attr("type") == "skmsg"), None)
        deliveries = []
        for member in group.participants:
            try:
                member_account = self.registry.account_of(member)
            except UnknownTargetError:
                continue
            for device in member_account.listed_devices():
                if device is sender:
                    continue
                direct = addressed.get(key_of(device))
                if resend and direct is None:
                    continue
                content = _enc_content(node, direct) if direct is not None else []
                if skmsg is not None:
                    content.insert(1 if direct is not None else 0, skmsg)
                if not content:
                    continue
                attrs = {
                    "id": msg_id,
                    "from": group.jid,
                    "participant": sender.jid,
                    "t": t,
                    "type": node.attr("type") or "text",
                    "addressing_mode": ADDRESSING_MODE,
                }
                if account.push_name:
                    attrs["notify"] = account.push_name
                deliveries.append(Delivery(device, BinaryNode("message", attrs, content)))
        self._remember(msg_id, account.user, group.jid)
        self.messages_routed += 1
        return Routed(ack, deliveries)

    # --- receipts -------------------------------------------------------------------

    def on_receipt(self, sender: Device, node: BinaryNode, t: str) -> Routed:
        """Route a ``receipt`` stanza ``sender`` sent; its ack and the deliveries."""
        msg_id = node.attr("id")
        to = node.attr("to")
        if not msg_id or not to:
            return Routed(None)
        kind = node.attr("type")
        ack_attrs = {"id": msg_id, "class": "receipt", "from": to}
        if kind:
            ack_attrs["type"] = kind
        ack = BinaryNode("ack", ack_attrs)
        is_group = to.endswith("@" + G_US)
        account = self.registry.account(sender.user)
        if kind == "retry":
            target = self._device(node.attr("participant") if is_group else to)
            if target is None or target is sender:
                self.stanzas_dropped += 1
                return Routed(ack)
            attrs = {"id": msg_id, "type": "retry", "t": t}
            if is_group:
                attrs.update({"from": to, "participant": sender.jid})
            else:
                attrs["from"] = sender.jid
            self.receipts_routed += 1
            return Routed(ack, [Delivery(target, BinaryNode("receipt", attrs, node.content))])
        listed = node.child("list")
        items = listed.children("item") if listed is not None else []
        self.queues.receipted(key_of(sender), {msg_id, *(i.attr("id") or "" for i in items)})
        original = self._sent.get(msg_id)
        try:
            if original is not None:
                origin = self.registry.account(original.sender_user)
            else:
                origin = self.registry.account_of(node.attr("participant") or to)
        except UnknownTargetError:
            self.stanzas_dropped += 1
            return Routed(ack)
        if origin.user == account.user:
            return Routed(ack)
        attrs = {"id": msg_id, "t": t}
        if is_group:
            attrs.update({"from": to, "participant": account.jid})
        else:
            attrs["from"] = account.jid
        if kind:
            attrs["type"] = kind
        content = node.content if isinstance(node.content, list) else None
        deliveries = [
            Delivery(device, BinaryNode("receipt", dict(attrs), content))
            for device in origin.listed_devices()
        ]
        self.receipts_routed += 1
        return Routed(ack, deliveries)

    # --- acks -----------------------------------------------------------------------

    def on_ack(self, device: Device, node: BinaryNode) -> BinaryNode | None:
        """Remove the stanza ``node`` acks from ``device``'s queue; the stanza, or None."""
        return self.queues.ack(key_of(device), node)

    # --- internals ------------------------------------------------------------------

    def _device(self, jid: str | None) -> Device | None:
        if not jid:
            return None
        try:
            device = self.registry.find(jid)
        except (UnknownTargetError, JidError):
            return None
        account = self.registry.account(device.user)
        return device if device in account.listed_devices() else None

    def _remember(self, msg_id: str, sender_user: str, chat: str) -> None:
        self._sent[msg_id] = _Sent(sender_user, chat)
        self._sent.move_to_end(msg_id)
        while len(self._sent) > SENT_INDEX_SIZE:
            self._sent.popitem(last=False)


def _message_ack(msg_id: str, to: str, t: str) -> BinaryNode:
    return BinaryNode("ack", {"class": "message", "id": msg_id, "from": to, "t": t})


def _with_error(ack: BinaryNode, code: int) -> BinaryNode:
    return BinaryNode(ack.tag, {**ack.attrs, "error": str(code)})


def _addressed(node: BinaryNode) -> Iterator[tuple[str, BinaryNode]]:
    """``(device jid, enc)`` of each ``participants > to{jid} > enc``.

    A resend in the message layer's short form (``message{to, participant?} >
    enc{count}``) is addressed to ``participant``, else to ``to``.
    """
    participants = node.child("participants")
    if participants is None:
        short = next((e for e in node.children("enc") if e.attr("type") != "skmsg"), None)
        addressee = node.attr("participant") or node.attr("to")
        if short is not None and addressee:
            yield addressee, short
        return
    for target in participants.children("to"):
        jid = target.attr("jid")
        enc = target.child("enc")
        if jid and enc is not None:
            yield jid, enc


def _enc_content(node: BinaryNode, enc: BinaryNode) -> list[BinaryNode]:
    """The enc for one device, and the sender's device identity when it is a pkmsg."""
    content = [enc]
    identity = node.child("device-identity")
    if identity is not None and enc.attr("type") == "pkmsg":
        content.append(identity)
    return content


# --- usync and pre-key bundles ---------------------------------------------------------


def usync_result(registry: Registry, request: BinaryNode) -> list[BinaryNode]:
    """The ``usync`` child answering a device query: devices with key index, and LIDs."""
    usync = request.require_child("usync")
    users = []
    listing = usync.child("list")
    for user in listing.children("user") if listing is not None else []:
        jid = user.attr("jid") or ""
        try:
            account = registry.account_of(jid)
        except UnknownTargetError:
            users.append(BinaryNode("user", {"jid": jid}))  # no devices: nothing to send to
            continue
        devices = []
        for device in account.listed_devices():
            attrs = {"id": str(device.device_id)}
            if device.device_id != 0:
                attrs["key-index"] = str(device.key_index)
            devices.append(BinaryNode("device", attrs))
        content = [
            BinaryNode("devices", {}, [BinaryNode("device-list", {}, devices)]),
            BinaryNode("lid", {"val": account.lid}),
        ]
        users.append(BinaryNode("user", {"jid": jid}, content))
    attrs = {k: v for k, v in usync.attrs.items() if k in ("sid", "mode", "context", "index")}
    attrs["last"] = "true"
    return [BinaryNode("usync", attrs, [BinaryNode("result", {}), BinaryNode("list", {}, users)])]


def key_bundle(device: Device) -> BinaryNode | None:
    """``user{jid} > registration, type, identity, skey, key?``, consuming a one-time key.

    None for a device that never uploaded a signed pre-key.
    """
    signed = device.signed_pre_key
    if signed is None:
        return None
    content = [
        BinaryNode("registration", {}, device.registration_id.to_bytes(4, "big")),
        BinaryNode("type", {}, KEY_BUNDLE_TYPE),
        BinaryNode("identity", {}, device.identity_key),
        BinaryNode(
            "skey",
            {},
            [
                BinaryNode("id", {}, signed.key_id.to_bytes(3, "big")),
                BinaryNode("value", {}, signed.public),
                BinaryNode("signature", {}, signed.signature),
            ],
        ),
    ]
    taken = device.take_pre_key()
    if taken is not None:
        key_id, public = taken
        content.append(
            BinaryNode(
                "key",
                {},
                [BinaryNode("id", {}, key_id.to_bytes(3, "big")), BinaryNode("value", {}, public)],
            )
        )
    return BinaryNode("user", {"jid": device.jid}, content)


def key_bundle_result(registry: Registry, request: BinaryNode) -> list[BinaryNode]:
    """The ``list`` answering ``encrypt/get > key > user{jid}*``.

    A device the sandbox does not know (or that has no keys) is left out of the
    list: Baileys fails a whole send on an ``error`` child, and a missing bundle
    only leaves that one device without a session.
    """
    users = []
    for user in request.require_child("key").children("user"):
        jid = user.attr("jid") or ""
        device = _listed(registry, jid)
        bundle = key_bundle(device) if device is not None else None
        if bundle is not None:
            users.append(BinaryNode("user", {"jid": jid}, bundle.content))
    return [BinaryNode("list", {}, users)]


def _listed(registry: Registry, jid: str) -> Device | None:
    try:
        device = registry.find(jid)
    except (UnknownTargetError, JidError):
        return None
    return device if device in registry.account(device.user).listed_devices() else None


__all__ = [
    "ADDRESSING_MODE",
    "Delivery",
    "DeviceKey",
    "OfflineQueues",
    "Routed",
    "Router",
    "key_bundle",
    "key_bundle_result",
    "key_of",
    "usync_result",
]
