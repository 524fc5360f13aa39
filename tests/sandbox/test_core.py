"""The sans-IO sandbox server, driven by an in-memory client (NoiseInitiator + node codec)."""

from __future__ import annotations

import hashlib

import pytest

from actors.connection.binary import BinaryNode, encode_node
from actors.connection.certs import WHATSAPP_ROOT
from actors.connection.errors import RemoteProtocolError
from actors.connection.framing import encode_frame
from actors.connection.noise import Hello, NoiseInitiator
from sandbox.accounts import Device
from sandbox.core import (
    Close,
    ConnState,
    Linked,
    LinkFailed,
    SandboxConfig,
    ServerCore,
)
from sandbox.errors import InvalidAccountError, ScanRejectedError
from sandbox.phone import build_device_identity, parse_qr
from stores.creds import KeyPair
from stores.keys import generate_key_pair
from tests.sandbox.fake_client import FakeClient, FakeDevice, Wire


class World:
    """A core, its wire, and one phone account (key + number)."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.core = ServerCore(config=config, wall_clock=lambda: 1_700_000_000.0)
        self.wire = Wire(self.core)
        self.phone_key = generate_key_pair()
        self.user = self.core.registry.new_account(self.phone_key.public).user

    def register(self, device: FakeDevice, now: float = 0.0) -> tuple[FakeClient, list[str]]:
        client = self.wire.client(device)
        client.handshake(device.registration_payload(), now)
        (iq,) = client.take()
        refs = [r.require_bytes().decode() for r in iq.require_child("pair-device").children("ref")]
        return client, refs

    def scan(
        self, qr: str, now: float = 0.0, *, user: str | None = None, key: KeyPair | None = None
    ) -> None:
        scanned = parse_qr(qr)
        ticket = self.core.begin_scan(
            ref=scanned.ref,
            noise_key=scanned.noise_key,
            identity_key=scanned.identity_key,
            user=user or self.user,
            now=now,
        )
        identity = build_device_identity(
            key or self.phone_key,
            key_index=ticket.key_index,
            device_identity_key=scanned.identity_key,
            adv_secret=scanned.adv_secret,
            timestamp=1_700_000_000,
        )
        self.wire.route(self.core.complete_scan(ticket, identity, now))

    def pair(
        self, device: FakeDevice, *, user: str | None = None, key: KeyPair | None = None
    ) -> None:
        client, refs = self.register(device)
        self.scan(device.qr(refs[0]), user=user, key=key)
        (success,) = client.take()
        client.send(device.sign_pair_success(success))
        assert client.closed == "clean"

    def login(self, device: FakeDevice, now: float = 0.0) -> tuple[FakeClient, list[BinaryNode]]:
        client = self.wire.client(device)
        client.handshake(device.login_payload(), now)
        return client, client.take()


def test_server_hello_chain_verifies_under_the_sandbox_root_only() -> None:
    """The ServerHello's cert chain verifies under the sandbox root and fails under WhatsApp's."""
    world = World()
    client = world.wire.client(FakeDevice())
    client.handshake(FakeDevice().registration_payload())
    assert client.transport is not None
    stranger = NoiseInitiator(noise_key=generate_key_pair(), root=WHATSAPP_ROOT)
    conn = world.core.connect()
    (reply,) = world.core.receive(conn, stranger.send(Hello()), 0.0)
    stranger.receive_data(reply.data)  # type: ignore[union-attr]  # a Send
    with pytest.raises(RemoteProtocolError, match="root key"):
        stranger.next_event()


def test_registration_gets_pair_device_with_six_refs() -> None:
    """A registration payload is answered by iq set xmlns=md whose first child is pair-device."""
    world = World()
    client = world.wire.client(FakeDevice())
    client.handshake(FakeDevice().registration_payload())
    (iq,) = client.take()
    assert (iq.tag, iq.attr("type"), iq.attr("xmlns")) == ("iq", "set", "md")
    assert iq.children()[0].tag == "pair-device"
    refs = iq.require_child("pair-device").children("ref")
    assert len(refs) == 6
    assert len({r.require_bytes() for r in refs}) == 6


def test_scan_sends_a_pair_success_that_passes_the_clients_checks() -> None:
    """pair-success carries an HMAC'd, account-signed identity, device JID, LID and platform."""
    world = World()
    device = FakeDevice()
    client, refs = world.register(device)
    world.scan(device.qr(refs[0]))
    (iq,) = client.take()
    assert (iq.attr("type"), iq.attr("xmlns"), iq.attr("t")) == ("set", "md", "1700000000")
    success = iq.children()[0]
    assert success.tag == "pair-success"
    reply = device.sign_pair_success(iq)  # asserts HMAC and account signature
    account = world.core.registry.account(world.user)
    assert device.me == f"{world.user}:1@s.whatsapp.net"
    assert device.lid == f"{account.lid_user}:1@lid"
    assert success.require_child("platform").attr("name") == "android"
    client.send(reply)
    assert world.wire.links == [Linked(refs[0], device.me, device.lid)]


