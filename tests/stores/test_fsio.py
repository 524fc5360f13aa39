"""The IO seam: atomic writes, private directories and injected failures."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from stores.errors import DurabilityError
from stores.fsio import (
    Fault,
    FaultyFileSystem,
    atomic_write,
    ensure_private_dir,
    is_temp_name,
    write_all,
)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_replaces_content_with_private_mode(tmp_path: Path) -> None:
    """atomic_write leaves exactly the new bytes, mode 0600, and no temp file behind."""
    target = tmp_path / "creds.bin"
    atomic_write(target, b"old")
    atomic_write(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert mode_of(target) == 0o600
    assert os.listdir(tmp_path) == ["creds.bin"]


def test_atomic_write_fsyncs_file_and_directory(tmp_path: Path) -> None:
    """A write is made durable: one file fsync, one rename, one directory fsync."""
    fs = FaultyFileSystem()
    atomic_write(tmp_path / "f", b"x", fs=fs)
    assert fs.calls["fsync"] == 1
    assert fs.calls["rename"] == 1
    assert fs.calls["fsync_dir"] == 1


@pytest.mark.parametrize(
    ("fault", "operation"),
    [
        (Fault("fsync"), "fsync"),
        (Fault("rename"), "rename"),
        (Fault("write", errno=errno.ENOSPC, written=3), "write"),
        (Fault("open"), "create temp file"),
    ],
)
def test_atomic_write_failure_keeps_old_content(
    tmp_path: Path, fault: Fault, operation: str
) -> None:
    """A failed write, fsync or rename raises DurabilityError and the old file survives intact."""
    target = tmp_path / "state"
    atomic_write(target, b"durable old")
    with pytest.raises(DurabilityError) as info:
        atomic_write(target, b"new new new new", fs=FaultyFileSystem(fault))
    assert info.value.operation == operation
    assert info.value.location == str(target)
    assert target.read_bytes() == b"durable old"
    assert os.listdir(tmp_path) == ["state"]


def test_directory_fsync_failure_is_a_durability_error(tmp_path: Path) -> None:
    """If the directory fsync fails the rename is not known durable: DurabilityError."""
    with pytest.raises(DurabilityError) as info:
        atomic_write(tmp_path / "f", b"x", fs=FaultyFileSystem(Fault("fsync_dir")))
    assert info.value.operation == "fsync of directory"


def test_write_all_survives_short_writes(tmp_path: Path) -> None:
    """Short writes (legal for write(2)) are continued until every byte is written."""
    fs = FaultyFileSystem(short_writes=True)
    path = tmp_path / "f"
    fd = fs.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        write_all(fs, fd, bytes(range(256)) * 4, str(path))
    finally:
        fs.close(fd)
    assert path.read_bytes() == bytes(range(256)) * 4
    assert fs.calls["write"] > 5


def test_enospc_midway_names_the_file(tmp_path: Path) -> None:
    """ENOSPC after a partial write surfaces as DurabilityError carrying the OSError."""
    fs = FaultyFileSystem(Fault("write", errno=errno.ENOSPC, written=10))
    path = tmp_path / "log"
    fd = fs.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(DurabilityError) as info:
            write_all(fs, fd, b"a" * 100, str(path))
    finally:
        fs.close(fd)
    assert isinstance(info.value.cause, OSError)
    assert info.value.cause.errno == errno.ENOSPC
    assert path.read_bytes() == b"a" * 10


def test_fault_skip_and_times(tmp_path: Path) -> None:
    """A fault fires only after `skip` matching calls and at most `times` times."""
    fs = FaultyFileSystem(Fault("fsync", skip=1, times=1))
    atomic_write(tmp_path / "a", b"1", fs=fs)
    with pytest.raises(DurabilityError):
        atomic_write(tmp_path / "b", b"2", fs=fs)
    atomic_write(tmp_path / "c", b"3", fs=fs)
    assert sorted(os.listdir(tmp_path)) == ["a", "c"]


def test_ensure_private_dir_creates_parents_0700(tmp_path: Path) -> None:
    """Missing directories are created 0700, parents included."""
    target = tmp_path / "a" / "b" / "auth"
    ensure_private_dir(target)
    assert mode_of(target) == 0o700
    assert mode_of(tmp_path / "a") == 0o700


def test_ensure_private_dir_tightens_loose_mode(tmp_path: Path) -> None:
    """An existing auth directory readable by others is tightened to 0700."""
    target = tmp_path / "auth"
    target.mkdir(mode=0o755)
    os.chmod(target, 0o755)
    ensure_private_dir(target)
    assert mode_of(target) == 0o700


def test_ensure_private_dir_refuses_a_file(tmp_path: Path) -> None:
    """A regular file where the directory should be is an error, not overwritten."""
    target = tmp_path / "auth"
    target.write_bytes(b"keep me")
    with pytest.raises(DurabilityError):
        ensure_private_dir(target)
    assert target.read_bytes() == b"keep me"


def test_temp_names_are_recognised() -> None:
    """Temp files made by atomic_write are recognisable, real names are not."""
    assert is_temp_name(".creds.json.tmp-0a1b2c")
    assert not is_temp_name("creds.json")
    assert not is_temp_name(".hidden")
