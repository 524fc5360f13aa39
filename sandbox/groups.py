"""The sandbox's groups: jid, subject, creator and participants, and their metadata iq.

``iq xmlns=w:g2 type=get to=<group> > query`` is answered with
``group{id, subject, s_t, s_o, creation, creator, addressing_mode=pn} >
participant{jid, type?}*`` (``id`` without ``@g.us``, as the real server; the
creator is ``superadmin``). Group jids are ``120363`` and 12 more digits, in order
of creation. Participants are account user JIDs (phone-number form); the
router (:mod:`sandbox.routing`) fans a group stanza out to their devices.

Pure state, no I/O. Since 0.2.0.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from actors.connection.binary import G_US, BinaryNode
from sandbox.errors import InvalidAccountError

#: The first group's user part; later groups count up from it.
FIRST_GROUP = 120363000000000001


@dataclass(eq=False)
class Group:
    """One group: what its metadata says."""

    jid: str
    subject: str
    creator: str
    creation: int
    participants: list[str] = field(default_factory=list)

    def metadata(self) -> BinaryNode:
        """The ``group`` node of a metadata answer."""
        attrs = {
            "id": self.jid.partition("@")[0],
            "subject": self.subject,
            "s_t": str(self.creation),
            "s_o": self.creator,
            "creation": str(self.creation),
            "creator": self.creator,
            "addressing_mode": "pn",
        }
        members = []
        for jid in self.participants:
            member = {"jid": jid}
            if jid == self.creator:
                member["type"] = "superadmin"
            members.append(BinaryNode("participant", member))
        return BinaryNode("group", attrs, members)


class Groups:
    """Every group of the sandbox, by JID."""

    def __init__(self) -> None:
        self._groups: dict[str, Group] = {}
        self._ids = itertools.count(FIRST_GROUP)

    def __repr__(self) -> str:
        return f"Groups({len(self._groups)})"

    def __len__(self) -> int:
        return len(self._groups)

    def create(self, subject: str, creator: str, participants: list[str], creation: int) -> Group:
        """A new group; the creator is a participant whether listed or not."""
        if not subject:
            raise InvalidAccountError("a group needs a subject")
        members = [creator] + [p for p in dict.fromkeys(participants) if p != creator]
        group = Group(f"{next(self._ids)}@{G_US}", subject, creator, creation, members)
        self._groups[group.jid] = group
        return group

    def get(self, jid: str) -> Group | None:
        """The group ``jid``, or None."""
        return self._groups.get(jid)

    def all(self) -> list[Group]:
        """Every group, oldest first."""
        return list(self._groups.values())


__all__ = ["FIRST_GROUP", "Group", "Groups"]
