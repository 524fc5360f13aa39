"""Simulated contacts: accounts of one device whose Signal state lives in memory.

A contact is what a bot talks to in the sandbox: an account (a fresh phone
number and LID) whose only device is its phone (device 0). Its Signal keys are
uploaded to the registry like a real device's (identity, signed pre-key,
one-time pre-keys), so bots fetch its bundle with the ordinary ``encrypt`` iq.
Its crypto is our own (``actors.signal``'s pure functions, synchronously):

- **send** (1:1): the recipient's listed devices and bundles come straight
  from the registry (consuming a one-time pre-key like a fetch); each device gets
  ``pkmsg`` until it replies, ``msg`` after; the plaintext is a padded
  ``wa.Message{conversation}``. In a group: the sender key's distribution goes
  in a ``pkmsg``/``msg`` part to each device that has not had it, then one
  ``skmsg`` for all.
- **receive**: every part is decrypted on a copy of the record (a failure
  changes nothing); a sender-key distribution inside is taken; the message is
  recorded (:attr:`Contact.messages`) and answered with a delivery receipt, or,
  when a part does not decrypt, with a retry receipt (at most 5 per message).
- **retry receipts** for its own messages: a new session from the receipt's
  ``keys`` (or a fresh bundle), then the message again to that one device,
  ``enc{count}``, same id, as Baileys v7 relays a resend (in a group the
  message carries the sender key's distribution along, no ``skmsg``).

Everything is sans-IO: :meth:`Contact.receive` and the send methods return the
stanzas the contact sends; the core routes them as it routes a client's.

Since 0.2.0.
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field

from actors.connection.binary import BinaryNode, Jid, JidError, MissingNodeError
from actors.connection.proto import wa_pb2
from actors.messaging.content import (
    decode_padded,
    encode_padded,
    parse_message,
    text_of,
    unwrap_device_sent,
)
from actors.messaging.errors import MessagingError
from actors.messaging.incoming import (
    PLAINTEXT,
    IncomingStanza,
    delivery_receipt,
    parse_message_stanza,
    retry_receipt,
)
from actors.messaging.outgoing import DeviceCiphertext, enc_node, message_stanza, new_message_id
from actors.messaging.queries import parse_key_bundles
from actors.signal import group_cipher, session_builder, session_cipher
from actors.signal.address import jid_to_signal_address, sender_key_name
from actors.signal.crypto import SignalKeyPair, random_key_pair
from actors.signal.errors import NoSession, SignalError
from actors.signal.sender_key_record import SenderKeyRecord
from actors.signal.session_builder import LocalIdentity, PreKey, PreKeyBundle, SignedPreKey
from actors.signal.session_record import SessionRecord
from actors.signal.wire import parse_pre_key_message
from sandbox.accounts import Account, Device, Registry
from sandbox.accounts import SignedPreKey as UploadedSignedPreKey
from sandbox.errors import InvalidAccountError, UnknownTargetError
from sandbox.groups import Group, Groups
from sandbox.routing import key_bundle
from stores.keys import generate_key_pair, signal_public_key, signed_key_pair

#: One-time pre-keys a new contact uploads.
CONTACT_PRE_KEYS = 30
#: Retry receipts a contact sends for one message at most (Baileys' limit).
MAX_RETRIES = 5
#: What a contact's device calls itself in the registry.
CONTACT_PLATFORM = "sandbox-contact"


@dataclass(frozen=True)
class ContactMessage:
    """A message a contact received, as tests and the CLI read it.

    ``chat`` is the sender's user JID (or the group's), ``author`` the sending
    device; ``error`` says why it did not decrypt (``text`` None then).
    """

    id: str
    chat: str
    author: str
    text: str | None
    timestamp: int | None
    error: str | None = None


@dataclass(frozen=True)
class ContactReceipt:
    """A receipt that reached a contact: the message id, who sent it, and its type."""

    id: str
    sender: str
    type: str | None


@dataclass
class _Sent:
    chat: str
    message: wa_pb2.Message


@dataclass(eq=False)
class Contact:
    """One simulated contact: its account, device and in-memory Signal state."""

    account: Account
    device: Device
    identity: LocalIdentity
    pre_keys: dict[int, SignalKeyPair] = field(repr=False)
    registry: Registry = field(repr=False)
    groups: Groups = field(repr=False)
    sessions: dict[str, SessionRecord] = field(default_factory=dict, repr=False)
    sender_keys: dict[str, SenderKeyRecord] = field(default_factory=dict, repr=False)
    messages: list[ContactMessage] = field(default_factory=list)
    receipts: list[ContactReceipt] = field(default_factory=list)
    #: Per group, the device JIDs that hold our sender key.
    sender_key_memory: dict[str, set[str]] = field(default_factory=dict, repr=False)
    _sent: dict[str, _Sent] = field(default_factory=dict, repr=False)
    _retries: dict[str, int] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"Contact({self.jid!r}, name={self.name!r}, messages={len(self.messages)})"

    @property
    def jid(self) -> str:
        """The contact's user JID (its only device, the phone)."""
        return self.account.jid

    @property
    def lid(self) -> str:
        """The contact's LID user JID."""
        return self.account.lid

    @property
    def name(self) -> str | None:
        """The push name its messages carry."""
        return self.account.push_name

    # --- sending --------------------------------------------------------------------

    def send_text(self, to: str, text: str, now_ms: int) -> tuple[str, BinaryNode]:
        """The stanza sending ``text`` to a user or group JID; ``(message id, stanza)``."""
        message = wa_pb2.Message(conversation=text)
        if to.endswith("@g.us"):
            group = self.groups.get(to)
            if group is None:
                raise UnknownTargetError(f"no group {to!r} in the sandbox")
            return self._send_group(group, message, now_ms)
        recipient = self.registry.account_of(to)
        msg_id = new_message_id()
        padded = encode_padded(message)
        devices = []
        for device in recipient.listed_devices():
            if device is self.device:
                continue
            sealed = self._encrypt(device, padded, now_ms)
            if sealed is not None:
                devices.append(sealed)
        self._sent[msg_id] = _Sent(recipient.jid, message)
        return msg_id, message_stanza(msg_id, recipient.jid, devices)

    def _send_group(
        self, group: Group, message: wa_pb2.Message, now_ms: int
    ) -> tuple[str, BinaryNode]:
        if self.jid not in group.participants:
            raise InvalidAccountError(f"{self.jid} is not a participant of {group.jid}")
        msg_id = new_message_id()
        record, name = self._own_sender_key(group.jid)
        skdm = group_cipher.distribution_message(record, name)
        memory = self.sender_key_memory.setdefault(group.jid, set())
        devices = []
        for device in self._member_devices(group):
            if device.jid in memory:
                continue
            sealed = self._encrypt(device, encode_padded(_distribution(group.jid, skdm)), now_ms)
            if sealed is not None:
                devices.append(sealed)
                memory.add(device.jid)
        skmsg = group_cipher.encrypt(record, name, encode_padded(message))
        self._sent[msg_id] = _Sent(group.jid, message)
        stanza = message_stanza(
            msg_id, group.jid, devices, group_ciphertext=skmsg, addressing_mode="pn"
        )
        return msg_id, stanza

    def _member_devices(self, group: Group) -> list[Device]:
        devices = []
        for member in group.participants:
            try:
                account = self.registry.account_of(member)
            except UnknownTargetError:
                continue
            devices += [d for d in account.listed_devices() if d is not self.device]
        return devices

    def _own_sender_key(self, group: str) -> tuple[SenderKeyRecord, str]:
        name = sender_key_name(group, self.jid)
        record = self.sender_keys.setdefault(name, SenderKeyRecord())
        group_cipher.ensure_own_state(
            record, secrets.randbelow(2**31 - 1), secrets.token_bytes(32), random_key_pair()
        )
        return record, name

    def _encrypt(
        self,
        device: Device,
        plaintext: bytes,
        now_ms: int,
        *,
        bundle: PreKeyBundle | None = None,
    ) -> DeviceCiphertext | None:
        """Encrypt for one device, starting a session first if there is none (or ``bundle``)."""
        address = jid_to_signal_address(device.jid)
        record = self.sessions.get(address, SessionRecord()).clone()
        if bundle is None and not record.has_open_session():
            bundle = _bundle_of(device)
            if bundle is None:
                return None
        if bundle is not None:
            session_builder.start_outgoing(
                record, self.identity, bundle, now_ms=now_ms, new_key_pair=random_key_pair
            )
        kind, ciphertext = session_cipher.encrypt(record, self.identity, address, plaintext)
        self.sessions[address] = record
        return DeviceCiphertext(device.jid, kind, ciphertext)

    # --- receiving ------------------------------------------------------------------

    def receive(self, node: BinaryNode, now_ms: int) -> list[BinaryNode]:
        """Take a stanza the server delivered; the stanzas the contact answers with."""
        if node.tag == "message":
            return self._receive_message(node, now_ms)
        if node.tag == "receipt":
            receipt = ContactReceipt(
                node.attr("id") or "",
                node.attr("participant") or node.attr("from") or "",
                node.attr("type"),
            )
            self.receipts.append(receipt)
            if receipt.type == "retry":
                return self._resend(node, now_ms)
        return []

    def _receive_message(self, node: BinaryNode, now_ms: int) -> list[BinaryNode]:
        try:
            stanza = parse_message_stanza(node, [self.jid, self.lid])
        except MessagingError:
            return []
        message = wa_pb2.Message()
        errors = []
        for index, part in enumerate(stanza.parts):
            try:
                message.MergeFrom(self._decrypt_part(stanza, part.kind, part.ciphertext, now_ms))
            except (SignalError, MessagingError) as exc:
                errors.append(f"part {index} ({part.kind}): {type(exc).__name__}: {exc}")
        if errors:
            count = self._retries.get(stanza.key.id, 0) + 1
            self._retries[stanza.key.id] = count
            self.messages.append(
                ContactMessage(
                    stanza.key.id,
                    _chat(stanza),
                    stanza.author,
                    None,
                    stanza.timestamp,
                    "; ".join(errors),
                )
            )
            if count > MAX_RETRIES:
                return []
            return [retry_receipt(node, count, self.identity.registration_id, None)]
        if _is_content(message):
            self.messages.append(
                ContactMessage(
                    stanza.key.id, _chat(stanza), stanza.author, text_of(message), stanza.timestamp
                )
            )
        return [delivery_receipt(stanza)]

    def _decrypt_part(
        self, stanza: IncomingStanza, kind: str, ciphertext: bytes, now_ms: int
    ) -> wa_pb2.Message:
        if kind == PLAINTEXT:
            return parse_message(ciphertext)
        if kind == "skmsg":
            name = sender_key_name(stanza.key.remote_jid, stanza.author)
            keys = self.sender_keys.get(name, SenderKeyRecord()).clone()
            plaintext = group_cipher.decrypt(keys, name, ciphertext)
            self.sender_keys[name] = keys
            return unwrap_device_sent(decode_padded(plaintext))
        address = jid_to_signal_address(stanza.author)
        record = self.sessions.get(address, SessionRecord()).clone()
        if kind == session_cipher.PKMSG:
            parsed = parse_pre_key_message(ciphertext)
            one_time = self.pre_keys.get(parsed.pre_key_id) if parsed.pre_key_id else None
            plaintext, consumed = session_cipher.decrypt_pre_key(
                record,
                self.identity,
                address,
                parsed,
                one_time,
                now_ms=now_ms,
                new_key_pair=random_key_pair,
            )
        else:
            plaintext, _ = session_cipher.decrypt_whisper(
                record,
                self.identity,
                address,
                ciphertext,
                now_ms=now_ms,
                new_key_pair=random_key_pair,
            )
            consumed = None
        message = unwrap_device_sent(decode_padded(plaintext))
        self.sessions[address] = record
        if consumed:
            self.pre_keys.pop(consumed, None)
        if message.HasField("senderKeyDistributionMessage"):
            distribution = message.senderKeyDistributionMessage
            group = distribution.groupId or stanza.key.remote_jid
            name = sender_key_name(group, stanza.author)
            sender_record = self.sender_keys.setdefault(name, SenderKeyRecord())
            group_cipher.process_distribution(
                sender_record, distribution.axolotlSenderKeyDistributionMessage
            )
        return message

    def _resend(self, receipt: BinaryNode, now_ms: int) -> list[BinaryNode]:
        """Answer a retry receipt for one of our messages; nothing for a malformed one."""
        msg_id = receipt.attr("id") or ""
        sent = self._sent.get(msg_id)
        if sent is None:
            return []
        requester = receipt.attr("participant") or receipt.attr("from") or ""
        try:
            device = self.registry.find(requester)
        except (UnknownTargetError, JidError):
            return []
        retry = receipt.child("retry")
        count_text = (retry.attr("count") if retry is not None else None) or "1"
        if not count_text.isdigit() or not 0 < int(count_text) <= MAX_RETRIES:
            return []
        count = int(count_text)
        try:
            return [self._resend_to(device, msg_id, sent, count, receipt, now_ms)]
        except SignalError:
            return []  # a bundle from the receipt that does not verify: no resend

    def _resend_to(
        self,
        device: Device,
        msg_id: str,
        sent: _Sent,
        count: int,
        receipt: BinaryNode,
        now_ms: int,
    ) -> BinaryNode:
        """The resend as Baileys v7 relays it: one ``enc{count}`` for the one device.

        1:1 ``message{id, to=<device>} > enc``; in a group ``message{id, to=<group>,
        participant=<device>} > enc`` whose message carries our sender key's
        distribution along (no ``skmsg``: the device reads it all from the enc).
        """
        bundle = _bundle_from_receipt(receipt) or _bundle_of(device)
        if bundle is None:
            raise NoSession(device.jid, "no bundle to start a session for the resend")
        message = wa_pb2.Message()
        message.CopyFrom(sent.message)
        is_group = sent.chat.endswith("@g.us")
        if is_group:
            record, name = self._own_sender_key(sent.chat)
            distribution = _distribution(sent.chat, group_cipher.distribution_message(record, name))
            message.MergeFrom(distribution)
            self.sender_key_memory.setdefault(sent.chat, set()).add(device.jid)
        sealed = self._encrypt(device, encode_padded(message), now_ms, bundle=bundle)
        if sealed is None:
            raise NoSession(device.jid, "no session for the resend")
        attrs = {"id": msg_id, "to": device.jid, "type": "text"}
        if is_group:
            attrs.update({"to": sent.chat, "participant": device.jid})
        return BinaryNode("message", attrs, [enc_node(sealed.kind, sealed.ciphertext, count)])


