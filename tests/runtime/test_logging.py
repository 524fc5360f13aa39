"""Lifecycle logging: one structlog event per change, bound with the actor's path."""

from __future__ import annotations

import io
import json

import pytest
import trio
import trio.testing

from runtime import ChildSpec, ExitKind, Restart, SupervisorGaveUp, make_logger, open_supervisor
from tests.runtime.helpers import Boom, Journal, Probe, capture_logger, probe_spec


async def test_lifecycle_events_in_order(autojump_clock: trio.testing.MockClock) -> None:
    """start, crash (with traceback), restart (count, delay), give-up and stops are logged."""
    log, entries = capture_logger()
    with pytest.raises(SupervisorGaveUp):
        async with open_supervisor(
            [probe_spec("a", Journal()), probe_spec("b", Journal())], max_restarts=1, log=log
        ) as sup:
            for _ in range(2):
                sup.ref("b").cast_nowait(("exit", ExitKind.CRASH))
                await trio.testing.wait_all_tasks_blocked()
            await trio.sleep_forever()
    assert [(e["event"], e.get("child")) for e in entries] == [
        ("child_started", "a"),
        ("child_started", "b"),
        ("supervisor_started", None),
        ("child_crashed", "b"),
        ("child_restarting", "b"),
        ("child_started", "b"),
        ("child_crashed", "b"),
        ("supervisor_gave_up", "b"),
        ("child_stopped", "a"),
    ]
    crash = entries[3]
    assert crash["path"] == "root/b" and crash["supervisor"] == "root"
    assert crash["log_level"] == "error" and isinstance(crash["exc_info"], Boom)
    restart = entries[4]
    assert (restart["restart_count"], restart["delay"], restart["child_restarts"]) == (1, 0.0, 1)
    assert entries[5]["incarnation"] == 2
    assert entries[7]["max_restarts"] == 1 and entries[7]["max_seconds"] == 5.0


async def test_normal_exit_is_logged_as_exit_not_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A transient child ending normally logs child_exited at info level."""
    log, entries = capture_logger()
    async with open_supervisor([probe_spec("t", Journal(), Restart.TRANSIENT)], log=log) as sup:
        sup.ref("t").cast_nowait(("exit", ExitKind.NORMAL))
        await trio.testing.wait_all_tasks_blocked()
    exited = [e for e in entries if e["event"] == "child_exited"]
    assert len(exited) == 1 and exited[0]["reason"] == "normal"
    assert exited[0]["log_level"] == "info"
    assert not [e for e in entries if e["event"] == "child_crashed"]


async def test_json_lines_with_traceback(autojump_clock: trio.testing.MockClock) -> None:
    """make_logger('json') writes one JSON object per event, crashes with a traceback."""
    stream = io.StringIO()
    log = make_logger("json", stream)
    async with open_supervisor([probe_spec("w", Journal())], log=log) as sup:
        sup.ref("w").cast_nowait(("exit", ExitKind.CRASH))
        await trio.testing.wait_all_tasks_blocked()
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    crash = next(r for r in records if r["event"] == "child_crashed")
    assert crash["path"] == "root/w" and crash["level"] == "error"
    assert "Boom" in json.dumps(crash["exception"])
    assert {r["event"] for r in records} >= {"child_started", "child_restarting", "child_stopped"}


def test_console_format_is_human_readable() -> None:
    """make_logger('console') renders the event name and fields as text, not JSON."""
    stream = io.StringIO()
    make_logger("console", stream).bind(path="root/w").info("child_started", incarnation=1)
    text = stream.getvalue()
    assert "child_started" in text and "path=root/w" in text
    assert not text.lstrip().startswith("{")


def test_auto_format_picks_json_off_a_tty() -> None:
    """Without a TTY, 'auto' writes JSON."""
    stream = io.StringIO()
    make_logger("auto", stream).info("hello", n=1)
    assert json.loads(stream.getvalue())["n"] == 1


async def test_failed_restart_is_logged_once_as_start_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A restart whose init fails logs child_start_failed (not a second crash) and retries."""
    log, entries = capture_logger()
    attempts: list[int] = []

    def factory() -> Probe:
        attempts.append(1)
        return Probe(Journal(), fail_init=len(attempts) == 2)

    async with open_supervisor([ChildSpec("w", factory)], log=log) as sup:
        sup.ref("w").cast_nowait(("exit", ExitKind.CRASH))
        await trio.testing.wait_all_tasks_blocked()
        assert sup.which_children()[0].running
    names = [e["event"] for e in entries if e.get("child") == "w"]
    assert names[:6] == [
        "child_started",
        "child_crashed",
        "child_restarting",
        "child_start_failed",
        "child_restarting",
        "child_started",
    ]


def test_crash_tracebacks_never_show_frame_locals() -> None:
    """A traceback in a log line names frames but never their locals (they may hold keys)."""
    import io

    from runtime.log import make_logger

    secret = bytes(range(32))

    def failing(private_key: bytes) -> None:
        raise RuntimeError("boom")

    for fmt in ("json", "console"):
        out = io.StringIO()
        log = make_logger(fmt, out)
        try:
            failing(secret)
        except RuntimeError:
            log.error("child_crashed", exc_info=True)
        text = out.getvalue()
        assert "failing" in text and "boom" in text
        assert secret.hex() not in text and repr(secret) not in text
        assert "private_key" not in text


def test_logs_go_to_stderr_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    """make_logger() and, with structlog unconfigured, default_logger() write to stderr only."""
    import structlog

    from runtime.log import default_logger

    structlog.reset_defaults()
    make_logger("json").info("made_logger_line")
    default_logger().info("default_logger_line")
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = [json.loads(line)["event"] for line in captured.err.splitlines()]
    assert lines == ["made_logger_line", "default_logger_line"]
