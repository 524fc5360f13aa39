"""JIDs: parsing and printing ``user[_agent][:device]@server`` as Baileys v7 does."""

from __future__ import annotations

import pytest

from actors.connection.binary import Domain, Jid, JidError
from actors.connection.binary.jid import AdJid, JidPair, format_ad_jid, wire_form


@pytest.mark.parametrize(
    ("text", "jid"),
    [
        ("5511999998888@s.whatsapp.net", Jid("5511999998888", "s.whatsapp.net")),
        ("5511999998888:12@s.whatsapp.net", Jid("5511999998888", "s.whatsapp.net", 12)),
        ("98765:3@lid", Jid("98765", "lid", 3)),
        ("98765@hosted", Jid("98765", "hosted")),
        ("98765:1@hosted.lid", Jid("98765", "hosted.lid", 1)),
        ("1_5:3@s.whatsapp.net", Jid("1", "s.whatsapp.net", 3, 5)),
        ("120363025246125486@g.us", Jid("120363025246125486", "g.us")),
        ("@s.whatsapp.net", Jid("", "s.whatsapp.net")),
        ("status@broadcast", Jid("status", "broadcast")),
    ],
)
def test_parse_and_print(text: str, jid: Jid) -> None:
    """Each form parses into its parts and prints back to the same text."""
    assert Jid.parse(text) == jid
    assert str(jid) == text


def test_device_and_agent_zero_print_without_them() -> None:
    """Like Baileys' jidEncode, a device or agent of 0 is left out when printing."""
    assert Jid.parse("1:0@s.whatsapp.net") == Jid("1", "s.whatsapp.net", 0)
    assert str(Jid("1", "s.whatsapp.net", 0, 0)) == "1@s.whatsapp.net"


@pytest.mark.parametrize(
    "text",
    [
        "no-at",
        "1@",
        "1@a@b",
        "1:x@s.whatsapp.net",
        "1:@lid",
        "1_a:2@s.whatsapp.net",
        "1:2:3@lid",
        "1:-2@lid",
        "1:²@lid",
    ],
)
def test_malformed_jids_raise(text: str) -> None:
    """Text that is not a JID raises JidError naming the text and the reason."""
    with pytest.raises(JidError) as caught:
        Jid.parse(text)
    assert caught.value.text == text
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("text", "domain"),
    [
        ("1:2@s.whatsapp.net", 0),
        ("1:2@lid", 1),
        ("1:2@hosted", 128),
        ("1:2@hosted.lid", 129),
        ("1_7:2@s.whatsapp.net", 7),
        ("1@g.us", 0),
        ("1_9:2@lid", 1),
    ],
)
def test_domain_type(text: str, domain: int) -> None:
    """Domain type comes from the server (lid, hosted, hosted.lid), else the agent, else 0."""
    assert Jid.parse(text).domain_type == domain


def test_predicates_and_conversions() -> None:
    """is_lid / is_hosted, user_jid (c.us -> s.whatsapp.net) and with_device."""
    assert Jid.parse("1:2@lid").is_lid
    assert Jid.parse("1@hosted.lid").is_hosted and not Jid.parse("1@lid").is_hosted
    assert Jid.parse("1_5:2@s.whatsapp.net").user_jid() == Jid("1", "s.whatsapp.net")
    assert str(Jid.parse("16505361212@c.us").user_jid()) == "16505361212@s.whatsapp.net"
    assert str(Jid.parse("1@s.whatsapp.net").with_device(4)) == "1:4@s.whatsapp.net"


def test_domain_values() -> None:
    """Domain types are Baileys' WAJIDDomains values."""
    assert [int(d) for d in Domain] == [0, 1, 128, 129]


@pytest.mark.parametrize(
    ("text", "form"),
    [
        ("1@g.us", JidPair("1", "g.us")),
        ("@s.whatsapp.net", JidPair("", "s.whatsapp.net")),
        ("1:2@s.whatsapp.net", AdJid(0, 2, "1")),
        ("1:255@lid", AdJid(1, 255, "1")),
        (":3@hosted", AdJid(128, 3, "")),
        ("1:2@hosted.lid", AdJid(129, 2, "1")),
        ("1_7:2@s.whatsapp.net", AdJid(7, 2, "1")),
        ("1:0@s.whatsapp.net", None),
        ("1:2@g.us", None),
        ("1_128:2@s.whatsapp.net", None),
        ("1_256:2@s.whatsapp.net", None),
        ("a_b@x", None),
        ("plain", None),
    ],
)
def test_wire_form(text: str, form: JidPair | AdJid | None) -> None:
    """The wire form chosen for a text; None where it would not read back the same."""
    assert wire_form(text) == form


def test_every_ad_jid_text_is_written_in_a_form_that_reads_back() -> None:
    """For every domain byte and device, the text an AD_JID reads as is written back losslessly."""
    for domain in range(256):
        for device in range(256):
            text = format_ad_jid(domain, device, "42")
            form = wire_form(text)
            if isinstance(form, AdJid):
                assert (form.domain_type, form.device) == (domain, device)
                assert format_ad_jid(form.domain_type, form.device, form.user) == text
            elif isinstance(form, JidPair):
                # Device 0 of a known domain prints as a plain user@server.
                assert device == 0 and f"{form.user}@{form.server}" == text
            else:
                # Device 0 of an unknown domain (user_agent@s.whatsapp.net) goes raw.
                assert device == 0 and domain not in (0, 1, 128, 129)
