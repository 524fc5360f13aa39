"""ClientPayload builders: login and registration as PROTOCOL.md "Login and registration" says."""

from __future__ import annotations

import hashlib

import pytest

from actors.connection.errors import LocalProtocolError
from actors.connection.payload import (
    DEFAULT_VERSION,
    Browser,
    ClientIdentity,
    build_hash,
    client_payload,
    login_payload,
    platform_type,
    registration_payload,
)
from actors.connection.proto import wa_pb2
from stores.creds import init_auth_creds

P = wa_pb2.ClientPayload


def _common(payload: wa_pb2.ClientPayload, country: str = "US") -> None:
    assert payload.connectType == P.ConnectType.WIFI_UNKNOWN
    assert payload.connectReason == P.ConnectReason.USER_ACTIVATED
    ua = payload.userAgent
    assert ua.platform == P.UserAgent.Platform.WEB
    assert ua.releaseChannel == P.UserAgent.ReleaseChannel.RELEASE
    assert ua.HasField("releaseChannel"), "RELEASE (0) is written explicitly, as Baileys does"
    assert (ua.osVersion, ua.device, ua.osBuildNumber) == ("0.1", "Desktop", "0.1")
    assert (ua.localeLanguageIso6391, ua.mcc, ua.mnc) == ("en", "000", "000")
    assert ua.localeCountryIso31661Alpha2 == country
    assert payload.webInfo.HasField("webSubPlatform")


def test_default_version_is_baileys_v7s() -> None:
    """The announced web version defaults to 2.3000.1035194821."""
    assert DEFAULT_VERSION == (2, 3000, 1035194821)
    payload = login_payload("1:1@s.whatsapp.net", ClientIdentity())
    version = payload.userAgent.appVersion
    assert (version.primary, version.secondary, version.tertiary) == DEFAULT_VERSION


def test_login_payload_fields() -> None:
    """Login: username and device from me.id, passive, pull, lidDbMigrated false."""
    payload = login_payload("15550001111:7@s.whatsapp.net", ClientIdentity())
    _common(payload)
    assert (payload.username, payload.device) == (15550001111, 7)
    assert payload.passive and payload.pull
    assert payload.HasField("lidDbMigrated") and not payload.lidDbMigrated
    assert not payload.HasField("devicePairingData")
    assert not payload.HasField("pushName")


def test_login_without_device_leaves_device_out() -> None:
    """A me.id without a device part sends no device field (Baileys' jidDecode gives undefined)."""
    payload = login_payload("15550001111@s.whatsapp.net", ClientIdentity())
    assert not payload.HasField("device")


@pytest.mark.parametrize("me_id", ["nojid", "abc:1@s.whatsapp.net", "1:x@s.whatsapp.net"])
def test_login_with_unusable_me_id_is_a_local_error(me_id: str) -> None:
    """A me.id that is not a numeric-user JID cannot log in: LocalProtocolError naming it."""
    with pytest.raises(LocalProtocolError, match=r"me\.id"):
        login_payload(me_id, ClientIdentity())


def test_registration_payload_carries_the_pairing_data() -> None:
    """Registration: passive/pull false and devicePairingData from the creds."""
    creds = init_auth_creds()
    payload = registration_payload(creds, ClientIdentity())
    _common(payload)
    assert payload.HasField("passive") and not payload.passive
    assert payload.HasField("pull") and not payload.pull
    assert not payload.HasField("username")
    data = payload.devicePairingData
    assert data.buildHash == hashlib.md5(b"2.3000.1035194821").digest()
    assert data.eRegid == creds.registration_id.to_bytes(4, "big")
    assert data.eKeytype == b"\x05"
    assert data.eIdent == creds.signed_identity_key.public
    assert data.eSkeyId == creds.signed_pre_key.key_id.to_bytes(3, "big")
    assert data.eSkeyVal == creds.signed_pre_key.key_pair.public
    assert data.eSkeySig == creds.signed_pre_key.signature
    props = wa_pb2.DeviceProps.FromString(data.deviceProps)
    assert props.os == "Mac OS"
    assert props.platformType == wa_pb2.DeviceProps.PlatformType.CHROME
    assert props.requireFullSync
    assert (props.version.primary, props.version.secondary, props.version.tertiary) == (10, 15, 7)
    assert props.historySyncConfig.storageQuotaMb == 10240


def test_build_hash_is_md5_of_the_dotted_version() -> None:
    """buildHash = md5("a.b.c") of the configured version."""
    assert build_hash((2, 2413, 51)) == hashlib.md5(b"2.2413.51").digest()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Chrome", 1),
        ("Firefox", 2),
        ("firefox", 2),
        ("Safari", 5),
        ("Edge", 6),
        ("Desktop", 7),
        ("Opera", 4),
        ("IE", 3),
        ("Lynx", 1),
        ("", 1),
    ],
)
def test_browser_name_picks_the_platform_type(name: str, expected: int) -> None:
    """DeviceProps.platformType is the browser name upper-cased; unknown names are CHROME."""
    assert platform_type(name) == expected


def test_desktop_browser_with_full_sync_uses_the_native_sub_platform() -> None:
    """Windows/Mac "Desktop" with full history sync: WIN32/DARWIN; otherwise WEB_BROWSER."""
    windows = ClientIdentity(browser=Browser("Windows", "Desktop", "10"))
    mac = ClientIdentity(browser=Browser("Mac OS", "Desktop", "14"))
    no_sync = ClientIdentity(browser=Browser("Windows", "Desktop", "10"), sync_full_history=False)
    sub = P.WebInfo.WebSubPlatform
    assert login_payload("1@s.whatsapp.net", windows).webInfo.webSubPlatform == sub.WIN32
    assert login_payload("1@s.whatsapp.net", mac).webInfo.webSubPlatform == sub.DARWIN
    assert login_payload("1@s.whatsapp.net", no_sync).webInfo.webSubPlatform == sub.WEB_BROWSER


def test_push_name_and_country_are_configurable() -> None:
    """pushName is sent when set; the country goes in localeCountryIso31661Alpha2."""
    identity = ClientIdentity(push_name="bot", country="BR")
    payload = login_payload("1@s.whatsapp.net", identity)
    _common(payload, country="BR")
    assert payload.pushName == "bot"


def test_client_payload_logs_in_with_me_and_registers_without() -> None:
    """client_payload chooses login when creds.me has an id, registration otherwise."""
    creds = init_auth_creds()
    registration = P.FromString(client_payload(creds, ClientIdentity()))
    assert registration.HasField("devicePairingData")
    creds.me = {"id": "15550001111:2@s.whatsapp.net"}
    login = P.FromString(client_payload(creds, ClientIdentity()))
    assert (login.username, login.device, login.passive) == (15550001111, 2, True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"version": (2, 3000)},
        {"version": (2, -1, 3)},
        {"version": (2, True, 3)},
        {"browser": Browser("", "Chrome")},
        {"browser": Browser("Mac OS", "")},
    ],
)
def test_invalid_identity_fails_at_construction(kwargs: dict[str, object]) -> None:
    """A malformed version or empty browser names raise LocalProtocolError naming the field."""
    with pytest.raises(LocalProtocolError, match="ClientIdentity"):
        ClientIdentity(**kwargs)  # type: ignore[arg-type]  # deliberately bad values
