"""Fuzzing the client connection after a completed handshake: events or RemoteProtocolError only.

Three kinds of input reach a connection that is logging in or open: raw bytes
on the socket (almost all fail authentication), frames the server encrypted
around arbitrary plaintext (almost all fail node decoding), and well-formed
nodes of arbitrary shape. For the last kind the model is the disconnect rule of
PROTOCOL.md: ``stream:error``'s code attribute wins (515 restarts), else a
``conflict`` child means 440, else 500; ``failure`` uses its reason (else 500);
``xmlstreamend`` is 428; a non-numeric code or reason is a remote error; an
ordinary stanza comes out unchanged as NodeReceived.
"""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.connection.binary import BinaryNode
from actors.connection.client import ClientConnection
from actors.connection.client_state import (
    ClientEvent,
    ClientState,
    Closed,
    NodeReceived,
    RestartRequired,
    StreamError,
)
from actors.connection.errors import LocalProtocolError, RemoteProtocolError
from stores.creds import AuthCreds, init_auth_creds
from tests.protocol.noise_fixtures import make_server_identity
from tests.protocol.scripted_server import ScriptedServer, connect, exchange

IDENTITY = make_server_identity()
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _paired() -> AuthCreds:
    creds = init_auth_creds()
    creds.me = {"id": "15550001111:7@s.whatsapp.net"}
    return creds


CREDS = _paired()


def _logged_in(open_: bool) -> tuple[ClientConnection, ScriptedServer]:
    client, server, _ = connect(CREDS, ScriptedServer(IDENTITY))
    if open_:
        _, [count] = exchange(client, server, BinaryNode("success", {"lid": "1@lid"}))
        forty = BinaryNode("count", {"value": "40"})
        exchange(
            client, server, BinaryNode("iq", {"type": "result", "id": count.attrs["id"]}, [forty])
        )
        _, [active] = server.receive(client.skip_prekey_upload())
        _, [digest] = exchange(
            client, server, BinaryNode("iq", {"type": "result", "id": active.attrs["id"]})
        )
        exchange(
            client,
            server,
            BinaryNode("iq", {"type": "result", "id": digest.attrs["id"]}, [BinaryNode("digest")]),
        )
        assert client.statistics().state is ClientState.OPEN
    return client, server


def _drain(client: ClientConnection, data: bytes, chunk: int) -> tuple[list[ClientEvent], bool]:
    """Feed ``data`` in chunks; collect events; True when a RemoteProtocolError ended it."""
    events: list[ClientEvent] = []
    try:
        for i in range(0, len(data), chunk):
            client.receive_data(data[i : i + chunk])
            events += client.events()
    except RemoteProtocolError:
        assert client.state is ClientState.CLOSED
        return events, True
    except LocalProtocolError as exc:  # pragma: no cover - the property's failure message
        raise AssertionError(f"local error from remote input: {exc}") from exc
    return events, False


@FUZZ
@given(data=st.binary(max_size=600), open_=st.booleans(), chunk=st.integers(1, 64))
def test_random_socket_bytes(data: bytes, open_: bool, chunk: int) -> None:
    """Random bytes on the socket: events or RemoteProtocolError, nothing else."""
    client, _ = _logged_in(open_)
    _drain(client, data, chunk)


@FUZZ
@given(plaintexts=st.lists(st.binary(max_size=200), max_size=4), open_=st.booleans())
def test_random_encrypted_frames(plaintexts: list[bytes], open_: bool) -> None:
    """Authentic frames around arbitrary plaintext: events or RemoteProtocolError only."""
    client, server = _logged_in(open_)
    data = b"".join(server.send_raw(p) for p in plaintexts)
    _drain(client, data, 1 << 16)


