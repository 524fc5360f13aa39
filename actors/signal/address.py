"""Signal addresses and sender-key names from JIDs, as Baileys v7 forms them.

``<user>.<device>`` for a phone-number JID, ``<user>_<domain type>.<device>``
otherwise (LID 1, hosted 128, hosted LID 129); device 0 when absent. Device 99
belongs to hosted accounts only. Sender-key names: ``<group>::<user>::<device>``
with the user as in the address. These strings name the stored records and are
the transaction lock keys.

A phone-number address has a LID twin when a ``lid-mapping`` entry exists
(``<pn user>`` → ``<lid user>``); :func:`lid_address_for` builds it, so one contact
has one session whichever form a stanza uses.

Since 0.2.0.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.connection.binary.errors import JidError
from actors.connection.binary.jid import HOSTED, HOSTED_LID, Domain, Jid
from actors.signal.errors import InvalidAddress

HOSTED_DEVICE = 99


@dataclass(frozen=True, slots=True)
class SignalAddress:
    """A Signal protocol address: ``name`` (user, with its domain suffix) and ``device``."""

    name: str
    device: int

    def __str__(self) -> str:
        return f"{self.name}.{self.device}"

    @property
    def user(self) -> str:
        """The JID user, without the domain suffix."""
        return self.name.partition("_")[0]

    @property
    def domain_type(self) -> int:
        _, _, suffix = self.name.partition("_")
        return int(suffix) if suffix else int(Domain.WHATSAPP)


def signal_address(jid: str) -> SignalAddress:
    """The Signal address of ``jid`` (Baileys' ``jidToSignalProtocolAddress``)."""
    parsed = _parse(jid)
    if not parsed.user:
        raise InvalidAddress(jid, "the JID has no user")
    domain = parsed.domain_type
    device = parsed.device or 0
    if device == HOSTED_DEVICE and parsed.server not in (HOSTED, HOSTED_LID):
        raise InvalidAddress(jid, "device 99 is only valid on a hosted JID")
    name = parsed.user if domain == Domain.WHATSAPP else f"{parsed.user}_{domain}"
    return SignalAddress(name, device)


def jid_to_signal_address(jid: str) -> str:
    """``"user.device"``, ``"user_1.device"`` for a LID, and so on."""
    return str(signal_address(jid))


def sender_key_name(group: str, author_jid: str) -> str:
    """The name of an author's sender-key record in a group: ``group::user::device``."""
    if not group:
        raise InvalidAddress(group, "a group JID is required")
    address = signal_address(author_jid)
    return f"{group}::{address.name}::{address.device}"


def is_pn_address(address: SignalAddress) -> bool:
    """A phone-number address (plain or hosted), the kind a LID mapping replaces."""
    return address.domain_type in (Domain.WHATSAPP, Domain.HOSTED)


def lid_address_for(address: SignalAddress, lid_user: str) -> SignalAddress:
    """The LID twin of a phone-number address, the device kept (Baileys' getLIDForPN)."""
    domain = Domain.HOSTED_LID if address.domain_type == Domain.HOSTED else Domain.LID
    return SignalAddress(f"{lid_user}_{int(domain)}", address.device)


def _parse(jid: str) -> Jid:
    if not isinstance(jid, str):
        raise InvalidAddress(repr(jid), "a JID must be a string")
    try:
        return Jid.parse(jid)
    except JidError as exc:
        raise InvalidAddress(jid, str(exc)) from exc
