"""The sans-IO client connection against a scripted in-memory server: pairing, login, open."""

from __future__ import annotations

import pytest

from actors.connection.binary import BinaryNode
from actors.connection.client import ClientConnection
from actors.connection.client_state import (
    ClientState,
    Closed,
    DisconnectReason,
    HandshakeComplete,
    IqResult,
    LoginStep,
    LoginSuccess,
    NodeReceived,
    Opened,
    PairSuccess,
    Ping,
    PreKeyCount,
    PreKeyUploadResult,
    QrCode,
    RestartRequired,
    RoutingInfo,
    StreamError,
)
from actors.connection.errors import LocalProtocolError, RemoteProtocolError
from actors.connection.noise import NoiseInitiator, NoiseTransport
from actors.connection.pairing import verify_pair_success
from actors.connection.prekeys import plan_upload, upload_count
from actors.connection.proto import wa_pb2
from actors.connection.qr import parse_qr
from stores.creds import AuthCreds, init_auth_creds
from stores.keys import verify
from tests.protocol.phone import pair_success_stanza
from tests.protocol.scripted_server import ScriptedServer, connect, exchange

S = "s.whatsapp.net"


def state(client: ClientConnection) -> ClientState:
    """The client's state, read fresh (keeps mypy from narrowing across calls)."""
    return client.state


def pair_device(*refs: str, iq_id: str = "pd-1") -> BinaryNode:
    """The server's pair-device iq."""
    return BinaryNode(
        "iq",
        {"from": S, "type": "set", "id": iq_id, "xmlns": "md"},
        [BinaryNode("pair-device", {}, [BinaryNode("ref", {}, r.encode()) for r in refs])],
    )


def result(iq_id: str, *children: BinaryNode, kind: str = "result") -> BinaryNode:
    """A server iq answer."""
    return BinaryNode("iq", {"from": S, "type": kind, "id": iq_id}, list(children) or None)


def paired_creds() -> AuthCreds:
    """Creds after a pairing (made with the pure pairing functions)."""
    creds = init_auth_creds()
    client, server, _ = connect(creds)
    events, _ = exchange(client, server, pair_device("2@a"))
    qr = events[0]
    assert isinstance(qr, QrCode)
    stanza = pair_success_stanza(parse_qr(qr.qr))
    return verify_pair_success(stanza, creds).update.apply(creds)


def test_new_device_registers_and_shows_qr_codes_until_refs_run_out() -> None:
    """No me: registration payload, one QR per ref (60 s then 20 s), then close 408."""
    creds = init_auth_creds()
    client, server, events = connect(creds)
    assert len(events) == 1 and isinstance(events[0], HandshakeComplete)
    assert events[0].registering and events[0].server_static == server.identity.static_key.public
    assert state(client) is ClientState.PAIRING
    assert server.payload is not None and not server.payload.passive
    assert server.payload.devicePairingData.eIdent == creds.signed_identity_key.public
    assert server.client_static == creds.noise_key.public

    events, replies = exchange(client, server, pair_device("2@a", "2@b", "2@c"))
    assert replies == [BinaryNode("iq", {"to": "@s.whatsapp.net", "type": "result", "id": "pd-1"})]
    first = events[0]
    assert isinstance(first, QrCode) and len(events) == 1
    assert (first.ref, first.ttl, first.index) == ("2@a", 60.0, 0)
    scanned = parse_qr(first.qr)
    assert scanned.noise_public == creds.noise_key.public
    assert scanned.adv_secret_key == creds.adv_secret_key

    second, third = client.rotate_qr(), client.rotate_qr()
    assert isinstance(second, QrCode) and (second.ref, second.ttl, second.index) == ("2@b", 20.0, 1)
    assert isinstance(third, QrCode) and third.ref == "2@c"
    assert client.rotate_qr() == Closed(DisconnectReason.TIMED_OUT, "QR refs attempts ended")
    assert state(client) is ClientState.CLOSED
    assert DisconnectReason.TIMED_OUT.policy.value == "reconnect"


