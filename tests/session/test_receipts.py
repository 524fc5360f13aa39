"""Receipts: the deferred answers of the persister, the signal store and the connection."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import trio

from runtime.errors import ReplyAbandoned, ReplyTimeout
from runtime.reply import RepliesLater, Reply, ReplyBook, call_durable
from runtime.spec import ChildSpec, Restart
from runtime.supervisor import open_supervisor


async def test_a_receipt_resolves_once_and_later_settlements_are_ignored(autojump_clock):
    """resolve wins over a later fail; wait returns the value."""
    receipt: Reply[int] = Reply("owner", "thing")
    receipt.resolve(7)
    receipt.fail(RuntimeError("late"))
    assert await receipt.wait(1) == 7


async def test_a_failed_receipt_raises_its_error(autojump_clock):
    """fail(error) makes wait raise that very error."""
    receipt: Reply[int] = Reply("owner", "thing")
    error = RuntimeError("disk")
    receipt.fail(error)
    with pytest.raises(RuntimeError) as caught:
        await receipt.wait(1)
    assert caught.value is error


async def test_an_unanswered_receipt_times_out_saying_the_outcome_is_unknown(autojump_clock):
    """wait(timeout) raises ReplyTimeout naming the owner and what was asked."""
    receipt: Reply[int] = Reply("persister#1", "commit")
    with pytest.raises(ReplyTimeout, match=r"persister#1: commit.*unknown"):
        await receipt.wait(5)
    assert trio.current_time() == pytest.approx(5)


async def test_abandon_all_fails_every_open_receipt_of_an_ending_incarnation(autojump_clock):
    """An actor that ends abandons what it owes; settled receipts keep their value."""
    book = ReplyBook("signal_store#2")
    receipts = [book.issue(f"tx {i}") for i in range(200)]
    receipts[0].resolve("done")
    assert len(book) == 199
    book.abandon_all()
    assert await receipts[0].wait(1) == "done"
    with pytest.raises(ReplyAbandoned, match="signal_store#2 ended before answering tx 5"):
        await receipts[5].wait(1)


class Slow(RepliesLater):
    """Answers ("wait", s) after s seconds and ("fail", _) with a KeyError, both later."""

    async def handle_call(self, msg: Any) -> Any:
        kind, seconds = msg
        if kind == "wait":
            return self.reply_later(f"wait {seconds}", partial(trio.sleep, seconds))
        return self.reply_later("fail", self._fail, answers=(KeyError,))

    async def _fail(self) -> None:
        await trio.lowlevel.checkpoint()
        raise KeyError("missing")


async def test_reply_later_settles_from_a_task_and_an_ended_incarnation_abandons_the_rest(
    autojump_clock,
):
    """reply_later: a listed error reaches the caller; receipts still open when the
    incarnation ends fail with ReplyAbandoned naming it, never hang."""
    spec = ChildSpec("slow", Slow, name="slow", restart=Restart.TEMPORARY)
    async with open_supervisor([spec]) as sup:
        ref = sup.ref("slow")
        with pytest.raises(KeyError):
            await call_durable(ref, ("fail", 0), timeout=5)
        quick = await ref.call(("wait", 1), timeout=5)
        slow = await ref.call(("wait", 3600), timeout=5)
        assert await quick.wait(5) is None
        await sup.terminate_child("slow")
    with pytest.raises(ReplyAbandoned, match=r"slow#1 ended before answering wait 3600"):
        await slow.wait(5)