def _chat(stanza: IncomingStanza) -> str:
    """The chat as the user JID (1:1: the author without its device)."""
    if stanza.is_group:
        return stanza.key.remote_jid
    parsed = Jid.parse(stanza.key.remote_jid)
    return str(parsed.user_jid())


def _is_content(message: wa_pb2.Message) -> bool:
    """Whether a message holds more than a sender-key distribution."""
    fields = {f.name for f, _ in message.ListFields()}
    return bool(fields - {"senderKeyDistributionMessage", "messageContextInfo"})


def _distribution(group: str, skdm: bytes) -> wa_pb2.Message:
    return wa_pb2.Message(
        senderKeyDistributionMessage=wa_pb2.Message.SenderKeyDistributionMessage(
            groupId=group, axolotlSenderKeyDistributionMessage=skdm
        )
    )


def _bundle_of(device: Device) -> PreKeyBundle | None:
    """The device's bundle as a fetch hands it out (one one-time pre-key consumed)."""
    node = key_bundle(device)
    if node is None:
        return None
    bundles = parse_key_bundles(BinaryNode("iq", {}, [BinaryNode("list", {}, [node])]))
    return bundles[device.jid]


def _bundle_from_receipt(receipt: BinaryNode) -> PreKeyBundle | None:
    """The bundle a retry receipt carries in ``keys`` (count 2 on), or None."""
    keys = receipt.child("keys")
    registration = receipt.child("registration")
    if keys is None or registration is None:
        return None
    try:
        skey = keys.require_child("skey")
        key = keys.child("key")
        return PreKeyBundle(
            registration_id=int.from_bytes(registration.require_bytes(), "big"),
            identity_key=signal_public_key(keys.require_child("identity").require_bytes()),
            signed_pre_key=SignedPreKey(
                int.from_bytes(skey.require_child("id").require_bytes(), "big"),
                signal_public_key(skey.require_child("value").require_bytes()),
                skey.require_child("signature").require_bytes(),
            ),
            pre_key=None
            if key is None
            else PreKey(
                int.from_bytes(key.require_child("id").require_bytes(), "big"),
                signal_public_key(key.require_child("value").require_bytes()),
            ),
        )
    except (MissingNodeError, ValueError):  # malformed keys: the caller fetches a bundle
        return None