def test_a_new_pair_device_restarts_the_qr_series() -> None:
    """A second pair-device is acked and its first ref shows for 60 s again, index 0."""
    client, server, _ = connect(init_auth_creds())
    exchange(client, server, pair_device("2@a", "2@b"))
    assert isinstance(client.rotate_qr(), QrCode)
    events, [ack] = exchange(client, server, pair_device("2@x", "2@y", iq_id="pd-2"))
    assert ack.attrs["id"] == "pd-2"
    [qr] = events
    assert isinstance(qr, QrCode) and (qr.ref, qr.ttl, qr.index) == ("2@x", 60.0, 0)
    assert client.statistics().qr_refs_left == 1


def test_a_pair_device_without_refs_closes_with_408() -> None:
    """No refs at all: nothing to show, the connection closes as timed out."""
    client, server, _ = connect(init_auth_creds())
    events, _ = exchange(client, server, pair_device())
    assert events == [Closed(DisconnectReason.TIMED_OUT, "pair-device carried no refs")]
    assert state(client) is ClientState.CLOSED


def test_the_transition_table_ends_everywhere_and_nowhere_else() -> None:
    """ENDED leads to CLOSED from every state but CLOSED; CLOSED has no way out."""
    from actors.connection.client_state import TRANSITIONS, Trigger

    for s in ClientState:
        assert ((s, Trigger.ENDED) in TRANSITIONS) is (s is not ClientState.CLOSED)
    assert not [key for key in TRANSITIONS if key[0] is ClientState.CLOSED]
    assert TRANSITIONS[(ClientState.HANDSHAKING, Trigger.SENT_LOGIN)] is ClientState.LOGGING_IN
    assert TRANSITIONS[(ClientState.HANDSHAKING, Trigger.SENT_REGISTRATION)] is ClientState.PAIRING


def test_pair_success_waits_for_the_durable_commit_then_replies_and_515_restarts() -> None:
    """PairSuccess sends nothing by itself; confirm_pairing() sends the signed reply; 515 ends."""
    creds = init_auth_creds()
    client, server, _ = connect(creds)
    events, _ = exchange(client, server, pair_device("2@a"))
    assert isinstance(events[0], QrCode)
    stanza = pair_success_stanza(parse_qr(events[0].qr), iq_id="ps-9")
    events, replies = exchange(client, server, stanza)
    assert replies == [], "nothing may be sent before the creds are durable"
    [success] = events
    assert isinstance(success, PairSuccess)
    assert success.update.me["id"] == "15550001111:7@s.whatsapp.net"
    assert success.iq_id == "ps-9" and success.key_index == 3
    with pytest.raises(LocalProtocolError):
        client.rotate_qr()

    _, [reply] = server.receive(client.confirm_pairing())
    assert reply.attrs["id"] == "ps-9" and reply.attrs["type"] == "result"
    signed = wa_pb2.ADVSignedDeviceIdentity.FromString(
        reply.require_child("pair-device-sign", "device-identity").require_bytes()
    )
    account_key = success.update.account["accountSignatureKey"]
    message = b"\x06\x01" + signed.details + creds.signed_identity_key.public + account_key
    assert verify(creds.signed_identity_key.public, message, signed.deviceSignature)
    with pytest.raises(LocalProtocolError):
        client.confirm_pairing()

    events, _ = exchange(client, server, BinaryNode("stream:error", {"code": "515"}))
    assert events == [RestartRequired()]
    assert RestartRequired().reason.policy.value == "reconnect_now"
    assert state(client) is ClientState.CLOSED


def _login_to_count(client: ClientConnection, server: ScriptedServer) -> BinaryNode:
    events, [count] = exchange(
        client, server, BinaryNode("success", {"t": "1764250000", "lid": "998877:7@lid"})
    )
    assert events == [
        LoginSuccess(
            attrs={"t": "1764250000", "lid": "998877:7@lid"}, lid="998877:7@lid", t=1764250000
        )
    ]
    assert client.login_step is LoginStep.AWAIT_COUNT
    assert count.attrs == {
        "id": "1.2-1",
        "xmlns": "encrypt",
        "type": "get",
        "to": "@s.whatsapp.net",
    }
    assert count.children()[0].tag == "count"
    return count