def test_a_verified_device_signature_pairs_then_515_closes() -> None:
    """A correct pair-device-sign pairs the device; then stream:error 515 and close."""
    world = World()
    device = FakeDevice()
    client, refs = world.register(device)
    world.scan(device.qr(refs[0]))
    (success,) = client.take()
    client.send(device.sign_pair_success(success))
    (error,) = client.take()
    assert (error.tag, error.attr("code")) == ("stream:error", "515")
    assert client.closed == "clean"
    found = world.core.registry.find(device.me or "")
    assert found.paired and found.noise_key == device.noise_key.public
    assert world.core.statistics().links == 1


def test_a_bad_device_signature_fails_the_link_and_forgets_the_device() -> None:
    """A pair-device-sign whose device signature does not verify: LinkFailed, stream:error 500."""
    world = World()
    device = FakeDevice()
    client, refs = world.register(device)
    world.scan(device.qr(refs[0]))
    (success,) = client.take()
    client.send(device.sign_pair_success(success, corrupt=True))
    (link,) = world.wire.links
    assert isinstance(link, LinkFailed) and "deviceSignature" in link.reason
    (error,) = client.take()
    assert error.attr("code") == "500"
    assert world.core.registry.device_count == 0


def test_connection_lost_before_the_signature_fails_the_link() -> None:
    """If the client disconnects after pair-success, the phone learns the link failed."""
    world = World()
    device = FakeDevice()
    client, refs = world.register(device)
    world.scan(device.qr(refs[0]))
    world.wire.route(world.core.disconnected(client.conn_id, 1.0))
    (link,) = world.wire.links
    assert isinstance(link, LinkFailed)
    assert world.core.registry.device_count == 0


@pytest.mark.parametrize(
    ("index", "now", "accepted"),
    [
        (0, 0.0, True),
        (0, 64.0, True),  # within the 5 s grace after 60 s
        (0, 66.0, False),
        (1, 30.0, False),  # not shown yet: the client shows ref 1 from 60 s
        (1, 61.0, True),
        (2, 81.0, True),
        (2, 106.0, False),  # shown 80..100 s, grace to 105 s
        (5, 141.0, True),
    ],
)
def test_refs_are_accepted_only_while_the_client_shows_them(
    index: int, now: float, accepted: bool
) -> None:
    """Ref 0 lives 60 s, each later ref 20 s after the previous, plus a 5 s grace."""
    world = World()
    device = FakeDevice()
    _, refs = world.register(device)
    if accepted:
        world.scan(device.qr(refs[index]), now)
    else:
        with pytest.raises(ScanRejectedError):
            world.scan(device.qr(refs[index]), now)


def test_scans_with_unknown_refs_or_other_keys_are_rejected() -> None:
    """A ref not issued, or a QR whose keys are not the registering client's, is refused."""
    world = World()
    device = FakeDevice()
    _, refs = world.register(device)
    with pytest.raises(ScanRejectedError, match="not issued"):
        world.scan(device.qr("2@made-up"))
    impostor = FakeDevice(adv_secret=device.adv_secret)
    with pytest.raises(ScanRejectedError, match="noise key"):
        world.scan(impostor.qr(refs[0]))


def test_a_ref_can_be_scanned_once() -> None:
    """After a scan, the connection's refs are spent: a second scan is refused."""
    world = World()
    device = FakeDevice()
    _, refs = world.register(device)
    world.scan(device.qr(refs[0]))
    with pytest.raises(ScanRejectedError):
        world.scan(device.qr(refs[1]), 61.0)


def test_login_of_a_paired_device_succeeds_with_t_lid_and_edge_routing() -> None:
    """success carries t and the device LID; ib edge_routing follows; the next intro carries it."""
    world = World()
    device = FakeDevice()
    world.pair(device)
    client, nodes = world.login(device)
    success, ib, offline = nodes
    assert offline.require_child("offline").attr("count") == "0"
    assert success.tag == "success"
    assert success.attrs == {"t": "1700000000", "lid": device.lid}
    info = ib.require_child("edge_routing", "routing_info").require_bytes()
    assert client.closed is None
    device.routing_info = info
    again, _ = world.login(device)
    by_id = {c.conn_id: c for c in world.core.connections()}
    assert by_id[again.conn_id].routing_info == info
    assert world.core.statistics().routed_intros == 1


