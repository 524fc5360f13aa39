"""Every ```python block of docs/*.md and README.md runs as written, so the docs cannot rot.

Rules for doc authors (also in docs/README.md):

* each block is a program: it runs alone, in a fresh interpreter, in a fresh
  temporary working directory (relative paths like ``"auth"`` land there), with
  the repository on ``PYTHONPATH``;
* a block whose first line is ``# file: NAME.py`` is a module: it runs too, and
  is written as ``NAME.py`` into the working directory of every block of the same
  page, which can then import it (wherever it sits on the page);
* a block with top-level ``await`` / ``async with`` runs under ``trio.run``;
* a block that must not run (a fragment, a shape) is preceded, on the line right
  before its fence, by ``<!-- not-run: the reason -->``. Skips are counted and
  printed (``pytest -rs`` lists each with its reason); a marker that is not right
  before a python block, or has no reason, fails the suite.

README.md's blocks are bots, run as a user runs them against the real server,
but given a sandbox (``tests/docs/sandbox_bot.py``): the same runner in a fresh
directory, with ``WA_URL`` and ``WA_ROOT_KEY`` naming a sandbox this test serves
(the settings README's bot reads; unset, it dials WhatsApp). The sandbox's phone
scans the QR the program prints; once it is logged in a contact writes to it and
must get its text back (the README bot echoes); then the program is stopped with
SIGINT, as Ctrl-C stops it, and the auth directory it leaves must be intact and
unlocked.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
FENCE = re.compile(r"^```python\s*$")
MARKER = re.compile(r"^<!--\s*not-run:(.*?)-->\s*$")
SAMPLE_TIMEOUT = 60
"""Seconds a sample may run: samples are short, and a sample that dials the real
WhatsApp service (no network in CI) must fail fast instead of hanging the suite."""
MODULE = re.compile(r"^# file: ([A-Za-z_][A-Za-z0-9_]*\.py)\s*$", re.M)

RUNNER = """
import ast, sys, trio
source = sys.stdin.read()
code = compile(source, sys.argv[1], "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
namespace = {"__name__": "__main__"}
if code.co_flags & 0x80:  # CO_COROUTINE: the block awaits at top level
    async def main():
        await eval(code, namespace)
    trio.run(main)
else:
    exec(code, namespace)
"""


@dataclass(frozen=True)
class Block:
    """One ```python block: where it is, its code, and why it is skipped (if it is)."""

    doc: str
    line: int
    code: str
    skip: str | None
    modules: tuple[tuple[str, str], ...] = ()
    """(file name, code) of every ``# file:`` block of the page."""

    @property
    def name(self) -> str:
        return f"{self.doc}:{self.line}"


def extract(path: Path) -> tuple[list[Block], list[str]]:
    """The python blocks of one markdown file, and the misplaced markers it holds."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    errors: list[str] = []
    used: set[int] = set()
    modules: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        if FENCE.match(lines[i]):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
            if end is None:
                errors.append(f"{path.name}:{i + 1}: unclosed ```python block")
                break
            marker = MARKER.match(lines[i - 1]) if i else None
            reason = None
            if marker:
                used.add(i - 1)
                reason = marker[1].strip()
                if not reason:
                    errors.append(f"{path.name}:{i}: not-run marker without a reason")
            code = "\n".join(lines[i + 1 : end]) + "\n"
            blocks.append(Block(path.name, i + 1, code, reason))
            if module := MODULE.match(code):
                modules.append((module[1], code))
            i = end + 1
            continue
        i += 1
    blocks = [dataclasses.replace(b, modules=tuple(modules)) for b in blocks]
    for n, text in enumerate(lines):
        if MARKER.match(text) and n not in used:
            errors.append(f"{path.name}:{n + 1}: not-run marker not right before a ```python block")
    return blocks, errors


def collect() -> tuple[list[Block], list[str]]:
    blocks: list[Block] = []
    errors: list[str] = []
    for path in sorted(DOCS.glob("*.md")):
        found, bad = extract(path)
        blocks += found
        errors += bad
    return blocks, errors


BLOCKS, MARKER_ERRORS = collect()
README_BLOCKS, README_MARKER_ERRORS = extract(README)


def test_docs_have_runnable_samples_and_skips_are_counted() -> None:
    """Samples exist, markers are well placed, and the skipped ones are listed."""
    skipped = [b for b in BLOCKS if b.skip is not None]
    print(
        f"\ndocs samples: {len(BLOCKS)} python blocks, {len(BLOCKS) - len(skipped)} run, "
        f"{len(skipped)} skipped"
    )
    for block in skipped:
        print(f"  skipped {block.name}: {block.skip}")
    assert MARKER_ERRORS == []
    assert len(BLOCKS) - len(skipped) >= 5


def test_readme_has_a_bot_and_no_skipped_block() -> None:
    """README.md holds at least one python block, and every one of them runs."""
    assert README_MARKER_ERRORS == []
    assert README_BLOCKS and [b.name for b in README_BLOCKS if b.skip is not None] == []


def test_markers_are_found_and_misplaced_ones_reported(tmp_path: Path) -> None:
    """The extractor honours a marker right before a block and reports any other."""
    doc = tmp_path / "x.md"
    doc.write_text(
        "<!-- not-run: a fragment -->\n```python\nundefined_name\n```\n\n"
        "<!-- not-run: stale -->\n\n```python\nprint(1)\n```\n"
        "<!-- not-run: -->\n```python\npass\n```\n"
    )
    blocks, errors = extract(doc)
    assert [(b.line, b.skip) for b in blocks] == [(2, "a fragment"), (8, None), (12, "")]
    assert errors == [
        "x.md:11: not-run marker without a reason",
        "x.md:6: not-run marker not right before a ```python block",
    ]


def run_block(block: Block, cwd: Path) -> subprocess.CompletedProcess[str]:
    for name, code in block.modules:
        (cwd / name).write_text(code)
    return subprocess.run(
        [sys.executable, "-c", RUNNER, block.name],
        input=block.code,
        capture_output=True,
        text=True,
        timeout=SAMPLE_TIMEOUT,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_the_runner_awaits_top_level_async_code(tmp_path: Path) -> None:
    """A block with top-level await runs under trio.run; a failing block fails."""
    ok = run_block(
        Block("t.md", 1, "import trio\nawait trio.sleep(0)\nprint('done')\n", None), tmp_path
    )
    assert ok.returncode == 0 and ok.stdout == "done\n"
    bad = run_block(Block("t.md", 1, "await undefined()\n", None), tmp_path)
    assert bad.returncode != 0 and "NameError" in bad.stderr


@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_doc_sample_runs(block: Block, tmp_path: Path) -> None:
    """This block runs to completion in a fresh interpreter and an empty directory."""
    if block.skip is not None:
        pytest.skip(f"not-run: {block.skip}")
    done = run_block(block, tmp_path)
    assert done.returncode == 0, f"{block.name} failed:\n{done.stdout}\n{done.stderr}"


def test_file_blocks_are_importable_by_every_block_of_the_page(tmp_path: Path) -> None:
    """A `# file: NAME.py` block is written beside every block of its page."""
    doc = tmp_path / "m.md"
    doc.write_text(
        "```python\nimport helper\n```\n"
        "```python\n# file: helper.py\nANSWER = 42\n```\n"
        "```python\nfrom helper import ANSWER\nprint(ANSWER)\n```\n"
    )
    first, module, user = extract(doc)[0]
    assert [name for name, _ in first.modules] == ["helper.py"] == [n for n, _ in user.modules]
    for block in (first, module, user):
        work = tmp_path / f"work-{block.line}"
        work.mkdir()
        assert run_block(block, work).returncode == 0
    other = tmp_path / "other.md"
    other.write_text("```python\nimport helper\n```\n")
    (alone,) = extract(other)[0]
    assert run_block(alone, tmp_path / "work-1").returncode == 0  # helper.py left there
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert run_block(alone, fresh).returncode != 0  # other pages do not see it


@pytest.mark.parametrize("block", README_BLOCKS, ids=[b.name for b in README_BLOCKS])
async def test_readme_bot_answers_a_contact_on_the_sandbox(block: Block, tmp_path: Path) -> None:
    """README's program pairs by its printed QR, echoes a contact's text, stops on Ctrl-C."""
    from sandbox.contacts import ContactMessage
    from stores.inspection import inspect_location
    from tests.docs.sandbox_bot import Bot, run_bot

    answers: list[ContactMessage] = []

    async def converse(bot: Bot) -> None:
        ann = bot.sb.new_contact("Ann")
        bot.sb.contact_send(ann.jid, bot.user_jid, "hello bot")
        answers.extend(await bot.sb.wait_contact_messages(ann.jid, 1))

    bot = await run_bot(
        lambda sb: [sys.executable, "-c", RUNNER, block.name],
        tmp_path,
        converse,
        stdin=block.code.encode(),
    )
    assert [(m.text, m.error) for m in answers] == [("hello bot", None)], bot.output
    assert bot.stopped_by_sigint and bot.returncode == 0, bot.output
    report = await trio.to_thread.run_sync(inspect_location, tmp_path / "auth")
    assert report.ok and report.accounts[0].lock_owner is None, report
    assert report.accounts[0].account_id == bot.linked[0].jid