def test_login_uploads_812_keys_when_the_server_has_none_then_opens() -> None:
    """success → count 0 → 812 keys uploaded → passive active → digest → Opened."""
    creds = paired_creds()
    client, server, events = connect(creds)
    assert isinstance(events[0], HandshakeComplete) and not events[0].registering
    assert server.payload is not None
    assert (server.payload.username, server.payload.device, server.payload.passive) == (
        15550001111,
        7,
        True,
    )
    assert state(client) is ClientState.LOGGING_IN

    count = _login_to_count(client, server)
    value = BinaryNode("count", {"value": "0"})
    events, replies = exchange(client, server, result(count.attrs["id"], value))
    assert events == [PreKeyCount(0)] and replies == []
    n = upload_count(0, newest_local_exists=False, next_pre_key_id=creds.next_pre_key_id)
    assert n == 812
    plan = plan_upload(creds, n)
    _, [upload] = server.receive(client.upload_prekeys(plan.new_keys))
    keys = upload.require_child("list").children("key")
    assert len(keys) == 812
    assert keys[0].require_child("id").require_bytes() == b"\x00\x00\x01"
    assert upload.require_child("identity").require_bytes() == creds.signed_identity_key.public

    events, [active] = exchange(client, server, result(upload.attrs["id"]))
    assert events == [PreKeyUploadResult(ok=True)]
    assert active.attrs["xmlns"] == "passive" and active.children()[0].tag == "active"

    events, [digest] = exchange(client, server, result(active.attrs["id"]))
    assert events == [] and digest.children()[0].tag == "digest"
    assert state(client) is ClientState.LOGGING_IN

    events, _ = exchange(client, server, result(digest.attrs["id"], BinaryNode("digest")))
    assert events == [Opened(digest_ok=True)]
    assert state(client) is ClientState.OPEN and client.login_step is None


def open_connection(creds: AuthCreds) -> tuple[ClientConnection, ScriptedServer]:
    """A connection that logged in without an upload (the server holds 40 keys), OPEN."""
    client, server, _ = connect(creds)
    count = _login_to_count(client, server)
    forty = BinaryNode("count", {"value": "40"})
    events, _ = exchange(client, server, result(count.attrs["id"], forty))
    assert events == [PreKeyCount(40)]
    assert upload_count(40, newest_local_exists=True, next_pre_key_id=50) == 0
    _, [active] = server.receive(client.skip_prekey_upload())
    _, [digest] = exchange(client, server, result(active.attrs["id"]))
    events, _ = exchange(client, server, result(digest.attrs["id"], BinaryNode("digest")))
    assert events == [Opened(digest_ok=True)]
    return client, server


def test_open_connection_answers_pings_tracks_queries_and_routing() -> None:
    """Open: keepalive answered as IqResult, server ping answered, edge_routing, other stanzas."""
    client, server = open_connection(paired_creds())
    ping_id, data = client.keepalive_ping()
    _, [ping] = server.receive(data)
    assert ping.attrs == {"id": ping_id, "to": "@s.whatsapp.net", "type": "get", "xmlns": "w:p"}
    assert ping.children()[0].tag == "ping"
    events, _ = exchange(client, server, result(ping_id))
    assert len(events) == 1 and isinstance(events[0], IqResult) and events[0].ok
    assert client.statistics().pending_queries == 0

    server_ping = BinaryNode(
        "iq", {"from": S, "type": "get", "xmlns": "urn:xmpp:ping", "id": "sp1"}
    )
    events, _ = exchange(client, server, server_ping)
    assert events == [Ping("sp1")]
    _, [pong] = server.receive(client.send_node(Ping("sp1").response()))
    assert pong.attrs == {"to": "@s.whatsapp.net", "type": "result", "id": "sp1"}

    routing = BinaryNode(
        "ib", {}, [BinaryNode("edge_routing", {}, [BinaryNode("routing_info", {}, b"\x08\x02")])]
    )
    message = BinaryNode("message", {"from": "1@s.whatsapp.net", "id": "m1"}, b"x")
    events, _ = exchange(client, server, routing, message)
    assert events == [RoutingInfo(b"\x08\x02"), NodeReceived(message)]


