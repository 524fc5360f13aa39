"""JIDs: ``user[_agent][:device]@server``, and how they map to the wire.

Text form and rules follow Baileys v7 (lib/WABinary/jid-utils.js): ``jidEncode``
leaves out a device or agent of 0, so ``Jid("1", "s.whatsapp.net", device=0)``
prints as ``1@s.whatsapp.net``. On the wire a JID with a device is an AD_JID
(domain type, device, user), the domain type standing for the server:
0 ``s.whatsapp.net``, 1 ``lid``, 128 ``hosted``, 129 ``hosted.lid``; any other
domain type is the agent of an ``s.whatsapp.net`` JID. A JID without a device is a
JID_PAIR (user, server).

Since 0.1.0.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from actors.connection.binary.errors import JidError

S_WHATSAPP_NET = "s.whatsapp.net"
LID = "lid"
HOSTED = "hosted"
HOSTED_LID = "hosted.lid"
C_US = "c.us"
G_US = "g.us"
BROADCAST = "broadcast"
NEWSLETTER = "newsletter"
#: The server itself, the ``to`` of most iqs (Baileys' ``S_WHATSAPP_NET``).
SERVER_JID = "@" + S_WHATSAPP_NET


class Domain(enum.IntEnum):
    """AD_JID domain types (Baileys' ``WAJIDDomains``)."""

    WHATSAPP = 0
    LID = 1
    HOSTED = 128
    HOSTED_LID = 129


_SERVER_OF_DOMAIN: dict[int, str] = {
    int(Domain.WHATSAPP): S_WHATSAPP_NET,
    int(Domain.LID): LID,
    int(Domain.HOSTED): HOSTED,
    int(Domain.HOSTED_LID): HOSTED_LID,
}
_DOMAIN_OF_SERVER: dict[str, int] = {server: dt for dt, server in _SERVER_OF_DOMAIN.items()}
_KNOWN = frozenset(int(d) for d in Domain)


@dataclass(frozen=True, slots=True)
class Jid:
    """A parsed JID. ``device``/``agent`` are None when the text has none."""

    user: str
    server: str
    device: int | None = None
    agent: int | None = None

    @classmethod
    def parse(cls, text: str) -> Jid:
        """Parse ``user[_agent][:device]@server``; raise :class:`JidError` otherwise.

        Stricter than Baileys' ``jidDecode``, which drops what it cannot place:
        here a second ``@``, ``:`` or ``_``, an empty server, or a device or agent
        that is not a decimal number is an error.
        """
        user_part, at, server = text.partition("@")
        if not at:
            raise JidError(text, "no '@'")
        if not server or "@" in server:
            raise JidError(text, "the server must be non-empty and hold no '@'")
        user_agent, colon, device_text = user_part.partition(":")
        device = _decimal(text, "device", device_text) if colon else None
        user, underscore, agent_text = user_agent.partition("_")
        agent = _decimal(text, "agent", agent_text) if underscore else None
        return cls(user, server, device, agent)

    def __str__(self) -> str:
        agent = f"_{self.agent}" if self.agent else ""
        device = f":{self.device}" if self.device else ""
        return f"{self.user}{agent}{device}@{self.server}"

    @property
    def domain_type(self) -> int:
        """The AD_JID domain byte Baileys derives: from the server, else the agent, else 0."""
        domain = _DOMAIN_OF_SERVER.get(self.server, 0)
        return domain or self.agent or 0

    @property
    def is_lid(self) -> bool:
        """A LID user (``@lid``), not a phone-number one."""
        return self.server == LID

    @property
    def is_hosted(self) -> bool:
        """A hosted user (``@hosted`` or ``@hosted.lid``)."""
        return self.server in (HOSTED, HOSTED_LID)

    def user_jid(self) -> Jid:
        """The account without device or agent; ``c.us`` becomes ``s.whatsapp.net``.

        Baileys' ``jidNormalizedUser``.
        """
        return Jid(self.user, S_WHATSAPP_NET if self.server == C_US else self.server)

    def with_device(self, device: int) -> Jid:
        """The same account's ``device`` (Baileys' ``transferDevice``)."""
        return Jid(self.user, self.server, device, self.agent)


def _decimal(text: str, what: str, digits: str) -> int:
    if not digits or not digits.isascii() or not digits.isdigit():
        raise JidError(text, f"the {what} must be a decimal number, not {digits!r}")
    return int(digits)


@dataclass(frozen=True, slots=True)
class JidPair:
    """Wire form JID_PAIR: ``user`` (may be empty) and ``server``."""

    user: str
    server: str


@dataclass(frozen=True, slots=True)
class AdJid:
    """Wire form AD_JID: domain type byte, device byte, user."""

    domain_type: int
    device: int
    user: str


def format_ad_jid(domain_type: int, device: int, user: str) -> str:
    """The text an AD_JID stands for.

    Known domain types pick the server; an unknown one is kept as the agent of an
    ``s.whatsapp.net`` JID (Baileys drops it; keeping it lets the text be written
    back to the same bytes). A device of 0 is left out, as Baileys does.
    """
    server = _SERVER_OF_DOMAIN.get(domain_type)
    if server is not None:
        return str(Jid(user, server, device))
    return str(Jid(user, S_WHATSAPP_NET, device, domain_type))


def wire_form(text: str) -> JidPair | AdJid | None:
    """How the encoder writes ``text`` as a JID, or None to write it as a plain string.

    Same bytes as Baileys for every JID that the wire carries back unchanged;
    texts Baileys would alter on the way (``1:0@s.whatsapp.net`` loses ``:0``,
    ``a_b@x`` loses ``_b``, ``1:2@g.us`` becomes ``1:2@s.whatsapp.net``, ...) are
    left to be written as plain strings, so the peer reads exactly what we meant.
    """
    user_part, _, server = text.partition("@")
    if not server or "@" in server:
        return None
    if ":" not in user_part:
        return None if "_" in user_part else JidPair(user_part, server)
    user_agent, _, device_text = user_part.partition(":")
    device = _byte(device_text)
    if device is None or device == 0:
        return None
    user, underscore, agent_text = user_agent.partition("_")
    if underscore:
        agent = _byte(agent_text)
        if server != S_WHATSAPP_NET or agent is None or agent in _KNOWN:
            return None
        return AdJid(agent, device, user)
    domain = _DOMAIN_OF_SERVER.get(server)
    return None if domain is None else AdJid(domain, device, user)


def _byte(digits: str) -> int | None:
    """A canonical decimal 0..255 (no sign, no leading zero), else None."""
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    if len(digits) > 1 and digits[0] == "0":
        return None
    value = int(digits)
    return value if value <= 255 else None
