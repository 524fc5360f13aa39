"""The connection's messenger: the message layer wired to a live attempt and the signal store.

A :class:`Messenger` is attached to each connection attempt while its socket lives.
The attempt's read loop hands ``message`` and ``receipt`` stanzas to the inbox
(bounded: when it is full the read loop waits, so the socket backs up instead of a
stanza being left un-acked) and resolves the server's ``ack`` stanzas at once. The
inbox's task, one of the attempt's and there only while stanzas wait, handles
them one after another, in arrival order, through ``MessagingService``; its
decrypts and encrypts run inside the signal-store actor (``WithStore``), so every
session change commits through the persister before anything is acknowledged.

A ``notification type=encrypt`` saying the server holds few of our pre-keys left
tops them up as at login: the new keys and counters durable first, then the upload.

``send_message`` reaches the open attempt through the connection actor
(``SendMessage``); it fails with ``NotConnected`` when there is none.

Since 0.2.0.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from actors.connection.binary import BinaryNode
from actors.connection.prekeys import upload_count, upload_iq
from actors.connection.proto import wa_pb2
from actors.errors import ConnectionLost, SessionError
from actors.messaging.content import Content
from actors.messaging.crypto import LocalCrypto
from actors.messaging.incoming import IncomingStanza, MessageKey, RetryKeys, ack_for
from actors.messaging.outgoing import DeviceCiphertext
from actors.messaging.receive import ReceivedMessage
from actors.messaging.send import KeptSend
from actors.messaging.service import Identity, MessagingService
from actors.on_demand import OnDemandQueue
from actors.recorder import SessionMetrics
from actors.signal.repository import SignalRepository
from actors.signal.session_builder import PreKeyBundle
from actors.signal_store import WithStore
from runtime.errors import ReplyAbandoned, ReplyTimeout
from runtime.events import Event
from runtime.log import Logger
from runtime.ref import ActorRef
from runtime.reply import call_durable
from stores.creds import AuthCreds, KeyPair
from stores.types import KeyWrites, SignalStore

INBOX_SIZE = 1024
"""Stanzas waiting for the inbox before the read loop waits for room."""

T = TypeVar("T")


@dataclass(frozen=True)
class SendMessage:
    """``ConnectionActor`` call: send ``content`` to ``jid``; answered with the ``MessageKey``."""

    jid: str
    content: Content


class LiveLink(Protocol):
    """What the messenger needs of a live attempt."""

    async def send_node(self, node: BinaryNode) -> None: ...

    async def query(self, node: BinaryNode, *, timeout: float | None = None) -> BinaryNode: ...  # noqa: ASYNC109 - the attempt's signature

    def next_id(self) -> str: ...

    def spawn(self, work: Callable[[], Awaitable[None]]) -> None:
        """Start ``work`` as a task that lives (and dies) with the attempt."""
        ...


class _Link:
    def __init__(self, live: LiveLink) -> None:
        self._live = live

    async def send(self, node: BinaryNode) -> None:
        await self._live.send_node(node)

    async def query(self, node: BinaryNode) -> BinaryNode:
        return await self._live.query(node)

    def next_id(self) -> str:
        return self._live.next_id()


class ActorCrypto:
    """``MessageCrypto`` whose every operation runs inside the signal-store actor."""

    def __init__(
        self, signal_store: ActorRef, creds: Callable[[], AuthCreds], timeout: float
    ) -> None:
        self._ref = signal_store
        self._creds = creds
        self._timeout = timeout

    def __repr__(self) -> str:
        return "ActorCrypto()"

    async def _run(self, work: Callable[[LocalCrypto], Awaitable[T]]) -> T:
        def with_store(store: SignalStore) -> Awaitable[T]:
            return work(LocalCrypto(store, SignalRepository(store, self._creds)))

        result: T = await call_durable(self._ref, WithStore(with_store), timeout=self._timeout)
        return result

    async def decrypt(self, stanza: IncomingStanza) -> ReceivedMessage:
        return await self._run(lambda c: c.decrypt(stanza))

    async def encrypt(
        self,
        message: wa_pb2.Message,
        *,
        destination: str,
        recipients: Sequence[str],
        own_devices: Sequence[str] = (),
        bundles: Mapping[str, PreKeyBundle] | None = None,
        keep: KeptSend | None = None,
    ) -> list[DeviceCiphertext]:
        return await self._run(
            lambda c: c.encrypt(
                message,
                destination=destination,
                recipients=recipients,
                own_devices=own_devices,
                bundles=bundles,
                keep=keep,
            )
        )

    async def encrypt_group(self, group: str, me_jid: str, plaintext: bytes) -> tuple[bytes, bytes]:
        return await self._run(lambda c: c.encrypt_group(group, me_jid, plaintext))

    async def distribution(self, group: str, me_jid: str) -> bytes:
        return await self._run(lambda c: c.distribution(group, me_jid))

    async def without_session(self, devices: Sequence[str]) -> list[str]:
        return await self._run(lambda c: c.without_session(devices))

    async def migrate(self, pn_jid: str, lid_jid: str) -> None:
        await self._run(lambda c: c.migrate(pn_jid, lid_jid))

    async def get(self, type_: str, ids: Sequence[str]) -> dict[str, Any]:
        return await self._run(lambda c: c.get(type_, ids))

    async def set(self, writes: KeyWrites) -> None:
        await self._run(lambda c: c.set(writes))


class MessengerHost(Protocol):
    """What the messenger asks of its connection actor."""

    @property
    def creds(self) -> AuthCreds: ...

    def emit(self, event: Event) -> None: ...

    @property
    def metrics(self) -> SessionMetrics: ...

    async def prepare_prekeys(self, count: int) -> dict[int, KeyPair]: ...


class Messenger:
    """Messaging for one connection actor; ``attach`` it to each open attempt."""

    def __init__(
        self, host: MessengerHost, signal_store: ActorRef, timeout: float, log: Logger
    ) -> None:
        self._host = host
        self._crypto = ActorCrypto(signal_store, lambda: host.creds, timeout)
        self._log = log
        self._service: MessagingService | None = None
        self._inbox: OnDemandQueue[BinaryNode] | None = None

    def __repr__(self) -> str:
        return f"Messenger(attached={self._service is not None})"

    def attach(self, live: LiveLink) -> None:
        """Serve the attempt ``live`` from now until ``detach``."""
        self._service = MessagingService(
            self._crypto,
            _Link(live),
            self._identity,
            self._emit,
            retry_keys=self._retry_keys,
            registration_id=lambda: self._host.creds.registration_id,
            log=self._log,
            on_duplicate=self._host.metrics.message_duplicate,
        )
        self._inbox = OnDemandQueue(self._inbox_stanza, live.spawn, INBOX_SIZE)

    def detach(self) -> None:
        """The attempt ended: stanzas still queued are dropped (un-acked, they come again)."""
        service, self._service = self._service, None
        inbox, self._inbox = self._inbox, None
        if inbox is not None:
            inbox.clear()
        if service is not None:
            service.connection_lost()

    async def _inbox_stanza(self, node: BinaryNode) -> None:
        service, inbox = self._service, self._inbox
        if service is None or inbox is None:
            return  # detached meanwhile
        try:
            await self._handle(service, node)
        except ConnectionLost:
            inbox.clear()  # the link is gone: the rest stays un-acked and comes again
        except (SessionError, ReplyAbandoned, ReplyTimeout) as exc:
            # A store timeout: the stanza stays un-acked and comes again.
            self._log.warning("stanza_failed", tag=node.tag, error=str(exc))

    async def _handle(self, service: MessagingService, node: BinaryNode) -> None:
        if node.tag == "message":
            await service.on_message(node)
        elif node.tag == "receipt":
            await service.on_receipt(node)
        else:
            await self._on_encrypt_notification(service, node)

    async def _on_encrypt_notification(self, service: MessagingService, node: BinaryNode) -> None:
        """The server says how many of our pre-keys it has left: top up, durable first."""
        count_node = node.child("count")
        value = count_node.attr("value") if count_node is not None else None
        if value is not None and value.isdecimal():
            creds = self._host.creds
            count = upload_count(
                int(value), newest_local_exists=True, next_pre_key_id=creds.next_pre_key_id
            )
            if count:
                keys = await self._host.prepare_prekeys(count)
                link = service.link
                await link.query(upload_iq(link.next_id(), self._host.creds, keys))
                self._log.info("prekeys_topped_up", server=int(value), uploaded=len(keys))
                self._host.metrics.prekeys_uploaded(len(keys))
        await service.link.send(ack_for(node, self._me()))

    async def stanza_received(self, node: BinaryNode) -> BinaryNode | None:
        """From the read loop: queue what needs waiting; an ack to send at once, if any.

        A full inbox makes the read loop wait (the socket backs up) rather than leave a
        stanza un-acked: the server would deliver it again only at the next login.
        """
        service = self._service
        if node.tag == "ack":
            if service is not None:
                service.on_ack(node)
            return None
        encrypt_notice = node.tag == "notification" and node.attr("type") == "encrypt"
        if node.tag in ("message", "receipt") or encrypt_notice:
            if self._inbox is not None:
                await self._inbox.put(node)
            return None
        if node.tag in ("notification", "call") and node.attr("id") and node.attr("from"):
            # The server redelivers what is not acked; nothing in these needs keeping.
            return ack_for(node, self._me())
        return None

    async def send_message(self, jid: str, content: Content) -> MessageKey:
        service = self._service
        if service is None:
            raise ConnectionLost(428, "no open connection for messaging")
        key = await service.send_message(jid, content)
        self._host.metrics.message_sent()
        return key

    def _me(self) -> str | None:
        me = self._host.creds.me or {}
        value = me.get("id")
        return value if isinstance(value, str) else None

    def _identity(self) -> Identity:
        creds = self._host.creds
        me = creds.me or {}
        lid = me.get("lid")
        return Identity(
            jid=str(me.get("id") or ""),
            lid=lid if isinstance(lid, str) else None,
            device_identity=device_identity_bytes(creds),
        )

    def _emit(self, event: Event) -> None:
        self._host.emit(event)

    async def _retry_keys(self) -> RetryKeys:
        keys = await self._host.prepare_prekeys(1)
        key_id, pair = max(keys.items())
        creds = self._host.creds
        signed = creds.signed_pre_key
        return RetryKeys(
            identity=creds.signed_identity_key.public,
            pre_key_id=key_id,
            pre_key=pair.public,
            signed_pre_key_id=signed.key_id,
            signed_pre_key=signed.key_pair.public,
            signed_pre_key_signature=signed.signature,
            device_identity=device_identity_bytes(creds),
        )


def device_identity_bytes(creds: AuthCreds) -> bytes:
    """Our ADVSignedDeviceIdentity with the account signature key (Baileys' encoding)."""
    account = creds.account or {}
    fields = ("details", "accountSignatureKey", "accountSignature", "deviceSignature")
    values = {name: account[name] for name in fields if isinstance(account.get(name), bytes)}
    return bytes(wa_pb2.ADVSignedDeviceIdentity(**values).SerializeToString())
