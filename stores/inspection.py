"""A read-only integrity report of any auth location, whatever its backend.

``inspect_location(path)`` says which backend holds ``path`` (``detect_backend``),
then reads *every* record of it and checks it the way an open would, and more:

* native: ``stores.native_inspect.inspect_native`` (every frame's checksum, every
  value, every creds version);
* multi-file: ``creds.json`` (parsed, validated, key pairs and signature checked),
  ``.creds.json.last-good``, every ``<type>-<id>.json`` key file, a pending intent
  journal (and every file in it), the open counter;
* SQLite: ``PRAGMA integrity_check``, then every row of every account (or of one
  account): CRC over the row's identity and blob, CBOR, creds validation;
* PostgreSQL (a ``postgresql://`` URI, ``#account=NAME`` optional): the same row
  checks in one read-only transaction (``stores.postgres_inspect``), leases as owners.

It never writes, never creates a file in or beside the location, and never takes
an ownership lock: the lock owner is only probed (``stores.lock.lock_owner``), so
it is safe on a location a running runtime owns (it may then see the tail of a
write in progress as torn). A SQLite database whose ``-wal`` file holds data is
read through a private copy in a temporary directory, because SQLite itself
creates ``-shm``/``-wal`` files beside a database it opens.

Since 0.1.0.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2

from stores import _multi_file_journal as journal
from stores import _multi_file_layout as mf_layout
from stores import native_format
from stores import sqlite_codec as codec
from stores.creds import AuthCreds
from stores.encryption import RecordCipher, StoreKey, check_key, refuse_multi_file_key
from stores.errors import (
    CorruptStateError,
    StoreError,
    UnsupportedFormatError,
    WrongBackendError,
    WrongKeyError,
)
from stores.fsio import REAL_FS, StrPath, is_temp_name
from stores.keys import check_creds_keys
from stores.lock import lock_owner
from stores.multi_file import _parse_creds as parse_multi_file_creds
from stores.native_inspect import NativeReport, inspect_native
from stores.native_load import Layout as NativeLayout
from stores.native_load import classify, load_state, looks_native
from stores.sqlite import _creds_identity, _key_identity, lock_name, read_encryption
from stores.sqlite_schema import BACKEND_MARK, SCHEMA_VERSION, SQLITE_HEADER

__all__ = [
    "BACKEND_NAMES",
    "AccountReport",
    "InspectReport",
    "detect_backend",
    "inspect_location",
]

BACKEND_NAMES = ("native", "multi-file", "sqlite", "postgres")
_LOCK_NAMES = frozenset({native_format.LOCK_NAME, mf_layout.LOCK_FILE})
_MODE_HINTS = ("(want 0600)", "(want 0700)")
_AUTH_LOCATION = "an auth location (a native or multi-file directory, or a SQLite database)"


@dataclass(frozen=True)
class AccountReport:
    """One device found at the location (a SQLite file may hold several)."""

    name: str | None
    """The SQLite account name; ``None`` for directory backends (one device each)."""
    account_id: str | None
    """``creds.me["id"]``; ``None`` before pairing (or when the creds are unreadable)."""
    creds_present: bool
    creds_valid: bool | None
    """Whether the newest creds read and validate; ``None`` when there are none."""
    key_counts: Mapping[str, int]
    """Ids per key type (types with none left out)."""
    durable_seq: int | None
    """The last durable sequence number (native, SQLite); ``None`` when not kept."""
    lock_owner: str | None
    """The live owner holding the location (or this account) right now, if any."""
    key_id: str | None = None
    """The id of the key the data is encrypted with (``None``: plain). Since 0.2.0."""

    @property
    def total_keys(self) -> int:
        return sum(self.key_counts.values())

    @property
    def paired(self) -> bool | None:
        """True once paired, False before, ``None`` when the creds are unreadable."""
        return None if self.creds_valid is False else self.account_id is not None


@dataclass(frozen=True)
class InspectReport:
    """What ``inspect_location`` found. ``ok`` is False when anything is corrupt."""

    location: str
    backend: str | None
    """``native``, ``multi-file``, ``sqlite``, or ``None`` for an empty directory."""
    format_version: int | None
    """The on-disk format version (native header, SQLite ``user_version``); Baileys
    multi-file JSON is unversioned."""
    accounts: tuple[AccountReport, ...]
    problems: tuple[str, ...]
    """Corruption, each naming the file (and offset or row where known)."""
    warnings: tuple[str, ...] = ()
    """Not corruption, but worth knowing: loose modes, a torn tail an open will cut,
    an interrupted commit an open will finish."""
    records_checked: int = 0
    details: Mapping[str, Any] = field(default_factory=dict)
    """Backend-specific facts (native generation, multi-file open counter...)."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``inspect --json`` prints)."""
        return {
            "location": self.location,
            "backend": self.backend,
            "format_version": self.format_version,
            "ok": self.ok,
            "accounts": [
                {
                    "name": a.name,
                    "account_id": a.account_id,
                    "paired": a.paired,
                    "creds_present": a.creds_present,
                    "creds_valid": a.creds_valid,
                    "key_counts": dict(a.key_counts),
                    "total_keys": a.total_keys,
                    "durable_seq": a.durable_seq,
                    "lock_owner": a.lock_owner,
                    "key_id": a.key_id,
                }
                for a in self.accounts
            ],
            "problems": list(self.problems),
            "warnings": list(self.warnings),
            "records_checked": self.records_checked,
            "details": dict(self.details),
        }


