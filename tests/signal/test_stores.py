"""Signal sessions and sender keys kept by every backend: two parties talk 1:1 and in a
group, restart, migrate to another backend and keep talking; the multi-file layout is
Baileys'; a decrypt whose commit fails changes nothing.

Each party is a real auth location opened with ``use_*_auth_state`` and a
``SignalRepository`` over its ``state.keys``, so what is checked is what a bot keeps.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from itertools import permutations, product
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from actors.signal import (
    DuplicateMessage,
    MissingPreKey,
    NoSession,
    PreKey,
    PreKeyBundle,
    SenderKeyRecord,
    SessionRecord,
    SignalRepository,
    SignedPreKey,
)
from stores.auth import (
    PersistedAuth,
    use_memory_auth_state,
    use_multi_file_auth_state,
    use_native_file_auth_state,
    use_sqlite_auth_state,
)
from stores.errors import DurabilityError, StoreClosedError
from stores.keys import generate_pre_keys, signal_public_key
from stores.migrate import migrate
from stores.transactions import TransactionalStore
from stores.types import Batch, KeyWrites, Transaction

DURABLE = ("native", "multi-file", "sqlite")
GROUP = "120363025246125486@g.us"
A_JID = "111@s.whatsapp.net"
B_JID = "222@s.whatsapp.net"
B_LID = "333@lid"
A_ADDRESS = "111.0"
PRE_KEYS = ("1", "2", "3")
USED_PRE_KEY = 2

Sealed = tuple[str, bytes]
T = TypeVar("T")


def location(tmp_path: Path, kind: str, name: str) -> Path:
    return tmp_path / (f"{name}.db" if kind == "sqlite" else name)


async def open_auth(kind: str, path: Path) -> PersistedAuth:
    if kind == "native":
        return await use_native_file_auth_state(path)
    if kind == "multi-file":
        return await use_multi_file_auth_state(path)
    if kind == "sqlite":
        return await use_sqlite_auth_state(path)
    assert kind == "memory"
    return await use_memory_auth_state(path.name)


@dataclass
class Party:
    """One device: its auth location (reopened on restart) and its JID as others see it."""

    kind: str
    path: Path
    jid: str
    auth: PersistedAuth

    @classmethod
    async def open(cls, kind: str, path: Path, jid: str) -> Party:
        return cls(kind, path, jid, await open_auth(kind, path))

    @property
    def durable(self) -> bool:
        return self.kind != "memory"

    @property
    def repo(self) -> SignalRepository:
        # Stateless over the store: a fresh one per call is what a restarted bot has.
        return SignalRepository(self.auth.keys, lambda: self.auth.state.creds)

    async def restart(self) -> None:
        """Close the location and open it again (a memory party has nothing to reopen)."""
        if self.durable:
            await self.auth.aclose()
            self.auth = await open_auth(self.kind, self.path)

    async def publish_bundle(self) -> PreKeyBundle:
        """Store one-time pre-keys 1..3 and hand out a bundle naming pre-key 2."""
        pre_keys = generate_pre_keys(1, len(PRE_KEYS))
        await self.auth.keys.set({"pre-key": pre_keys})
        creds = self.auth.state.creds
        signed = creds.signed_pre_key
        return PreKeyBundle(
            registration_id=creds.registration_id,
            identity_key=signal_public_key(creds.signed_identity_key.public),
            signed_pre_key=SignedPreKey(
                signed.key_id, signal_public_key(signed.key_pair.public), signed.signature
            ),
            pre_key=PreKey(USED_PRE_KEY, signal_public_key(pre_keys[str(USED_PRE_KEY)]["public"])),
        )

    async def pre_key_ids(self) -> set[str]:
        return set(await self.auth.keys.get("pre-key", list(PRE_KEYS)))

    async def stored(self, type_: str, id_: str) -> Any:
        """The committed value as the backend holds it (no cache in between)."""
        return (await self.auth.backend.read_keys(type_, [id_])).get(id_)


async def send(sender: Party, receiver: Party, text: bytes) -> Sealed:
    return await sender.repo.encrypt_message(receiver.jid, text)


async def receive(receiver: Party, sender: Party, sealed: Sealed) -> bytes:
    return await receiver.repo.decrypt_message(sender.jid, *sealed)


async def establish(a: Party, b: Party) -> Sealed:
    """A starts a session from B's bundle (one-time pre-key 2); B reads the pkmsg and replies."""
    await a.repo.inject_e2e_session(b.jid, await b.publish_bundle())
    first = await send(a, b, b"hello")
    assert first[0] == "pkmsg"
    assert await receive(b, a, first) == b"hello"
    assert await b.pre_key_ids() == {"1", "3"}
    reply = await send(b, a, b"hi A")
    assert reply[0] == "msg"
    assert await receive(a, b, reply) == b"hi A"
    return first


