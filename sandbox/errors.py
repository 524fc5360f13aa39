"""Errors of the sandbox server, its phone and its control channel.

Since 0.1.0.
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base of every error the sandbox raises."""


class InvalidQRError(SandboxError):
    """A QR string the phone cannot read; the message names the part and why."""

    def __init__(self, part: str, reason: str) -> None:
        super().__init__(f"QR string: {part}: {reason}")
        self.part = part
        self.reason = reason


class InvalidCodeError(SandboxError):
    """Text the phone cannot read as a pairing code (8 characters of the code alphabet)."""


class ScanRejectedError(SandboxError):
    """The server refused a scan (unknown, expired or not yet shown ref; key mismatch)."""


class PairingFailedError(SandboxError):
    """A scan was accepted but the link did not complete (bad device signature, socket gone)."""


class InvalidAccountError(SandboxError, ValueError):
    """An account that cannot be created (a number that is not digits, or taken)."""


class UnknownTargetError(SandboxError):
    """A fault or query named a connection or device the sandbox does not have."""


class ControlError(SandboxError):
    """The control channel answered with an error, or spoke something else than line JSON."""
