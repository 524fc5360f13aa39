"""Pre-keys after login: count, decide, plan, upload, digest. Pure functions and data.

Facts (PROTOCOL.md "After login", Baileys ``lib/Socket/socket.js``
``uploadPreKeysToServerIfRequired`` and ``lib/Utils/signal.js``):

- count: ``iq xmlns=encrypt type=get to=@s.whatsapp.net > count``; the result
  carries ``count{value}``;
- how many: 812 when the server has 0, else 5; upload when the server has no more
  than that many, or when the newest local pre-key (``nextPreKeyId - 1``) is
  missing from the store;
- keys: Baileys' ``generateOrGetPreKeys``: the keys already generated but not
  uploaded (``firstUnuploadedPreKeyId .. nextPreKeyId-1``) count towards the
  batch; only the rest are generated, with ids from ``nextPreKeyId``; then
  ``nextPreKeyId = max(last+1, next)`` and ``firstUnuploadedPreKeyId =
  max(first, last+1)``; the upload carries ids ``first .. first+count-1``;
- upload: ``iq xmlns=encrypt type=set to=@s.whatsapp.net > registration (4 B BE),
  type (05), identity (32 B), list > key{id (3 B BE), value}*, skey{id, value,
  signature}``;
- digest: ``iq xmlns=encrypt type=get > digest``; a result without ``digest``
  means the server's bundle is off (Baileys then uploads 5 more).

Crash-only rule (ours, stricter than Baileys): the new keys and the counter
changes of an :class:`UploadPlan` are committed in one atomic transaction before
the upload is sent, so a crash never leaves an uploaded id without its private
key, nor a counter pointing past keys that were lost. Since 0.1.0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from actors.connection.binary import SERVER_JID, BinaryNode
from actors.connection.errors import BAD_SESSION, LocalProtocolError, RemoteProtocolError
from stores.creds import AuthCreds, KeyPair, SignedKeyPair
from stores.keys import KEY_BUNDLE_TYPE, MAX_KEY_ID, generate_key_pair, key_pair_to_plain
from stores.types import Batch, Value

#: Keys uploaded when the server has none (Baileys' INITIAL_PREKEY_COUNT).
INITIAL_PREKEY_COUNT = 812
#: Keys uploaded otherwise, and the low-water mark (Baileys' MIN_PREKEY_COUNT).
MIN_PREKEY_COUNT = 5
#: The key type under which pre-keys live in the signal store.
PRE_KEY_TYPE = "pre-key"


def _bad(reason: str) -> RemoteProtocolError:
    return RemoteProtocolError(reason, error_status_hint=BAD_SESSION)


# --- count ---------------------------------------------------------------------


def count_iq(iq_id: str) -> BinaryNode:
    """Ask the server how many of our pre-keys it holds."""
    return BinaryNode(
        "iq",
        {"id": iq_id, "xmlns": "encrypt", "type": "get", "to": SERVER_JID},
        [BinaryNode("count")],
    )


def parse_count_result(result: BinaryNode) -> int:
    """The ``count{value}`` of a count result; RemoteProtocolError when absent or not a number."""
    _check_result(result, "pre-key count")
    node = result.child("count")
    if node is None:
        raise _bad("pre-key count result: no count child")
    value = node.attrs.get("value")
    if value is None or not value.isdecimal() or len(value) > 9:
        raise _bad(f"pre-key count result: count@value {value!r} is not a count")
    return int(value)


def upload_count(server_count: int, *, newest_local_exists: bool, next_pre_key_id: int) -> int:
    """How many keys to upload now; 0 means no upload (Baileys' rule, see the module doc).

    ``newest_local_exists`` says whether pre-key ``next_pre_key_id - 1`` is in
    the store (irrelevant while no key was ever generated).
    """
    count = INITIAL_PREKEY_COUNT if server_count == 0 else MIN_PREKEY_COUNT
    missing_newest = next_pre_key_id - 1 > 0 and not newest_local_exists
    if server_count <= count or missing_newest:
        return count
    return 0


# --- plan ---------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class UploadPlan:
    """One upload, as data: new keys and counters to commit atomically, and what to send.

    ``new_keys`` are the generated pairs by id; ``next_pre_key_id`` and
    ``first_unuploaded_pre_key_id`` the creds counters after the commit;
    ``upload_ids`` the ids the upload carries (read them back from the store,
    they include earlier generated but unuploaded keys).
    """

    count: int
    new_keys: Mapping[int, KeyPair] = field(repr=False)
    next_pre_key_id: int
    first_unuploaded_pre_key_id: int
    upload_ids: range

    def __repr__(self) -> str:
        return (
            f"UploadPlan(count={self.count}, new={len(self.new_keys)},"
            f" upload_ids={self.upload_ids.start}..{self.upload_ids.stop - 1})"
        )

    def key_batch(self) -> dict[str, dict[str, Value]]:
        """The signal-store write of the new keys: ``{"pre-key": {"<id>": {private, public}}}``."""
        return {
            PRE_KEY_TYPE: {
                str(key_id): key_pair_to_plain(pair) for key_id, pair in self.new_keys.items()
            }
        }

    def creds_update(self) -> dict[str, int]:
        """The creds counter fields to commit with the keys (snake_case AuthCreds names)."""
        return {
            "next_pre_key_id": self.next_pre_key_id,
            "first_unuploaded_pre_key_id": self.first_unuploaded_pre_key_id,
        }

    def apply(self, creds: AuthCreds) -> AuthCreds:
        """A copy of ``creds`` with the counters moved (``creds`` itself is untouched)."""
        out = creds.copy()
        out.next_pre_key_id = self.next_pre_key_id
        out.first_unuploaded_pre_key_id = self.first_unuploaded_pre_key_id
        return out

    def batch(self, creds: AuthCreds) -> Batch:
        """The one atomic commit to make durable before the upload: new keys + moved counters."""
        return Batch(keys=self.key_batch(), creds=self.apply(creds))


def plan_upload(creds: AuthCreds, count: int) -> UploadPlan:
    """Plan an upload of ``count`` keys from ``creds``' counters (Baileys' generateOrGetPreKeys).

    Fresh keys come from ``stores.keys.generate_key_pair``. Raises
    LocalProtocolError when the ids would pass the 3-byte limit.
    """
    if count <= 0:
        raise LocalProtocolError(f"pre-key upload: count must be positive, got {count}")
    available = creds.next_pre_key_id - creds.first_unuploaded_pre_key_id
    remaining = count - available
    last_id = creds.next_pre_key_id + remaining - 1
    if max(last_id, creds.first_unuploaded_pre_key_id + count - 1) > MAX_KEY_ID:
        raise LocalProtocolError(
            f"pre-key upload: ids up to {last_id} pass the 3-byte limit {MAX_KEY_ID}"
        )
    new_keys: dict[int, KeyPair] = {}
    if remaining > 0:
        new_keys = {
            key_id: generate_key_pair() for key_id in range(creds.next_pre_key_id, last_id + 1)
        }
    first = creds.first_unuploaded_pre_key_id
    return UploadPlan(
        count=count,
        new_keys=new_keys,
        next_pre_key_id=max(last_id + 1, creds.next_pre_key_id),
        first_unuploaded_pre_key_id=max(first, last_id + 1),
        upload_ids=range(first, first + count),
    )


# --- upload and digest ----------------------------------------------------------


def pre_key_node(key_id: int, pair: KeyPair) -> BinaryNode:
    """``key{id (3 B BE), value}`` (Baileys' xmppPreKey)."""
    return BinaryNode(
        "key",
        {},
        [
            BinaryNode("id", {}, key_id.to_bytes(3, "big")),
            BinaryNode("value", {}, pair.public),
        ],
    )


def signed_pre_key_node(signed: SignedKeyPair) -> BinaryNode:
    """``skey{id, value, signature}`` (Baileys' xmppSignedPreKey)."""
    return BinaryNode(
        "skey",
        {},
        [
            BinaryNode("id", {}, signed.key_id.to_bytes(3, "big")),
            BinaryNode("value", {}, signed.key_pair.public),
            BinaryNode("signature", {}, signed.signature),
        ],
    )


def upload_iq(iq_id: str, creds: AuthCreds, keys: Mapping[int, KeyPair]) -> BinaryNode:
    """The upload iq for ``keys`` (by id, sent in ascending id order)."""
    return BinaryNode(
        "iq",
        {"xmlns": "encrypt", "type": "set", "to": SERVER_JID, "id": iq_id},
        [
            BinaryNode("registration", {}, creds.registration_id.to_bytes(4, "big")),
            BinaryNode("type", {}, KEY_BUNDLE_TYPE),
            BinaryNode("identity", {}, creds.signed_identity_key.public),
            BinaryNode("list", {}, [pre_key_node(key_id, keys[key_id]) for key_id in sorted(keys)]),
            signed_pre_key_node(creds.signed_pre_key),
        ],
    )


def digest_iq(iq_id: str) -> BinaryNode:
    """Ask the server for the digest of our key bundle."""
    return BinaryNode(
        "iq",
        {"to": SERVER_JID, "type": "get", "xmlns": "encrypt", "id": iq_id},
        [BinaryNode("digest")],
    )


def parse_digest_result(result: BinaryNode) -> bool:
    """Whether a digest result carries ``digest`` (False: the bundle needs 5 more keys)."""
    _check_result(result, "digest")
    return result.child("digest") is not None


def active_iq(iq_id: str) -> BinaryNode:
    """``iq xmlns=passive type=set > active``: tell the server we are ready for traffic."""
    return BinaryNode(
        "iq",
        {"to": SERVER_JID, "xmlns": "passive", "type": "set", "id": iq_id},
        [BinaryNode("active")],
    )


def _check_result(result: BinaryNode, what: str) -> None:
    if result.tag != "iq" or result.attrs.get("type") not in ("result", "error"):
        raise _bad(f"{what} result: expected an iq result, got {result.tag}")
    if result.attrs.get("type") == "error":
        error = result.child("error")
        code = error.attrs.get("code") if error is not None else None
        raise IqError(what, code)


class IqError(RemoteProtocolError):
    """The server answered an iq with ``type=error``; ``code`` is its error code if any."""

    def __init__(self, what: str, code: str | None) -> None:
        super().__init__(
            f"{what}: the server answered with error {code}", error_status_hint=BAD_SESSION
        )
        self.what = what
        self.code = code


__all__ = [
    "INITIAL_PREKEY_COUNT",
    "MIN_PREKEY_COUNT",
    "PRE_KEY_TYPE",
    "IqError",
    "UploadPlan",
    "active_iq",
    "count_iq",
    "digest_iq",
    "parse_count_result",
    "parse_digest_result",
    "plan_upload",
    "pre_key_node",
    "signed_pre_key_node",
    "upload_count",
    "upload_iq",
]