async def talk(a: Party, b: Party, tag: str) -> tuple[Sealed, Sealed]:
    """One ``msg`` each way; returns both, already delivered."""
    to_b = await send(a, b, f"{tag}: A to B".encode())
    assert to_b[0] == "msg"
    assert await receive(b, a, to_b) == f"{tag}: A to B".encode()
    to_a = await send(b, a, f"{tag}: B to A".encode())
    assert to_a[0] == "msg"
    assert await receive(a, b, to_a) == f"{tag}: B to A".encode()
    return to_b, to_a


async def group_talk(a: Party, b: Party, tag: str) -> tuple[bytes, bytes]:
    """One group message each way (skdm taken first); returns both skmsgs, delivered."""
    sent = {}
    for sender, receiver in ((a, b), (b, a)):
        text = f"{tag}: group from {sender.jid}".encode()
        skdm, skmsg = await sender.repo.encrypt_group_message(GROUP, sender.jid, text)
        await receiver.repo.process_sender_key_distribution_message(GROUP, sender.jid, skdm)
        assert await receiver.repo.decrypt_group_message(GROUP, sender.jid, skmsg) == text
        sent[sender.jid] = skmsg
    return sent[a.jid], sent[b.jid]


async def close_all(*parties: Party) -> None:
    for party in parties:
        await party.auth.aclose()


RESTART_PAIRS = [*product(DURABLE, DURABLE), *(("memory", kind) for kind in DURABLE)]


@pytest.mark.parametrize(("a_kind", "b_kind"), RESTART_PAIRS)
async def test_conversation_survives_a_restart(tmp_path: Path, a_kind: str, b_kind: str) -> None:
    """pkmsg, replies and group messages; both locations reopened; the talk goes on,
    replays stay duplicates and the consumed pre-key stays gone."""
    a = await Party.open(a_kind, location(tmp_path, a_kind, "a"), A_JID)
    b = await Party.open(b_kind, location(tmp_path, b_kind, "b"), B_JID)
    try:
        first = await establish(a, b)
        old_to_b, old_to_a = await talk(a, b, "before")
        old_group_to_b, old_group_to_a = await group_talk(a, b, "before")
        in_flight = await send(a, b, b"sent before the restart")
        in_flight_group = (await a.repo.encrypt_group_message(GROUP, A_JID, b"group in flight"))[1]

        await a.restart()
        await b.restart()

        assert await receive(b, a, in_flight) == b"sent before the restart"
        assert await b.repo.decrypt_group_message(GROUP, A_JID, in_flight_group) == (
            b"group in flight"
        )
        with pytest.raises(DuplicateMessage):
            await receive(b, a, old_to_b)
        with pytest.raises(DuplicateMessage):
            await receive(b, a, in_flight)
        if a.durable:
            with pytest.raises(DuplicateMessage):
                await receive(a, b, old_to_a)
            with pytest.raises(DuplicateMessage):
                await a.repo.decrypt_group_message(GROUP, B_JID, old_group_to_a)
        with pytest.raises(DuplicateMessage):
            await b.repo.decrypt_group_message(GROUP, A_JID, old_group_to_b)
        # The first pkmsg again: its session exists, its message key is spent.
        with pytest.raises(DuplicateMessage):
            await receive(b, a, first)
        assert await b.pre_key_ids() == {"1", "3"}
        assert await b.stored("pre-key", str(USED_PRE_KEY)) is None
        assert (await a.repo.validate_session(B_JID)).exists
        assert (await b.repo.validate_session(A_JID)).exists

        await talk(a, b, "after")
        await group_talk(a, b, "after")
        await a.restart()
        await b.restart()
        await talk(a, b, "after a second restart")
        await group_talk(a, b, "after a second restart")
    finally:
        await close_all(a, b)


MIGRATIONS = list(permutations(DURABLE, 2))


