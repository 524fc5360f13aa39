"""SessionStatus: the connection's state, how the session ended, and the end's callbacks."""

from __future__ import annotations

from actors.connection.client_state import ClientState
from actors.status import EndReason, SessionStatus


def test_when_ended_runs_once_at_the_first_end() -> None:
    """The callback runs at the first end, not before and not again; the first reason stands."""
    status = SessionStatus("a")
    calls: list[EndReason | None] = []
    status.when_ended(lambda: calls.append(status.end_reason))
    status.set_state(ClientState.OPEN)
    assert calls == []
    status.end(EndReason.LOGGED_OUT)
    status.end(EndReason.STOPPED)
    assert calls == [EndReason.LOGGED_OUT] and status.state is ClientState.CLOSED


def test_when_ended_after_the_end_runs_at_once() -> None:
    """A callback given once the session has ended runs at once, exactly once."""
    status = SessionStatus("a")
    status.end(EndReason.STOPPED)
    calls: list[str] = []
    status.when_ended(lambda: calls.append("ended"))
    status.end(EndReason.STOPPED)
    assert calls == ["ended"]


def test_every_callback_given_runs_at_the_end_in_order() -> None:
    """A second callback does not replace the first: both run, once, in the order given."""
    status = SessionStatus("a")
    calls: list[str] = []
    status.when_ended(lambda: calls.append("runtime"))
    status.when_ended(lambda: calls.append("app"))
    status.end(EndReason.STOPPED)
    status.end(EndReason.STOPPED)
    assert calls == ["runtime", "app"]