class Contacts:
    """Every simulated contact of a sandbox, by account user."""

    def __init__(self, registry: Registry, groups: Groups) -> None:
        self._registry = registry
        self._groups = groups
        self._contacts: dict[str, Contact] = {}
        self._names = itertools.count(1)

    def __repr__(self) -> str:
        return f"Contacts({len(self._contacts)})"

    def __len__(self) -> int:
        return len(self._contacts)

    def create(self, name: str | None = None, *, pre_keys: int = CONTACT_PRE_KEYS) -> Contact:
        """A new contact: an account, its phone's keys uploaded to the registry."""
        identity = generate_key_pair()
        account = self._registry.new_account(identity.public)
        account.push_name = name if name is not None else f"Contact {next(self._names)}"
        signed = signed_key_pair(identity, 1)
        one_time = {i: generate_key_pair() for i in range(1, pre_keys + 1)}
        registration_id = secrets.randbelow(16380) + 1
        device = Device(
            user=account.user,
            device_id=0,
            lid_user=account.lid_user,
            noise_key=b"",
            identity_key=identity.public,
            registration_id=registration_id,
            key_index=0,
            platform=CONTACT_PLATFORM,
            signed_pre_key=UploadedSignedPreKey(
                signed.key_id, signed.key_pair.public, signed.signature
            ),
            pre_keys={i: pair.public for i, pair in one_time.items()},
            paired=True,
        )
        self._registry.add_device(device)
        local = LocalIdentity(
            identity=SignalKeyPair(signal_public_key(identity.public), identity.private),
            registration_id=registration_id,
            signed_pre_key_id=signed.key_id,
            signed_pre_key=SignalKeyPair(
                signal_public_key(signed.key_pair.public), signed.key_pair.private
            ),
        )
        contact = Contact(
            account=account,
            device=device,
            identity=local,
            pre_keys={
                i: SignalKeyPair(signal_public_key(p.public), p.private)
                for i, p in one_time.items()
            },
            registry=self._registry,
            groups=self._groups,
        )
        self._contacts[account.user] = contact
        return contact

    def get(self, jid: str) -> Contact:
        """The contact of a user JID (either form); UnknownTargetError if it is none."""
        account = self._registry.account_of(jid)
        found = self._contacts.get(account.user)
        if found is None:
            raise UnknownTargetError(f"{jid!r} is not a simulated contact")
        return found

    def of_device(self, device: Device) -> Contact | None:
        """The contact whose device this is, or None (a real client's device)."""
        found = self._contacts.get(device.user)
        return found if found is not None and found.device is device else None

    def all(self) -> list[Contact]:
        """Every contact, oldest first."""
        return list(self._contacts.values())


__all__ = [
    "CONTACT_PRE_KEYS",
    "MAX_RETRIES",
    "Contact",
    "ContactMessage",
    "ContactReceipt",
    "Contacts",
]
