"""Every error the stores package raises.

Each error names *what* went wrong and *where* (a path, an offset, a field), because
the user reading it at 3 a.m. must be able to tell a torn file from a locked one
without reading our source.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error raised by ``stores``."""


class StoreLockedError(StoreError):
    """Another live owner holds the auth location (a second runtime on one folder)."""

    def __init__(self, location: str, owner: str) -> None:
        self.location = location
        self.owner = owner
        super().__init__(f"{location} is locked by {owner}")


class WrongBackendError(StoreError):
    """The location holds another backend's data (e.g. Baileys JSON opened as native)."""

    def __init__(self, location: str, expected: str, found: str) -> None:
        self.location = location
        self.expected = expected
        self.found = found
        super().__init__(
            f"{location}: found {_WHAT.get(found, found)}, expected {_WHAT.get(expected, expected)}"
        )


_WHAT = {
    "native": "a native auth directory",
    "multi-file": "a Baileys multi-file JSON directory",
    "sqlite": "a SQLite database file",
    "postgres": "a PostgreSQL auth database",
}
"""How an error names a backend's data (``WrongBackendError`` takes backend names)."""


class UnsupportedFormatError(StoreError):
    """The data declares a format version this build cannot read."""

    def __init__(self, location: str, version: object, supported: object) -> None:
        self.location = location
        self.version = version
        self.supported = supported
        super().__init__(
            f"{location}: format version {version!r} is not supported (supported: {supported!r})"
        )


class CorruptStateError(StoreError):
    """Durable data failed a checksum, a parse or a validation.

    Never treated as "no creds": the caller must decide (restore, migrate, re-pair).
    """

    def __init__(self, location: str, reason: str, offset: int | None = None) -> None:
        self.location = location
        self.reason = reason
        self.offset = offset
        where = location if offset is None else f"{location} at offset {offset}"
        super().__init__(f"{where}: {reason}")


class InvalidValueError(StoreError, ValueError):
    """A value handed to the store (creds field, key id, key value) is malformed."""

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"{what}: {reason}")


class DurabilityError(StoreError):
    """A write, fsync or rename failed; the store refuses further writes from now on.

    A failed fsync is never retried: the page cache may already have dropped the data.
    """

    def __init__(self, location: str, operation: str, cause: BaseException | None = None) -> None:
        self.location = location
        self.operation = operation
        self.cause = cause
        detail = f": {cause}" if cause is not None else ""
        super().__init__(f"{location}: {operation} failed{detail}; the store is now read-only")


class StoreReadOnlyError(StoreError):
    """A write was refused because an earlier durability failure made the store read-only."""

    def __init__(self, location: str, reason: str) -> None:
        self.location = location
        self.reason = reason
        super().__init__(f"{location} is read-only since {reason}")


class StoreClosedError(StoreError):
    """The store was used after it was closed."""


class TransactionConflict(StoreError):
    """A transaction read data that another transaction changed before it committed."""

    def __init__(self, key: str, conflicts: list[tuple[str, str]]) -> None:
        self.key = key
        self.conflicts = conflicts
        shown = ", ".join(f"{t}/{i}" for t, i in conflicts[:5])
        super().__init__(f"transaction {key!r} conflicts on {shown}")


class MigrationError(StoreError):
    """A migration was refused or its verification failed; the source is untouched."""


class FencedError(StoreError):
    """A commit was refused because this owner no longer holds the account's lease.

    Another process took the lease over (this one was paused, partitioned or too slow
    to renew), or the lease expired without renewal. Nothing of the refused commit was
    written, and the backend refuses every later write: stop the session, never retry.
    Since 0.2.0.
    """

    def __init__(self, location: str, reason: str, epoch: int) -> None:
        self.location = location
        self.reason = reason
        self.epoch = epoch
        super().__init__(f"{location}: fenced at lease epoch {epoch}: {reason}")


class BackupError(StoreError):
    """A backup or restore was refused, or its copy failed verification.

    ``location`` names the place at fault (the source, the backup or the target) and
    ``reason`` what was found there. Nothing at the target is left that could be
    taken for a store: it is as it was (absent or empty). Since 0.2.0.
    """

    def __init__(self, location: str, reason: str) -> None:
        self.location = location
        self.reason = reason
        super().__init__(f"{location}: {reason}")


class BackupTargetNotEmpty(BackupError):
    """The backup's output (or the restore's target) already holds something.

    A backup never overwrites anything, so an older backup or a live store there is
    kept as it was. Since 0.2.0.
    """


class BackupUnsupportedError(BackupError):
    """The source's backend cannot be copied at a consistent point by this command.

    The reason says what to do instead (for example, back up the running session with
    ``Session.backup``). Since 0.2.0.
    """


class BackupVerificationError(BackupError):
    """The written copy did not read back as the state that was copied.

    The copy was removed again; the source was never touched. Since 0.2.0.
    """


class AlreadyInFleetError(StoreError):
    """``fleet add`` of an account the fleet already runs; nothing was changed. Since 0.2.0."""

    def __init__(self, account: str) -> None:
        self.account = account
        super().__init__(f"account {account!r} is already in the fleet")


class WrongKeyError(StoreError):
    """The encryption key given does not open the store; nothing on disk was changed.

    ``expected`` is the key id the store names (``None``: the store is not encrypted);
    ``given`` the id of the key given (``None``: no key). Never reported as damage: the
    key id is checked before any record is read. Since 0.2.0.
    """

    def __init__(self, location: str, expected: str | None, given: str | None) -> None:
        self.location = location
        self.expected = expected
        self.given = given
        if expected is None:
            detail = (
                f"is not encrypted, but a key ({given}) was given; open it without a key, "
                "or encrypt it first with `baileys-trio rekey`"
            )
        elif given is None:
            detail = f"is encrypted with key {expected}, and no key was given"
        else:
            detail = f"is encrypted with key {expected}, not with the key given ({given})"
        super().__init__(f"{location} {detail}")


class EncryptionKeyError(StoreError, ValueError):
    """An encryption key source is unusable: wrong length, unreadable or too open a file,
    a failing callback, or a backend that is never encrypted. Since 0.2.0."""

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"{what}: {reason}")
