from __future__ import annotations

from collections.abc import Generator

import pytest
from _pytest.outcomes import Skipped

from tests.baileys_peer import BaileysPeer, PeerUnavailable, install_peer


@pytest.fixture(scope="session")
def baileys_peer() -> BaileysPeer:
    """Real Baileys v7 under node; tests using it are skipped, saying why, only without node."""
    try:
        return install_peer()
    except PeerUnavailable as exc:
        pytest.skip(str(exc))


def _skip_reason(exc: BaseException) -> str | None:
    """The reason of the ``pytest.skip`` behind ``exc``, found through its exception chain.

    pytest-trio turns a skip inside a trio test into a bare ``pytest.skip()`` raised
    while handling the ExceptionGroup that carried it: the reason is in that group.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, Skipped) and current.msg:
            return current.msg
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A skip inside a trio test is reported at the test, with its reason (not `Skipped`)."""
    report = yield
    if report.skipped and call.excinfo is not None and isinstance(report.longrepr, tuple):
        reason = _skip_reason(call.excinfo.value)
        if reason is not None and report.longrepr[2] in ("Skipped", "Skipped: "):
            report.longrepr = (*_defined_at(item), f"Skipped: {reason}")
    return report


def _defined_at(item: pytest.Item) -> tuple[str, int]:
    """Where the test function is written (pytest-trio wraps it; its own frame is no help)."""
    parent = getattr(item.parent, "obj", None)
    name = getattr(item, "originalname", item.name)
    code = getattr(getattr(parent, name, None), "__code__", None)
    if code is None:
        return str(item.path), 0
    return code.co_filename, code.co_firstlineno
