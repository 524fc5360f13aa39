"""Any message, receipt or ack stanza a logged-in client sends is routed or refused."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.connection.binary import BinaryNode, encode_node
from sandbox.core import Close, Send
from tests.sandbox.fake_client import FakeDevice
from tests.sandbox.messaging_world import World

WORLD = World()
DEVICE = FakeDevice()
WORLD.pair(DEVICE, WORLD.new_account())
CLIENT, _ = WORLD.login(DEVICE)
ANN = WORLD.core.add_contact("Ann")
BEN = WORLD.core.add_contact("Ben")
GROUP = WORLD.core.create_group("Fuzz", [ANN.jid, DEVICE.me or "", BEN.jid])
# Ids the contacts really sent, so retry receipts reach their resend path.
SENT = [
    WORLD.contact_send(ANN.jid, DEVICE.me or "", "one"),
    WORLD.contact_send(BEN.jid, GROUP.jid, "two"),
]
JIDS = [
    ANN.jid,
    ANN.lid,
    BEN.jid,
    GROUP.jid,
    DEVICE.me or "",
    "120363999999999999@g.us",
    "15550100000:99@s.whatsapp.net",
    "x",
    "@",
    "a:b@s.whatsapp.net",
    "1_x:2@lid",
    "",
]

jids = st.sampled_from(JIDS)
texts = st.sampled_from(["", "1", "0", "x", "text", "retry", "read", "-1", "99999999999", *SENT])
blobs = st.one_of(st.none(), st.binary(max_size=48), st.sampled_from([b"\x33", b"\x33\x0a\x00"]))


def _leaf(tag: str) -> st.SearchStrategy[BinaryNode]:
    return st.builds(
        BinaryNode,
        st.just(tag),
        st.dictionaries(st.sampled_from(["type", "count", "v", "id", "jid"]), texts, max_size=3),
        blobs,
    )


encs = st.builds(
    BinaryNode,
    st.just("enc"),
    st.fixed_dictionaries(
        {"v": st.just("2"), "type": st.sampled_from(["pkmsg", "msg", "skmsg", "x"])},
        optional={"count": texts},
    ),
    blobs,
)
targets = st.builds(
    BinaryNode,
    st.just("to"),
    st.fixed_dictionaries({}, optional={"jid": jids}),
    st.lists(encs, max_size=2),
)
children = st.one_of(
    encs,
    st.builds(BinaryNode, st.just("participants"), st.just({}), st.lists(targets, max_size=3)),
    _leaf("retry"),
    _leaf("registration"),
    _leaf("device-identity"),
    st.builds(BinaryNode, st.just("keys"), st.just({}), st.lists(_leaf("identity"), max_size=2)),
    st.builds(BinaryNode, st.just("list"), st.just({}), st.lists(_leaf("item"), max_size=2)),
)
junk_attrs = st.dictionaries(
    st.sampled_from(["id", "to", "type", "participant", "class", "from", "recipient"]),
    st.one_of(jids, texts),
    max_size=6,
)
ids = st.one_of(st.sampled_from(SENT), texts)
retry_children = st.lists(
    st.one_of(
        _leaf("retry"),
        _leaf("registration"),
        st.builds(
            BinaryNode,
            st.just("keys"),
            st.just({}),
            st.lists(
                st.one_of(
                    _leaf("identity"),
                    _leaf("type"),
                    st.builds(
                        BinaryNode,
                        st.sampled_from(["skey", "key"]),
                        st.just({}),
                        st.lists(
                            st.one_of(_leaf("id"), _leaf("value"), _leaf("signature")),
                            max_size=3,
                        ),
                    ),
                ),
                max_size=4,
            ),
        ),
    ),
    max_size=3,
)
receipts = st.builds(
    lambda base, msg_id, to, kind, content: BinaryNode(
        "receipt", {**base, "id": msg_id, "to": to, **({"type": kind} if kind else {})}, content
    ),
    junk_attrs,
    ids,
    jids,
    st.sampled_from(["retry", "retry", "read", None]),
    st.one_of(st.none(), retry_children),
)
messages = st.builds(
    lambda base, msg_id, to, content: BinaryNode(
        "message", {**base, "id": msg_id, "to": to}, content
    ),
    junk_attrs,
    ids,
    jids,
    st.one_of(st.none(), st.lists(children, max_size=4)),
)
stanzas = st.one_of(
    messages,
    receipts,
    st.builds(BinaryNode, st.sampled_from(["message", "receipt", "ack"]), junk_attrs, st.none()),
)


@settings(max_examples=1000, deadline=None)
@given(st.lists(stanzas, min_size=1, max_size=4))
def test_random_stanzas_from_a_logged_in_client_never_raise(nodes: list[BinaryNode]) -> None:
    """Message/receipt/ack stanzas of any shape: acked, routed or dropped; nothing escapes."""
    for node in nodes:
        assert CLIENT.transport is not None
        data = CLIENT.transport.send(encode_node(node))
        outputs = WORLD.core.receive(CLIENT.conn_id, data, 0.0)
        assert all(isinstance(o, (Send, Close)) for o in outputs)
        WORLD.wire.route(outputs)
        assert CLIENT.closed is None
