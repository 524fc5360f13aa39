"""Replying later: an actor answers a call at once with a ``Reply`` and settles it later.

Calls that must wait (for the disk, for the network) do not hold the actor's
mailbox while they wait: ``handle_call`` returns a ``Reply`` and a background task
settles it (OTP's ``{noreply, ...}`` + ``gen_server:reply``). That is what lets a
durable writer group many commits into one fsync. If the actor ends before
settling a reply, the reply fails with ``ReplyAbandoned`` (outcome unknown), never
hangs. ``RepliesLater`` gives an actor its book of open replies and
``reply_later``; ``call_durable`` calls and waits for the reply with one deadline.

Generic: nothing here knows what the actors do. Since 0.1.0 (as ``Receipt`` in
``actors.messages``; here, as ``Reply``, since 0.2.0: WhatsApp has receipts of its own).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import trio

from runtime.actor import Actor
from runtime.child import ChildControl
from runtime.errors import ReplyAbandoned, ReplyTimeout
from runtime.exit import ExitReason
from runtime.flag import Flag
from runtime.ref import ActorRef

T = TypeVar("T")


class Reply(Generic[T]):
    """A one-shot answer an actor owes: resolved with a value or failed with an error."""

    __slots__ = ("_error", "_event", "_value", "owner", "what")

    def __init__(self, owner: str, what: str) -> None:
        self.owner = owner
        self.what = what
        self._event = Flag()  # settled replies kept in a book cost no parking lot
        self._value: T | None = None
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        state = "pending" if not self._event.is_set() else ("failed" if self._error else "done")
        return f"Reply({self.owner}: {self.what}, {state})"

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def resolve(self, value: T) -> None:
        """Settle with ``value`` (ignored once settled)."""
        if not self._event.is_set():
            self._value = value
            self._event.set()

    def fail(self, error: BaseException) -> None:
        """Settle with ``error`` (ignored once settled)."""
        if not self._event.is_set():
            self._error = error
            self._event.set()

    def abandon(self) -> None:
        """The owner ends without an answer: fail with ``ReplyAbandoned``."""
        self.fail(ReplyAbandoned(self.owner, self.what))

    async def wait(self, timeout: float = math.inf) -> T:  # noqa: ASYNC109 - a reply's deadline is part of its protocol
        """The value, or the error raised; ``ReplyTimeout`` after ``timeout`` seconds."""
        with trio.move_on_after(timeout):
            await self._event.wait()
        if not self._event.is_set():
            raise ReplyTimeout(f"{self.owner}: {self.what}", timeout)
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set together with the event


class ReplyBook:
    """The replies one actor incarnation still owes; ``abandon_all`` on its way out."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._open: set[Reply[Any]] = set()
        self._prune_at = 64

    def __len__(self) -> int:
        return sum(1 for r in self._open if not r.done)

    def issue(self, what: str) -> Reply[Any]:
        reply: Reply[Any] = Reply(self.owner, what)
        if len(self._open) >= self._prune_at:
            # Settled replies are dropped in batches: amortised O(1) per issue.
            self._open = {r for r in self._open if not r.done}
            self._prune_at = max(64, 2 * len(self._open))
        self._open.add(reply)
        return reply

    def abandon_all(self) -> None:
        open_, self._open = self._open, set()
        for reply in open_:
            reply.abandon()


class RepliesLater(Actor):
    """An actor that answers calls with a ``Reply`` settled later. Since 0.2.0.

    The replies of an incarnation come from one book (``replies``), and every way
    out of the incarnation abandons what is still open, even when it is killed: no
    caller waits for an answer that will not come. ``reply_later(what, work)`` runs
    ``work`` as a task of the incarnation and settles the reply with its result,
    or with its error when that is one of ``answers``; another error crashes the
    actor, as an error in a handler would.
    """

    _replies: ReplyBook | None = None

    @property
    def replies(self) -> ReplyBook:
        if self._replies is None:
            # One actor object serves one incarnation: a ChildSpec builds a fresh one.
            self._replies = ReplyBook(f"{self.ctx.name}#{self.ctx.incarnation}")
        return self._replies

    async def run_child(
        self, control: ChildControl, task_status: trio.TaskStatus[None]
    ) -> ExitReason:
        try:
            return await super().run_child(control, task_status)
        finally:
            if self._replies is not None:
                self._replies.abandon_all()

    def reply_later(
        self,
        what: str,
        work: Callable[[], Awaitable[Any]],
        *,
        answers: tuple[type[Exception], ...] = (Exception,),
    ) -> Reply[Any]:
        """A reply for ``what``, settled by ``work`` running as a task of this incarnation."""
        reply: Reply[Any] = self.replies.issue(what)

        async def run() -> None:
            try:
                value = await work()
            except answers as exc:
                reply.fail(exc)
            else:
                reply.resolve(value)

        self.ctx.nursery.start_soon(run)
        return reply


async def call_durable(ref: ActorRef, msg: Any, *, timeout: float) -> Any:  # noqa: ASYNC109 - call deadline, as ActorRef.call
    """``call`` an actor that answers with a ``Reply`` and wait for it, all within ``timeout``."""
    deadline = trio.current_time() + timeout
    reply = await ref.call(msg, timeout=timeout)
    if not isinstance(reply, Reply):
        raise TypeError(f"{ref.name} answered {type(reply).__name__}, expected a Reply")
    return await reply.wait(max(0.0, deadline - trio.current_time()))


__all__ = ["RepliesLater", "Reply", "ReplyBook", "call_durable"]