# --- detection -----------------------------------------------------------------------


def detect_backend(path: StrPath) -> str | None:
    """The backend holding ``path``, or ``None`` for an empty directory (a new device).

    Raises ``WrongBackendError`` when the path does not exist or holds something that
    is none of ours (never guesses between two backends).
    """
    if _is_postgres_uri(path):
        return "postgres"
    location = Path(path)
    try:
        st = location.stat()
    except FileNotFoundError:
        raise WrongBackendError(
            str(location), _AUTH_LOCATION, "nothing (the path does not exist)"
        ) from None
    if stat.S_ISREG(st.st_mode):
        return _detect_file(location)
    if not stat.S_ISDIR(st.st_mode):
        raise WrongBackendError(
            str(location), _AUTH_LOCATION, "something that is neither a file nor a directory"
        )
    names = [n for n in os.listdir(location) if n not in _LOCK_NAMES and not is_temp_name(n)]
    if not names:
        return None
    if looks_native(location) or any(
        native_format.LOG_RE.match(n) or native_format.SNAPSHOT_RE.match(n) for n in names
    ):
        return "native"
    if any(_is_multi_file_name(n) for n in names):
        return "multi-file"
    raise WrongBackendError(
        str(location), _AUTH_LOCATION, f"a directory of unrecognised files ({', '.join(names[:5])})"
    )


def _is_postgres_uri(path: StrPath) -> bool:
    return isinstance(path, str) and path.startswith(("postgres://", "postgresql://"))


