"""The one error family of the Signal layer.

Every failure to start a session, encrypt or decrypt is a :class:`SignalError`.
Errors name what was wrong and where (the Signal address, the message field),
never key bytes. A failed operation changes no stored state: the repository runs
each operation in a store transaction that an exception discards.

Since 0.2.0.
"""

from __future__ import annotations


class SignalError(Exception):
    """Base of every Signal protocol error."""


class NoSession(SignalError):
    """There is no (open) session with ``address`` to encrypt or decrypt with."""

    def __init__(self, address: str, reason: str = "no session") -> None:
        super().__init__(f"{address}: {reason}")
        self.address = address
        self.reason = reason


class InvalidMessage(SignalError):
    """A message (or a stored record) is malformed: ``field`` names the part that is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class InvalidRecord(InvalidMessage):
    """A stored session or sender-key record cannot be read: ``field`` names where."""


class BadMac(InvalidMessage):
    """The message's MAC does not verify under any session with its sender."""


class TooFarInFuture(InvalidMessage):
    """The message's counter or iteration is more than 2,000 past the chain (libsignal's cap)."""


class DuplicateMessage(SignalError):
    """The message key for this counter was already used: a replay or a redelivery."""

    def __init__(self, address: str, counter: int) -> None:
        super().__init__(f"{address}: message {counter} was already decrypted")
        self.address = address
        self.counter = counter


class UntrustedIdentity(SignalError):
    """The remote identity key differs from the stored one and the policy refuses it."""

    def __init__(self, address: str) -> None:
        super().__init__(f"{address}: identity key changed")
        self.address = address


class InvalidSignature(SignalError):
    """A signature (signed pre-key, sender-key message) does not verify: ``what`` names it."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what}: signature does not verify")
        self.what = what


class MissingPreKey(SignalError):
    """A pre-key message names a one-time pre-key we do not (or no longer) hold."""

    def __init__(self, key_id: int) -> None:
        super().__init__(f"pre-key {key_id} is not in the store (used already or never made)")
        self.key_id = key_id


class NoSenderKey(SignalError):
    """No sender key for ``name`` (or none with the message's key id)."""

    def __init__(self, name: str, reason: str = "no sender key") -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class InvalidAddress(SignalError):
    """A JID cannot be turned into a Signal address."""

    def __init__(self, jid: str, reason: str) -> None:
        super().__init__(f"{jid!r}: {reason}")
        self.jid = jid
        self.reason = reason
