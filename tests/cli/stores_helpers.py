"""Build auth locations of every backend for the CLI tests, and run the commands.

The stores are written through the public stores API (``use_*_auth_state``), so the
tests inspect and migrate what a real bot leaves on disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from stores.auth import (
    PersistedAuth,
    use_multi_file_auth_state,
    use_native_file_auth_state,
    use_sqlite_auth_state,
)
from stores.keys import generate_pre_keys

ROOT = Path(__file__).resolve().parents[2]
ME_ID = "15551234567:7@s.whatsapp.net"

PARSER_SCRIPT = (
    "import sys\n"
    "from stores.cli import build_parser\n"
    "args = build_parser().parse_args(sys.argv[1:])\n"
    "sys.exit(args._run(args, None))\n"
)
"""What a subprocess runs until runtime/cli.py registers the commands: a parser
built from ``register_inspect_command`` / ``register_migrate_command`` only."""


@dataclass(frozen=True)
class Done:
    """A finished command: exit code and both streams."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(*argv: str | os.PathLike[str], cwd: Path | None = None) -> Done:
    """Run the commands in a fresh interpreter of the venv (bounded by a timeout)."""
    done = subprocess.run(
        [sys.executable, "-c", PARSER_SCRIPT, *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd or ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return Done(done.returncode, done.stdout, done.stderr)


async def _fill(auth: PersistedAuth, pre_keys: int, commits: int) -> None:
    creds = auth.state.creds
    creds.me = {"id": ME_ID, "name": "Test Bot"}
    await auth.save_creds(creds)
    await auth.state.keys.set({"pre-key": generate_pre_keys(1, pre_keys)})
    # Separate commits: separate native log records (and write groups).
    for n in range(commits):
        await auth.state.keys.set({"session": {f"1555000{n}.0": {"chain": bytes([n]) * 8}}})
    await auth.state.keys.set(
        {"sender-key": {"120363@g.us::1555:2::0": b"\x01\x02"}, "tctoken": {"1555": b"t"}}
    )


def make_store(
    backend: str, path: Path, *, account: str = "default", pre_keys: int = 5, commits: int = 3
) -> Path:
    """A paired device (``ME_ID``) with pre-keys, sessions, a sender key and a tctoken."""

    async def main() -> None:
        if backend == "native":
            auth = await use_native_file_auth_state(path)
        elif backend == "multi-file":
            auth = await use_multi_file_auth_state(path)
        else:
            auth = await use_sqlite_auth_state(path, account)
        async with auth:
            await _fill(auth, pre_keys, commits)

    trio.run(main)
    return path


def expected_counts(pre_keys: int = 5, commits: int = 3) -> dict[str, int]:
    """The key counts ``make_store`` leaves."""
    return {"pre-key": pre_keys, "sender-key": 1, "session": commits, "tctoken": 1}


def tree_state(path: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under ``path`` (and its siblings for a database): mode, mtime, bytes."""
    root = path if path.is_dir() else path.parent
    out = {}
    for file in sorted(root.rglob("*")):
        if file.is_file():
            st = file.stat()
            out[str(file.relative_to(root))] = (st.st_mode, st.st_mtime_ns, file.read_bytes())
    return out
