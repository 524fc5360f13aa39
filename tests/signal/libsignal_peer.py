"""Drive the reference Signal implementation (libsignal-node + Baileys' group cipher) from tests.

``open_libsignal_peer()`` starts ``libsignal_peer.mjs`` under node in the Baileys peer
folder (``tests.baileys_peer.install_peer()``) and yields a :class:`LibsignalPeer`;
``peer.call(op, **args)`` sends one request and returns the reply as a dict.

Bytes: any ``bytes`` value in ``args`` (at any depth) is sent as standard base64; in
replies the byte fields listed in ``BYTES_FIELDS`` come back decoded to ``bytes`` (in
nested dicts and lists too). Session records (``session``) are left exactly as
``SessionRecord.serialize()`` made them: a JSON object whose bytes are base64
strings, the shape Baileys writes to ``session-<addr>.json``. ``b64``/``unb64`` are
there for anything else.

Errors: a refused request raises ``PeerError(error, message)``, ``error`` being the JS
class name (``SessionError``, ``MessageCounterError``, ``PreKeyError``,
``UntrustedIdentityKeyError``, ``TypeError``, ``Error``...); the process lives on. A
dead or silent process (``timeout`` seconds per call, 30 by default) raises
``PeerDied`` with the tail of node's stderr, and the peer is unusable afterwards.

Ops (``address``/``author`` are libsignal addresses ``"name.device"``; every party is
named by ``party``; ``?`` marks optional arguments; ``{}`` is an empty reply):

- ``ping`` -> ``{libsignal, baileys}`` (package versions)
- ``new_party {party, registration_id?, identity_private?, signed_pre_key_id? (1),
  signed_pre_key_private?, pre_keys?: [{id, private?}]}`` -> ``{registration_id,
  identity_key (33 B), signed_pre_key: {key_id, public_key (33 B), signature},
  pre_keys: [{key_id, public_key}]}``; absent privates are random (never drawn from
  the ``set_random_keys`` queue)
- ``party_keys {party}`` -> ``{registration_id, identity_key, identity_private,
  signed_pre_key: {key_id, public_key, private_key, signature}, pre_keys: [{key_id,
  public_key, private_key}]}``
- ``add_pre_keys {party, pre_keys: [{id, private?}]}`` -> ``{pre_keys: [{key_id,
  public_key}]}``; ``has_pre_key {party, key_id}`` -> ``{present}`` (``key_id``: a
  top-level ``id`` is the request id, so ``call`` refuses ``id`` and ``op`` as args);
  ``drop_party {party}`` -> ``{dropped}``
- ``process_bundle {party, address, bundle: {registration_id, identity_key,
  signed_pre_key: {key_id, public_key, signature}, pre_key?: {key_id, public_key}}}``
  -> ``{}`` (SessionBuilder.initOutgoing)
- ``encrypt {party, address, plaintext}`` -> ``{type: "pkmsg"|"msg", ciphertext,
  registration_id}``
- ``decrypt {party, address, type, ciphertext}`` -> ``{plaintext}``; a pkmsg first
  saves the sender's identity, as Baileys' decryptMessage does
- ``get_session {party, address}`` -> ``{session: record.serialize() object | None}``;
  ``put_session {party, address, session (None deletes)}`` -> ``{}``;
  ``has_open_session {party, address}`` -> ``{open}``
- ``get_identity {party, address}`` -> ``{identity_key: bytes | None}``
- ``group_create {party, group, author}`` -> ``{skdm}``; ``group_process {party, group,
  author, skdm}`` -> ``{}``; ``group_encrypt {party, group, author, plaintext}`` ->
  ``{ciphertext, skdm}`` (creates the sender key if missing, as Baileys'
  encryptGroupMessage); ``group_decrypt {party, group, author, ciphertext}`` ->
  ``{plaintext}``
- ``get_sender_key {party, group, author}`` -> ``{record: bytes | None}`` (the stored
  ``JSON.stringify(record.serialize())`` bytes); ``put_sender_key {party, group,
  author, record (None deletes)}`` -> ``{}``
- ``set_random_keys {privates: [32 B...]}`` -> ``{queued}``: the next
  ``curve.generateKeyPair()`` calls (base keys, ratchet keys, group signing keys)
  use these privates in order, then random again; ``pending_random_keys`` ->
  ``{count}``
- ``set_clock {ms | None}`` -> ``{now}``: fixes ``Date.now()`` (None: real time)
- ``set_group_keys {sender_key_id?, sender_key? (32 B), signing_private?}`` -> ``{}``:
  used by the next group_create/group_encrypt that creates a sender key state
- ``reset`` -> ``{}``: drops all parties, the key queue, fixed group keys and the clock
- ``hkdf {ikm, salt? (32 B, zeros), info (str), chunks (1-3)}`` -> ``{chunks: [32 B...],
  output}`` (libsignal crypto.deriveSecrets)
- ``sign {private, message}`` -> ``{signature}``; ``verify {public, message,
  signature}`` -> ``{valid, reason?}`` (reason: why verifySignature threw);
  ``public_from_private {private}`` -> ``{public_key (33 B)}``
"""

