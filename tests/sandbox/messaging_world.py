"""A core with accounts, paired fake clients and a real Signal side, for the messaging tests.

``World`` pairs and logs in :class:`tests.sandbox.fake_client.FakeDevice` s the way
``test_core.World`` does. ``Bot`` is a fake client whose Signal side is our
``SignalRepository`` over ``stores.use_memory_auth_state``: it uploads real
pre-keys, asks usync and bundles through the server, encrypts with
``actors.messaging.send`` and decrypts with ``actors.messaging.receive``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.connection.binary import BinaryNode
from actors.connection.proto import wa_pb2
from actors.messaging.content import encode_padded
from actors.messaging.incoming import ack_for, delivery_receipt, parse_message_stanza
from actors.messaging.outgoing import message_stanza, new_message_id
from actors.messaging.queries import (
    key_bundles_iq,
    parse_key_bundles,
    parse_usync_devices,
    usync_devices_iq,
)
from actors.messaging.receive import ReceivedMessage, decrypt_stanza
from actors.messaging.send import device_jids, devices_without_session, encrypt_for_devices
from actors.signal.repository import SignalRepository
from sandbox.core import SandboxConfig, ServerCore
from sandbox.phone import build_device_identity, parse_qr
from stores import use_memory_auth_state
from stores.auth import PersistedAuth
from stores.creds import KeyPair
from stores.keys import generate_key_pair, generate_pre_keys
from tests.sandbox.fake_client import FakeClient, FakeDevice, Wire

WALL = 1_700_000_000.0


class World:
    """A core with a fixed wall clock, its wire, and phone accounts to pair devices to."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.core = ServerCore(config=config, wall_clock=lambda: WALL)
        self.wire = Wire(self.core)
        self.phones: dict[str, KeyPair] = {}

    def new_account(self) -> str:
        key = generate_key_pair()
        user = self.core.registry.new_account(key.public).user
        self.phones[user] = key
        return user

    def pair(self, device: FakeDevice, user: str) -> None:
        client = self.wire.client(device)
        client.handshake(device.registration_payload())
        (iq,) = client.take()
        ref = iq.require_child("pair-device").children("ref")[0].require_bytes().decode()
        scanned = parse_qr(device.qr(ref))
        ticket = self.core.begin_scan(
            ref=scanned.ref,
            noise_key=scanned.noise_key,
            identity_key=scanned.identity_key,
            user=user,
            now=0.0,
        )
        identity = build_device_identity(
            self.phones[user],
            key_index=ticket.key_index,
            device_identity_key=scanned.identity_key,
            adv_secret=scanned.adv_secret,
            timestamp=int(WALL),
        )
        self.wire.route(self.core.complete_scan(ticket, identity, 0.0))
        (success,) = client.take()
        client.send(device.sign_pair_success(success))
        assert client.closed == "clean"

    def login(self, device: FakeDevice, now: float = 0.0) -> tuple[FakeClient, list[BinaryNode]]:
        client = self.wire.client(device)
        client.handshake(device.login_payload(), now)
        return client, client.take()

    def contact_send(self, contact: str, to: str, text: str, now: float = 0.0) -> str:
        """Have a contact send ``text``; its outputs go over the wire. The message id."""
        msg_id, outputs = self.core.contact_send(contact, to, text, now)
        self.wire.route(outputs)
        return msg_id

    async def bot(self, user: str | None = None, *, pre_keys: int = 10) -> Bot:
        """A paired, logged-in bot device of ``user`` (a new account if None), keys uploaded."""
        auth = await use_memory_auth_state()
        creds = auth.state.creds
        device = FakeDevice(
            noise_key=creds.noise_key,
            identity_key=creds.signed_identity_key,
            registration_id=creds.registration_id,
            signed_pre_key=creds.signed_pre_key,
        )
        self.pair(device, user if user is not None else self.new_account())
        plain = generate_pre_keys(1, pre_keys)
        await auth.state.keys.set({"pre-key": plain})
        keys = {
            int(i): KeyPair(private=v["private"], public=v["public"])  # type: ignore[index]
            for i, v in plain.items()
        }
        bot = Bot(self, device, auth, SignalRepository(auth.state.keys, lambda: auth.state.creds))
        bot.connect()
        reply = bot.client_or_fail().query(device.upload_node(keys, "up"))
        assert reply.attr("type") == "result", reply
        return bot