def _detect_file(path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(len(SQLITE_HEADER))
    if head == SQLITE_HEADER:
        return "sqlite"
    if not head:
        # Not a database anybody made: SQLite writes its header with the first table.
        raise WrongBackendError(
            str(path),
            _AUTH_LOCATION,
            "an empty file (0 bytes, not a database; delete it, or run --backend sqlite"
            " --auth on it to create one)",
        )
    raise WrongBackendError(str(path), _AUTH_LOCATION, "a file that is not a SQLite database")


def _is_multi_file_name(name: str) -> bool:
    special = (mf_layout.CREDS_FILE, mf_layout.LAST_GOOD_CREDS_FILE, mf_layout.JOURNAL_FILE)
    return name in special or mf_layout.parse_key_file_name(name) is not None


# --- the entry point -----------------------------------------------------------------


def inspect_location(
    path: StrPath,
    backend: str = "auto",
    *,
    account: str | None = None,
    key: StoreKey | None = None,
) -> InspectReport:
    """Read everything at ``path`` and report its integrity; never modifies anything.

    ``backend`` is ``auto`` or one of ``BACKEND_NAMES``; a location holding another
    backend's data raises ``WrongBackendError``. ``account`` restricts a SQLite
    report to one account. ``key`` opens encrypted data: a missing or wrong key (or a
    key for plain data) raises ``WrongKeyError``, never reported as corruption.
    Blocking: async callers use ``trio.to_thread``.
    """
    if _is_postgres_uri(path):
        if backend not in ("auto", "postgres"):
            raise WrongBackendError(str(path), backend, "a postgresql:// URI")
        # Imported on use: only a PostgreSQL location pays for psycopg.
        module = importlib.import_module("stores.postgres_inspect")
        report: InspectReport = module.inspect_postgres(str(path), account, key)
        return report
    location = Path(os.path.abspath(path))
    if backend != "auto" and backend not in BACKEND_NAMES:
        raise WrongBackendError(
            str(location),
            f"one of {', '.join(BACKEND_NAMES)}",
            f"the unknown backend name {backend!r}",
        )
    found = detect_backend(location)
    if backend != "auto" and found is not None and found != backend:
        raise WrongBackendError(str(location), backend, found)
    if account is not None and (found or backend) != "sqlite":
        raise WrongBackendError(str(location), "sqlite (accounts)", found or "an empty directory")
    if found is None:
        return InspectReport(str(location), None, None, (), (), ("empty: a new device",))
    if found == "multi-file":
        refuse_multi_file_key(key)
        return _inspect_multi_file(location)
    if found == "native":
        return _inspect_native(location, key)
    return _inspect_sqlite(location, account, key)


# --- native --------------------------------------------------------------------------


def _inspect_native(directory: Path, key: StoreKey | None) -> InspectReport:
    creds = _native_creds(directory, key)
    report = inspect_native(directory, key)
    warnings = [p for p in report.problems if p.endswith(_MODE_HINTS)]
    problems = [p for p in report.problems if not p.endswith(_MODE_HINTS)]
    if not report.ok and not problems:
        problems.append(f"{directory}: the native store would not open")
    if creds is not None and report.creds_valid:
        try:
            check_creds_keys(creds, f"{directory} (latest creds)")
        except StoreError as exc:
            problems.append(str(exc))
    if not report.ok and report.durable_seq is not None:
        warnings.append(
            "the account, key counts and seq shown are those of the intact records "
            "before the damage"
        )
    if report.torn_tail is not None and report.ok:
        tail = report.torn_tail
        warnings.append(
            f"{directory}: torn tail of {tail.dropped_bytes} bytes at offset {tail.offset} "
            "of the live log (never acknowledged; the next open cuts it)"
        )
    account = AccountReport(
        name=None,
        account_id=_me_id(creds) if creds is not None and report.creds_valid else None,
        creds_present=report.creds_present,
        creds_valid=report.creds_valid,
        key_counts=dict(report.keys_by_type),
        durable_seq=report.durable_seq,
        lock_owner=report.owner,
        key_id=report.key_id,
    )
    return InspectReport(
        location=str(directory),
        backend="native",
        format_version=native_format.FORMAT_VERSION if report.generation is not None else None,
        accounts=(account,),
        problems=tuple(problems),
        warnings=tuple(warnings),
        records_checked=report.records + sum(n for _, n in report.keys_by_type),
        details=_native_details(report),
    )


def _native_details(report: NativeReport) -> dict[str, Any]:
    return {
        "generation": report.generation,
        "log_records": report.records,
        "creds_versions": report.creds_versions,
        "valid_creds_versions": report.valid_creds_versions,
        "files": [f.name for f in report.files],
    }


def _native_creds(directory: Path, key: StoreKey | None) -> AuthCreds | None:
    """The latest creds (of the intact records, if damaged); None when unreadable.

    inspect_native does not return the creds, so the state is read once more here.
    Another backend's data and an unsupported format version are raised, not
    reported as corruption: the location is not one this build can inspect.
    """
    try:
        listing = classify(directory, REAL_FS)
    except (WrongBackendError, UnsupportedFormatError):
        raise
    except StoreError:
        return None
    if listing.layout is not NativeLayout.NATIVE:
        return None
    try:
        state = load_state(directory, listing, REAL_FS, key=key)
    except (WrongBackendError, UnsupportedFormatError, WrongKeyError):
        raise
    except StoreError:
        try:
            state = load_state(directory, listing, REAL_FS, salvage=True, key=key)
        except StoreError:
            return None
    if state.creds is None:
        return None
    try:
        return AuthCreds.from_plain(cbor2.loads(state.creds), str(directory))
    except (StoreError, ValueError, cbor2.CBORDecodeError):
        return None


def _me_id(creds: AuthCreds) -> str | None:
    me_id = (creds.me or {}).get("id")
    return me_id if isinstance(me_id, str) else None


# --- multi-file ----------------------------------------------------------------------


@dataclass
class _Findings:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    records: int = 0

    def corrupt(self, exc: StoreError) -> None:
        self.problems.append(str(exc))


def _inspect_multi_file(directory: Path) -> InspectReport:
    found = _Findings()
    files = _read_directory(directory)
    pending = _pending_journal(directory, files, found)
    # What the next open sees: the files with an interrupted commit finished.
    for name, data in pending.items():
        if data is None:
            files.pop(name, None)
        else:
            files[name] = data
    creds = _multi_file_creds(directory, files, found)
    counts: dict[str, int] = {}
    for name in sorted(files):
        parsed = mf_layout.parse_key_file_name(name)
        if parsed is None:
            continue
        found.records += 1
        try:
            mf_layout.decode_key(parsed[0], files[name], str(directory / name))
        except StoreError as exc:
            found.corrupt(exc)
        counts[parsed[0]] = counts.get(parsed[0], 0) + 1
    epoch = _epoch(directory, files, found)
    found.warnings += _mode_warnings(directory)
    owner = lock_owner(directory, mf_layout.LOCK_FILE)
    account = AccountReport(
        name=None,
        account_id=None if creds is None else _me_id(creds),
        creds_present=mf_layout.CREDS_FILE in files,
        creds_valid=(creds is not None) if mf_layout.CREDS_FILE in files else None,
        key_counts=dict(sorted(counts.items())),
        durable_seq=None,
        lock_owner=owner.describe() if owner else None,
    )
    return InspectReport(
        location=str(directory),
        backend="multi-file",
        format_version=None,
        accounts=(account,),
        problems=tuple(found.problems),
        warnings=tuple(found.warnings),
        records_checked=found.records,
        details={"opens": epoch, "pending_journal_files": len(pending)},
    )


def _read_directory(directory: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for name in sorted(os.listdir(directory)):
        path = directory / name
        if name in _LOCK_NAMES or is_temp_name(name) or not path.is_file():
            continue
        files[name] = path.read_bytes()
    return files


def _pending_journal(
    directory: Path, files: dict[str, bytes], found: _Findings
) -> dict[str, bytes | None]:
    raw = files.pop(mf_layout.JOURNAL_FILE, None)
    if raw is None:
        return {}
    location = str(directory / mf_layout.JOURNAL_FILE)
    found.records += 1
    try:
        ops = journal.decode_journal(raw, location)
    except UnsupportedFormatError:
        raise  # a newer build's journal: not ours to judge
    except StoreError as exc:
        found.corrupt(exc)
        return {}
    found.warnings.append(
        f"{location}: an interrupted commit of {len(ops)} files; the next open finishes it"
    )
    return ops


def _multi_file_creds(
    directory: Path, files: Mapping[str, bytes], found: _Findings
) -> AuthCreds | None:
    creds: AuthCreds | None = None
    for name in (mf_layout.CREDS_FILE, mf_layout.LAST_GOOD_CREDS_FILE):
        raw = files.get(name)
        if raw is None:
            continue
        found.records += 1
        try:
            parsed = parse_multi_file_creds(raw, str(directory / name))
        except StoreError as exc:
            found.corrupt(exc)
            continue
        if name == mf_layout.CREDS_FILE:
            creds = parsed
    if mf_layout.CREDS_FILE not in files and mf_layout.LAST_GOOD_CREDS_FILE in files:
        found.problems.append(
            f"{directory / mf_layout.CREDS_FILE}: missing, but "
            f"{mf_layout.LAST_GOOD_CREDS_FILE} holds the last good creds"
        )
    elif mf_layout.CREDS_FILE not in files and any(mf_layout.parse_key_file_name(n) for n in files):
        found.problems.append(
            f"{directory / mf_layout.CREDS_FILE}: missing, but the directory holds Signal keys"
        )
    return creds


def _epoch(directory: Path, files: Mapping[str, bytes], found: _Findings) -> int | None:
    raw = files.get(mf_layout.EPOCH_FILE)
    if raw is None:
        return None
    text = raw.decode("ascii", "replace")
    if not text.isdigit() or len(text) > 12:
        found.problems.append(
            f"{directory / mf_layout.EPOCH_FILE} at offset 0: "
            f"expected a decimal open counter, got {text[:20]!r}"
        )
        return None
    return int(text)


def _mode_warnings(directory: Path) -> list[str]:
    warnings = []
    if stat.S_IMODE(directory.stat().st_mode) & 0o077:
        warnings.append(f"{directory}: directory is readable by others (want 0700)")
    for name in sorted(os.listdir(directory)):
        path = directory / name
        if path.is_file() and stat.S_IMODE(path.stat().st_mode) & 0o077:
            warnings.append(f"{path}: mode {stat.S_IMODE(path.stat().st_mode):o} (want 0600)")
    return warnings


# --- SQLite --------------------------------------------------------------------------


def _inspect_sqlite(db_path: Path, only: str | None, key: StoreKey | None) -> InspectReport:
    found = _Findings()
    with _readable_copy(db_path) as conn:
        try:
            version, accounts = _read_sqlite(conn, db_path, only, found, key)
        except sqlite3.DatabaseError as exc:
            found.problems.append(f"{db_path}: database unreadable: {exc}")
            version, accounts = None, []
    found.warnings += _sqlite_mode_warnings(db_path)
    return InspectReport(
        location=str(db_path),
        backend="sqlite",
        format_version=version,
        accounts=tuple(accounts),
        problems=tuple(found.problems),
        warnings=tuple(found.warnings),
        records_checked=found.records,
    )


@contextmanager
def _readable_copy(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A connection that cannot create or change a file beside ``db_path``."""
    wal = db_path.with_name(db_path.name + "-wal")
    if not wal.exists() or wal.stat().st_size == 0:
        # Nothing outside the main file: read it as immutable (no -shm/-wal created).
        uri = f"{db_path.as_uri()}?mode=ro&immutable=1"
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            yield conn
        return
    # Committed data may still be in the WAL: read a private copy of both files.
    scratch = Path(tempfile.mkdtemp(prefix="baileys-trio-inspect-"))
    try:
        copy = scratch / db_path.name
        shutil.copyfile(db_path, copy)
        shutil.copyfile(wal, scratch / wal.name)
        with closing(sqlite3.connect(str(copy))) as conn:
            yield conn
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _read_sqlite(
    conn: sqlite3.Connection,
    db_path: Path,
    only: str | None,
    found: _Findings,
    key: StoreKey | None,
) -> tuple[int | None, list[AccountReport]]:
    location = str(db_path)
    rows = conn.execute("PRAGMA integrity_check").fetchall()
    bad = [str(r[0]) for r in rows if r[0] != "ok"]
    if bad:
        found.problems.append(f"{location}: integrity check failed: " + "; ".join(bad[:5]))
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    if version == 0 and not tables:
        found.warnings.append(f"{location}: an empty database (a new device)")
        return version, []
    mark = None
    if "store_meta" in tables:
        row = conn.execute("SELECT value FROM store_meta WHERE name = 'backend'").fetchone()
        mark = None if row is None else row[0]
    if mark != BACKEND_MARK:
        raise WrongBackendError(location, "sqlite", "a SQLite database of another application")
    if version > SCHEMA_VERSION:
        raise UnsupportedFormatError(location, version, f"schema versions up to {SCHEMA_VERSION}")
    names = _sqlite_accounts(conn)
    if only is not None:
        if only not in names:
            held = ", ".join(repr(n) for n in names) or "no accounts"
            raise WrongBackendError(location, f"account {only!r}", held)
        names = [only]
    return version, [_sqlite_account(conn, db_path, name, found, key) for name in names]


def _sqlite_accounts(conn: sqlite3.Connection) -> list[str]:
    names: set[str] = set()
    for table in ("accounts", "creds", "keys"):
        names.update(r[0] for r in conn.execute(f"SELECT DISTINCT account FROM {table}"))
    return sorted(names)


def _sqlite_account(
    conn: sqlite3.Connection, db_path: Path, account: str, found: _Findings, key: StoreKey | None
) -> AccountReport:
    def where(table: str, row: str) -> str:
        return f"{db_path} table {table} account {account!r} row ({row})"

    place = f"{db_path} account {account!r}"
    cipher = check_key(place, read_encryption(conn, account, place), key)
    creds: AuthCreds | None = None
    creds_rows = conn.execute(
        "SELECT slot, crc, blob FROM creds WHERE account = ? ORDER BY slot", (account,)
    ).fetchall()
    for slot, crc, blob in creds_rows:
        found.records += 1
        parsed = _sqlite_creds(blob, crc, account, where("creds", f"slot {slot}"), found, cipher)
        if slot == 0:
            creds = parsed
    counts: dict[str, int] = {}
    cursor = conn.execute("SELECT type, id, crc, value FROM keys WHERE account = ?", (account,))
    for type_, key_id, crc, blob in cursor:
        found.records += 1
        counts[type_] = counts.get(type_, 0) + 1
        try:
            codec.decode(
                blob,
                crc,
                _key_identity(account, type_, key_id),
                where("keys", f"type {type_!r}, id {key_id!r}"),
                cipher,
            )
        except StoreError as exc:
            found.corrupt(exc)
    seq_row = conn.execute("SELECT seq FROM accounts WHERE account = ?", (account,)).fetchone()
    owner = lock_owner(db_path.parent, lock_name(db_path, account))
    return AccountReport(
        name=account,
        account_id=None if creds is None else _me_id(creds),
        creds_present=any(slot == 0 for slot, _, _ in creds_rows),
        creds_valid=(creds is not None) if any(s == 0 for s, _, _ in creds_rows) else None,
        key_counts=dict(sorted(counts.items())),
        durable_seq=None if seq_row is None else int(seq_row[0]),
        lock_owner=owner.describe() if owner else None,
        key_id=None if cipher is None else cipher.key.key_id,
    )


def _sqlite_creds(
    blob: bytes,
    crc: int,
    account: str,
    where: str,
    found: _Findings,
    cipher: RecordCipher | None,
) -> AuthCreds | None:
    try:
        plain = codec.decode(blob, crc, _creds_identity(account), where, cipher)
        if not isinstance(plain, dict):
            raise CorruptStateError(where, f"creds are a {type(plain).__name__}, not a map")
        creds = AuthCreds.from_plain(plain, where)
        check_creds_keys(creds, where)
    except StoreError as exc:
        found.corrupt(exc)
        return None
    return creds


def _sqlite_mode_warnings(db_path: Path) -> list[str]:
    warnings = []
    for path in (db_path, db_path.with_name(db_path.name + "-wal")):
        if path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o077:
            warnings.append(f"{path}: mode {stat.S_IMODE(path.stat().st_mode):o} (want 0600)")
    return warnings
