"""The pairing QR string: v7 link format, platform ids, and parsing it like a phone."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.connection.payload import Browser
from actors.connection.qr import (
    QR_PREFIX,
    CompanionPlatform,
    QrData,
    QrError,
    build_qr,
    companion_platform,
    parse_qr,
)

NOISE, IDENTITY, ADV = (
    bytes(range(32)),
    bytes(range(32, 64)),
    base64.b64encode(b"\x07" * 32).decode(),
)


def test_v7_qr_is_the_linked_devices_link_with_five_fields() -> None:
    """ref, b64 noise, b64 identity, adv secret, platform id after the wa.me link."""
    qr = build_qr("2@ref", NOISE, IDENTITY, ADV, Browser("Mac OS", "Chrome"))
    assert qr == (
        "https://wa.me/settings/linked_devices#2@ref,"
        + base64.b64encode(NOISE).decode()
        + ","
        + base64.b64encode(IDENTITY).decode()
        + ","
        + ADV
        + ",1"
    )


@pytest.mark.parametrize(
    ("browser", "platform"),
    [
        (Browser("Mac OS", "Chrome"), 1),
        (Browser("Windows", "Edge"), 2),
        (Browser("Ubuntu", "Firefox"), 3),
        (Browser("Windows", "IE"), 4),
        (Browser("Ubuntu", "Opera"), 5),
        (Browser("Mac OS", "Safari"), 6),
        (Browser("Mac OS", "Desktop"), 7),
        (Browser("Ubuntu", "Desktop"), 7),
        (Browser("Windows", "Desktop"), 8),
        (Browser("Ubuntu", "Lynx"), 9),
    ],
)
def test_platform_id_per_browser(browser: Browser, platform: int) -> None:
    """Chrome 1, Edge 2, Firefox 3, IE 4, Opera 5, Safari 6, Desktop 7 (8 on Windows), other 9."""
    assert companion_platform(browser) == platform
    assert build_qr("r", NOISE, IDENTITY, ADV, browser).endswith(f",{platform}")


def test_parse_reads_back_every_field() -> None:
    """A phone parsing our QR gets the ref, both keys, the adv secret and the platform."""
    parsed = parse_qr(build_qr("2@r+/=", NOISE, IDENTITY, ADV, Browser("Windows", "Desktop")))
    assert (parsed.ref, parsed.noise_public, parsed.identity_public) == ("2@r+/=", NOISE, IDENTITY)
    assert (parsed.adv_secret_key, parsed.platform) == (ADV, CompanionPlatform.UWP)


def test_parse_reads_the_v6_form() -> None:
    """The pre-v7 four-field form parses with no platform and prints back the same."""
    text = ",".join(
        ["ref", base64.b64encode(NOISE).decode(), base64.b64encode(IDENTITY).decode(), ADV]
    )
    parsed = parse_qr(text)
    assert parsed.platform is None and parsed.to_string() == text


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (QR_PREFIX + "a,b,c", "5 comma-separated"),
        ("a,b", "4 comma-separated"),
        (QR_PREFIX + "," + "A" * 44 + ",x,y,1", "ref"),
        (QR_PREFIX + "r,!!!!,x,y,1", "noise key"),
        (QR_PREFIX + "r," + base64.b64encode(b"1" * 31).decode() + ",x,y,1", "32 bytes"),
        (
            QR_PREFIX
            + "r,"
            + base64.b64encode(NOISE).decode()
            + ","
            + base64.b64encode(IDENTITY).decode()
            + ",short,1",
            "adv secret",
        ),
        (
            QR_PREFIX
            + "r,"
            + base64.b64encode(NOISE).decode()
            + ","
            + base64.b64encode(IDENTITY).decode()
            + ","
            + ADV
            + ",x",
            "platform",
        ),
    ],
)
def test_parse_rejects_what_is_not_a_qr(text: str, match: str) -> None:
    """Wrong field count, empty ref, bad base64, wrong key sizes, bad platform: QrError."""
    with pytest.raises(QrError, match=match):
        parse_qr(text)


def test_repr_hides_the_adv_secret() -> None:
    """QrData's repr never shows the adv secret."""
    parsed = QrData("ref", NOISE, IDENTITY, ADV, 1)
    assert ADV not in repr(parsed)


@given(
    ref=st.text(
        st.characters(codec="utf-8", exclude_characters=","),
        min_size=1,
        max_size=40,
    ),
    noise=st.binary(min_size=32, max_size=32),
    identity=st.binary(min_size=32, max_size=32),
    adv=st.binary(min_size=32, max_size=32),
    name=st.sampled_from(["Chrome", "Edge", "Firefox", "IE", "Opera", "Safari", "Desktop", "X"]),
)
def test_build_then_parse_round_trips(
    ref: str, noise: bytes, identity: bytes, adv: bytes, name: str
) -> None:
    """Any comma-free ref and any keys survive build_qr → parse_qr."""
    adv_text = base64.b64encode(adv).decode()
    parsed = parse_qr(build_qr(ref, noise, identity, adv_text, Browser("Ubuntu", name)))
    assert (parsed.ref, parsed.noise_public, parsed.identity_public, parsed.adv_secret_key) == (
        ref,
        noise,
        identity,
        adv_text,
    )
