"""A read-only integrity report of a native store directory (for ``inspect`` in the CLI).

``inspect_native(path)`` reads every file and record, verifies every checksum,
decodes every value and validates every creds version, and reports what it found.
It never writes, never truncates and never takes the lock, so it is safe on a store a
running runtime owns (it may then see the tail of a write in progress as torn).

Since 0.1.0.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

import cbor2

from stores.creds import AuthCreds
from stores.encryption import StoreKey
from stores.errors import StoreError, WrongKeyError
from stores.fsio import REAL_FS, StrPath, is_temp_name
from stores.lock import lock_owner
from stores.native_format import DAMAGED_RE, LOCK_NAME, LOG_RE, SNAPSHOT_RE, TornTail
from stores.native_load import Layout, LoadedState, classify, load_state


@dataclass(frozen=True)
class FileReport:
    name: str
    role: str
    """``log``, ``snapshot``, ``lock``, ``temp``, ``damaged`` or ``unknown``."""
    size: int
    mode: int


@dataclass(frozen=True)
class NativeReport:
    """What ``inspect_native`` found. ``ok`` means a normal open would succeed."""

    location: str
    ok: bool
    new: bool
    """Absent or empty: opening would start a new device."""
    problems: tuple[str, ...]
    files: tuple[FileReport, ...]
    generation: int | None = None
    durable_seq: int | None = None
    records: int = 0
    keys_by_type: tuple[tuple[str, int], ...] = ()
    creds_present: bool = False
    creds_valid: bool | None = None
    creds_versions: int = 0
    """Creds versions on disk (log records plus the snapshot's current and previous)."""
    valid_creds_versions: int = 0
    torn_tail: TornTail | None = None
    owner: str | None = None
    """The live lock owner, if a runtime has the store open right now."""
    key_id: str | None = None
    """The id of the key the store is encrypted with (``None``: plain)."""


def inspect_native(path: StrPath, key: StoreKey | None = None) -> NativeReport:
    """Read everything under ``path`` and report its integrity; never modifies anything.

    ``key`` opens an encrypted store; a missing or wrong one raises ``WrongKeyError``
    (the data is not at fault, so it is not reported as a problem).
    """
    directory = Path(path)
    location = str(directory)
    try:
        listing = classify(directory, REAL_FS)
    except StoreError as exc:
        return NativeReport(location, ok=False, new=False, problems=(str(exc),), files=())
    files = _files(directory) if listing.layout is not Layout.ABSENT else ()
    owner = lock_owner(directory, LOCK_NAME) if listing.layout is not Layout.ABSENT else None
    problems = _mode_problems(directory, files)
    describe = owner.describe() if owner else None
    if listing.layout is not Layout.NATIVE:
        return NativeReport(location, True, True, tuple(problems), files, owner=describe)
    ok = True
    try:
        state: LoadedState | None = load_state(directory, listing, REAL_FS, key=key)
    except WrongKeyError:
        raise
    except StoreError as exc:
        ok = False
        problems.append(str(exc))
        try:
            state = load_state(directory, listing, REAL_FS, salvage=True, key=key)
        except StoreError:
            state = None
    if state is None:
        return NativeReport(location, False, False, tuple(problems), files, owner=describe)
    try:
        value_problems = _value_problems(state)
        keys_by_type = tuple(sorted((t, state.keys.count(t)) for t in state.keys.types()))
    finally:
        state.keys.close()
    problems += value_problems
    valid = [_creds_problem(v.raw, v.location) is None for v in state.creds_history]
    latest_problem = None if state.creds is None else _creds_problem(state.creds, location)
    if latest_problem is not None:
        ok = False
        problems.append(f"latest creds do not validate: {latest_problem}")
    return NativeReport(
        location=location,
        ok=ok and not value_problems,
        new=False,
        problems=tuple(problems),
        files=files,
        generation=state.generation,
        durable_seq=state.durable_seq,
        records=len(state.log.records) if state.log else 0,
        keys_by_type=keys_by_type,
        creds_present=state.creds is not None,
        creds_valid=None if state.creds is None else latest_problem is None,
        creds_versions=len(state.creds_history),
        valid_creds_versions=sum(valid),
        torn_tail=state.log.torn if state.log else None,
        owner=describe,
        key_id=None if state.encryption is None else state.encryption.key_id,
    )


def _files(directory: Path) -> tuple[FileReport, ...]:
    out = []
    for entry in sorted(directory.iterdir()):
        st = entry.stat()
        out.append(FileReport(entry.name, _role(entry.name), st.st_size, stat.S_IMODE(st.st_mode)))
    return tuple(out)


def _role(name: str) -> str:
    if name == LOCK_NAME:
        return "lock"
    if LOG_RE.match(name):
        return "log"
    if SNAPSHOT_RE.match(name):
        return "snapshot"
    if DAMAGED_RE.match(name):
        return "damaged"
    return "temp" if is_temp_name(name) else "unknown"


def _mode_problems(directory: Path, files: tuple[FileReport, ...]) -> list[str]:
    problems = []
    if directory.is_dir() and stat.S_IMODE(directory.stat().st_mode) & 0o077:
        problems.append(f"{directory}: directory is readable by others (want 0700)")
    for f in files:
        if f.mode & 0o077:
            problems.append(f"{directory / f.name}: mode {f.mode:o} (want 0600)")
    return problems


def _value_problems(state: LoadedState) -> list[str]:
    problems = []
    for type_ in state.keys.types():
        try:
            for id_, raw in state.keys.entries(type_):
                try:
                    cbor2.loads(raw)
                except (cbor2.CBORDecodeError, ValueError) as exc:
                    problems.append(f"value {type_}/{id_} does not decode: {exc}")
        except StoreError as exc:  # the entry changed on disk since it was loaded
            problems.append(str(exc))
    return problems


def _creds_problem(raw: bytes, location: str) -> str | None:
    try:
        plain = cbor2.loads(raw)
    except (cbor2.CBORDecodeError, ValueError) as exc:
        return f"undecodable: {exc}"
    try:
        AuthCreds.from_plain(plain, location)
    except StoreError as exc:
        return str(exc)
    return None