@pytest.mark.parametrize(("src_kind", "dst_kind"), MIGRATIONS)
async def test_conversation_goes_on_after_migration(
    tmp_path: Path, src_kind: str, dst_kind: str
) -> None:
    """Both parties' live locations migrate to another backend; the copies keep talking:
    messages in flight decrypt, replays stay duplicates, new messages flow both ways."""
    a = await Party.open(src_kind, location(tmp_path, src_kind, "a"), A_JID)
    b = await Party.open(src_kind, location(tmp_path, src_kind, "b"), B_LID)
    try:
        await establish(a, b)
        old_to_b, old_to_a = await talk(a, b, "before")
        old_group_to_b, _ = await group_talk(a, b, "before")
        in_flight_to_b = await send(a, b, b"in flight to B")
        in_flight_to_a = await send(b, a, b"in flight to A")
        in_flight_group = (await b.repo.encrypt_group_message(GROUP, B_LID, b"group in flight"))[1]
        stored_before = await b.stored("session", A_ADDRESS)
    finally:
        await close_all(a, b)

    for party in (a, b):
        src = party.path
        party.kind = dst_kind
        party.path = location(tmp_path, dst_kind, f"{src.stem}-migrated")
        summary = await migrate(src_kind, src, dst_kind, party.path)
        assert summary.key_counts["session"] == 1
        assert summary.key_counts["sender-key"] == 2
        party.auth = await open_auth(dst_kind, party.path)
    try:
        assert await b.stored("session", A_ADDRESS) == stored_before
        assert await b.pre_key_ids() == {"1", "3"}
        assert await receive(b, a, in_flight_to_b) == b"in flight to B"
        assert await receive(a, b, in_flight_to_a) == b"in flight to A"
        assert await a.repo.decrypt_group_message(GROUP, B_LID, in_flight_group) == (
            b"group in flight"
        )
        with pytest.raises(DuplicateMessage):
            await receive(b, a, old_to_b)
        with pytest.raises(DuplicateMessage):
            await receive(a, b, old_to_a)
        with pytest.raises(DuplicateMessage):
            await b.repo.decrypt_group_message(GROUP, A_JID, old_group_to_b)
        await talk(a, b, "after migration")
        await group_talk(a, b, "after migration")
        await a.restart()
        await b.restart()
        await talk(a, b, "after migration and a restart")
        await group_talk(a, b, "after migration and a restart")
    finally:
        await close_all(a, b)


def _json_file(folder: Path, name: str) -> Any:
    path = folder / name
    assert path.is_file(), f"{name} missing; files: {sorted(p.name for p in folder.iterdir())}"
    return json.loads(path.read_text())


def _assert_libsignal_session(plain: Any, remote_identity: bytes) -> None:
    assert set(plain) == {"_sessions", "version"} and plain["version"] == "v1"
    (entry,) = plain["_sessions"].values()
    assert {"registrationId", "currentRatchet", "indexInfo", "_chains"} <= set(entry)
    assert base64.b64decode(entry["indexInfo"]["remoteIdentityKey"]) == remote_identity
    assert entry["indexInfo"]["closed"] == -1
    assert SessionRecord.from_plain(plain).has_open_session()


def _assert_baileys_sender_key(plain: Any, *, own: bool) -> None:
    # Baileys stores Buffer.from(JSON.stringify(record.serialize())): a Buffer in the file.
    assert set(plain) == {"type", "data"} and plain["type"] == "Buffer"
    raw = base64.b64decode(plain["data"])
    (state,) = json.loads(raw)
    assert set(state) == {"senderKeyId", "senderChainKey", "senderSigningKey", "senderMessageKeys"}
    assert state["senderChainKey"]["seed"]["type"] == "Buffer"
    assert len(state["senderSigningKey"]["public"]["data"]) in (32, 33)
    assert bool(state["senderSigningKey"]["private"]["data"]) is own
    assert SenderKeyRecord.from_stored(raw).states


