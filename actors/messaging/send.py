"""Encrypting one message for many devices: sessions started where missing, one transaction.

A send looks up which devices lack a session (:func:`devices_without_session`), the
caller fetches their bundles (``queries.key_bundles_iq``) and hands them to
:func:`encrypt_for_devices`, which starts those sessions and encrypts for every device
in ONE store transaction: every session change is durable before the stanza leaves,
so the store can always reproduce what each peer will expect. Recipient devices get
the message; our own other devices get it wrapped in ``deviceSentMessage``.

Since 0.2.0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from actors.connection.binary.jid import Jid
from actors.connection.proto import wa_pb2
from actors.messaging.content import device_sent, encode_padded
from actors.messaging.kept import SENT, kept_with
from actors.messaging.outgoing import DeviceCiphertext
from actors.signal.repository import SignalRepository
from actors.signal.session_builder import PreKeyBundle
from stores.types import SignalStore, Transaction


@dataclass(frozen=True, slots=True)
class KeptSend:
    """A sent message to keep for retry receipts: chat, id and ``wa.Message`` bytes."""

    chat: str
    message_id: str
    data: bytes

    def __repr__(self) -> str:
        return f"KeptSend({self.chat}, {self.message_id})"


async def devices_without_session(
    repository: SignalRepository, devices: Sequence[str]
) -> list[str]:
    """The devices among ``devices`` with no open session yet."""
    missing = []
    for jid in devices:
        if not (await repository.validate_session(jid)).exists:
            missing.append(jid)
    return missing


async def encrypt_for_devices(
    keys: SignalStore,
    repository: SignalRepository,
    message: wa_pb2.Message,
    *,
    destination: str,
    recipients: Sequence[str],
    own_devices: Sequence[str] = (),
    bundles: Mapping[str, PreKeyBundle] | None = None,
    keep: KeptSend | None = None,
) -> list[DeviceCiphertext]:
    """Encrypt ``message`` for each device, starting sessions from ``bundles`` first.

    With ``keep``, the sent message is kept (``sent-message``) in the same transaction.
    """
    padded = encode_padded(message)
    own_copy = encode_padded(device_sent(destination, message)) if own_devices else b""
    plan = [(jid, padded) for jid in recipients] + [(jid, own_copy) for jid in own_devices]
    addresses = {jid: await repository.resolve_address(jid) for jid, _ in plan}
    # Locks are taken in sorted order, so concurrent sends never wait on each other in a cycle.
    plan.sort(key=lambda item: addresses[item[0]])
    if not plan and keep is None:
        return []

    async def op(tx: Transaction) -> list[DeviceCiphertext]:
        if keep is not None:
            kept = (await tx.get(SENT, [keep.chat])).get(keep.chat)
            await tx.set({SENT: {keep.chat: kept_with(kept, keep.message_id, keep.data)}})
        out = []
        for jid, plaintext in plan:
            bundle = (bundles or {}).get(jid)
            if bundle is not None:
                await repository.inject_e2e_session(jid, bundle)
            kind, ciphertext = await repository.encrypt_message(jid, plaintext)
            out.append(DeviceCiphertext(jid, kind, ciphertext))
        return out

    lock = addresses[plan[0][0]] if plan else f"sent::{keep.chat if keep else destination}"
    return await keys.run_transaction(lock, op)


def device_jids(user: str, devices: Sequence[int], *, exclude: str | None = None) -> list[str]:
    """Device JIDs of ``user`` (``user:device@server``), without ``exclude`` (our own)."""
    base = Jid.parse(user).user_jid()
    jids = [str(base.with_device(device)) for device in devices]
    return [jid for jid in jids if jid != exclude]
