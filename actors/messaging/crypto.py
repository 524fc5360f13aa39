"""What the message layer asks of the Signal side, as one port: :class:`MessageCrypto`.

Used as a library, :class:`LocalCrypto` runs each operation on a ``SignalStore`` and a
``SignalRepository`` directly. In the session tree the store lives in the
signal-store actor, so the connection reaches it through an adapter whose every
method runs :class:`LocalCrypto` inside that actor (one call, one transaction).

Since 0.2.0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from actors.connection.proto import wa_pb2
from actors.messaging.incoming import IncomingStanza
from actors.messaging.outgoing import DeviceCiphertext
from actors.messaging.receive import ReceivedMessage, decrypt_stanza
from actors.messaging.send import KeptSend, devices_without_session, encrypt_for_devices
from actors.signal.repository import SignalRepository
from actors.signal.session_builder import PreKeyBundle
from stores.types import KeyWrites, SignalStore


class MessageCrypto(Protocol):
    """Decrypt, encrypt and the few key reads and writes messaging needs."""

    async def decrypt(self, stanza: IncomingStanza) -> ReceivedMessage: ...

    async def encrypt(
        self,
        message: wa_pb2.Message,
        *,
        destination: str,
        recipients: Sequence[str],
        own_devices: Sequence[str] = (),
        bundles: Mapping[str, PreKeyBundle] | None = None,
        keep: KeptSend | None = None,
    ) -> list[DeviceCiphertext]: ...

    async def encrypt_group(
        self, group: str, me_jid: str, plaintext: bytes
    ) -> tuple[bytes, bytes]: ...

    async def distribution(self, group: str, me_jid: str) -> bytes: ...

    async def without_session(self, devices: Sequence[str]) -> list[str]: ...

    async def migrate(self, pn_jid: str, lid_jid: str) -> None: ...

    async def get(self, type_: str, ids: Sequence[str]) -> dict[str, Any]: ...

    async def set(self, writes: KeyWrites) -> None: ...


class LocalCrypto:
    """:class:`MessageCrypto` over a store and a repository in this task's reach."""

    def __init__(self, keys: SignalStore, repository: SignalRepository) -> None:
        self._keys = keys
        self._repo = repository

    def __repr__(self) -> str:
        return "LocalCrypto()"

    async def decrypt(self, stanza: IncomingStanza) -> ReceivedMessage:
        return await decrypt_stanza(self._keys, self._repo, stanza)

    async def encrypt(
        self,
        message: wa_pb2.Message,
        *,
        destination: str,
        recipients: Sequence[str],
        own_devices: Sequence[str] = (),
        bundles: Mapping[str, PreKeyBundle] | None = None,
        keep: KeptSend | None = None,
    ) -> list[DeviceCiphertext]:
        return await encrypt_for_devices(
            self._keys,
            self._repo,
            message,
            destination=destination,
            recipients=recipients,
            own_devices=own_devices,
            bundles=bundles,
            keep=keep,
        )

    async def encrypt_group(self, group: str, me_jid: str, plaintext: bytes) -> tuple[bytes, bytes]:
        return await self._repo.encrypt_group_message(group, me_jid, plaintext)

    async def distribution(self, group: str, me_jid: str) -> bytes:
        return await self._repo.get_sender_key_distribution_message(group, me_jid)

    async def without_session(self, devices: Sequence[str]) -> list[str]:
        return await devices_without_session(self._repo, devices)

    async def migrate(self, pn_jid: str, lid_jid: str) -> None:
        await self._repo.migrate_session(pn_jid, lid_jid)

    async def get(self, type_: str, ids: Sequence[str]) -> dict[str, Any]:
        return await self._keys.get(type_, ids)

    async def set(self, writes: KeyWrites) -> None:
        await self._keys.set(writes)
