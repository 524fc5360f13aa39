"""The reference peer: real Baileys under node, installed on demand for interop tests.

Installed once per package.json content into ``.cache/baileys-peer`` (ignored by git),
so a fresh clone installs it in the first test run and later runs reuse it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PACKAGE_JSON = REPO / "tests" / "peer" / "package.json"
CACHE = REPO / ".cache" / "baileys-peer"


class PeerUnavailable(Exception):
    """node is not on this machine: interop tests are skipped, saying so."""


@dataclass(frozen=True)
class BaileysPeer:
    """A folder with ``node_modules/baileys`` and a way to run ES-module scripts in it."""

    root: Path

    def run(
        self, script: str, *, stdin: str = "", timeout: float = 60.0, cwd: Path | None = None
    ) -> str:
        """Run ``script`` as an ES module that may import 'baileys'; return stdout."""
        env = dict(os.environ, NODE_PATH=str(self.root / "node_modules"))
        proc = subprocess.run(
            ["node", "--input-type=module", "-e", script],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(cwd or self.root),
            env=env,
        )
        if proc.returncode != 0:
            raise AssertionError(f"node failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        return proc.stdout

    def run_json(
        self, script: str, *, stdin: Any = None, timeout: float = 60.0, cwd: Path | None = None
    ) -> Any:
        """Run ``script`` feeding ``stdin`` as JSON; parse the last stdout line as JSON."""
        out = self.run(
            script, stdin="" if stdin is None else json.dumps(stdin), timeout=timeout, cwd=cwd
        )
        lines = [line for line in out.splitlines() if line.strip()]
        return json.loads(lines[-1])


def install_peer() -> BaileysPeer:
    """Install (or reuse) the reference peer; raise PeerUnavailable when node is absent."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise PeerUnavailable("node/npm not found on PATH: Baileys interop tests need Node.js 20+")
    digest = hashlib.sha256(PACKAGE_JSON.read_bytes()).hexdigest()[:16]
    stamp = CACHE / ".installed"
    if (
        stamp.exists()
        and stamp.read_text() == digest
        and (CACHE / "node_modules" / "baileys").is_dir()
    ):
        return BaileysPeer(CACHE)
    CACHE.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PACKAGE_JSON, CACHE / "package.json")
    subprocess.run(
        ["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=CACHE,
        check=True,
        timeout=600,
    )
    stamp.write_text(digest)
    return BaileysPeer(CACHE)