async def test_multi_file_layout_is_baileys(tmp_path: Path) -> None:
    """session-<address>.json holds libsignal's SessionRecord JSON (PN and LID names),
    sender-key-<group>::<user>::<device>.json (':' written '-') Baileys' sender-key
    bytes; migrate_session renames a PN session to its LID address and maps the pair."""
    a = await Party.open("multi-file", tmp_path / "a", A_JID)
    b = await Party.open("multi-file", tmp_path / "b", B_JID)
    c = await Party.open("multi-file", tmp_path / "c", B_LID)
    try:
        await establish(a, b)
        await establish(a, c)
        await group_talk(a, b, "group")
        await group_talk(a, c, "group")
        identity = {
            party.jid: signal_public_key(party.auth.state.creds.signed_identity_key.public)
            for party in (a, b, c)
        }
    finally:
        await close_all(a, b, c)

    folder = tmp_path / "a"
    _assert_libsignal_session(_json_file(folder, "session-222.0.json"), identity[B_JID])
    _assert_libsignal_session(_json_file(folder, "session-333_1.0.json"), identity[B_LID])
    _assert_libsignal_session(_json_file(tmp_path / "b", "session-111.0.json"), identity[A_JID])
    own = f"sender-key-{GROUP}--111--0.json"
    _assert_baileys_sender_key(_json_file(folder, own), own=True)
    _assert_baileys_sender_key(_json_file(folder, f"sender-key-{GROUP}--222--0.json"), own=False)
    _assert_baileys_sender_key(_json_file(folder, f"sender-key-{GROUP}--333_1--0.json"), own=False)
    _assert_baileys_sender_key(_json_file(tmp_path / "b", own), own=False)
    assert not (folder / "pre-key-2.json").exists()  # B's, not A's: A made none
    assert not (tmp_path / "b" / "pre-key-2.json").exists()
    assert (tmp_path / "b" / "pre-key-1.json").exists()
    assert json.loads((folder / "identity-key-222.0.json").read_text()) == {
        "type": "Buffer",
        "data": base64.b64encode(identity[B_JID]).decode(),
    }

    # B's phone number turns out to belong to LID 444: A moves the session over.
    a.auth = await open_auth("multi-file", folder)
    b.auth = await open_auth("multi-file", tmp_path / "b")
    try:
        result = await a.repo.migrate_session(B_JID, "444@lid")
        assert (result.migrated, result.skipped) == (1, 0)
        assert not (folder / "session-222.0.json").exists()
        _assert_libsignal_session(_json_file(folder, "session-444_1.0.json"), identity[B_JID])
        assert _json_file(folder, "lid-mapping-222.json") == "444"
        assert _json_file(folder, "lid-mapping-444_reverse.json") == "222"
        # Either JID reaches the one session; B still knows A by its PN address.
        await talk(a, b, "after migrate_session")
        b.jid = "444@lid"
        await talk(a, b, "by LID")
        assert await a.repo.resolve_address(B_JID) == "444_1.0"
        assert not (folder / "session-222.0.json").exists()
    finally:
        await close_all(a, b)


class FailingCommit:
    """A commit function over a real backend that fails (nothing written) while ``fail`` is set."""

    def __init__(self, auth: PersistedAuth) -> None:
        self.backend = auth.backend
        self.fail = True
        self.attempts = 0

    async def __call__(self, batch: Batch) -> int:
        self.attempts += 1
        if self.fail:
            raise DurabilityError(self.backend.location, "injected fsync", OSError(5, "EIO"))
        return await self.backend.commit(batch)

    def repo(self, party: Party) -> SignalRepository:
        store = TransactionalStore(self.backend.read_keys, self)
        return SignalRepository(store, lambda: party.auth.state.creds)