def test_a_second_login_replaces_the_first_with_conflict_440() -> None:
    """Logging in again as the same device sends the old connection stream:error 440 conflict."""
    world = World()
    device = FakeDevice()
    world.pair(device)
    first, _ = world.login(device)
    second, _ = world.login(device)
    (error,) = first.take()
    assert (error.tag, error.attr("code")) == ("stream:error", "440")
    assert error.require_child("conflict").attr("type") == "replaced"
    assert first.closed == "clean" and second.closed is None


@pytest.mark.parametrize("case", ["unknown device", "other noise key", "not signed yet"])
def test_logins_that_do_not_match_a_paired_device_get_failure_401(case: str) -> None:
    """Unknown device, a different Noise key, or a device never signed: failure 401, closed."""
    world = World()
    device = FakeDevice()
    if case == "unknown device":
        device.me = "15550999999:3@s.whatsapp.net"
    elif case == "other noise key":
        world.pair(device)
        device.noise_key = generate_key_pair()
    else:
        client, refs = world.register(device)
        world.scan(device.qr(refs[0]))
        device.sign_pair_success(client.take()[0])  # sets me, never sent
    client, nodes = world.login(device)
    assert [(n.tag, n.attr("reason")) for n in nodes] == [("failure", "401")]
    assert client.closed == "clean"
    assert world.core.statistics().logins_refused == 1


def test_refused_logins_get_the_chosen_failure_reason() -> None:
    """refuse_logins(jid, 403) answers that device's logins with failure 403 until allowed."""
    world = World()
    device = FakeDevice()
    world.pair(device)
    assert device.me is not None
    world.core.refuse_logins(device.me, 403)
    _, nodes = world.login(device)
    assert [(n.tag, n.attr("reason")) for n in nodes] == [("failure", "403")]
    world.core.refuse_logins(device.me, None)
    _, nodes = world.login(device)
    assert nodes[0].tag == "success"


def _digest_model(device: FakeDevice, ids: list[int]) -> bytes:
    sha = hashlib.sha1()
    sha.update(device.identity_key.public)
    sha.update(device.skey.key_pair.public)
    sha.update(device.skey.signature)
    for key_id in ids:
        sha.update(device.pre_keys[key_id].public)
    return sha.digest()


def test_pre_keys_are_counted_kept_and_digested() -> None:
    """count 0 → upload 812 → count 812; the digest lists their ids and hashes what was uploaded."""
    world = World()
    device = FakeDevice()
    world.pair(device)
    client, _ = world.login(device)
    count = client.iq("encrypt", "get", [BinaryNode("count", {})])
    assert count.require_child("count").attr("value") == "0"
    keys = device.new_pre_keys(812)
    reply = client.query(device.upload_node(keys, "x"))
    assert reply.attr("type") == "result"
    count = client.iq("encrypt", "get", [BinaryNode("count", {})])
    assert count.require_child("count").attr("value") == "812"
    digest = client.iq("encrypt", "get", [BinaryNode("digest", {})]).require_child("digest")
    ids = [
        int.from_bytes(n.require_bytes(), "big") for n in digest.require_child("list").children()
    ]
    assert ids == sorted(keys)
    assert digest.require_child("hash").require_bytes() == _digest_model(device, ids)
    assert digest.require_child("identity").require_bytes() == device.identity_key.public
    reg = digest.require_child("registration").require_bytes()
    assert int.from_bytes(reg, "big") == device.registration_id
    # The count survives the connection: a new login sees the same keys.
    client2, _ = world.login(device)
    count = client2.iq("encrypt", "get", [BinaryNode("count", {})])
    assert count.require_child("count").attr("value") == "812"


def test_uploads_that_break_the_rules_are_refused_and_nothing_is_kept() -> None:
    """An upload with another identity or a bad skey signature: error 400, nothing stored."""
    world = World()
    device = FakeDevice()
    world.pair(device)
    client, _ = world.login(device)
    keys = device.new_pre_keys(5)
    liar = FakeDevice(registration_id=device.registration_id)
    liar.pre_keys = device.pre_keys
    reply = client.query(liar.upload_node(keys, "x"))
    error = reply.require_child("error")
    assert error.attr("code") == "400" and "identity" in (error.attr("text") or "")
    bad = device.upload_node(keys, "y")
    skey = bad.require_child("skey")
    broken = BinaryNode(
        "skey",
        {},
        [
            skey.require_child("id"),
            skey.require_child("value"),
            BinaryNode("signature", {}, bytes(64)),
        ],
    )
    content = [c if c.tag != "skey" else broken for c in bad.children()]
    reply = client.query(BinaryNode("iq", bad.attrs, content))
    assert reply.require_child("error").attr("code") == "400"
    device_record = world.core.registry.find(device.me or "")
    assert device_record.pre_key_count == 0


