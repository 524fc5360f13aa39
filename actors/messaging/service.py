"""One account's messaging: receive, send, receipts and retries over a link to the server.

:class:`MessagingService` is what a connection hands stanzas to and what
``send_message`` calls. It knows nothing of sockets or actors: it talks to the
server through a :class:`Link` (``send`` a node, ``query`` an iq and wait for its
result) and to durable state through a :class:`MessageCrypto` port.

The order that makes it crash-safe:

- receive: decrypt every part in one store transaction, whose commit is durable
  (through the persister in the session tree) BEFORE the event is emitted and
  BEFORE the delivery receipt and the ack go out. A crash before the commit means
  no ack, so the server delivers again.
- send: every session change made by encryption is durable (same rule) BEFORE the
  stanza leaves; ``send_message`` returns once the server acked the stanza.
- a stanza delivered again is answered from its kept copy; one whose copy is gone
  (every part's message key used: see :mod:`actors.messaging.receive`) is a
  duplicate of a message already emitted: it gets its delivery receipt and ack again
  (the first ones may have been lost), no event and no retry receipt.
- a message that does not decrypt is emitted as undecryptable and answered with a
  retry receipt (count, registration id; from the second retry on, a fresh
  pre-key bundle), at most five per message; a retry receipt for a message we sent
  is answered by encrypting it again for the device that asked, from the sent
  messages kept durably per chat (``sent-message``, the newest 64), so also after
  a restart.

Since 0.2.0.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from actors.connection.binary.errors import JidError
from actors.connection.binary.jid import G_US, Jid
from actors.connection.binary.node import BinaryNode
from actors.connection.proto import wa_pb2
from actors.events import (
    EventSink,
    message_entry,
    message_key,
    message_update,
    messages_update,
    messages_upsert,
)
from actors.messaging.content import Content, encode_padded, parse_message, to_message
from actors.messaging.crypto import MessageCrypto
from actors.messaging.errors import MessagingError, RecipientError, StanzaError
from actors.messaging.incoming import (
    IncomingStanza,
    MessageKey,
    RetryKeys,
    ack_for,
    delivery_receipt,
    parse_message_stanza,
    retry_receipt,
)
from actors.messaging.kept import SENT, kept_lookup
from actors.messaging.outgoing import (
    DeviceCiphertext,
    message_stanza,
    new_message_id,
    resend_stanza,
)
from actors.messaging.queries import (
    group_metadata_iq,
    key_bundles_iq,
    parse_group_metadata,
    parse_key_bundles,
    parse_usync_devices,
    usync_devices_iq,
)
from actors.messaging.receive import ReceivedMessage
from actors.messaging.send import KeptSend, device_jids
from actors.signal.session_builder import PreKeyBundle
from runtime.events import Event
from runtime.log import Logger

MAX_RETRIES = 5
"""Retry receipts sent for one message at most (Baileys' maxMsgRetryCount)."""
EMITTED_TRACKED = 4096
"""Message keys remembered as emitted, so a redelivery in this process is not emitted twice."""
RETRIES_TRACKED = 256
"""Messages whose retry count is remembered (in memory, as Baileys)."""
ACK_TIMEOUT = 60.0
"""How long ``send_message`` waits for the server's ack of a stanza."""


class Link(Protocol):
    """What the service needs of a live connection."""

    async def send(self, node: BinaryNode) -> None: ...

    async def query(self, node: BinaryNode) -> BinaryNode: ...

    def next_id(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Identity:
    """Who we are: our device JID (``user:device@s.whatsapp.net``), LID, the signed identity."""

    jid: str
    lid: str | None
    device_identity: bytes

    def __repr__(self) -> str:
        return f"Identity({self.jid!r}, lid={self.lid!r})"


class AckTimeout(MessagingError):
    """The server did not ack a stanza we sent in time."""


class SendRefused(MessagingError):
    """The server answered our stanza with an error ack."""


class SendUnconfirmed(MessagingError):
    """The connection ended before the server acked: the message may or may not be there."""


@dataclass
class _AckWaiter:
    done: trio.Event = field(default_factory=trio.Event)
    error: str | None = None
    lost: bool = False


class MessagingService:
    """Receive and send for one account. Since 0.2.0."""

    def __init__(
        self,
        crypto: MessageCrypto,
        link: Link,
        identity: Callable[[], Identity],
        emit: EventSink,
        *,
        retry_keys: Callable[[], Awaitable[RetryKeys]] | None = None,
        registration_id: Callable[[], int],
        log: Logger,
        on_duplicate: Callable[[], None] | None = None,
    ) -> None:
        self._crypto = crypto
        self._link = link
        self._identity = identity
        self._emit = emit
        self._retry_keys = retry_keys
        self._registration_id = registration_id
        self._log = log
        self._count_duplicate = on_duplicate
        self._in_doubt: BinaryNode | None = None
        self.duplicates = 0
        """Stanzas answered as duplicates of a message handled before (kept copy gone)."""
        self._retries: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._acks: dict[str, _AckWaiter] = {}
        self._emitted: collections.OrderedDict[str, None] = collections.OrderedDict()

    @property
    def link(self) -> Link:
        return self._link

    # -- receive ---------------------------------------------------------------------

    async def on_message(self, node: BinaryNode) -> ReceivedMessage | None:
        """Handle a ``<message>``: decrypt durably, emit, then receipt and ack.

        A stanza whose handling failed between its decrypt and its emit (a store
        timeout: the decrypt may have committed) is handled again first, before any
        later stanza is decrypted: were KEEP later messages of its author committed
        before it, its redelivery would find its kept copy gone and be taken for a
        duplicate of a message never emitted.
        """
        doubtful = self._in_doubt
        if doubtful is not None and doubtful is not node:
            await self._receive(doubtful)
        return await self._receive(node)

    async def _receive(self, node: BinaryNode) -> ReceivedMessage | None:
        me = self._identity()
        try:
            stanza = parse_message_stanza(node, [me.jid, me.lid or ""])
        except StanzaError:
            # Baileys' NACK "parsing error": the server stops redelivering it.
            await self._link.send(ack_for(node, me.jid, error=487))
            return None
        self._in_doubt = node  # until emitted; an exception on the way leaves it set
        received = await self._crypto.decrypt(stanza)
        if received.duplicate:
            self._in_doubt = None
            await self._on_duplicate(node, stanza)
            return received
        if not self._already_emitted(received):
            self._emit(message_event(received))
        self._in_doubt = None
        if received.error is None:
            self._retries.pop(stanza.key.id, None)
            await self._link.send(delivery_receipt(stanza))
        else:
            await self._ask_retry(node, stanza.key.id)
        await self._link.send(ack_for(node, me.jid))
        return received

    async def _on_duplicate(self, node: BinaryNode, stanza: IncomingStanza) -> None:
        """Handled before, its kept copy gone: only the receipt and ack again."""
        self.duplicates += 1
        if self._count_duplicate is not None:
            self._count_duplicate()
        key = stanza.key
        self._log.debug(
            "message_duplicate", remote_jid=key.remote_jid, id=key.id, participant=key.participant
        )
        self._retries.pop(key.id, None)
        await self._link.send(delivery_receipt(stanza))
        await self._link.send(ack_for(node, self._identity().jid))

    def _already_emitted(self, received: ReceivedMessage) -> bool:
        """Whether this process emitted the message already (a redelivery after a reconnect).

        Events are exactly once while the process lives, at least once across restarts
        (the key is stable, for deduplication). Undecryptable ones are always emitted.
        """
        if received.error is not None:
            return False
        key = received.key
        name = f"{key.remote_jid}|{key.participant or ''}|{key.id}"
        if name in self._emitted:
            return True
        self._emitted[name] = None
        _trim(self._emitted, EMITTED_TRACKED)
        return False

    async def _ask_retry(self, node: BinaryNode, message_id: str) -> None:
        count = self._retries.get(message_id, 0) + 1
        if count > MAX_RETRIES:
            return
        self._retries[message_id] = count
        _trim(self._retries, RETRIES_TRACKED)
        keys = await self._retry_keys() if (count > 1 and self._retry_keys is not None) else None
        await self._link.send(retry_receipt(node, count, self._registration_id(), keys))

    async def on_receipt(self, node: BinaryNode) -> None:
        """A receipt for a message we sent: report it, answer a retry, ack it."""
        me = self._identity()
        kind = node.attr("type")
        if kind == "retry":
            await self._resend(node)
        else:
            self._emit(receipt_event(node))
        await self._link.send(ack_for(node, me.jid))

    def on_ack(self, node: BinaryNode) -> None:
        """The server's ``ack`` of a stanza we sent."""
        if node.attr("class") != "message":
            return
        waiter = self._acks.get(node.attr("id") or "")
        if waiter is not None:
            waiter.error = node.attr("error")
            waiter.done.set()

    def connection_lost(self) -> None:
        """Every send waiting for an ack fails: the stanza may or may not have arrived."""
        for waiter in self._acks.values():
            waiter.lost = True
            waiter.done.set()

    # -- send ------------------------------------------------------------------------

    async def send_message(self, jid: str, content: Content) -> MessageKey:
        """Encrypt ``content`` for every device of ``jid`` (and ours), send, await the ack."""
        message = to_message(content)
        try:
            recipient = str(Jid.parse(jid).user_jid())
        except JidError as exc:
            raise RecipientError(f"cannot send to {jid!r}: {exc}") from exc
        if jid.endswith("@" + G_US):
            return await self._send_group(recipient, message)
        me = self._identity()
        own_user = str(Jid.parse(me.jid).user_jid())
        devices = await self._devices([recipient, own_user])
        if recipient not in devices:
            raise RecipientError(f"WhatsApp knows no device of {recipient}")
        recipients = device_jids(recipient, devices[recipient])
        own = device_jids(own_user, devices.get(own_user, (0,)), exclude=me.jid)
        bundles = await self._bundles(recipients + own)
        message_id = new_message_id()
        encrypted = await self._crypto.encrypt(
            message,
            destination=recipient,
            recipients=recipients,
            own_devices=own,
            bundles=bundles,
            keep=KeptSend(recipient, message_id, message.SerializeToString()),
        )
        stanza = message_stanza(
            message_id, recipient, encrypted, device_identity=me.device_identity
        )
        await self._send_and_wait(stanza, message_id)
        return MessageKey(recipient, True, message_id)

    async def _send_group(self, group: str, message: wa_pb2.Message) -> MessageKey:
        """Sender-key message to the group; our sender key to devices that lack it."""
        me = self._identity()
        answer = await self._link.query(group_metadata_iq(self._link.next_id(), group))
        if answer.attr("type") == "error":
            code = next((c.attr("code") for c in answer.children("error")), None)
            raise RecipientError(f"group {group}: the server answered error {code}")
        metadata = parse_group_metadata(answer, group)
        own_user = str(Jid.parse(me.jid).user_jid())
        users = sorted({str(Jid.parse(p).user_jid()) for p in metadata.participants} | {own_user})
        devices = await self._devices(users)
        targets = [
            jid
            for user in users
            for jid in device_jids(user, devices.get(user, (0,)), exclude=me.jid)
        ]
        skdm, skmsg = await self._crypto.encrypt_group(group, me.jid, encode_padded(message))
        memory_found = await self._crypto.get("sender-key-memory", [group])
        memory = dict(memory_found.get(group) or {})
        lacking = [jid for jid in targets if not memory.get(jid)]
        distribution = wa_pb2.Message(
            senderKeyDistributionMessage=wa_pb2.Message.SenderKeyDistributionMessage(
                groupId=group, axolotlSenderKeyDistributionMessage=skdm
            )
        )
        message_id = new_message_id()
        encrypted = await self._crypto.encrypt(
            distribution,
            destination=group,
            recipients=lacking,
            bundles=await self._bundles(lacking),
            keep=KeptSend(group, message_id, message.SerializeToString()),
        )
        stanza = message_stanza(
            message_id,
            group,
            encrypted,
            device_identity=me.device_identity,
            group_ciphertext=skmsg,
            addressing_mode=metadata.addressing_mode,
        )
        await self._send_and_wait(stanza, message_id)
        if lacking:
            # Only once the server took the stanza: a device marked earlier might never
            # get the key and could not read the group again.
            memory.update(dict.fromkeys(lacking, True))
            await self._crypto.set({"sender-key-memory": {group: memory}})
        return MessageKey(group, True, message_id, me.jid)

    async def _devices(self, users: Sequence[str]) -> dict[str, tuple[int, ...]]:
        result = await self._link.query(
            usync_devices_iq(self._link.next_id(), self._link.next_id(), users)
        )
        found: dict[str, tuple[int, ...]] = {}
        for user in parse_usync_devices(result):
            if not user.devices:
                continue  # the server knows no device of this user
            found[user.jid] = user.devices
            await self._crypto.set(
                {"device-list": {Jid.parse(user.jid).user: [str(d) for d in found[user.jid]]}}
            )
            if user.lid and not Jid.parse(user.jid).is_lid:
                await self._crypto.migrate(user.jid, user.lid)
        return found

    async def _bundles(self, devices: Sequence[str]) -> Mapping[str, PreKeyBundle]:
        missing = await self._crypto.without_session(devices)
        if not missing:
            return {}
        result = await self._link.query(key_bundles_iq(self._link.next_id(), missing))
        return parse_key_bundles(result)

    async def _send_and_wait(self, stanza: BinaryNode, message_id: str) -> None:
        waiter = _AckWaiter()
        self._acks[message_id] = waiter
        try:
            await self._link.send(stanza)
            with trio.move_on_after(ACK_TIMEOUT) as scope:
                await waiter.done.wait()
            if scope.cancelled_caught:
                raise AckTimeout(f"no ack for message {message_id} in {ACK_TIMEOUT:.0f} s")
            if waiter.lost:
                raise SendUnconfirmed(
                    f"message {message_id}: the connection ended before the server acked it"
                )
            if waiter.error is not None:
                raise SendRefused(f"message {message_id}: server answered {waiter.error}")
        finally:
            self._acks.pop(message_id, None)

    async def _resend(self, node: BinaryNode) -> None:
        message_id = node.attr("id") or ""
        device = node.attr("participant") or node.attr("from")
        if device is None:
            return
        recipient = _chat_of_receipt(node)
        found = await self._crypto.get(SENT, [recipient])
        data = kept_lookup(found.get(recipient), message_id)
        if data is None:
            return  # older than what is kept: nothing to send again
        message = parse_message(data)
        if recipient.endswith("@" + G_US):
            # The device may lack our sender key too: it travels with the resend.
            skdm = await self._crypto.distribution(recipient, self._identity().jid)
            message.senderKeyDistributionMessage.CopyFrom(
                wa_pb2.Message.SenderKeyDistributionMessage(
                    groupId=recipient, axolotlSenderKeyDistributionMessage=skdm
                )
            )
        retry = node.child("retry")
        count = int(retry.attr("count") or "1") if retry is not None else 1
        own_user = str(Jid.parse(self._identity().jid).user_jid())
        is_own = str(Jid.parse(device).user_jid()) == own_user
        # A retry with keys means the device lost our session: start a fresh one
        # from the bundle it sent, so the resend is a pkmsg it can read.
        offered = retry_bundle(node)
        bundles = {device: offered} if offered is not None else await self._bundles([device])
        encrypted = await self._crypto.encrypt(
            message,
            destination=recipient,
            recipients=[] if is_own else [device],
            own_devices=[device] if is_own else [],
            bundles=bundles,
        )
        [part] = encrypted
        stanza = resend_stanza(
            message_id,
            recipient,
            DeviceCiphertext(device, part.kind, part.ciphertext),
            count,
            own_device=is_own,
            device_identity=self._identity().device_identity,
        )
        await self._link.send(stanza)


def retry_bundle(node: BinaryNode) -> PreKeyBundle | None:
    """The pre-key bundle a retry receipt carries (from its second retry on), if any."""
    keys = node.child("keys")
    registration = node.child("registration")
    if keys is None or registration is None or not isinstance(registration.content, bytes):
        return None
    wrapped = BinaryNode(
        "iq",
        {},
        [
            BinaryNode(
                "list", {}, [BinaryNode("user", {"jid": "retry"}, [registration, *keys.children()])]
            )
        ],
    )
    try:
        return parse_key_bundles(wrapped)["retry"]
    except StanzaError:
        return None


def message_event(received: ReceivedMessage) -> Event:
    """``{"messages_upsert": {"type": "notify", "messages": [...]}}`` for one message."""
    key = received.key
    entry = message_entry(
        message_key(key.remote_jid, key.from_me, key.id, key.participant),
        received.message,
        received.text,
        received.push_name,
        received.timestamp,
        received.error,
    )
    return messages_upsert([entry])


def receipt_event(node: BinaryNode) -> Event:
    """``{"messages_update": [...]}``: delivery (``type`` None) or read receipts we got."""
    ids = [node.attr("id") or ""]
    listed = node.child("list")
    if listed is not None:
        ids += [item.attr("id") or "" for item in listed.children("item")]
    status = node.attr("type") or "delivery"
    remote = node.attr("from") or ""
    stamp = node.attr("t")
    timestamp = int(stamp) if stamp is not None and stamp.isdigit() else None
    participant = node.attr("participant")
    return messages_update(
        [
            message_update(message_key(remote, True, mid, participant), status, timestamp)
            for mid in ids
        ]
    )


def _chat_of_receipt(node: BinaryNode) -> str:
    """The chat a receipt is about: the group, the recipient (our own devices' receipts
    for what we sent), or the user of the device that sent it."""
    sender = node.attr("from") or ""
    if sender.endswith("@" + G_US):
        return sender
    return str(Jid.parse(node.attr("recipient") or sender).user_jid())


def _trim(book: collections.OrderedDict[str, Any], size: int) -> None:
    while len(book) > size:
        book.popitem(last=False)
