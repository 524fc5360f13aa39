"""Shared pieces of the encryption-at-rest tests: keys, known secrets, a leak scanner."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from stores.creds import AuthCreds, init_auth_creds
from stores.types import Batch


def write_key_file(path: Path, raw: bytes | None = None, *, hex_form: bool = False) -> bytes:
    """Write a private key file (raw bytes, or hex with a newline); return the key."""
    raw = raw if raw is not None else secrets.token_bytes(32)
    path.write_bytes((raw.hex() + "\n").encode() if hex_form else raw)
    path.chmod(0o600)
    return raw


def creds_secrets(creds: AuthCreds) -> list[bytes]:
    """The private key bytes of a creds snapshot (what must never reach the disk)."""
    return [
        creds.noise_key.private,
        creds.pairing_ephemeral_key_pair.private,
        creds.signed_identity_key.private,
        creds.signed_pre_key.key_pair.private,
        creds.adv_secret_key.encode(),  # base64 text, stored as such
    ]


def secret_batch(n: int) -> tuple[Batch, list[bytes]]:
    """A commit of session and pre-key values holding fresh random key bytes."""
    session_key, pre_key = secrets.token_bytes(32), secrets.token_bytes(32)
    batch = Batch(
        keys={
            "session": {f"s{n}": {"root": session_key, "n": n}},
            "pre-key": {str(n): {"private": pre_key, "public": secrets.token_bytes(32)}},
        }
    )
    return batch, [session_key, pre_key]


def first_creds() -> tuple[AuthCreds, list[bytes]]:
    creds = init_auth_creds()
    return creds, [s for s in creds_secrets(creds) if s]


def scan_for_leaks(root: Path, known: Iterable[bytes]) -> list[str]:
    """Every file under ``root`` (temp, WAL and compaction files included) holding a secret.

    Each secret is looked for whole and by its first and last 16 bytes, so a value cut
    across a page or frame boundary is still found.
    """
    needles = set()
    for secret in known:
        if len(secret) >= 16:
            needles.update({secret, secret[:16], secret[-16:]})
    found = []
    for directory, _, files in os.walk(root):
        for name in files:
            file = Path(directory) / name
            if not file.is_file():
                continue  # a server's socket, say: no data of ours
            try:
                data = file.read_bytes()
            except FileNotFoundError:
                continue  # a temp file removed while we walked
            hits = [n for n in needles if n in data]
            if hits:
                found.append(f"{file}: {len(hits)} secret(s)")
    return found
