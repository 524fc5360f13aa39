"""Our client core against the sandbox's server core, in memory: pair, restart, log in, open.

Two independent implementations of the two sides (this package's client, the
sandbox's ServerCore and phone) must agree on every byte for this to pass. No
sockets: the ServerCore is sans-IO too; the test carries bytes between them.
"""

from __future__ import annotations

import base64

from actors.connection.certs import RootKey
from actors.connection.client import ClientConnection
from actors.connection.client_state import (
    ClientEvent,
    ClientState,
    HandshakeComplete,
    IqResult,
    LoginSuccess,
    Opened,
    PairSuccess,
    PreKeyCount,
    PreKeyUploadResult,
    QrCode,
    RestartRequired,
    RoutingInfo,
)
from actors.connection.prekeys import plan_upload, upload_count
from actors.connection.qr import parse_qr
from sandbox.core import Close, Linked, Output, Send, ServerCore
from sandbox.phone import build_device_identity
from stores.creds import AuthCreds, KeyPair, init_auth_creds
from stores.keys import generate_key_pair


class Wire:
    """One client connection to the core; carries bytes both ways."""

    def __init__(self, core: ServerCore, creds: AuthCreds) -> None:
        self.core = core
        self.conn_id = core.connect()
        self.client = ClientConnection(creds=creds, root=RootKey(core.identity.root_key.public, 0))
        self.closed = False
        self.linked: list[Linked] = []
        self.now = 1.0

    def send(self, data: bytes) -> list[ClientEvent]:
        """Client bytes to the core; core replies back to the client; the client's new events."""
        outputs = self.core.receive(self.conn_id, data, self.now) if data else []
        return self.deliver(outputs)

    def deliver(self, outputs: list[Output]) -> list[ClientEvent]:
        """Apply core outputs to the client; keep pumping queued client replies."""
        for output in outputs:  # every frame in order before anything is answered
            if isinstance(output, Send) and output.conn_id == self.conn_id:
                self.client.receive_data(output.data)
            elif isinstance(output, Close):
                self.closed = True
            elif isinstance(output, Linked):
                self.linked.append(output)
        new = self.client.events()
        queued = self.client.data_to_send()
        if queued:
            new += self.send(queued)
        return new


def _pair(core: ServerCore, phone: KeyPair, user: str) -> AuthCreds:
    creds = init_auth_creds()
    wire = Wire(core, creds)
    events = wire.send(wire.client.start())
    assert isinstance(events[0], HandshakeComplete) and events[0].registering
    qr = events[-1]
    assert isinstance(qr, QrCode) and qr.ttl == 60.0
    scanned = parse_qr(qr.qr)
    ticket = core.begin_scan(
        ref=scanned.ref,
        noise_key=scanned.noise_public,
        identity_key=scanned.identity_public,
        user=user,
        now=wire.now,
    )
    identity = build_device_identity(
        phone,
        key_index=ticket.key_index,
        device_identity_key=scanned.identity_public,
        adv_secret=base64.b64decode(scanned.adv_secret_key),
        timestamp=1764250000,
    )
    [success] = wire.deliver(core.complete_scan(ticket, identity, wire.now))
    assert isinstance(success, PairSuccess)
    paired = success.update.apply(creds)  # the actor commits this durably here
    events = wire.send(wire.client.confirm_pairing())
    assert events == [RestartRequired()]
    assert wire.closed and [link.jid for link in wire.linked] == [paired.me["id"]]  # type: ignore[index]  # me is set by apply
    return paired


def _login(core: ServerCore, creds: AuthCreds) -> tuple[Wire, AuthCreds]:
    wire = Wire(core, creds)
    events = wire.send(wire.client.start())
    assert isinstance(events[0], HandshakeComplete) and not events[0].registering
    success = next(e for e in events if isinstance(e, LoginSuccess))
    creds = creds.copy()
    creds.me = {**(creds.me or {}), "lid": success.lid}
    routing = [e for e in events if isinstance(e, RoutingInfo)]
    if routing:
        creds.routing_info = routing[0].routing_info
    count = events[-1]
    assert isinstance(count, PreKeyCount) and count.count is not None
    newest_exists = creds.next_pre_key_id > 1  # this test keeps every generated key
    n = upload_count(
        count.count, newest_local_exists=newest_exists, next_pre_key_id=creds.next_pre_key_id
    )
    if n:
        plan = plan_upload(creds, n)
        creds = plan.apply(creds)  # the actor commits plan.batch(creds) here
        events = wire.send(wire.client.upload_prekeys(plan.new_keys))
        assert events[0] == PreKeyUploadResult(ok=True)
    else:
        events = wire.send(wire.client.skip_prekey_upload())
    assert events[-1] == Opened(digest_ok=True)
    assert wire.client.state is ClientState.OPEN
    return wire, creds


def test_pair_then_log_in_twice_against_the_sandbox() -> None:
    """QR pairing → 515 → login with 812 keys → open; then a second login needs no upload."""
    core = ServerCore()
    phone = generate_key_pair()
    account = core.registry.new_account(phone.public)
    creds = _pair(core, phone, account.user)
    assert creds.me is not None and creds.me["id"].startswith(account.user + ":")
    assert creds.account is not None and creds.account["accountSignatureKey"] == phone.public

    wire, creds = _login(core, creds)
    assert creds.next_pre_key_id == 813
    assert core.statistics().pre_key_uploads == 1
    ping_id, data = wire.client.keepalive_ping()
    [pong] = wire.send(data)
    assert isinstance(pong, IqResult) and pong.iq_id == ping_id and pong.ok

    _, again = _login(core, creds)
    assert again.next_pre_key_id == 813, "the server kept 812 keys: no second upload"
    assert core.statistics().pre_key_uploads == 1
