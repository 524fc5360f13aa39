"""A minimal WhatsApp client for sandbox tests, written from PROTOCOL.md, not from the sandbox.

It holds the creds a new device generates, builds registration and login
payloads, speaks Noise as the initiator (``NoiseInitiator`` + the node codec),
and checks ``pair-success`` by the rules of PROTOCOL.md "Pairing" (HMAC with the
adv secret, account signature) before signing, as Baileys'
``configureSuccessfulPairing`` does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import secrets
from dataclasses import dataclass, field

from actors.connection.binary import BinaryNode, decode_node, encode_node
from actors.connection.certs import RootKey
from actors.connection.errors import ProtocolError
from actors.connection.noise import Finish, Hello, NoiseInitiator, NoiseTransport, ServerHello
from actors.connection.proto import wa_pb2
from sandbox.core import Close, Linked, LinkFailed, Output, Send, ServerCore
from stores.creds import KeyPair, SignedKeyPair
from stores.keys import generate_key_pair, sign, signed_key_pair, verify

APP_VERSION = "2.3000.1035194821"
QR_PREFIX = "https://wa.me/settings/linked_devices#"


@dataclass
class FakeDevice:
    """The creds of one companion device."""

    noise_key: KeyPair = field(default_factory=generate_key_pair)
    identity_key: KeyPair = field(default_factory=generate_key_pair)
    registration_id: int = field(default_factory=lambda: secrets.randbelow(16380) + 1)
    adv_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    signed_pre_key: SignedKeyPair | None = None
    pre_keys: dict[int, KeyPair] = field(default_factory=dict)
    me: str | None = None
    lid: str | None = None
    routing_info: bytes | None = None

    def __post_init__(self) -> None:
        if self.signed_pre_key is None:
            self.signed_pre_key = signed_key_pair(self.identity_key, 1)

    @property
    def skey(self) -> SignedKeyPair:
        assert self.signed_pre_key is not None
        return self.signed_pre_key

    def registration_payload(self) -> bytes:
        """A registration ClientPayload (passive false, devicePairingData)."""
        props = wa_pb2.DeviceProps(os="Mac OS", platformType=wa_pb2.DeviceProps.DESKTOP)
        pairing = wa_pb2.ClientPayload.DevicePairingRegistrationData(
            eRegid=self.registration_id.to_bytes(4, "big"),
            eKeytype=b"\x05",
            eIdent=self.identity_key.public,
            eSkeyId=self.skey.key_id.to_bytes(3, "big"),
            eSkeyVal=self.skey.key_pair.public,
            eSkeySig=self.skey.signature,
            buildHash=hashlib.md5(APP_VERSION.encode()).digest(),
            deviceProps=props.SerializeToString(),
        )
        payload = wa_pb2.ClientPayload(passive=False, pull=False, devicePairingData=pairing)
        return bytes(payload.SerializeToString())

    def login_payload(self) -> bytes:
        """A login ClientPayload for ``me`` (username, device, passive, pull)."""
        assert self.me is not None, "not paired"
        user_part = self.me.split("@")[0]
        user, _, device = user_part.partition(":")
        payload = wa_pb2.ClientPayload(
            username=int(user), device=int(device or 0), passive=True, pull=True
        )
        return bytes(payload.SerializeToString())

    def qr(self, ref: str, platform_id: int = 1) -> str:
        """The v7 QR string for ``ref``."""
        b64 = base64.b64encode
        parts = [
            ref,
            b64(self.noise_key.public).decode(),
            b64(self.identity_key.public).decode(),
            b64(self.adv_secret).decode(),
            str(platform_id),
        ]
        return QR_PREFIX + ",".join(parts)

    def sign_pair_success(self, iq: BinaryNode, *, corrupt: bool = False) -> BinaryNode:
        """Check pair-success by PROTOCOL.md "Pairing" and build the pair-device-sign reply."""
        success = iq.require_child("pair-success")
        container = wa_pb2.ADVSignedDeviceIdentityHMAC()
        container.ParseFromString(success.require_child("device-identity").require_bytes())
        prefix = b"\x06\x05" if container.accountType == wa_pb2.HOSTED else b""
        expected = hmac.new(self.adv_secret, prefix + container.details, hashlib.sha256).digest()
        assert hmac.compare_digest(container.hmac, expected), "pair-success HMAC is wrong"
        account = wa_pb2.ADVSignedDeviceIdentity()
        account.ParseFromString(container.details)
        message = b"\x06\x00" + account.details + self.identity_key.public
        assert verify(account.accountSignatureKey, message, account.accountSignature), (
            "pair-success account signature does not verify"
        )
        identity = wa_pb2.ADVDeviceIdentity()
        identity.ParseFromString(account.details)
        device_message = (
            b"\x06\x01" + account.details + self.identity_key.public + account.accountSignatureKey
        )
        signature = sign(self.identity_key.private, device_message)
        if corrupt:
            signature = bytes(64)
        reply = wa_pb2.ADVSignedDeviceIdentity(
            details=account.details,
            accountSignature=account.accountSignature,
            deviceSignature=signature,
        )
        device = success.require_child("device")
        self.me = device.require_attr("jid")
        self.lid = device.attr("lid")
        sign_node = BinaryNode(
            "pair-device-sign",
            {},
            [
                BinaryNode(
                    "device-identity",
                    {"key-index": str(identity.keyIndex)},
                    reply.SerializeToString(),
                )
            ],
        )
        attrs = {"to": "s.whatsapp.net", "type": "result", "id": iq.require_attr("id")}
        return BinaryNode("iq", attrs, [sign_node])

    def new_pre_keys(self, count: int) -> dict[int, KeyPair]:
        """Generate ``count`` pre-keys after the highest id so far."""
        start = max(self.pre_keys, default=0) + 1
        fresh = {start + i: generate_key_pair() for i in range(count)}
        self.pre_keys.update(fresh)
        return fresh

    def upload_node(self, keys: dict[int, KeyPair], iq_id: str) -> BinaryNode:
        """``iq xmlns=encrypt type=set`` uploading ``keys`` and the signed pre-key."""
        skey = self.skey
        return BinaryNode(
            "iq",
            {"id": iq_id, "xmlns": "encrypt", "type": "set", "to": "s.whatsapp.net"},
            [
                BinaryNode("registration", {}, self.registration_id.to_bytes(4, "big")),
                BinaryNode("type", {}, b"\x05"),
                BinaryNode("identity", {}, self.identity_key.public),
                BinaryNode(
                    "list",
                    {},
                    [
                        BinaryNode(
                            "key",
                            {},
                            [
                                BinaryNode("id", {}, key_id.to_bytes(3, "big")),
                                BinaryNode("value", {}, pair.public),
                            ],
                        )
                        for key_id, pair in keys.items()
                    ],
                ),
                BinaryNode(
                    "skey",
                    {},
                    [
                        BinaryNode("id", {}, skey.key_id.to_bytes(3, "big")),
                        BinaryNode("value", {}, skey.key_pair.public),
                        BinaryNode("signature", {}, skey.signature),
                    ],
                ),
            ],
        )


class Wire:
    """Routes a ServerCore's outputs to in-memory clients and records link outcomes."""

    def __init__(self, core: ServerCore) -> None:
        self.core = core
        self.clients: dict[int, FakeClient] = {}
        self.links: list[Linked | LinkFailed] = []

    def route(self, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, Send):
                self.clients[output.conn_id].feed(output.data)
            elif isinstance(output, Close):
                client = self.clients[output.conn_id]
                client.closed = "abrupt" if output.abrupt else "clean"
                self.core.disconnected(output.conn_id, 0.0)
            else:
                self.links.append(output)

    def client(self, device: FakeDevice, *, root: RootKey | None = None) -> FakeClient:
        return FakeClient(self, device, root=root)


