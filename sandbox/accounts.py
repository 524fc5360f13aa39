"""The sandbox server's registry: accounts (phones), their linked devices, uploaded keys.

What the real server keeps about a linked device, and only that: its JIDs, its
Noise static key (to recognise its logins), its Signal identity and registration
id, the signed pre-key and the one-time pre-keys it uploaded (the pre-key count
is how many of those the server holds), and its ADV key index. Many accounts
live side by side; JIDs route every lookup.

Pure state, no I/O. Since 0.1.0.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field

from actors.connection.binary import LID, S_WHATSAPP_NET, Jid
from actors.connection.binary.errors import JidError
from sandbox.errors import InvalidAccountError, UnknownTargetError

#: First phone number handed out to a new account (a fictitious range).
FIRST_PHONE_NUMBER = 15550100000
#: First LID user handed out (LIDs are opaque numbers unrelated to the phone number).
FIRST_LID_USER = 200000000000001


@dataclass(frozen=True)
class SignedPreKey:
    """A device's signed pre-key as uploaded: id, public key (32 bytes), signature."""

    key_id: int
    public: bytes = field(repr=False)
    signature: bytes = field(repr=False)


@dataclass(frozen=True)
class KeyBundleDigest:
    """What ``iq xmlns=encrypt type=get > digest`` answers about a device's key bundle.

    ``hash`` is SHA-1 over identity || signed pre-key || its signature || every
    listed pre-key's public key in list order (the sandbox's definition, modelled
    on WhatsApp Web's key-bundle check: a client can recompute it from its store).
    """

    registration_id: int
    identity: bytes = field(repr=False)
    signed_pre_key: SignedPreKey
    pre_key_ids: tuple[int, ...]
    hash: bytes = field(repr=False)


@dataclass(eq=False)
class Device:
    """A linked device as the server knows it (mutable server state)."""

    user: str
    device_id: int
    lid_user: str
    noise_key: bytes = field(repr=False)
    identity_key: bytes = field(repr=False)
    registration_id: int
    key_index: int
    platform: str
    signed_pre_key: SignedPreKey | None = None
    pre_keys: dict[int, bytes] = field(default_factory=dict, repr=False)
    #: True once the device's pair-device-sign was verified.
    paired: bool = False
    #: When set, logins of this device get ``failure reason=<this>``.
    refused_login: int | None = None
    #: The routing info last sent to the device in ``edge_routing``.
    routing_info: bytes | None = field(default=None, repr=False)

    @property
    def jid(self) -> str:
        """``user:device@s.whatsapp.net``."""
        return str(Jid(self.user, S_WHATSAPP_NET, self.device_id))

    @property
    def lid(self) -> str:
        """``lid_user:device@lid``."""
        return str(Jid(self.lid_user, LID, self.device_id))

    @property
    def pre_key_count(self) -> int:
        """How many one-time pre-keys the server holds for this device."""
        return len(self.pre_keys)

    def store_pre_keys(self, keys: dict[int, bytes], signed: SignedPreKey) -> None:
        """Keep an upload: new one-time keys are added, the signed pre-key replaced."""
        self.pre_keys.update(keys)
        self.signed_pre_key = signed

    def take_pre_key(self) -> tuple[int, bytes] | None:
        """Hand out (and forget) the lowest-numbered one-time pre-key, as a fetch does."""
        if not self.pre_keys:
            return None
        key_id = min(self.pre_keys)
        return key_id, self.pre_keys.pop(key_id)

    def digest(self) -> KeyBundleDigest | None:
        """The key-bundle digest, or None before the device uploaded a signed pre-key."""
        signed = self.signed_pre_key
        if signed is None:
            return None
        ids = tuple(sorted(self.pre_keys))
        return KeyBundleDigest(
            registration_id=self.registration_id,
            identity=self.identity_key,
            signed_pre_key=signed,
            pre_key_ids=ids,
            hash=bundle_hash(self.identity_key, signed, [self.pre_keys[i] for i in ids]),
        )


def bundle_hash(identity: bytes, signed: SignedPreKey, pre_key_publics: list[bytes]) -> bytes:
    """SHA-1 of identity, signed pre-key, its signature, then each pre-key, in order."""
    sha = hashlib.sha1(usedforsecurity=False)
    for part in (identity, signed.public, signed.signature, *pre_key_publics):
        sha.update(part)
    return sha.digest()