@pytest.mark.parametrize("kind", DURABLE)
async def test_a_decrypt_whose_commit_fails_changes_nothing(tmp_path: Path, kind: str) -> None:
    """pkmsg, msg and skmsg decrypts whose commit raises leave session, pre-key, identity
    and sender key as they were; after a restart the same messages decrypt."""
    a = await Party.open("memory", tmp_path / "a", A_JID)
    b = await Party.open(kind, location(tmp_path, kind, "b"), B_JID)
    try:
        await a.repo.inject_e2e_session(B_JID, await b.publish_bundle())
        pkmsg = await send(a, b, b"first")
        failing = FailingCommit(b.auth)
        with pytest.raises(DurabilityError):
            await failing.repo(b).decrypt_message(A_JID, *pkmsg)
        assert failing.attempts == 1
        assert await b.stored("session", A_ADDRESS) is None
        assert await b.stored("identity-key", A_ADDRESS) is None
        assert await b.pre_key_ids() == set(PRE_KEYS)

        await b.restart()
        assert await receive(b, a, pkmsg) == b"first"
        assert await b.pre_key_ids() == {"1", "3"}
        assert await receive(a, b, await send(b, a, b"reply")) == b"reply"

        skdm, _ = await a.repo.encrypt_group_message(GROUP, A_JID, b"group 0")
        await b.repo.process_sender_key_distribution_message(GROUP, A_JID, skdm)
        session_before = await b.stored("session", A_ADDRESS)
        sender_key_before = await b.stored("sender-key", f"{GROUP}::111::0")
        msgs = [await send(a, b, f"m{i}".encode()) for i in range(3)]
        skmsg = (await a.repo.encrypt_group_message(GROUP, A_JID, b"group 1"))[1]

        failing = FailingCommit(b.auth)
        for sealed in (msgs[2], msgs[0]):
            with pytest.raises(DurabilityError):
                await failing.repo(b).decrypt_message(A_JID, *sealed)
        with pytest.raises(DurabilityError):
            await failing.repo(b).decrypt_group_message(GROUP, A_JID, skmsg)
        assert failing.attempts == 3
        assert await b.stored("session", A_ADDRESS) == session_before
        assert await b.stored("sender-key", f"{GROUP}::111::0") == sender_key_before

        # A store closed under the decrypt: refused, nothing written.
        stale = b.repo
        await b.auth.aclose()
        with pytest.raises(StoreClosedError):
            await stale.decrypt_message(A_JID, *msgs[1])

        b.auth = await open_auth(kind, b.path)
        assert await b.stored("session", A_ADDRESS) == session_before
        for i in (2, 0, 1):
            assert await receive(b, a, msgs[i]) == f"m{i}".encode()
        assert await b.repo.decrypt_group_message(GROUP, A_JID, skmsg) == b"group 1"
        with pytest.raises(DuplicateMessage):
            await receive(b, a, msgs[0])
        await talk(a, b, "after the failures")
    finally:
        await close_all(a, b)


@pytest.mark.parametrize("kind", DURABLE)
async def test_decrypts_compose_with_an_outer_transaction(tmp_path: Path, kind: str) -> None:
    """Inside a caller's transaction the decrypts join it: an exception after them
    discards them all; a clean exit commits them together."""
    a = await Party.open("memory", tmp_path / "a", A_JID)
    b = await Party.open(kind, location(tmp_path, kind, "b"), B_JID)
    try:
        await establish(a, b)
        msgs = [await send(a, b, f"m{i}".encode()) for i in range(2)]
        before = await b.stored("session", A_ADDRESS)

        class Abort(Exception):
            pass

        with pytest.raises(Abort):
            async with b.auth.keys.transaction(A_ADDRESS):
                for i, sealed in enumerate(msgs):
                    assert await receive(b, a, sealed) == f"m{i}".encode()
                raise Abort
        assert await b.stored("session", A_ADDRESS) == before

        async with b.auth.keys.transaction(A_ADDRESS) as tx:
            for i, sealed in enumerate(msgs):
                assert await receive(b, a, sealed) == f"m{i}".encode()
            await tx.set({"tctoken": {"111": b"token"}})
            assert await b.stored("session", A_ADDRESS) == before  # not before the exit
        assert await b.stored("session", A_ADDRESS) != before
        assert await b.stored("tctoken", "111") == b"token"
        await b.restart()
        for sealed in msgs:
            with pytest.raises(DuplicateMessage):
                await receive(b, a, sealed)
        await talk(a, b, "after")
    finally:
        await close_all(a, b)


async def test_parties_on_two_backends_decrypt_concurrently(tmp_path: Path) -> None:
    """Many decrypts of one sender at once serialize on its address: all succeed, once."""
    a = await Party.open("sqlite", location(tmp_path, "sqlite", "a"), A_JID)
    b = await Party.open("native", tmp_path / "b", B_JID)
    try:
        await establish(a, b)
        msgs = [await send(a, b, f"m{i}".encode()) for i in range(12)]
        got: dict[int, bytes] = {}

        async def one(i: int) -> None:
            got[i] = await receive(b, a, msgs[i])

        async with trio.open_nursery() as nursery:
            for i in reversed(range(len(msgs))):
                nursery.start_soon(one, i)
        assert got == {i: f"m{i}".encode() for i in range(len(msgs))}
        await b.restart()
        for sealed in msgs:
            with pytest.raises(DuplicateMessage):
                await receive(b, a, sealed)
        await talk(a, b, "after")
    finally:
        await close_all(a, b)