class FakeClient:
    """One connection of a FakeDevice to a ServerCore, in memory."""

    def __init__(self, wire: Wire, device: FakeDevice, *, root: RootKey | None = None) -> None:
        self.wire = wire
        self.core = wire.core
        self.device = device
        self.conn_id = self.core.connect()
        wire.clients[self.conn_id] = self
        self.initiator = NoiseInitiator(
            noise_key=device.noise_key,
            routing_info=device.routing_info,
            root=root if root is not None else self.core.identity.root,
        )
        self.transport: NoiseTransport | None = None
        self.inbox: list[BinaryNode] = []
        self.errors: list[ProtocolError] = []
        self.closed: str | None = None
        self._ids = itertools.count(1)

    def handshake(self, payload: bytes, now: float = 0.0) -> None:
        """Hello, check the ServerHello (cert chain under ``root``), Finish with ``payload``."""
        self.wire.route(self.core.receive(self.conn_id, self.initiator.send(Hello()), now))
        event = self.initiator.next_event()
        assert isinstance(event, ServerHello), event
        finish = self.initiator.send(Finish(payload))
        self.transport = self.initiator.transport
        self.wire.route(self.core.receive(self.conn_id, finish, now))

    def feed(self, data: bytes) -> None:
        if self.transport is None:
            self.initiator.receive_data(data)
            return
        try:
            self.transport.receive_data(data)
            for frame in self.transport.events():
                self.inbox.append(decode_node(frame.payload))
        except ProtocolError as exc:
            self.errors.append(exc)

    def send(self, node: BinaryNode, now: float = 0.0) -> None:
        assert self.transport is not None
        data = self.transport.send(encode_node(node))
        self.wire.route(self.core.receive(self.conn_id, data, now))

    def take(self) -> list[BinaryNode]:
        nodes, self.inbox = self.inbox, []
        return nodes

    def query(self, node: BinaryNode, now: float = 0.0) -> BinaryNode:
        """Send an iq (its id set here) and return the reply with that id."""
        iq_id = f"c{next(self._ids)}"
        attrs = {**node.attrs, "id": iq_id}
        self.send(BinaryNode(node.tag, attrs, node.content), now)
        replies = [n for n in self.take() if n.attr("id") == iq_id]
        assert len(replies) == 1, f"expected one reply to {iq_id}, got {replies}"
        return replies[0]

    def iq(
        self, xmlns: str, kind: str, children: list[BinaryNode] | None = None, now: float = 0.0
    ) -> BinaryNode:
        attrs = {"xmlns": xmlns, "type": kind, "to": "s.whatsapp.net"}
        return self.query(BinaryNode("iq", attrs, children), now)
