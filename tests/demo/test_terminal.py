"""`baileys-trio demo` on a real (pseudo-)terminal: the QR block and stage lines render cleanly."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

from actors.demo import STAGES

BIN = Path(sys.executable).parent
TIMEOUT = 60.0  # real seconds; the demo itself is bounded at 30
QR_CHARS = frozenset(" █▀▄")


def run_in_pty(args: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run ``args`` with stdin/stdout/stderr on a new pseudo-terminal; (exit code, raw bytes)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed its side of the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(master)
    return code, b"".join(chunks)


def qr_block(lines: list[str]) -> list[str]:
    """The longest run of consecutive lines made only of QR block characters."""
    best: list[str] = []
    run: list[str] = []
    for line in lines:
        if line and set(line) <= QR_CHARS and ("█" in line or "▀" in line or "▄" in line):
            run.append(line)
            if len(run) > len(best):
                best = list(run)
        else:
            run = []
    return best


def test_demo_on_a_terminal_draws_a_clean_qr_block_and_intact_stage_lines(tmp_path):
    """On a pty (auto: console) the QR is a rectangular block; no escape codes; stages intact."""
    env = {**os.environ, "TMPDIR": str(tmp_path), "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    code, raw = run_in_pty([str(BIN / "baileys-trio"), "demo"], env)
    text = raw.decode("utf-8")  # strict: a split or garbled multi-byte character fails here
    assert code == 0, text
    assert "\x1b" not in text  # no colour codes or cursor moves in the demo's console output
    lines = text.replace("\r\n", "\n").split("\n")
    assert not [ln for ln in lines if "\r" in ln]  # every line ends cleanly with the tty's CRLF
    assert not [ln for ln in lines if any(ord(c) < 32 and c != "\t" for c in ln)]
    block = qr_block(lines)
    assert len(block) >= 15  # version >= 3 QR at two modules per character row, plus quiet zone
    widths = {len(row) for row in block}
    assert len(widths) == 1 and widths.pop() >= 29
    after = lines[lines.index(block[-1]) + 1 :]
    raw_qr = next(ln for ln in after if ln.strip())
    assert raw_qr.startswith("https://wa.me/settings/linked_devices#")
    stage_lines = [ln for ln in lines if ln.startswith("==> [")]
    assert [re.match(r"==> \[(\d+)/(\d+)\] (\w+): .+", ln) is not None for ln in stage_lines] == [
        True
    ] * len(STAGES)
    assert [ln.split("] ")[1].split(":")[0] for ln in stage_lines] == list(STAGES)
    assert sum(1 for ln in lines if "inspect it with: baileys-trio inspect " in ln) == 1