@dataclass(eq=False)
class Bot:
    """A logged-in fake client with a real Signal repository."""

    world: World
    device: FakeDevice
    auth: PersistedAuth
    repository: SignalRepository
    client: FakeClient | None = None
    received: list[ReceivedMessage] = field(default_factory=list)
    #: Stanzas other than messages (receipts, acks) taken from the inbox.
    other: list[BinaryNode] = field(default_factory=list)
    login_nodes: list[BinaryNode] = field(default_factory=list)

    @property
    def jid(self) -> str:
        assert self.device.me is not None
        return self.device.me

    @property
    def lid(self) -> str:
        assert self.device.lid is not None
        return self.device.lid

    @property
    def user_jid(self) -> str:
        return self.jid.split(":")[0] + "@s.whatsapp.net"

    def client_or_fail(self) -> FakeClient:
        assert self.client is not None and self.client.closed is None, "not connected"
        return self.client

    def connect(self, now: float = 0.0) -> list[BinaryNode]:
        """Log in; the nodes the server sent after the handshake."""
        self.client, self.login_nodes = self.world.login(self.device, now)
        return self.login_nodes

    def disconnect(self, now: float = 0.0) -> None:
        client = self.client_or_fail()
        self.world.core.disconnected(client.conn_id, now)
        client.closed = "gone"
        self.client = None

    async def process(
        self, nodes: list[BinaryNode] | None = None, *, ack: bool = True, receipt: bool = True
    ) -> list[ReceivedMessage]:
        """Decrypt every message in ``nodes`` (default: the inbox); ack and receipt them."""
        client = self.client_or_fail()
        fresh = []
        for node in nodes if nodes is not None else client.take():
            if node.tag != "message":
                self.other.append(node)
                continue
            stanza = parse_message_stanza(node, [self.jid, self.lid])
            message = await decrypt_stanza(self.auth.state.keys, self.repository, stanza)
            fresh.append(message)
            if ack:
                client.send(ack_for(node, self.jid))
            if receipt and message.error is None:
                client.send(delivery_receipt(stanza))
        self.received += fresh
        return fresh

    async def send_text(self, to: str, text: str, now: float = 0.0) -> str:
        """Send ``text`` 1:1 as Baileys does: usync, bundles for new devices, one stanza."""
        client = self.client_or_fail()
        own_user = self.user_jid
        query = usync_devices_iq("u", "sid", [to, own_user])
        result = client.iq("usync", "get", query.children())
        users = {u.jid: u for u in parse_usync_devices(result)}
        recipients = device_jids(to, users[to].devices)
        own = device_jids(own_user, users[own_user].devices, exclude=self.jid)
        missing = await devices_without_session(self.repository, recipients + own)
        bundles = {}
        if missing:
            reply = client.query(key_bundles_iq("k", missing))
            bundles = parse_key_bundles(reply)
        message = wa_pb2.Message(conversation=text)
        devices = await encrypt_for_devices(
            self.auth.state.keys,
            self.repository,
            message,
            destination=to,
            recipients=[j for j in recipients if j not in missing or j in bundles],
            own_devices=[j for j in own if j not in missing or j in bundles],
            bundles=bundles,
        )
        msg_id = new_message_id()
        client.send(message_stanza(msg_id, to, devices), now)
        return msg_id

    async def send_group_text(self, group: str, text: str, now: float = 0.0) -> str:
        """Send ``text`` to a group as Baileys does: skdm to every device, then one skmsg."""
        client = self.client_or_fail()
        meta = client.query(
            BinaryNode(
                "iq",
                {"xmlns": "w:g2", "type": "get", "to": group},
                [BinaryNode("query", {"request": "interactive"})],
            )
        )
        members = [p.require_attr("jid") for p in meta.require_child("group").children()]
        result = client.iq("usync", "get", usync_devices_iq("u", "sid", members).children())
        devices = []
        for user in parse_usync_devices(result):
            devices += device_jids(user.jid, user.devices, exclude=self.jid)
        missing = await devices_without_session(self.repository, devices)
        bundles = parse_key_bundles(client.query(key_bundles_iq("k", missing))) if missing else {}
        message = wa_pb2.Message(conversation=text)
        skdm, skmsg = await self.repository.encrypt_group_message(
            group, self.jid, encode_padded(message)
        )
        distribution = wa_pb2.Message(
            senderKeyDistributionMessage=wa_pb2.Message.SenderKeyDistributionMessage(
                groupId=group, axolotlSenderKeyDistributionMessage=skdm
            )
        )
        sealed = await encrypt_for_devices(
            self.auth.state.keys,
            self.repository,
            distribution,
            destination=group,
            recipients=[j for j in devices if j not in missing or j in bundles],
            bundles=bundles,
        )
        msg_id = new_message_id()
        stanza = message_stanza(msg_id, group, sealed, group_ciphertext=skmsg, addressing_mode="pn")
        client.send(stanza, now)
        return msg_id

    async def aclose(self) -> None:
        await self.auth.aclose()
