"""The simulated phone: an account with its own identity key that scans QR strings.

A QR string reaches the phone the way it reaches a person: as text shown by the
client (``https://wa.me/settings/linked_devices#ref,noise,identity,adv,platform``).
Only the phone and the client ever hold the adv secret; the server receives the
HMAC'd, signed device identity the phone builds from it (:mod:`sandbox.adv`).

Since 0.1.0.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass, field
from typing import Protocol

import trio

from sandbox import adv
from sandbox.core import Linked, LinkFailed, Output, ServerCore
from sandbox.errors import InvalidQRError, PairingFailedError
from stores.creds import KeyPair

#: What every v7 (and v6) pairing QR starts with.
QR_PREFIX = "https://wa.me/settings/linked_devices#"


@dataclass(frozen=True)
class ScannedQR:
    """What the phone reads from a QR string."""

    ref: str
    noise_key: bytes = field(repr=False)
    identity_key: bytes = field(repr=False)
    adv_secret: bytes = field(repr=False)
    #: The companion platform id (v7); None for a v6 QR, which has none.
    platform_id: int | None


def parse_qr(qr: str) -> ScannedQR:
    """Read a pairing QR string; InvalidQRError naming the bad part otherwise."""
    text = qr.strip()
    if not text.startswith(QR_PREFIX):
        raise InvalidQRError("prefix", f"expected it to start with {QR_PREFIX!r}")
    parts = text[len(QR_PREFIX) :].split(",")
    if len(parts) not in (4, 5):
        raise InvalidQRError(
            "fields", f"expected 5 (v7) or 4 (v6) comma-separated, got {len(parts)}"
        )
    ref = parts[0]
    if not ref:
        raise InvalidQRError("ref", "empty")
    noise = _b64(parts[1], "noise key", 32)
    identity = _b64(parts[2], "identity key", 32)
    secret = _b64(parts[3], "adv secret", 32)
    platform: int | None = None
    if len(parts) == 5:
        if not parts[4].isdigit():
            raise InvalidQRError("platform id", f"expected a decimal number, got {parts[4]!r}")
        platform = int(parts[4])
    return ScannedQR(ref, noise, identity, secret, platform)


def _b64(text: str, part: str, size: int) -> bytes:
    try:
        value = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidQRError(part, f"not base64 ({exc})") from exc
    if len(value) != size:
        raise InvalidQRError(part, f"{len(value)} bytes, expected {size}")
    return value


def build_device_identity(
    account_key: KeyPair,
    *,
    key_index: int,
    device_identity_key: bytes,
    adv_secret: bytes,
    timestamp: int,
    raw_id: int | None = None,
) -> bytes:
    """The ADVSignedDeviceIdentityHMAC bytes the phone hands the server for ``pair-success``."""
    details = adv.DeviceIdentityDetails(
        raw_id=raw_id if raw_id is not None else secrets.randbits(32),
        timestamp=timestamp,
        key_index=key_index,
    )
    signed = adv.sign_device_identity(account_key, details, device_identity_key)
    return adv.hmac_device_identity(signed, adv_secret)


@dataclass(frozen=True)
class LinkedDevice:
    """A device the phone linked: its JIDs and the ref it scanned."""

    jid: str
    lid: str
    ref: str


class PhoneHost(Protocol):
    """What a phone needs from the running sandbox."""

    core: ServerCore

    def now(self) -> float:
        """The core's clock (trio time)."""

    def wall_time(self) -> float:
        """Unix time, for the identity's timestamp."""

    def dispatch(self, outputs: list[Output]) -> None:
        """Carry out the core's outputs."""

    def expect_link(self, ref: str) -> trio.MemoryReceiveChannel[Linked | LinkFailed]:
        """A channel that receives the outcome of the link started with ``ref``."""


class Phone:
    """One account's phone. ``await phone.scan(qr)`` links the device that showed ``qr``."""

    def __init__(self, host: PhoneHost, account_key: KeyPair, user: str) -> None:
        self._host = host
        self._account_key = account_key
        self.user = user

    def __repr__(self) -> str:
        return f"Phone(user={self.user!r})"

    @property
    def account_public_key(self) -> bytes:
        """The account identity public key (the ``accountSignatureKey`` devices get)."""
        return self._account_key.public

    @property
    def lid_user(self) -> str:
        """The account's LID user."""
        return self._host.core.registry.account(self.user).lid_user

    async def scan(self, qr: str) -> LinkedDevice:
        """Scan ``qr``; return once the client signed and the server paired it.

        InvalidQRError for an unreadable string, ScanRejectedError when the server
        refuses the ref, PairingFailedError when the client's signature is wrong or
        its connection ends first. A client that never answers keeps this waiting:
        bound it with ``trio.fail_after`` (the control channel does).
        """
        scanned = parse_qr(qr)
        core = self._host.core
        ticket = core.begin_scan(
            ref=scanned.ref,
            noise_key=scanned.noise_key,
            identity_key=scanned.identity_key,
            user=self.user,
            now=self._host.now(),
        )
        identity = build_device_identity(
            self._account_key,
            key_index=ticket.key_index,
            device_identity_key=scanned.identity_key,
            adv_secret=scanned.adv_secret,
            timestamp=int(self._host.wall_time()),
        )
        outputs = core.complete_scan(ticket, identity, self._host.now())
        outcome = self._host.expect_link(ticket.ref)
        self._host.dispatch(outputs)
        with outcome:
            result = await outcome.receive()
        if isinstance(result, LinkFailed):
            raise PairingFailedError(f"link of ref {result.ref!r} failed: {result.reason}")
        return LinkedDevice(jid=result.jid, lid=result.lid, ref=result.ref)
