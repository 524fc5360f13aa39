"""Errors of the message layer: malformed stanzas and message content.

A :class:`StanzaError` names the stanza part that is wrong (``message[@id]``,
``enc[@type]``, ...); it is a remote error (the server or a peer sent it), answered
with a nack or a retry, never a crash.

Since 0.2.0.
"""

from __future__ import annotations


class MessagingError(Exception):
    """Base of every message-layer error."""


class StanzaError(MessagingError):
    """A stanza is malformed: ``where`` names the part, ``reason`` what is wrong."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


class PaddingError(MessagingError):
    """A decrypted plaintext does not end in valid WhatsApp padding."""


class ContentError(MessagingError):
    """A decrypted plaintext is not a ``wa.Message`` (or content to send is not one)."""


class RecipientError(MessagingError):
    """A message was addressed to something that is not a user or group JID."""
