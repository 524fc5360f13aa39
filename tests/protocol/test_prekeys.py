"""Pre-keys after login: how many to upload, the plan (keys + counters), and the iq nodes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.connection.binary import BinaryNode, decode_node, encode_node
from actors.connection.errors import LocalProtocolError, RemoteProtocolError
from actors.connection.prekeys import (
    INITIAL_PREKEY_COUNT,
    MIN_PREKEY_COUNT,
    IqError,
    active_iq,
    count_iq,
    digest_iq,
    parse_count_result,
    parse_digest_result,
    plan_upload,
    upload_count,
    upload_iq,
)
from stores.creds import AuthCreds, init_auth_creds
from stores.keys import generate_key_pair, key_pair_from_plain

CREDS = init_auth_creds()


def _creds(first: int, next_id: int) -> AuthCreds:
    creds = CREDS.copy()
    creds.first_unuploaded_pre_key_id = first
    creds.next_pre_key_id = next_id
    return creds


@pytest.mark.parametrize(
    ("server", "newest_exists", "next_id", "expected"),
    [
        (0, True, 1, 812),
        (0, False, 900, 812),
        (1, True, 50, 5),
        (5, True, 50, 5),
        (6, True, 50, 0),
        (6, False, 50, 5),
        (6, False, 1, 0),
        (100, True, 900, 0),
    ],
)
def test_how_many_to_upload(server: int, newest_exists: bool, next_id: int, expected: int) -> None:
    """812 when the server has none; 5 when it has 1-5 or our newest local key is missing."""
    assert upload_count(server, newest_local_exists=newest_exists, next_pre_key_id=next_id) == (
        expected
    )
    assert (INITIAL_PREKEY_COUNT, MIN_PREKEY_COUNT) == (812, 5)


@given(
    first=st.integers(1, 5000),
    extra=st.integers(0, 900),
    count=st.integers(1, 900),
)
def test_plan_follows_the_counter_rules(first: int, extra: int, count: int) -> None:
    """Model: unuploaded keys count first; the rest are new from next; counters move past them."""
    next_id = first + extra
    plan = plan_upload(_creds(first, next_id), count)
    end = first + count  # one past the last uploaded id
    assert list(plan.upload_ids) == list(range(first, end))
    assert sorted(plan.new_keys) == list(range(next_id, max(next_id, end)))
    assert plan.next_pre_key_id == max(next_id, end)
    assert plan.first_unuploaded_pre_key_id == max(first, end)


def test_plan_gives_the_store_batch_and_the_creds_change() -> None:
    """key_batch is {"pre-key": {"<id>": {private, public}}}; apply moves the counters on a copy."""
    creds = _creds(1, 1)
    plan = plan_upload(creds, 5)
    batch = plan.key_batch()
    assert list(batch) == ["pre-key"] and sorted(batch["pre-key"]) == ["1", "2", "3", "4", "5"]
    assert key_pair_from_plain(batch["pre-key"]["3"]) == plan.new_keys[3]
    assert plan.creds_update() == {"next_pre_key_id": 6, "first_unuploaded_pre_key_id": 6}
    moved = plan.apply(creds)
    assert (moved.next_pre_key_id, moved.first_unuploaded_pre_key_id) == (6, 6)
    assert creds.next_pre_key_id == 1
    commit = plan.batch(creds)
    assert commit.keys == plan.key_batch() and commit.creds is not None
    assert commit.creds.next_pre_key_id == 6
    assert commit.creds.registration_id == creds.registration_id
    assert "private" not in repr(plan) and str(plan.new_keys[1].private) not in repr(plan)


def test_plan_refuses_ids_beyond_three_bytes_and_empty_uploads() -> None:
    """Ids past 2^24-1 and non-positive counts are LocalProtocolError."""
    with pytest.raises(LocalProtocolError, match="3-byte"):
        plan_upload(_creds((1 << 24) - 3, (1 << 24) - 3), 5)
    with pytest.raises(LocalProtocolError):
        plan_upload(_creds(1, 1), 0)


def test_count_and_digest_and_active_iqs() -> None:
    """count/digest/active iqs have Baileys' attributes, in Baileys' order, id included."""
    assert count_iq("a") == BinaryNode(
        "iq",
        {"id": "a", "xmlns": "encrypt", "type": "get", "to": "@s.whatsapp.net"},
        [BinaryNode("count")],
    )
    assert list(count_iq("a").attrs) == ["id", "xmlns", "type", "to"]
    assert list(digest_iq("b").attrs) == ["to", "type", "xmlns", "id"]
    assert list(active_iq("c").attrs) == ["to", "xmlns", "type", "id"]
    assert active_iq("c").children()[0].tag == "active"


def test_upload_iq_lists_keys_in_id_order_with_the_signed_pre_key() -> None:
    """registration, type 05, identity, list of key{id 3B, value}, skey{id, value, signature}."""
    keys = {7: generate_key_pair(), 3: generate_key_pair()}
    node = decode_node(encode_node(upload_iq("u", CREDS, keys)))
    assert list(node.attrs) == ["xmlns", "type", "to", "id"]
    assert [c.tag for c in node.children()] == ["registration", "type", "identity", "list", "skey"]
    assert node.require_child("registration").require_bytes() == CREDS.registration_id.to_bytes(
        4, "big"
    )
    assert node.require_child("type").require_bytes() == b"\x05"
    ids = [k.require_child("id").require_bytes() for k in node.require_child("list").children()]
    assert ids == [b"\x00\x00\x03", b"\x00\x00\x07"]
    skey = node.require_child("skey")
    assert skey.require_child("signature").require_bytes() == CREDS.signed_pre_key.signature


def _result(*children: BinaryNode, kind: str = "result") -> BinaryNode:
    return BinaryNode("iq", {"type": kind, "id": "x"}, list(children) or None)


def test_parse_count_and_digest_results() -> None:
    """count{value} gives the number; a digest child means the bundle is fine."""
    assert parse_count_result(_result(BinaryNode("count", {"value": "17"}))) == 17
    assert parse_digest_result(_result(BinaryNode("digest")))
    assert not parse_digest_result(_result())


@pytest.mark.parametrize(
    "node",
    [
        _result(),
        _result(BinaryNode("count")),
        _result(BinaryNode("count", {"value": "-1"})),
        _result(BinaryNode("count", {"value": "1" * 12})),
        BinaryNode("message", {"type": "result"}),
    ],
)
def test_malformed_count_results_are_remote_errors(node: BinaryNode) -> None:
    """A count result without a usable count is a RemoteProtocolError (hint 500)."""
    with pytest.raises(RemoteProtocolError) as info:
        parse_count_result(node)
    assert info.value.error_status_hint == 500


def test_error_answers_raise_iq_error_with_the_code() -> None:
    """type=error answers raise IqError carrying the server's code."""
    with pytest.raises(IqError) as info:
        parse_count_result(_result(BinaryNode("error", {"code": "503"}), kind="error"))
    assert info.value.code == "503"