@pytest.mark.parametrize(
    ("xmlns", "kind", "child", "expect"),
    [
        ("w:p", "get", "ping", None),
        ("passive", "set", "active", None),
        ("abt", "get", "props", "props"),
        ("blocklist", "get", None, "list"),
        ("privacy", "get", "privacy", "privacy"),
    ],
)
def test_after_login_iqs_get_results(
    xmlns: str, kind: str, child: str | None, expect: str | None
) -> None:
    """ping, passive active, abt props, blocklist and privacy get type=result replies."""
    world = World()
    device = FakeDevice()
    world.pair(device)
    client, _ = world.login(device)
    reply = client.iq(xmlns, kind, [BinaryNode(child, {})] if child else None)
    assert reply.attr("type") == "result"
    assert reply.attr("from") == "s.whatsapp.net"
    if expect is not None:
        assert reply.children()[0].tag == expect


def test_unknown_iqs_get_error_501() -> None:
    """An iq the sandbox does not implement is answered with error 501, not left hanging."""
    world = World()
    device = FakeDevice()
    world.pair(device)
    client, _ = world.login(device)
    reply = client.iq("w:sync:app:state", "set", [BinaryNode("sync", {})])
    assert reply.attr("type") == "error"
    assert reply.require_child("error").attr("code") == "501"


def test_many_accounts_link_and_log_in_side_by_side() -> None:
    """Two phones link two devices each, concurrently; every device logs in as its own JID."""
    world = World()
    other_key = generate_key_pair()
    other = world.core.registry.new_account(other_key.public).user
    devices = [FakeDevice() for _ in range(4)]
    pending = [world.register(d) for d in devices]
    for i, (device, (client, refs)) in enumerate(zip(devices, pending, strict=True)):
        on_other = i % 2 == 1
        world.scan(
            device.qr(refs[0]),
            user=other if on_other else None,
            key=other_key if on_other else None,
        )
        client.send(device.sign_pair_success(client.take()[0]))
    jids = sorted(d.me or "" for d in devices)
    expected = [f"{u}:{d}@s.whatsapp.net" for u in (world.user, other) for d in (1, 2)]
    assert jids == sorted(expected)
    for device in devices:
        _, nodes = world.login(device)
        assert nodes[0].tag == "success" and nodes[0].attr("lid") == device.lid
    assert world.core.statistics().logins == 4


@pytest.mark.parametrize("code", [515, 440, 401, 500])
def test_stream_error_fault_sends_the_code_and_closes(code: int) -> None:
    """stream_error(conn, code) sends stream:error code=<code> and closes that connection."""
    world = World()
    device = FakeDevice()
    world.pair(device)
    client, _ = world.login(device)
    world.wire.route(world.core.stream_error(client.conn_id, code, 1.0))
    (node,) = client.take()
    assert (node.tag, node.attr("code")) == ("stream:error", str(code))
    assert client.closed == "clean"


def test_failure_fault_sends_failure_and_closes() -> None:
    """failure(conn, reason) sends failure reason=<reason> and closes."""
    world = World()
    device = FakeDevice()
    world.pair(device)
    client, _ = world.login(device)
    world.wire.route(world.core.failure(client.conn_id, 401, 1.0))
    assert [(n.tag, n.attr("reason")) for n in client.take()] == [("failure", "401")]
    assert client.closed == "clean"


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("malformed_frame", "malformed binary node"),
        ("undecryptable_frame", "failed authentication"),
        ("oversize_frame", "over the bound"),
    ],
)
def test_bad_frame_faults_reach_the_client_as_protocol_errors(fault: str, error: str) -> None:
    """Malformed, undecryptable and oversize frames make the client's codec/transport fail."""
    world = World()
    device = FakeDevice()
    world.pair(device)
    client, _ = world.login(device)
    world.wire.route(getattr(world.core, fault)(client.conn_id))
    assert len(client.errors) == 1
    assert error in str(client.errors[0])


def test_drop_closes_abruptly() -> None:
    """drop(conn) asks the I/O layer for an abrupt close, with nothing sent first."""
    world = World()
    device = FakeDevice()
    world.pair(device)
    client, _ = world.login(device)
    assert world.core.drop(client.conn_id) == [Close(client.conn_id, abrupt=True)]