def test_a_query_without_id_gets_one_and_its_error_answer_is_an_iq_result() -> None:
    """query() adds an id last; a type=error answer arrives as IqResult with ok False."""
    client, server = open_connection(paired_creds())
    iq_id, data = client.query(
        BinaryNode("iq", {"to": "@s.whatsapp.net", "type": "get", "xmlns": "abt"})
    )
    _, [sent] = server.receive(data)
    assert list(sent.attrs) == ["to", "type", "xmlns", "id"] and sent.attrs["id"] == iq_id
    events, _ = exchange(
        client, server, result(iq_id, BinaryNode("error", {"code": "500"}), kind="error")
    )
    assert isinstance(events[0], IqResult) and not events[0].ok


def test_failed_upload_can_be_retried_then_the_login_goes_on() -> None:
    """An upload answered with an error gives ok=False; a successful retry continues the login."""
    creds = paired_creds()
    client, server, _ = connect(creds)
    count = _login_to_count(client, server)
    exchange(client, server, result(count.attrs["id"], BinaryNode("count", {"value": "3"})))
    plan = plan_upload(creds, upload_count(3, newest_local_exists=True, next_pre_key_id=1))
    assert plan.count == 5
    _, [upload] = server.receive(client.upload_prekeys(plan.new_keys))
    error = BinaryNode("error", {"code": "406", "text": "not-acceptable"})
    events, replies = exchange(client, server, result(upload.attrs["id"], error, kind="error"))
    assert events == [PreKeyUploadResult(ok=False, error_code="406")] and replies == []
    assert client.login_step is LoginStep.DECIDE_UPLOAD
    _, [retry] = server.receive(client.upload_prekeys(plan.new_keys))
    events, [active] = exchange(client, server, result(retry.attrs["id"]))
    assert events == [PreKeyUploadResult(ok=True)] and active.attrs["xmlns"] == "passive"


def test_count_error_skips_upload_and_a_digest_without_digest_opens_flagged() -> None:
    """A count error gives PreKeyCount(None); a digest result without digest: digest_ok False."""
    client, server, _ = connect(paired_creds())
    count = _login_to_count(client, server)
    events, _ = exchange(client, server, result(count.attrs["id"], kind="error"))
    assert events == [PreKeyCount(None)]
    _, [active] = server.receive(client.skip_prekey_upload())
    _, [digest] = exchange(client, server, result(active.attrs["id"]))
    events, _ = exchange(client, server, result(digest.attrs["id"]))
    assert events == [Opened(digest_ok=False)] and state(client) is ClientState.OPEN


def test_a_failed_passive_iq_opens_without_digest() -> None:
    """As Baileys: an error answer to passive/active skips the digest and opens (digest_ok None)."""
    client, server, _ = connect(paired_creds())
    count = _login_to_count(client, server)
    exchange(client, server, result(count.attrs["id"], BinaryNode("count", {"value": "40"})))
    _, [active] = server.receive(client.skip_prekey_upload())
    events, replies = exchange(client, server, result(active.attrs["id"], kind="error"))
    assert events == [Opened(digest_ok=None)] and replies == []


def test_bytes_are_handed_out_in_encryption_order() -> None:
    """A send after queued replies returns the queued frames first, so the server decrypts all."""
    client, server = connect(paired_creds())[:2]
    client.receive_data(server.send(BinaryNode("success", {"lid": "1@lid"})))
    assert isinstance(client.events()[0], LoginSuccess)
    # The count iq is queued; send another node before draining.
    _, nodes = server.receive(client.send_node(BinaryNode("presence", {"type": "available"})))
    assert [n.tag for n in nodes] == ["iq", "presence"]
    assert client.data_to_send() == b""


def test_the_intro_carries_routing_info_when_creds_have_it() -> None:
    """creds.routing_info makes the intro start with ED 00 01 and the server sees it."""
    creds = paired_creds()
    creds.routing_info = b"\x01\x02\x03"
    client = ClientConnection(creds=creds)
    assert client.start().startswith(b"ED\x00\x01\x00\x00\x03\x01\x02\x03WA\x06\x03")
    _, server, _ = connect(creds)
    assert server.client_hello is not None and server.client_hello.routing_info == b"\x01\x02\x03"


