"""`baileys-trio demo`: the real console script, run as a user runs it.

Each test starts the installed console script in a subprocess (bounded by a
timeout) with ``TMPDIR`` pointing into the test's own directory, so the auth
directory the demo keeps lands there.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from actors.demo import STAGES

BIN = Path(sys.executable).parent
TIMEOUT = 60  # real seconds per subprocess; the demo itself is bounded at 30


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    return subprocess.run(
        [str(BIN / "baileys-trio"), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
    )


def headers(text: str) -> list[str]:
    """The stage names of the console headers (``==> [n/N] name: title``), in order."""
    return re.findall(r"^==> \[\d+/\d+\] (\w+): ", text, flags=re.MULTILINE)


def auth_dir_of(text: str) -> Path:
    found = re.findall(r"^    auth directory: (\S+)$", text, flags=re.MULTILINE)
    assert len(found) == 1, text
    return Path(found[0])


def test_console_demo_shows_every_stage_in_order_and_keeps_an_inspectable_auth_dir(tmp_path):
    """Console demo exits 0, heads every stage and the conversation in order; inspect passes."""
    done = run_cli(tmp_path, "demo", "--log-format", "console")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert headers(out) == list(STAGES)
    expected_in_order = [
        "https://wa.me/settings/linked_devices#",
        "paired as ",
        "closed: 515 restart_required, reconnect at once",
        "logged in with the saved creds",
        "812 pre-keys generated and durable before the upload; 812 uploaded",
        "open as ",
        "Ann (15550100001@s.whatsapp.net) writes to the bot: 'hello bot' (a pkmsg",
        "bot received: message 3EB0",
        "from Ann <15550100001@s.whatsapp.net>: hello bot",
        "bot answers 'hello Ann': acked by the server as 3EB0",
        "Ann's phone decrypted it ('hello Ann') and sent a delivery receipt",
        "writes to the bot: 'are you there?' ... and in the same instant:",
        "supervisor: child_crashed connection",
        "supervisor: child_started connection kind=worker incarnation=2",
        "restarted by the supervisor: connection #2",
        "from Ann <15550100001@s.whatsapp.net>: are you there?",
        "Ann's phone decrypted it ('still here after the connection crash')",
        "writes to the bot: 'did you get that?'",
        "from Ann <15550100001@s.whatsapp.net>: did you get that?",
        "supervisor: child_crashed persister",
        "restarted by the supervisor: persister #2, signal_store #2, connection #3",
        "Ann's phone decrypted it ('still here after the persister crash')",
        "creds kept: me ",
        "before: durable seq",
        "after:  durable seq",
        "conversation: all 3 messages Ann wrote reached the bot and all 3 answers reached Ann",
        "the lock is released; durable seq",
        "without a QR (sandbox links: 1)",
        "writes to the bot: 'and after the restart?'",
        "from Ann <15550100001@s.whatsapp.net>: and after the restart?",
        "Ann's phone decrypted it ('still here after the restart')",
        "inspect it with: baileys-trio inspect ",
    ]
    positions = [out.find(phrase) for phrase in expected_in_order]
    assert -1 not in positions, [
        p for p, at in zip(expected_in_order, positions, strict=True) if at < 0
    ]
    assert positions == sorted(positions)
    assert out.count("https://wa.me/settings/linked_devices#") == 1  # one QR, never again
    auth = auth_dir_of(out)
    assert auth.is_dir() and tmp_path in auth.parents
    assert oct(auth.stat().st_mode & 0o777) == oct(0o700)
    inspected = run_cli(tmp_path, "inspect", str(auth))
    assert inspected.returncode == 0, inspected.stdout + inspected.stderr
    me = re.search(r"open as (\S+)", out)
    assert me is not None and me.group(1).rstrip(";") in inspected.stdout
    assert "pre-key 811" in inspected.stdout  # Ann's first message used one one-time pre-key
    assert "session 1" in inspected.stdout  # the Signal session with Ann's phone, on disk


def test_json_demo_prints_only_json_lines_with_every_stage_and_no_secrets(tmp_path):
    """With --log-format json every stdout line is a JSON object; stages come in order."""
    done = run_cli(tmp_path, "demo", "--log-format", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert all(isinstance(r, dict) and "event" in r for r in records)
    assert [r["stage"] for r in records if r["event"] == "demo_stage"] == list(STAGES)
    events = [r["event"] for r in records]
    assert events.count("qr") == 1
    opens = [
        r for r in records if r["event"] == "connection_update" and r.get("connection") == "open"
    ]
    assert len(opens) == 4  # paired, after each crash, after the runtime restart
    crashed = [r["child"] for r in records if r["event"] == "child_crashed"]
    assert crashed == ["connection", "persister"]
    assert all(
        set(r) <= {"event", "version", "rev", "changed", "account"}
        for r in records
        if r["event"] == "creds_update"
    )
    done_stage = next(r for r in records if r["event"] == "demo_stage" and r["stage"] == "done")
    auth = done_stage["auth_dir"]
    assert Path(auth).is_dir()


def test_json_demo_carries_the_conversation_as_message_events_and_notes(tmp_path):
    """JSON demo: each of Ann's messages is a messages_upsert line; each answer gets a receipt."""
    done = run_cli(tmp_path, "demo", "--log-format", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    said = [r["said"] for r in records if r["event"] == "demo_note" and "said" in r]
    assert said == ["hello bot", "are you there?", "did you get that?", "and after the restart?"]
    upserts = [m for r in records if r["event"] == "messages_upsert" for m in r["messages"]]
    assert all("undecryptable" not in m for m in upserts)
    texts = [m["message"]["conversation"] for m in upserts]
    assert [t for i, t in enumerate(texts) if t not in texts[:i]] == said  # redelivery: same text
    assert all(m["text"] == m["message"]["conversation"] for m in upserts)
    assert all(m["push_name"] == "Ann" and not m["key"]["from_me"] for m in upserts)
    answers = [r for r in records if r["event"] == "demo_note" and "answer" in r]
    assert [r["stage"] for r in answers] == [
        "conversation",
        "crash_connection",
        "crash_persister",
        "runtime_restarted",
    ]
    receipts = {
        u["key"]["id"]: u["update"]["status"]
        for r in records
        if r["event"] == "messages_update"
        for u in r["updates"]
    }
    assert all(receipts.get(r["id"]) == "delivery" for r in answers)
    stages = [r["stage"] for r in records if r["event"] == "demo_stage"]
    assert stages.index("conversation") == stages.index("open") + 1


def test_supervision_flag_runs_the_sample_tree_demo(tmp_path):
    """`demo --supervision` runs the sample supervision tree, whose flapping child gives up."""
    done = run_cli(tmp_path, "demo", "--supervision", "--log-format", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["step"] for r in records if r["event"] == "demo_step"][-1] == "done"
    assert any(r["event"] == "supervisor_gave_up" for r in records)
    assert not any(r["event"] == "demo_stage" for r in records)


def test_demo_help_names_the_supervision_flag_and_examples(tmp_path):
    """`demo --help` describes the offline WhatsApp demo, --supervision and examples."""
    done = run_cli(tmp_path, "demo", "--help")
    assert done.returncode == 0
    assert "--supervision" in done.stdout and "examples:" in done.stdout
    assert "no network" in done.stdout


def test_a_reader_that_leaves_early_stops_the_demo_quietly(tmp_path):
    """`demo | head -1`: once its reader is gone the demo exits 1 with no traceback."""
    proc = subprocess.Popen(
        [str(BIN / "baileys-trio"), "demo", "--log-format", "console"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # no reader at all: the demo's first write already fails
        code = proc.wait(timeout=TIMEOUT)
        stderr = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert code == 1
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr
