"""ClientPayload builders: what the client says about itself in ClientFinish.

Facts (PROTOCOL.md "Login and registration", Baileys ``lib/Utils/validate-connection.js``):

- every payload: connectType WIFI_UNKNOWN, connectReason USER_ACTIVATED,
  userAgent{platform WEB, appVersion, releaseChannel RELEASE, osVersion '0.1',
  device 'Desktop', osBuildNumber '0.1', localeLanguageIso6391 'en', mnc/mcc
  '000', localeCountryIso31661Alpha2 = country}, webInfo{webSubPlatform}, and
  pushName when configured;
- login (creds carry ``me``): username = the numeric user of ``me.id``, device,
  passive true, pull true, lidDbMigrated false;
- registration (new device): passive false, pull false, devicePairingData with
  buildHash = md5 of the dotted version string, deviceProps (an encoded
  DeviceProps naming the OS and the browser as a platform type), the
  registration id (4 bytes BE), key type 05, identity public key, signed pre-key
  id (3 bytes BE), its public key and signature.

Pure functions, no I/O; the same creds and identity give the same bytes as
Baileys' ``generateLoginNode`` / ``generateRegistrationNode`` encoded with
``proto.ClientPayload.encode``. Since 0.1.0.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from actors.connection.binary import Jid, JidError
from actors.connection.errors import LocalProtocolError
from actors.connection.proto import wa_pb2
from stores.creds import AuthCreds
from stores.keys import KEY_BUNDLE_TYPE

#: The WhatsApp Web version Baileys 7.0.0-rc13 announces.
DEFAULT_VERSION: tuple[int, int, int] = (2, 3000, 1035194821)

_Payload = wa_pb2.ClientPayload
_DevicePlatform = wa_pb2.DeviceProps.PlatformType

#: Web sub-platform for a "Desktop" browser whose OS has a native client
#: (used only with full history sync, as Baileys does).
_DESKTOP_SUB_PLATFORM = {
    "Mac OS": _Payload.WebInfo.WebSubPlatform.DARWIN,
    "Windows": _Payload.WebInfo.WebSubPlatform.WIN32,
}

#: The companion version Baileys puts in DeviceProps (not the web version).
_COMPANION_VERSION = (10, 15, 7)


@dataclass(frozen=True)
class Browser:
    """How the linked device names itself: OS, browser name and OS version.

    Baileys' ``browser`` tuple; the default is its ``Browsers.macOS('Chrome')``.
    The browser name picks DeviceProps' platform type and the QR's platform id.
    """

    os: str = "Mac OS"
    name: str = "Chrome"
    os_version: str = "14.4.1"


@dataclass(frozen=True)
class ClientIdentity:
    """The client identity knobs of a payload (Baileys' socket config fields).

    ``version`` is the WhatsApp Web version (three non-negative integers);
    ``country`` the ISO 3166 alpha-2 code; ``sync_full_history`` asks the phone
    for the full history (Baileys' default true); ``push_name`` is sent when set.
    """

    version: tuple[int, int, int] = DEFAULT_VERSION
    browser: Browser = Browser()
    country: str = "US"
    sync_full_history: bool = True
    push_name: str | None = None

    def __post_init__(self) -> None:
        if len(self.version) != 3 or any(
            isinstance(part, bool) or not isinstance(part, int) or not 0 <= part < 1 << 32
            for part in self.version
        ):
            raise LocalProtocolError(
                "ClientIdentity.version: expected three integers in 0..2^32-1,"
                f" got {self.version!r}"
            )
        for name in ("os", "name"):
            if not getattr(self.browser, name):
                raise LocalProtocolError(f"ClientIdentity.browser.{name}: must not be empty")


def version_string(version: tuple[int, int, int]) -> str:
    """The dotted version, e.g. ``2.3000.1035194821``."""
    return ".".join(str(part) for part in version)


def build_hash(version: tuple[int, int, int]) -> bytes:
    """devicePairingData.buildHash: md5 of the dotted version string (16 bytes)."""
    return hashlib.md5(version_string(version).encode("ascii"), usedforsecurity=False).digest()


def platform_type(browser_name: str) -> int:
    """DeviceProps.PlatformType for a browser name (case-insensitive); CHROME if unknown."""
    try:
        return int(_DevicePlatform.Value(browser_name.upper()))
    except ValueError:
        return int(_DevicePlatform.CHROME)


def device_props(identity: ClientIdentity) -> bytes:
    """The encoded DeviceProps a registration carries."""
    config = wa_pb2.DeviceProps.HistorySyncConfig(
        storageQuotaMb=10240,
        inlineInitialPayloadInE2EeMsg=True,
        supportCallLogHistory=False,
        supportBotUserAgentChatHistory=True,
        supportCagReactionsAndPolls=True,
        supportBizHostedMsg=True,
        supportRecentSyncChunkMessageCountTuning=True,
        supportHostedGroupMsg=True,
        supportFbidBotChatHistory=True,
        supportMessageAssociation=True,
        supportGroupHistory=False,
    )
    primary, secondary, tertiary = _COMPANION_VERSION
    props = wa_pb2.DeviceProps(
        os=identity.browser.os,
        platformType=platform_type(identity.browser.name),  # type: ignore[arg-type]  # enum values are ints
        requireFullSync=identity.sync_full_history,
        historySyncConfig=config,
        version=wa_pb2.DeviceProps.AppVersion(
            primary=primary, secondary=secondary, tertiary=tertiary
        ),
    )
    return bytes(props.SerializeToString())


def _base_payload(identity: ClientIdentity) -> wa_pb2.ClientPayload:
    primary, secondary, tertiary = identity.version
    sub_platform = _Payload.WebInfo.WebSubPlatform.WEB_BROWSER
    browser = identity.browser
    if identity.sync_full_history and browser.name == "Desktop":
        sub_platform = _DESKTOP_SUB_PLATFORM.get(browser.os, sub_platform)
    payload = wa_pb2.ClientPayload(
        connectType=_Payload.ConnectType.WIFI_UNKNOWN,
        connectReason=_Payload.ConnectReason.USER_ACTIVATED,
        userAgent=_Payload.UserAgent(
            appVersion=_Payload.UserAgent.AppVersion(
                primary=primary, secondary=secondary, tertiary=tertiary
            ),
            platform=_Payload.UserAgent.Platform.WEB,
            releaseChannel=_Payload.UserAgent.ReleaseChannel.RELEASE,
            osVersion="0.1",
            device="Desktop",
            osBuildNumber="0.1",
            localeLanguageIso6391="en",
            mnc="000",
            mcc="000",
            localeCountryIso31661Alpha2=identity.country,
        ),
        webInfo=_Payload.WebInfo(webSubPlatform=sub_platform),
    )
    if identity.push_name:
        payload.pushName = identity.push_name
    return payload


def login_payload(me_id: str, identity: ClientIdentity) -> wa_pb2.ClientPayload:
    """The login ClientPayload for the paired device ``me_id`` (``user:device@server``).

    Raises LocalProtocolError when ``me_id`` is not a JID with a numeric user
    (the creds would be unusable for login; that is a bug or corrupt creds).
    """
    try:
        jid = Jid.parse(me_id)
    except JidError as exc:
        raise LocalProtocolError(f"login payload: creds.me.id {me_id!r} is not a JID") from exc
    if not jid.user.isdigit() or not int(jid.user) < 1 << 64:
        raise LocalProtocolError(f"login payload: creds.me.id {me_id!r} has no numeric user")
    payload = _base_payload(identity)
    payload.passive = True
    payload.pull = True
    payload.username = int(jid.user)
    if jid.device is not None:
        payload.device = jid.device
    payload.lidDbMigrated = False
    return payload


def registration_payload(creds: AuthCreds, identity: ClientIdentity) -> wa_pb2.ClientPayload:
    """The registration ClientPayload of a device that is not paired yet."""
    payload = _base_payload(identity)
    payload.passive = False
    payload.pull = False
    signed = creds.signed_pre_key
    payload.devicePairingData.CopyFrom(
        _Payload.DevicePairingRegistrationData(
            buildHash=build_hash(identity.version),
            deviceProps=device_props(identity),
            eRegid=creds.registration_id.to_bytes(4, "big"),
            eKeytype=KEY_BUNDLE_TYPE,
            eIdent=creds.signed_identity_key.public,
            eSkeyId=signed.key_id.to_bytes(3, "big"),
            eSkeyVal=signed.key_pair.public,
            eSkeySig=signed.signature,
        )
    )
    return payload


def client_payload(creds: AuthCreds, identity: ClientIdentity) -> bytes:
    """The encoded payload for ClientFinish: login when ``creds.me`` is set, else registration."""
    if creds.me is not None and creds.me.get("id"):
        message = login_payload(str(creds.me["id"]), identity)
    else:
        message = registration_payload(creds, identity)
    return bytes(message.SerializeToString())


__all__ = [
    "DEFAULT_VERSION",
    "Browser",
    "ClientIdentity",
    "build_hash",
    "client_payload",
    "device_props",
    "login_payload",
    "platform_type",
    "registration_payload",
    "version_string",
]