def test_byte_at_a_time_gives_the_same_events() -> None:
    """Feeding the server's bytes one at a time yields exactly the events of one big chunk."""
    creds = paired_creds()
    stream = [
        BinaryNode("success", {"t": "5", "lid": "9@lid"}),
        BinaryNode(
            "ib", {}, [BinaryNode("edge_routing", {}, [BinaryNode("routing_info", {}, b"r")])]
        ),
        BinaryNode("message", {"id": "m"}, [BinaryNode("enc", {}, b"\x00" * 300)]),
        BinaryNode("stream:error", {"code": "503"}),
    ]
    results = []
    for chunked in (False, True):
        client, server, _ = connect(creds)
        data = b"".join(server.send(node) for node in stream)
        events = []
        if chunked:
            for i in range(len(data)):
                client.receive_data(data[i : i + 1])
                events += client.events()
        else:
            client.receive_data(data)
            events = client.events()
        results.append(events)
    assert results[0] == results[1]
    assert [type(e).__name__ for e in results[0]] == [
        "LoginSuccess",
        "RoutingInfo",
        "NodeReceived",
        "StreamError",
    ]


def test_server_handshake_bytes_one_at_a_time() -> None:
    """The server hello fed byte by byte completes the handshake the same way."""
    server = ScriptedServer()
    client = ClientConnection(creds=init_auth_creds(), root=server.identity.root)
    hello, _ = server.receive(client.start())
    events = []
    for i in range(len(hello)):
        client.receive_data(hello[i : i + 1])
        events += client.events()
    assert len(events) == 1 and isinstance(events[0], HandshakeComplete)
    assert state(client) is ClientState.PAIRING


@pytest.mark.parametrize(
    ("node", "code", "reason"),
    [
        (BinaryNode("stream:error", {"code": "401"}), 401, DisconnectReason.LOGGED_OUT),
        (BinaryNode("stream:error", {"code": "440"}), 440, DisconnectReason.CONNECTION_REPLACED),
        (BinaryNode("stream:error", {"code": "408"}), 408, DisconnectReason.CONNECTION_LOST),
        (BinaryNode("stream:error", {"code": "428"}), 428, DisconnectReason.CONNECTION_CLOSED),
        (BinaryNode("stream:error", {"code": "500"}), 500, DisconnectReason.BAD_SESSION),
        (BinaryNode("stream:error", {"code": "503"}), 503, DisconnectReason.UNAVAILABLE_SERVICE),
        (BinaryNode("stream:error", {"code": "411"}), 411, DisconnectReason.MULTIDEVICE_MISMATCH),
        (BinaryNode("stream:error", {"code": "403"}), 403, DisconnectReason.FORBIDDEN),
        (
            BinaryNode("stream:error", {}, [BinaryNode("conflict", {"type": "replaced"})]),
            440,
            DisconnectReason.CONNECTION_REPLACED,
        ),
        (
            BinaryNode("stream:error", {"code": "401"}, [BinaryNode("conflict")]),
            401,
            DisconnectReason.LOGGED_OUT,
        ),
        (
            BinaryNode("stream:error", {}, [BinaryNode("ack", {"id": "x"})]),
            500,
            DisconnectReason.BAD_SESSION,
        ),
        (BinaryNode("stream:error", {}), 500, DisconnectReason.BAD_SESSION),
        (
            BinaryNode("failure", {"reason": "401", "location": "frc"}),
            401,
            DisconnectReason.LOGGED_OUT,
        ),
        (BinaryNode("failure", {"reason": "403"}), 403, DisconnectReason.FORBIDDEN),
        (BinaryNode("failure", {}), 500, DisconnectReason.BAD_SESSION),
        (BinaryNode("stream:error", {"code": "599"}), 599, None),
    ],
)
def test_stream_errors_and_failures_map_to_reasons(
    node: BinaryNode, code: int, reason: DisconnectReason | None
) -> None:
    """stream:error's code wins, else conflict → 440, else 500; failure uses its reason."""
    client, server = open_connection(paired_creds())
    events, _ = exchange(client, server, node)
    [event] = events
    assert isinstance(event, StreamError)
    assert (event.code, event.reason) == (code, reason)
    assert state(client) is ClientState.CLOSED