def test_a_stalled_connection_neither_answers_nor_sends_until_resumed() -> None:
    """While stalled, pings go unanswered and faults are held; resume delivers both in order."""
    world = World()
    device = FakeDevice()
    world.pair(device)
    client, _ = world.login(device)
    world.core.stall(client.conn_id)
    assert client.transport is not None
    ping = BinaryNode("iq", {"id": "p1", "xmlns": "w:p", "type": "get"}, [BinaryNode("ping", {})])
    client.send(ping)
    world.wire.route(world.core.stream_error(client.conn_id, 500, 1.0))
    assert client.take() == [] and client.closed is None
    world.wire.route(world.core.resume(client.conn_id, 2.0))
    nodes = client.take()
    assert [n.tag for n in nodes] == ["stream:error"]
    assert client.closed == "clean"


def test_a_stall_then_resume_answers_what_arrived_meanwhile() -> None:
    """Input held during a stall is processed on resume (the Noise counters stay in step)."""
    world = World()
    device = FakeDevice()
    world.pair(device)
    client, _ = world.login(device)
    world.core.stall(client.conn_id)
    client.send(
        BinaryNode("iq", {"id": "p1", "xmlns": "w:p", "type": "get"}, [BinaryNode("ping", {})])
    )
    assert client.take() == []
    world.wire.route(world.core.resume(client.conn_id, 1.0))
    (pong,) = client.take()
    assert (pong.attr("id"), pong.attr("type")) == ("p1", "result")


def test_garbage_from_a_client_closes_its_connection_abruptly() -> None:
    """Bytes that are not an intro end the connection (and count as a protocol error)."""
    world = World()
    conn = world.core.connect()
    assert world.core.receive(conn, b"GET / HTTP/1.1\r\n", 0.0) == [Close(conn, abrupt=True)]
    assert world.core.statistics().protocol_errors == 1


def test_a_registration_with_a_bad_signed_pre_key_is_refused() -> None:
    """devicePairingData whose eSkeySig does not verify under eIdent gets failure 400."""
    world = World()
    device = FakeDevice()
    device.signed_pre_key = type(device.skey)(
        key_pair=device.skey.key_pair, signature=bytes(64), key_id=1
    )
    client = world.wire.client(device)
    client.handshake(device.registration_payload())
    assert [(n.tag, n.attr("reason")) for n in client.take()] == [("failure", "400")]


def test_connection_info_reports_state_and_device() -> None:
    """connections() shows each live connection's state and logged-in JID."""
    world = World()
    device = FakeDevice()
    world.pair(device)
    client, _ = world.login(device)
    (info,) = [c for c in world.core.connections() if c.conn_id == client.conn_id]
    assert info.state is ConnState.LOGGED_IN and info.jid == device.me
    assert isinstance(world.core.registry.find(device.me or ""), Device)


def test_a_business_account_adds_biz_to_pair_success() -> None:
    """pair-success carries biz{name} when the phone's account is a business one."""
    world = World()
    key = generate_key_pair()
    user = world.core.registry.new_account(key.public, biz_name="Corner Shop").user
    device = FakeDevice()
    client, refs = world.register(device)
    world.scan(device.qr(refs[0]), user=user, key=key)
    (iq,) = client.take()
    assert iq.require_child("pair-success", "biz").attr("name") == "Corner Shop"


def test_accounts_need_a_free_decimal_number() -> None:
    """A phone number that is not digits, or already taken, is refused with a typed error."""
    world = World()
    with pytest.raises(InvalidAccountError, match="digits"):
        world.core.registry.new_account(generate_key_pair().public, user="+1 555")
    with pytest.raises(InvalidAccountError, match="exists"):
        world.core.registry.new_account(generate_key_pair().public, user=world.user)


def test_a_bad_frame_after_a_good_one_answers_the_good_one_then_closes() -> None:
    """Good frame + bad frame in one message: the ping is answered, then the connection drops."""
    world = World()
    device = FakeDevice()
    world.pair(device)
    client, _ = world.login(device)
    assert client.transport is not None
    ping = BinaryNode("iq", {"id": "p", "xmlns": "w:p", "type": "get"}, [BinaryNode("ping", {})])
    data = client.transport.send(encode_node(ping)) + encode_frame(bytes(40))
    world.wire.route(world.core.receive(client.conn_id, data, 0.0))
    assert [n.attr("id") for n in client.take()] == ["p"]
    assert client.closed == "abrupt"
    assert world.core.statistics().protocol_errors == 1