_TAGS = st.sampled_from(
    [
        "stream:error",
        "failure",
        "xmlstreamend",
        "iq",
        "ib",
        "success",
        "message",
        "receipt",
        "notification",
        "conflict",
        "count",
        "pair-device",
        "pair-success",
        "edge_routing",
        "routing_info",
        "digest",
        "ping",
        "ack",
    ]
)
_VALUES = st.one_of(
    st.sampled_from(
        [
            "515",
            "401",
            "440",
            "500",
            "abc",
            "",
            "-1",
            "result",
            "error",
            "get",
            "set",
            "urn:xmpp:ping",
            "1.2-1",
            "1.2-2",
            "9" * 8,
        ]
    ),
    st.text(max_size=8),
)
_ATTRS = st.dictionaries(
    st.sampled_from(["code", "reason", "type", "id", "xmlns", "t", "lid", "value"]),
    _VALUES,
    max_size=4,
)
_NODES = st.recursive(
    st.builds(BinaryNode, _TAGS, _ATTRS, st.one_of(st.none(), st.binary(max_size=20))),
    lambda children: st.builds(BinaryNode, _TAGS, _ATTRS, st.lists(children, max_size=3)),
    max_leaves=8,
)


def _model(node: BinaryNode) -> tuple[type, int] | str | None:
    """What the rule says: (terminal event type, code), "error", or None (not modelled)."""
    first = node.children()[0].tag if node.children() else None
    if node.tag == "stream:error":
        code = node.attrs.get("code")
        if code is None:
            return (StreamError, 440 if first == "conflict" else 500)
        if not code.isdecimal() or len(code) > 6:
            return "error"
        return (RestartRequired, 515) if int(code) == 515 else (StreamError, int(code))
    if node.tag == "failure":
        reason = node.attrs.get("reason")
        if reason is None:
            return (StreamError, 500)
        if not reason.isdecimal() or len(reason) > 6:
            return "error"
        return (StreamError, int(reason))
    if node.tag == "xmlstreamend":
        return (Closed, 428)
    if node.tag == "ib" and node.child("downgrade_webclient") is not None:
        return (Closed, 411)
    return None


def _connection(mode: str) -> tuple[ClientConnection, ScriptedServer]:
    if mode == "pairing":
        client, server, _ = connect(init_auth_creds(), ScriptedServer(IDENTITY))
        return client, server
    return _logged_in(mode == "open")


@FUZZ
@given(
    nodes=st.lists(_NODES, min_size=1, max_size=4),
    mode=st.sampled_from(["pairing", "logging_in", "open"]),
)
def test_random_nodes_follow_the_disconnect_rule(nodes: list[BinaryNode], mode: str) -> None:
    """Well-formed nodes of any shape, in any state: terminal ones close by the rule."""
    client, server = _connection(mode)
    for node in nodes:
        try:
            client.receive_data(server.send(node))
            events = client.events()
        except RemoteProtocolError:
            assert client.state is ClientState.CLOSED
            expected = _model(node)
            assert expected is None or expected == "error", (node, expected)
            return
        expected = _model(node)
        if isinstance(expected, tuple):
            kind, code = expected
            assert len(events) == 1 and isinstance(events[0], kind), (node, events)
            event = events[0]
            assert isinstance(event, Closed | RestartRequired | StreamError)
            got = event.reason.value if isinstance(event, Closed) else event.code
            assert got == code
            assert client.statistics().state is ClientState.CLOSED
            return
        assert expected is None, (node, events)
        if node.tag in ("message", "receipt", "notification"):
            assert events == [NodeReceived(node)] or node.tag == "ib"


_STREAM = [
    BinaryNode("success", {"t": "5", "lid": "9@lid"}),
    BinaryNode("ib", {}, [BinaryNode("edge_routing", {}, [BinaryNode("routing_info", {}, b"r")])]),
    BinaryNode("message", {"id": "m"}, [BinaryNode("enc", {}, bytes(range(256)))]),
    BinaryNode("iq", {"type": "get", "xmlns": "urn:xmpp:ping", "id": "p"}),
    BinaryNode("stream:error", {"code": "503"}),
]


@FUZZ
@given(cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    """However the server's bytes are cut into reads, the client sees the same events."""
    whole_client, whole_server = _logged_in(False)
    data = b"".join(whole_server.send(node) for node in _STREAM)
    whole_client.receive_data(data)
    expected = whole_client.events()

    client, server = _logged_in(False)
    data = b"".join(server.send(node) for node in _STREAM)
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    events: list[ClientEvent] = []
    for start, end in itertools.pairwise(bounds):
        client.receive_data(data[start:end])
        events += client.events()
    assert len(expected) == len(_STREAM)
    assert events == expected