@pytest.mark.parametrize(
    ("code", "policy"),
    [
        (515, "reconnect_now"),
        (401, "logged_out"),
        (440, "stop"),
        (403, "stop"),
        (411, "stop"),
        (408, "reconnect"),
        (428, "reconnect"),
        (500, "reconnect"),
        (503, "reconnect"),
        (400, "reconnect"),
        (599, "reconnect"),
    ],
)
def test_each_close_code_has_a_policy(code: int, policy: str) -> None:
    """401 logs out, 440/403/411 stop, 515 reconnects now, anything else reconnects with backoff."""
    from actors.connection.client_state import policy_for_code

    assert policy_for_code(code).value == policy


def test_xmlstreamend_closes_with_428() -> None:
    """The server ending the stream is Closed(CONNECTION_CLOSED)."""
    client, server = open_connection(paired_creds())
    events, _ = exchange(client, server, BinaryNode("xmlstreamend"))
    assert [type(e) for e in events] == [Closed]
    assert isinstance(events[0], Closed) and events[0].reason is DisconnectReason.CONNECTION_CLOSED


def test_downgrade_webclient_closes_with_411() -> None:
    """ib > downgrade_webclient ends the connection as a multi-device mismatch (stop)."""
    client, server = open_connection(paired_creds())
    events, _ = exchange(client, server, BinaryNode("ib", {}, [BinaryNode("downgrade_webclient")]))
    assert events == [
        Closed(DisconnectReason.MULTIDEVICE_MISMATCH, "server sent downgrade_webclient")
    ]
    assert DisconnectReason.MULTIDEVICE_MISMATCH.policy.value == "stop"
    assert state(client) is ClientState.CLOSED


def test_data_after_close_is_ignored() -> None:
    """Once CLOSED, more bytes give no events and no error."""
    client, server = open_connection(paired_creds())
    exchange(client, server, BinaryNode("stream:error", {"code": "500"}))
    client.receive_data(server.send(BinaryNode("message")))
    assert client.events() == []


def _assert_remote_error(client: ClientConnection, data: bytes, hint: int) -> None:
    client.receive_data(data)
    with pytest.raises(RemoteProtocolError) as info:
        client.next_event()
    assert info.value.error_status_hint == hint
    assert state(client) is ClientState.CLOSED
    with pytest.raises(RemoteProtocolError):
        client.next_event()


def test_an_undecodable_node_is_a_remote_error() -> None:
    """A frame that decrypts but is not a node: RemoteProtocolError (500), connection closed."""
    client, server = open_connection(paired_creds())
    _assert_remote_error(client, server.send_raw(b"\x00\xf8"), 500)


def test_a_tampered_frame_is_a_remote_error() -> None:
    """A frame that fails authentication: RemoteProtocolError (500)."""
    client, server = open_connection(paired_creds())
    data = bytearray(server.send(BinaryNode("message")))
    data[-1] ^= 1
    _assert_remote_error(client, bytes(data), 500)


def test_a_certificate_from_another_root_is_a_remote_error() -> None:
    """A server whose chain is not signed by our root fails the handshake (hint 400)."""
    server = ScriptedServer()
    client = ClientConnection(creds=init_auth_creds(), root=ScriptedServer().identity.root)
    hello, _ = server.receive(client.start())
    _assert_remote_error(client, hello, 400)


