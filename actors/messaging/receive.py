"""Decrypting a received stanza: every part in ONE store transaction (sans-IO over a store).

The transaction is locked by the author's Signal address (its LID twin when mapped),
so the PN and LID forms of one contact share it. Inside it each part is decrypted
(``pkmsg``/``msg`` through the contact's session, ``skmsg`` through the author's
sender key), the padding removed and the ``wa.Message`` parsed; a sender-key
distribution inside is processed in the same transaction, so the ``skmsg`` after it
decrypts. A part that fails is reported and its writes alone are rolled back; what
the other parts changed stays. The decrypted message is kept (``received-message``)
in the same transaction, so a stanza delivered again is answered from it. The
caller commits (the transaction's exit) BEFORE it emits the message or acks the
stanza: a crash before that means no ack, and the server delivers again.

The kept message is filed under the author's address as the stanza names it, not
under the lock: a redelivery names the same author again, whereas the lock moves to
the LID twin when the contact's sessions migrate (the first ``usync`` that reports
its LID), which can happen between the commit and the redelivery of a stanza whose
ack a crash lost; looked up under the new lock it would be missed and decrypted
twice (``DuplicateMessage``).

Only the newest ``KEEP`` messages per author are kept. A stanza delivered again
after its copy was dropped fails every part with ``DuplicateMessage`` (the message
keys of its counters were used); it is then a duplicate of a message already
emitted, not an undecryptable one: its commit came before its emit and ack, the
inbox handles stanzas one at a time, so the ``KEEP`` later messages of that author
that pushed it out were committed after it was emitted. It comes back marked
``duplicate``, with no message. A stanza with a ``DuplicateMessage`` part beside a
part that failed otherwise stays an error.

Since 0.2.0.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.connection.proto import wa_pb2
from actors.messaging.content import decode_padded, parse_message, text_of, unwrap_device_sent
from actors.messaging.errors import MessagingError
from actors.messaging.incoming import PLAINTEXT, IncomingStanza, MessageKey
from actors.messaging.kept import RECEIVED, kept_lookup, kept_with
from actors.signal.address import jid_to_signal_address
from actors.signal.errors import DuplicateMessage, SignalError
from actors.signal.repository import SignalRepository
from stores.types import SignalStore, Transaction


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A received message as the bot sees it; ``error`` set when a part did not decrypt.

    ``duplicate``: the stanza was handled before and its kept copy is
    gone (every part's message key was used); ``message`` is None and nothing is
    emitted again.
    """

    key: MessageKey
    message: wa_pb2.Message | None
    push_name: str | None
    timestamp: int | None
    error: str | None = None
    duplicate: bool = False

    @property
    def text(self) -> str | None:
        return None if self.message is None else text_of(self.message)

    def __repr__(self) -> str:
        state = "duplicate" if self.duplicate else "undecryptable" if self.error else "ok"
        return f"ReceivedMessage({self.key.remote_jid}, id={self.key.id}, {state})"


async def decrypt_stanza(
    keys: SignalStore, repository: SignalRepository, stanza: IncomingStanza
) -> ReceivedMessage:
    """Decrypt every part of ``stanza`` in one transaction; return what it said."""
    lock = await repository.resolve_address(stanza.author)
    author = jid_to_signal_address(stanza.author)

    async def op(tx: Transaction) -> ReceivedMessage:
        kept = (await tx.get(RECEIVED, [author])).get(author)
        again = kept_lookup(kept, stanza.key.id)
        if again is not None:
            # Delivered again (our ack was lost): decrypting twice would fail.
            return ReceivedMessage(
                stanza.key, parse_message(again), stanza.push_name, stanza.timestamp
            )
        message = wa_pb2.Message()
        errors: list[str] = []
        decrypted = duplicates = 0
        for index, part in enumerate(stanza.parts):
            try:
                async with keys.transaction(lock):
                    part_message = await _decrypt_part(
                        repository, stanza, part.kind, part.ciphertext
                    )
                    await _take_distribution(repository, stanza, part_message)
            except (SignalError, MessagingError) as exc:
                duplicates += isinstance(exc, DuplicateMessage)
                errors.append(f"part {index} ({part.kind}): {type(exc).__name__}: {exc}")
                continue
            decrypted += 1
            # Baileys merges the parts: the skdm part and the skmsg part form one message.
            message.MergeFrom(part_message)
        if errors and duplicates == len(errors) == len(stanza.parts):
            return ReceivedMessage(
                stanza.key, None, stanza.push_name, stanza.timestamp, duplicate=True
            )
        error = "; ".join(errors) or (None if decrypted else "no decryptable part")
        if error is None:
            data = message.SerializeToString()
            await tx.set({RECEIVED: {author: kept_with(kept, stanza.key.id, data)}})
        return ReceivedMessage(
            key=stanza.key,
            message=message if decrypted else None,
            push_name=stanza.push_name,
            timestamp=stanza.timestamp,
            error=error,
        )

    return await keys.run_transaction(lock, op)


async def _decrypt_part(
    repository: SignalRepository, stanza: IncomingStanza, kind: str, ciphertext: bytes
) -> wa_pb2.Message:
    if kind == PLAINTEXT:
        return parse_message(ciphertext)
    if kind == "skmsg":
        plaintext = await repository.decrypt_group_message(
            stanza.key.remote_jid, stanza.author, ciphertext
        )
    else:
        plaintext = await repository.decrypt_message(stanza.author, kind, ciphertext)
    return unwrap_device_sent(decode_padded(plaintext))


async def _take_distribution(
    repository: SignalRepository, stanza: IncomingStanza, message: wa_pb2.Message
) -> None:
    if not message.HasField("senderKeyDistributionMessage"):
        return
    distribution = message.senderKeyDistributionMessage
    group = distribution.groupId or stanza.key.remote_jid
    await repository.process_sender_key_distribution_message(
        group, stanza.author, distribution.axolotlSenderKeyDistributionMessage
    )