@dataclass(eq=False)
class Account:
    """A WhatsApp account: the phone's number, LID, identity key, and its linked devices."""

    user: str
    lid_user: str
    identity_public: bytes = field(repr=False)
    biz_name: str | None = None
    devices: dict[int, Device] = field(default_factory=dict)
    next_device_id: int = 1
    next_key_index: int = 1
    #: The name its messages carry (``notify``); since 0.2.0.
    push_name: str | None = None

    @property
    def jid(self) -> str:
        """``user@s.whatsapp.net``. Since 0.2.0."""
        return str(Jid(self.user, S_WHATSAPP_NET))

    @property
    def lid(self) -> str:
        """``lid_user@lid``. Since 0.2.0."""
        return str(Jid(self.lid_user, LID))

    def listed_devices(self) -> list[Device]:
        """The devices usync lists and messages reach, by id. Since 0.2.0.

        The phone (device 0) when it holds Signal keys in the sandbox (a simulated
        contact's does; a bot account's phone only scans QR codes and does not),
        then every paired companion device.
        """
        found = []
        for device_id in sorted(self.devices):
            device = self.devices[device_id]
            if device_id == 0 and device.signed_pre_key is not None:
                found.append(device)
            elif device_id != 0 and device.paired:
                found.append(device)
        return found


class Registry:
    """Every account and device of the sandbox, looked up by JID."""

    def __init__(self) -> None:
        self._accounts: dict[str, Account] = {}
        self._numbers = itertools.count(FIRST_PHONE_NUMBER)
        self._lids = itertools.count(FIRST_LID_USER)

    def __repr__(self) -> str:
        return f"Registry(accounts={len(self._accounts)}, devices={self.device_count})"

    @property
    def device_count(self) -> int:
        """How many devices are known (paired or waiting for their signature)."""
        return sum(len(a.devices) for a in self._accounts.values())

    def accounts(self) -> list[Account]:
        """Every account, oldest first."""
        return list(self._accounts.values())

    def new_account(
        self, identity_public: bytes, *, user: str | None = None, biz_name: str | None = None
    ) -> Account:
        """Register a phone: a fresh number (unless ``user`` is given) and LID user."""
        number = user if user is not None else str(next(self._numbers))
        if not number.isdigit():
            raise InvalidAccountError(f"account user must be decimal digits, got {number!r}")
        if number in self._accounts:
            raise InvalidAccountError(f"account {number} already exists")
        account = Account(
            user=number,
            lid_user=str(next(self._lids)),
            identity_public=identity_public,
            biz_name=biz_name,
        )
        self._accounts[number] = account
        return account

    def account(self, user: str) -> Account:
        """The account of phone number ``user``; UnknownTargetError if none."""
        found = self._accounts.get(user)
        if found is None:
            raise UnknownTargetError(f"no account {user!r} in the sandbox")
        return found

    def reserve_device(self, user: str) -> tuple[int, int]:
        """A new device id and ADV key index for the account ``user``."""
        account = self.account(user)
        device_id, key_index = account.next_device_id, account.next_key_index
        account.next_device_id += 1
        account.next_key_index += 1
        return device_id, key_index

    def add_device(self, device: Device) -> None:
        """Record a device (still unpaired until its signature is checked)."""
        account = self.account(device.user)
        account.devices[device.device_id] = device

    def remove_device(self, user: str, device_id: int) -> None:
        """Forget a device (a failed link, or an unlink from the phone)."""
        self.account(user).devices.pop(device_id, None)

    def device(self, user: str, device_id: int) -> Device | None:
        """The device ``user:device_id``, or None."""
        account = self._accounts.get(user)
        return None if account is None else account.devices.get(device_id)

    def account_of(self, jid: str) -> Account:
        """The account of a user or device JID (phone-number or LID form); UnknownTargetError.

        Since 0.2.0.
        """
        try:
            parsed = Jid.parse(jid)
        except JidError as exc:
            raise UnknownTargetError(f"not a JID: {jid!r}") from exc
        if parsed.server == S_WHATSAPP_NET:
            found = self._accounts.get(parsed.user)
            if found is not None:
                return found
        elif parsed.server == LID:
            for account in self._accounts.values():
                if account.lid_user == parsed.user:
                    return account
        raise UnknownTargetError(f"no account {jid!r} in the sandbox")

    def find(self, jid: str) -> Device:
        """The device of ``jid`` (phone-number or LID form); UnknownTargetError if none."""
        parsed = Jid.parse(jid)
        for account in self._accounts.values():
            user = account.user if parsed.server == S_WHATSAPP_NET else account.lid_user
            if user == parsed.user and parsed.server in (S_WHATSAPP_NET, LID):
                found = account.devices.get(parsed.device or 0)
                if found is not None:
                    return found
        raise UnknownTargetError(f"no device {jid!r} in the sandbox")