@pytest.mark.parametrize(
    "node",
    [
        BinaryNode("stream:error", {"code": "abc"}),
        BinaryNode("failure", {"reason": "-1"}),
        BinaryNode("success", {"lid": "1@lid"}),
        pair_device("2@a"),
        BinaryNode("iq", {"type": "set", "id": "p"}, [BinaryNode("pair-success")]),
        BinaryNode("ib", {}, [BinaryNode("edge_routing")]),
    ],
    ids=[
        "bad-code",
        "bad-reason",
        "second-success",
        "pair-device-when-open",
        "pair-success-when-open",
        "empty-routing",
    ],
)
def test_malformed_or_misplaced_stanzas_are_remote_errors(node: BinaryNode) -> None:
    """Bad codes, a success or pairing stanza when open, empty routing info: RemoteProtocolError."""
    client, server = open_connection(paired_creds())
    _assert_remote_error(client, server.send(node), 500)


def test_success_while_pairing_is_a_remote_error() -> None:
    """An unpaired device cannot log in: success during PAIRING is a RemoteProtocolError."""
    client, server, _ = connect(init_auth_creds())
    _assert_remote_error(client, server.send(BinaryNode("success")), 500)


def test_a_bad_pair_success_is_a_remote_error() -> None:
    """A pair-success for another device's QR fails verification and closes the connection."""
    client, server, _ = connect(init_auth_creds())
    exchange(client, server, pair_device("2@a"))
    other = init_auth_creds()
    from actors.connection.payload import Browser
    from actors.connection.qr import build_qr

    qr = build_qr(
        "r",
        other.noise_key.public,
        other.signed_identity_key.public,
        other.adv_secret_key,
        Browser(),
    )
    _assert_remote_error(client, server.send(pair_success_stanza(parse_qr(qr))), 500)


def test_local_misuse_is_a_local_error() -> None:
    """Calls out of order raise LocalProtocolError and change nothing."""
    client = ClientConnection(creds=init_auth_creds())
    with pytest.raises(LocalProtocolError):
        client.receive_data(b"x")
    with pytest.raises(LocalProtocolError):
        client.send_node(BinaryNode("presence"))
    with pytest.raises(LocalProtocolError):
        client.confirm_pairing()
    client.start()
    with pytest.raises(LocalProtocolError):
        client.start()
    assert state(client) is ClientState.HANDSHAKING

    paired, _, _ = connect(paired_creds())
    with pytest.raises(LocalProtocolError):
        paired.upload_prekeys({})
    with pytest.raises(LocalProtocolError):
        paired.skip_prekey_upload()  # still waiting for success
    with pytest.raises(LocalProtocolError):
        paired.rotate_qr()
    with pytest.raises(LocalProtocolError):
        paired.query(BinaryNode("presence"))
    assert paired.login_step is LoginStep.AWAIT_SUCCESS


def test_close_is_final() -> None:
    """close() moves to CLOSED with 428 and sending afterwards is refused."""
    client, _ = open_connection(paired_creds())
    assert client.close() == Closed(DisconnectReason.CONNECTION_CLOSED, "closed locally")
    assert state(client) is ClientState.CLOSED
    with pytest.raises(LocalProtocolError):
        client.send_node(BinaryNode("presence"))


def test_reprs_hide_secrets() -> None:
    """QrCode and PairSuccess reprs show no adv secret and no key bytes."""
    creds = init_auth_creds()
    client, server, _ = connect(creds)
    [qr], _ = exchange(client, server, pair_device("2@abcdefghijk"))
    assert isinstance(qr, QrCode)
    assert creds.adv_secret_key not in repr(qr)
    events, _ = exchange(client, server, pair_success_stanza(parse_qr(qr.qr)))
    assert "accountSignature" not in repr(events[0])


def test_the_handshake_state_is_dropped_once_the_transport_is_up() -> None:
    """After ServerHello and ClientFinish the client keeps the transport, not the handshake."""
    client, _server, events = connect(paired_creds())
    assert isinstance(events[0], HandshakeComplete)
    assert not any(isinstance(value, NoiseInitiator) for value in vars(client).values())
    assert any(isinstance(value, NoiseTransport) for value in vars(client).values())


def test_the_client_reads_the_creds_it_is_given_without_copying_them() -> None:
    """The client holds the caller's creds object itself (a copy per connection is waste)."""
    creds = paired_creds()
    client, _server, _events = connect(creds)
    assert any(value is creds for value in vars(client).values())
