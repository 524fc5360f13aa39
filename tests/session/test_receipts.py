"""Receipts: the deferred answers of the persister and the signal store."""

from __future__ import annotations

import pytest
import trio

from actors.errors import ReceiptAbandoned, ReceiptTimeout
from actors.messages import Receipt, ReceiptBook


async def test_a_receipt_resolves_once_and_later_settlements_are_ignored(autojump_clock):
    """resolve wins over a later fail; wait returns the value."""
    receipt: Receipt[int] = Receipt("owner", "thing")
    receipt.resolve(7)
    receipt.fail(RuntimeError("late"))
    assert await receipt.wait(1) == 7


async def test_a_failed_receipt_raises_its_error(autojump_clock):
    """fail(error) makes wait raise that very error."""
    receipt: Receipt[int] = Receipt("owner", "thing")
    error = RuntimeError("disk")
    receipt.fail(error)
    with pytest.raises(RuntimeError) as caught:
        await receipt.wait(1)
    assert caught.value is error


async def test_an_unanswered_receipt_times_out_saying_the_outcome_is_unknown(autojump_clock):
    """wait(timeout) raises ReceiptTimeout naming the owner and what was asked."""
    receipt: Receipt[int] = Receipt("persister#1", "commit")
    with pytest.raises(ReceiptTimeout, match=r"persister#1: commit.*unknown"):
        await receipt.wait(5)
    assert trio.current_time() == pytest.approx(5)


async def test_abandon_all_fails_every_open_receipt_of_an_ending_incarnation(autojump_clock):
    """An actor that ends abandons what it owes; settled receipts keep their value."""
    book = ReceiptBook("signal_store#2")
    receipts = [book.issue(f"tx {i}") for i in range(200)]
    receipts[0].resolve("done")
    assert len(book) == 199
    book.abandon_all()
    assert await receipts[0].wait(1) == "done"
    with pytest.raises(ReceiptAbandoned, match="signal_store#2 ended before answering tx 5"):
        await receipts[5].wait(1)
