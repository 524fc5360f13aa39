"""``Registry``: unique names for actors, held while the actor lives (across restarts).

A name is registered when its actor first starts and removed when the actor exits
for good (its supervisor will not restart it, or the supervisor itself stops).

Since 0.1.0.
"""

from __future__ import annotations

from runtime.errors import NameTaken
from runtime.mailbox import Slot
from runtime.ref import ActorRef


class Registry:
    """Name → actor. One per supervision tree by default; pass one in to share it."""

    def __init__(self) -> None:
        self._slots: dict[str, Slot] = {}

    def ref(self, name: str) -> ActorRef:
        """A ref to ``name``; it need not be registered yet (calls then raise ActorDown)."""
        return ActorRef(self, name)

    def whereis(self, name: str) -> ActorRef | None:
        """A ref to ``name`` if an actor holds that name now, else None."""
        return ActorRef(self, name) if name in self._slots else None

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._slots)

    def __contains__(self, name: object) -> bool:
        return name in self._slots

    def __len__(self) -> int:
        return len(self._slots)

    def _slot(self, name: str) -> Slot | None:
        return self._slots.get(name)

    def _register(self, slot: Slot) -> None:
        if slot.name in self._slots:
            raise NameTaken(slot.name)
        self._slots[slot.name] = slot

    def _unregister(self, slot: Slot) -> None:
        if self._slots.get(slot.name) is slot:
            del self._slots[slot.name]
