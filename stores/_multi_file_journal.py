"""Crash-safe multi-file commits for the Baileys directory: an intent journal.

Renames make one file atomic, not several. A commit touching more than one file
first writes the whole change (every file's final bytes, or a deletion) to
``.baileys-trio-journal`` atomically and durably, then applies it file by file
(temp + fsync + rename each, one directory fsync), then removes the journal
(unlink + directory fsync). Opening a directory replays a journal left by a
crash, so after any crash the directory holds every file of the last journaled
commit or none of it. Baileys never reads dotfiles, so the journal is invisible
to it; a directory is only ever handed to Baileys without a journal if our
process died and nobody reopened it with us (then it may see a half-applied
last commit that was never acknowledged).

Journal file layout (version 1)::

    b"BTMFJ\\x00"  magic (6 bytes)
    u16 BE        format version (1)
    u32 BE        body length
    32 bytes      SHA-256 of the body
    body          CBOR: [[file name, bytes or null], ...]

Blocking code: callers run it in ``trio.to_thread``.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import cbor2

from stores.errors import CorruptStateError, DurabilityError, UnsupportedFormatError
from stores.fsio import FileSystem, atomic_write, sync_dir, sync_file, temp_path_for, write_all

MAGIC = b"BTMFJ\x00"
VERSION = 1
_HEADER = struct.Struct(">6sHI32s")

Ops = Mapping[str, bytes | None]
"""File name → its new full content, or ``None`` to delete it."""


def encode_journal(ops: Ops) -> bytes:
    body = cbor2.dumps([[name, data] for name, data in ops.items()])
    return _HEADER.pack(MAGIC, VERSION, len(body), hashlib.sha256(body).digest()) + body


def decode_journal(raw: bytes, location: str) -> dict[str, bytes | None]:
    """Parse a journal; ``CorruptStateError`` (with the offset) if it fails any check."""
    if len(raw) < _HEADER.size:
        raise CorruptStateError(location, "journal shorter than its header", len(raw))
    magic, version, length, digest = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise CorruptStateError(location, "not a baileys-trio journal (bad magic)", 0)
    if version != VERSION:
        raise UnsupportedFormatError(location, version, VERSION)
    body = raw[_HEADER.size :]
    if len(body) != length:
        raise CorruptStateError(
            location, f"journal body is {len(body)} bytes, header says {length}", _HEADER.size
        )
    if hashlib.sha256(body).digest() != digest:
        raise CorruptStateError(location, "journal checksum mismatch", _HEADER.size)
    try:
        entries = cbor2.loads(body)
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise CorruptStateError(location, f"journal body is not CBOR: {exc}", _HEADER.size) from exc
    ops: dict[str, bytes | None] = {}
    if not isinstance(entries, list):
        raise CorruptStateError(location, "journal body is not a list", _HEADER.size)
    for entry in entries:
        if (
            not isinstance(entry, list)
            or len(entry) != 2
            or not isinstance(entry[0], str)
            or not is_plain_name(entry[0])
            or not (entry[1] is None or isinstance(entry[1], bytes))
        ):
            raise CorruptStateError(
                location, f"journal entry {entry!r:.80} is malformed", _HEADER.size
            )
        ops[entry[0]] = entry[1]
    return ops


def is_plain_name(name: str) -> bool:
    """A single path component we may write: no separators, no NUL, not . or .."""
    return bool(name) and "/" not in name and "\x00" not in name and name not in (".", "..")


def write_journal(fs: FileSystem, directory: Path, name: str, ops: Ops) -> None:
    atomic_write(directory / name, encode_journal(ops), fs=fs)


def remove_file_durably(fs: FileSystem, directory: Path, name: str) -> None:
    path = directory / name
    try:
        fs.unlink(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DurabilityError(str(path), "unlink", exc) from exc
    sync_dir(fs, directory)


def apply_ops(fs: FileSystem, directory: Path, ops: Ops) -> None:
    """Make every op durable: temps written and fsynced, renamed, one directory fsync.

    Each file changes atomically (old or new content, never a mix). Raises
    ``DurabilityError`` on the first failure; leftover temp files are harmless.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for name, data in ops.items():
            if data is not None:
                staged.append((_stage(fs, directory / name, data), directory / name))
        for tmp, target in staged:
            try:
                fs.rename(tmp, target)
            except OSError as exc:
                raise DurabilityError(str(target), "rename", exc) from exc
        staged.clear()
        for name, data in ops.items():
            if data is None:
                _unlink(fs, directory / name)
    finally:
        for tmp, _ in staged:
            _discard(fs, tmp)
    sync_dir(fs, directory)


def _stage(fs: FileSystem, target: Path, data: bytes) -> Path:
    tmp = temp_path_for(target)
    location = str(target)
    try:
        fd = fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except OSError as exc:
        raise DurabilityError(location, "create temp file", exc) from exc
    try:
        write_all(fs, fd, data, location)
        sync_file(fs, fd, location)
    except BaseException:
        fs.close(fd)
        _discard(fs, tmp)
        raise
    fs.close(fd)
    return tmp


def _unlink(fs: FileSystem, path: Path) -> None:
    try:
        fs.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise DurabilityError(str(path), "unlink", exc) from exc


def _discard(fs: FileSystem, path: Path) -> None:
    # Best effort: temp files are never read as data and are swept on the next open.
    try:
        fs.unlink(path)
    except OSError:
        pass
