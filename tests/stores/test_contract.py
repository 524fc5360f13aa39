"""The store contract run over every backend, and transactions through each of them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stores.memory import MemoryBackend
from stores.multi_file import open_multi_file_backend
from stores.native import open_native_backend
from stores.sqlite import open_sqlite_backend
from tests.stores.contract import (
    BackendKit,
    PersistenceContract,
    SignalStoreContract,
    SignalStoreKit,
    TransactionContract,
    kit_from_opener,
    signal_store_kit_over,
)


def _memory(_location: Path) -> MemoryBackend:
    return MemoryBackend()


def _kit(name: str) -> BackendKit:
    if name == "memory":

        async def open_memory(location: Path) -> MemoryBackend:
            return _memory(location)

        return kit_from_opener("memory", False, open_memory)
    if name == "native":
        return kit_from_opener("native", True, lambda loc: open_native_backend(loc))
    if name == "multi_file":
        return kit_from_opener("multi_file", True, lambda loc: open_multi_file_backend(loc))
    return kit_from_opener("sqlite", True, lambda loc: open_sqlite_backend(loc))


@pytest.fixture(params=["memory", "native", "multi_file", "sqlite"])
def backend_kit(request: pytest.FixtureRequest) -> BackendKit:
    return _kit(request.param)


@pytest.fixture
def signal_store_kit(backend_kit: BackendKit) -> SignalStoreKit:
    return signal_store_kit_over(backend_kit)


class TestPersistenceContract(PersistenceContract):
    """Every backend keeps the Persistence contract."""


class TestTransactionContract(TransactionContract):
    """Every backend carries serializable transactions."""


class TestSignalStoreContract(SignalStoreContract):
    """TransactionalStore over every backend keeps the SignalStore contract."""


ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "custom-stores.md"


def _guide_files() -> dict[str, str]:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL)
    files: dict[str, str] = {}
    for block in blocks:
        first, _, _rest = block.partition("\n")
        if first.startswith("# file: "):
            files[first.removeprefix("# file: ").strip()] = block
    return files


def test_custom_stores_guide_sample_passes_the_contract(tmp_path: Path) -> None:
    """The guide's sample backend and SignalStore pass the contract suites, run as written."""
    files = _guide_files()
    assert set(files) == {
        "cbor_file_backend.py",
        "locked_signal_store.py",
        "test_cbor_file_backend.py",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-c",
        str(ROOT / "pyproject.toml"),
        "--rootdir",
        str(tmp_path),
        str(tmp_path / "test_cbor_file_backend.py"),
    ]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    report = done.stdout[-4000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    expected = sum(
        _cases(cls) for cls in (PersistenceContract, TransactionContract, SignalStoreContract)
    )
    assert re.search(rf"\b{expected} passed in", done.stdout), report


def _cases(suite: type) -> int:
    """How many test cases a contract class yields (parametrized methods count per value)."""
    count = 0
    for name in dir(suite):
        if name.startswith("test_"):
            marks = getattr(getattr(suite, name), "pytestmark", [])
            sizes = [len(mark.args[1]) for mark in marks if mark.name == "parametrize"]
            count += max(sizes, default=1)
    return count
