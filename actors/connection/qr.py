"""The pairing QR string (Baileys v7 link format): build it, and parse it as a phone does.

Facts (PROTOCOL.md "Pairing", Baileys ``lib/Utils/companion-reg-client-utils.js``)::

    https://wa.me/settings/linked_devices#<ref>,<b64 noise pub>,<b64 identity pub>,
        <adv secret>,<platform id>        (one line, no spaces)

The adv secret is creds.advSecretKey as stored (already base64). The platform
id is the companion web client type: Chrome 1, Edge 2, Firefox 3, IE 4, Opera 5,
Safari 6, any "Desktop" browser 7 (8 when the OS is Windows), anything else 9.
Baileys v6 and earlier wrote just ``ref,noise,identity,adv``; :func:`parse_qr`
reads both forms.

The QR carries the adv secret: whoever sees it can pair the device. Pure, no
I/O. Since 0.1.0.
"""

from __future__ import annotations

import base64
import binascii
import enum
from dataclasses import dataclass, field

from actors.connection.errors import ProtocolError
from actors.connection.payload import Browser

#: What a v7 QR string starts with.
QR_PREFIX = "https://wa.me/settings/linked_devices#"
#: How long the first QR of a pair-device lives, then each later one (seconds).
FIRST_QR_TTL = 60.0
NEXT_QR_TTL = 20.0


class CompanionPlatform(enum.IntEnum):
    """Baileys' ``CompanionWebClientType``: the last field of a v7 QR."""

    UNKNOWN = 0
    CHROME = 1
    EDGE = 2
    FIREFOX = 3
    IE = 4
    OPERA = 5
    SAFARI = 6
    ELECTRON = 7
    UWP = 8
    OTHER_WEB_CLIENT = 9


_BY_BROWSER = {
    "Chrome": CompanionPlatform.CHROME,
    "Edge": CompanionPlatform.EDGE,
    "Firefox": CompanionPlatform.FIREFOX,
    "IE": CompanionPlatform.IE,
    "Opera": CompanionPlatform.OPERA,
    "Safari": CompanionPlatform.SAFARI,
}


class QrError(ProtocolError, ValueError):
    """The text is not a pairing QR string; the message says which part is wrong."""


def companion_platform(browser: Browser) -> CompanionPlatform:
    """The platform id a QR announces for ``browser`` (Baileys' getCompanionWebClientType)."""
    if browser.name == "Desktop":
        return CompanionPlatform.UWP if browser.os == "Windows" else CompanionPlatform.ELECTRON
    return _BY_BROWSER.get(browser.name, CompanionPlatform.OTHER_WEB_CLIENT)


@dataclass(frozen=True, repr=False)
class QrData:
    """What a QR carries. ``platform`` is None for a v6-style QR without one."""

    ref: str
    noise_public: bytes
    identity_public: bytes
    adv_secret_key: str = field(repr=False)
    platform: int | None = None

    def __repr__(self) -> str:
        # The adv secret lets anyone pair this device: never in a repr.
        return f"QrData(ref={self.ref[:8]!r}…, platform={self.platform})"

    def to_string(self) -> str:
        """The QR string (v7 form when ``platform`` is set, else the v6 form)."""
        parts = [
            self.ref,
            base64.b64encode(self.noise_public).decode("ascii"),
            base64.b64encode(self.identity_public).decode("ascii"),
            self.adv_secret_key,
        ]
        if self.platform is None:
            return ",".join(parts)
        return QR_PREFIX + ",".join([*parts, str(self.platform)])


def build_qr(
    ref: str, noise_public: bytes, identity_public: bytes, adv_secret_key: str, browser: Browser
) -> str:
    """The v7 QR string for one pair-device ``ref``."""
    return QrData(
        ref=ref,
        noise_public=noise_public,
        identity_public=identity_public,
        adv_secret_key=adv_secret_key,
        platform=int(companion_platform(browser)),
    ).to_string()


def parse_qr(text: str) -> QrData:
    """Parse a QR string (v7 link form, or v6 ``ref,noise,identity,adv``).

    Checks what a phone needs: a non-empty ref, 32-byte keys, an adv secret that
    is base64 of 32 bytes, a decimal platform id. Raises :class:`QrError` otherwise.
    """
    if not isinstance(text, str):
        raise QrError(f"QR: expected a string, got {type(text).__name__}")
    body = text[len(QR_PREFIX) :] if text.startswith(QR_PREFIX) else text
    parts = body.split(",")
    v7 = text.startswith(QR_PREFIX)
    expected = 5 if v7 else 4
    if len(parts) != expected:
        raise QrError(
            f"QR: expected {expected} comma-separated fields"
            f"{' after the link prefix' if v7 else ''}, got {len(parts)}"
        )
    ref, noise_b64, identity_b64, adv = parts[:4]
    if not ref:
        raise QrError("QR field 1 (ref): empty")
    noise = _key(noise_b64, 2, "noise key")
    identity = _key(identity_b64, 3, "identity key")
    _key(adv, 4, "adv secret")
    platform: int | None = None
    if v7:
        if not parts[4].isdecimal() or len(parts[4]) > 3:
            raise QrError(f"QR field 5 (platform id): expected a small decimal, got {parts[4]!r}")
        platform = int(parts[4])
    return QrData(
        ref=ref,
        noise_public=noise,
        identity_public=identity,
        adv_secret_key=adv,
        platform=platform,
    )


def _key(text: str, position: int, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise QrError(f"QR field {position} ({what}): not base64") from exc
    if len(raw) != 32:
        raise QrError(f"QR field {position} ({what}): expected 32 bytes, got {len(raw)}")
    return raw


__all__ = [
    "FIRST_QR_TTL",
    "NEXT_QR_TTL",
    "QR_PREFIX",
    "CompanionPlatform",
    "QrData",
    "QrError",
    "build_qr",
    "companion_platform",
    "parse_qr",
]
