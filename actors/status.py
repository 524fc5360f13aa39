"""A session's status as the runtime sees it: the connection's state and how it ended.

``SessionStatus`` lives outside the restarting actors (the runtime owns it; the
connection actor is its only writer), so it outlives every restart. Its ``state``
is the connection's ``ClientState`` enum.

Since 0.1.0 (in ``actors.messages``, the state a plain string; here since 0.2.0).
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import trio

from actors.connection.client_state import ClientState


class EndReason(enum.Enum):
    """Why a session ended for good."""

    STOPPED = "stopped"  # asked to stop (rt.stop(), Ctrl-C)
    LOGGED_OUT = "logged_out"  # 401: the phone removed the device
    REPLACED = "replaced"  # 440: another client took over the session
    REFUSED = "refused"  # 403/411: the server refuses this device
    FAILED = "failed"  # the session tree gave up (restart intensity) or failed to start
    FENCED = "fenced"  # the store's lease was lost: another process may own the account
    # The server's certificate does not verify under Config.server_root_key (since 0.2.0).
    UNTRUSTED_SERVER = "untrusted_server"


class SessionStatus:
    """What a session's connection reports to the runtime: its state and how it ended.

    Owned by the runtime (it outlives every actor restart); the connection actor
    is its only writer. ``wait_changed`` and ``ended`` let the runtime wait;
    ``when_ended`` lets it act at the end without a task waiting for it.
    """

    def __init__(self, account: str, initial: ClientState = ClientState.CONNECTING) -> None:
        self.account = account
        self.state = initial
        self.me: str | None = None
        self.end_reason: EndReason | None = None
        self.error: BaseException | None = None
        self.ended = trio.Event()
        self._changed = trio.Event()
        self._on_end: list[Callable[[], None]] | None = None  # made only when one is given

    def __repr__(self) -> str:
        state = self.state.value
        return f"SessionStatus({self.account!r}, state={state}, end={self.end_reason})"

    def set_state(self, state: ClientState) -> None:
        if state != self.state:
            self.state = state
            self._changed.set()
            self._changed = trio.Event()

    def end(self, reason: EndReason, error: BaseException | None = None) -> None:
        """Record the end (the first reason wins) and wake waiters."""
        if self.end_reason is None:
            self.end_reason = reason
            self.error = error
        self.set_state(ClientState.CLOSED)
        first = not self.ended.is_set()
        self.ended.set()
        self._changed.set()
        if first and self._on_end is not None:
            on_end, self._on_end = self._on_end, None
            for callback in on_end:
                callback()

    def when_ended(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once when the session ends (at once if it has ended).

        Each callback given is called, in the order given. Since 0.2.0.
        """
        if self.ended.is_set():
            callback()
        elif self._on_end is None:
            self._on_end = [callback]
        else:
            self._on_end.append(callback)

    async def wait_changed(self) -> None:
        """Return at the next state change or end."""
        if self.ended.is_set():
            await trio.lowlevel.checkpoint()
            return
        await self._changed.wait()


__all__ = ["EndReason", "SessionStatus"]
