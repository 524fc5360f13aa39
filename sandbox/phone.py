"""The simulated phone: an account with its own identity key that scans QR strings.

A QR string reaches the phone the way it reaches a person: as text shown by the
client (``https://wa.me/settings/linked_devices#ref,noise,identity,adv,platform``).
Only the phone and the client ever hold the adv secret; the server receives the
HMAC'd, signed device identity the phone builds from it (:mod:`sandbox.adv`).

A pairing code reaches it the same way (``phone.link_code("ABCD-EFGH")``): the
phone takes up its number's newest code request, sends its own hello wrapped under
the code, opens the companion's key bundle and derives the adv secret from it
(:mod:`actors.connection.pairing_code`), then links the device exactly as a scan.

Since 0.1.0.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass, field
from typing import Protocol

import trio

from actors.connection.errors import RemoteProtocolError
from actors.connection.pairing_code import (
    KeyBundleError,
    PairingCodeError,
    adv_secret,
    normalize_code,
    open_key_bundle,
    unwrap_public_key,
    wrap_public_key,
)
from sandbox import adv
from sandbox.core import Linked, LinkFailed, Output, ScanTicket, ServerCore
from sandbox.errors import InvalidCodeError, InvalidQRError, PairingFailedError
from sandbox.link_code import CodeFinished, CodeTicket
from stores.creds import KeyPair
from stores.keys import generate_key_pair, shared_secret

LinkOutcome = Linked | LinkFailed | CodeFinished
"""What a phone waiting on a link hears: the link's end, or the companion's key bundle."""

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

    def expect_link(self, ref: str) -> trio.MemoryReceiveChannel[LinkOutcome]:
        """A channel that receives the next step of the link started with ``ref``."""


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
        return await self._link(ticket, scanned.identity_key, scanned.adv_secret)

    async def link_code(self, code: str) -> LinkedDevice:
        """Type the pairing ``code`` a device of this account's number shows; return once linked.

        InvalidCodeError for text that is not a code, ScanRejectedError when no device
        of this number waits for one, PairingFailedError when the code is wrong (the
        device's key bundle does not open) or the device's connection ends first.
        Unbounded like :meth:`scan`.
        """
        try:
            typed = normalize_code(code)
        except PairingCodeError as exc:
            raise InvalidCodeError(str(exc)) from exc
        core = self._host.core
        ticket = core.begin_code_link(user=self.user, now=self._host.now())
        ephemeral = generate_key_pair()
        wrapped = wrap_public_key(typed, ephemeral.public)
        finished = await self._await(
            ticket.ref,
            core.code_primary_hello(ticket, self._account_key.public, wrapped),
        )
        if not isinstance(finished, CodeFinished):
            raise PairingFailedError(
                f"link of code request {ticket.ref!r} failed: {_why(finished)}"
            )
        secret = self._open_bundle(ticket, typed, ephemeral, finished)
        scan_ticket = core.code_scan_ticket(ticket)
        return await self._link(scan_ticket, finished.companion_identity, secret)

    def _open_bundle(
        self, ticket: CodeTicket, code: str, ephemeral: KeyPair, finished: CodeFinished
    ) -> bytes:
        """The adv secret from the companion's key bundle; PairingFailedError if it is wrong."""
        try:
            companion = unwrap_public_key(code, ticket.wrapped_companion_ephemeral, "companion key")
            shared = shared_secret(ephemeral.private, companion)
            bundle = open_key_bundle(shared, finished.key_bundle)
        except (KeyBundleError, RemoteProtocolError, ValueError) as exc:
            why = f"the device's key bundle does not open: wrong code ({exc})"
            self._host.dispatch(self._host.core.fail_code(ticket, why))
            raise PairingFailedError(why) from exc
        if bundle.primary_identity != self._account_key.public:
            why = "the device's key bundle names another account's identity"
        elif bundle.companion_identity != finished.companion_identity:
            why = "the device's key bundle names another identity than it announced"
        else:
            identity_shared = shared_secret(self._account_key.private, bundle.companion_identity)
            return adv_secret(shared, identity_shared, bundle.random)
        self._host.dispatch(self._host.core.fail_code(ticket, why))
        raise PairingFailedError(why)

    async def _link(self, ticket: ScanTicket, identity_key: bytes, secret: bytes) -> LinkedDevice:
        """Hand the server the signed, HMAC'd identity; wait until the device signed it."""
        identity = build_device_identity(
            self._account_key,
            key_index=ticket.key_index,
            device_identity_key=identity_key,
            adv_secret=secret,
            timestamp=int(self._host.wall_time()),
        )
        outputs = self._host.core.complete_scan(ticket, identity, self._host.now())
        result = await self._await(ticket.ref, outputs)
        if not isinstance(result, Linked):
            raise PairingFailedError(f"link of ref {ticket.ref!r} failed: {_why(result)}")
        return LinkedDevice(jid=result.jid, lid=result.lid, ref=result.ref)

    async def _await(self, ref: str, outputs: list[Output]) -> LinkOutcome:
        """Dispatch ``outputs`` and wait for the next step of the link ``ref``."""
        outcome = self._host.expect_link(ref)
        self._host.dispatch(outputs)
        with outcome:
            return await outcome.receive()


def _why(result: LinkOutcome) -> str:
    return result.reason if isinstance(result, LinkFailed) else type(result).__name__