from __future__ import annotations

import base64
import json
import os
import queue
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from tests.baileys_peer import install_peer

SCRIPT = Path(__file__).resolve().with_name("libsignal_peer.mjs")

# Reply fields that hold bytes (decoded wherever they appear, except inside a session).
BYTES_FIELDS = frozenset(
    {
        "identity_key",
        "identity_private",
        "public_key",
        "private_key",
        "signature",
        "ciphertext",
        "plaintext",
        "skdm",
        "record",
        "chunks",
        "output",
    }
)
# Values passed through untouched: a session record keeps its own base64 strings.
OPAQUE_FIELDS = frozenset({"session"})


class PeerError(Exception):
    """libsignal (or the driver) refused a request: ``error`` is the JS error class name."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(f"{error}: {message}")
        self.error = error
        self.message = message


class PeerDied(RuntimeError):
    """The node process exited or stopped answering; the message ends with its stderr."""


def b64(data: bytes) -> str:
    """Standard base64 with padding, as the peer expects."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    """Decode the peer's standard base64, refusing anything else."""
    return base64.b64decode(text, validate=True)


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return b64(bytes(value))
    if isinstance(value, dict):
        return {key: _encode(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(item) for item in value]
    return value


def _decode_field(value: Any) -> Any:
    if isinstance(value, str):
        return unb64(value)
    if isinstance(value, list):
        return [_decode_field(item) for item in value]
    return value  # None stays None


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key in OPAQUE_FIELDS:
                out[key] = item
            elif key in BYTES_FIELDS:
                out[key] = _decode_field(item)
            else:
                out[key] = _decode(item)
        return out
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value


class LibsignalPeer:
    """One node process hosting any number of named parties; not thread-safe."""

    def __init__(self, root: Path, *, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._next_id = 0
        self._broken: str | None = None
        # stderr goes to a file: libsignal logs a lot there, and a file never fills up
        # and blocks node the way an unread pipe would.
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        env = dict(
            os.environ,
            LIBSIGNAL_PEER_ROOT=str(root),
            NODE_PATH=str(root / "node_modules"),
        )
        self._proc = subprocess.Popen(
            ["node", str(SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=str(root),
            env=env,
        )
        # A reader thread turns stdout lines into queue items so a call can time out.
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line)
        self._lines.put(None)  # end of stream: the process is gone

    @property
    def pid(self) -> int:
        """The node process id."""
        return self._proc.pid

    def stderr_tail(self, limit: int = 4000) -> str:
        """The last ``limit`` characters node wrote to stderr."""
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - limit))
        return self._stderr.read().decode("utf-8", "replace")

    def _die(self, why: str) -> PeerDied:
        self._broken = why
        self._kill()
        return PeerDied(f"{why}\n--- node stderr (tail) ---\n{self.stderr_tail()}")

    def call(self, op: str, /, *, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        """Run ``op`` with ``args``; return the reply (bytes fields decoded) or raise PeerError."""
        if "id" in args or "op" in args:
            raise TypeError("'id' and 'op' name the request itself; they cannot be op arguments")
        if self._broken is not None:
            raise PeerDied(f"the libsignal peer is unusable: {self._broken}")
        self._next_id += 1
        request_id = self._next_id
        line = json.dumps({"id": request_id, "op": op, **_encode(args)}) + "\n"
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(line.encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise self._die(f"writing {op!r} to node failed: {exc!r}") from exc
        try:
            raw = self._lines.get(timeout=self.timeout if timeout is None else timeout)
        except queue.Empty:
            raise self._die(f"no reply to {op!r} within {timeout or self.timeout} s") from None
        if raw is None:
            code = self._proc.wait(timeout=5)
            raise self._die(f"node exited with code {code} while running {op!r}")
        try:
            reply = json.loads(raw)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise self._die(f"node wrote something else than a JSON reply: {raw[:300]!r}")
        if reply.get("id") != request_id:
            raise self._die(f"reply id {reply.get('id')!r} does not match request {request_id}")
        if not reply.pop("ok"):
            raise PeerError(reply["error"], reply["message"])
        del reply["id"]
        decoded: dict[str, Any] = _decode(reply)
        return decoded

    def _kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)

    def close(self) -> None:
        """End node (closing stdin lets it finish cleanly) and release the stderr file."""
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.close()
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._kill()
        elif self._proc.stdin is not None and not self._proc.stdin.closed:
            self._proc.stdin.close()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._reader.join(timeout=5)
        self._stderr.close()


@contextmanager
def open_libsignal_peer(*, timeout: float = 30.0) -> Iterator[LibsignalPeer]:
    """Install (or reuse) the Baileys peer and run the driver; PeerUnavailable without node."""
    peer = LibsignalPeer(install_peer().root, timeout=timeout)
    try:
        peer.call("ping")  # fails here, with node's stderr, if the script cannot start
        yield peer
    finally:
        peer.close()