class PausingStore:
    """A SignalStore over ``inner`` whose reads of ``lid-mapping`` outside a transaction
    wait for ``resume`` after reading: the moment between resolving an address and
    locking it."""

    def __init__(self, inner: TransactionalStore) -> None:
        self.inner = inner
        self.resume = trio.Event()
        self.paused = trio.Event()

    async def get(self, type: str, ids: Sequence[str]) -> dict[str, Any]:
        found = await self.inner.get(type, ids)
        if type == "lid-mapping" and not self.inner.in_transaction():
            self.paused.set()
            await self.resume.wait()
        return found

    async def set(self, data: KeyWrites) -> None:
        await self.inner.set(data)

    def transaction(self, key: str) -> AbstractAsyncContextManager[Transaction]:
        return self.inner.transaction(key)

    def in_transaction(self) -> bool:
        return self.inner.in_transaction()

    async def run_transaction(self, key: str, fn: Callable[[Transaction], Awaitable[T]]) -> T:
        return await self.inner.run_transaction(key, fn)


@pytest.mark.parametrize("kind", ["msg", "pkmsg"])
def test_a_decrypt_racing_migrate_session_reaches_the_moved_session(
    tmp_path: Path, kind: str
) -> None:
    """A decrypt by PN JID whose address was resolved just before migrate_session moved
    the session to LID still finds the session (one contact, one session, one lock)."""
    # trio.run here, not pytest-trio: the expected failure then arrives unwrapped.
    trio.run(_decrypt_racing_migrate_session, tmp_path, kind)


async def _decrypt_racing_migrate_session(tmp_path: Path, kind: str) -> None:
    a = await Party.open("memory", tmp_path / "a", A_JID)
    b = await Party.open("native", tmp_path / "b", B_JID)
    try:
        await a.repo.inject_e2e_session(B_JID, await b.publish_bundle())
        assert await receive(b, a, await send(a, b, b"first")) == b"first"
        if kind == "msg":
            assert await receive(a, b, await send(b, a, b"reply")) == b"reply"
        sealed = await send(a, b, b"during the migration")
        assert sealed[0] == kind
        pausing = PausingStore(b.auth.keys)
        racing = SignalRepository(pausing, lambda: b.auth.state.creds)
        got: list[bytes] = []
        failed: list[Exception] = []

        async def decrypt() -> None:
            try:
                got.append(await racing.decrypt_message(A_JID, *sealed))
            except (NoSession, MissingPreKey) as exc:
                failed.append(exc)
            finally:
                pausing.paused.set()  # a repository that never resolves outside: no wait

        async with trio.open_nursery() as nursery:
            nursery.start_soon(decrypt)
            await pausing.paused.wait()  # resolved to 111.0, not yet locked (or done)
            result = await b.repo.migrate_session(A_JID, "555@lid")
            assert result.migrated == 1
            pausing.resume.set()
        if failed:
            # Redelivered, it resolves to the LID address and decrypts.
            assert await receive(b, a, sealed) == b"during the migration"
            raise failed[0]
        assert got == [b"during the migration"]
        assert sorted(await b.auth.keys.get("session", [A_ADDRESS, "555_1.0"])) == ["555_1.0"]
    finally:
        await close_all(a, b)


def test_a_raising_identity_callback_loses_no_message(tmp_path: Path) -> None:
    """An on_identity_change that raises either leaves the pkmsg undecrypted (so its
    redelivery decrypts) or does not stop the plaintext from being returned."""
    trio.run(_raising_identity_callback, tmp_path)


async def _raising_identity_callback(tmp_path: Path) -> None:
    a = await Party.open("memory", tmp_path / "a", A_JID)
    b = await Party.open("native", tmp_path / "b", B_JID)
    try:
        await a.repo.inject_e2e_session(B_JID, await b.publish_bundle())
        sealed = await send(a, b, b"first")

        def broken(change: object) -> None:
            raise RuntimeError("a bug in the application's callback")

        careless = SignalRepository(
            b.auth.keys, lambda: b.auth.state.creds, on_identity_change=broken
        )
        try:
            assert await careless.decrypt_message(A_JID, *sealed) == b"first"
        except RuntimeError:
            assert await receive(b, a, sealed) == b"first"
    finally:
        await close_all(a, b)
