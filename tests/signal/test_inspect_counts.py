"""`baileys-trio inspect` on a location holding real Signal state: per-type counts of
sessions, sender keys, pre-keys and identities, and never a byte of any key.

The sessions, sender keys and consumed pre-key come from ``SignalRepository``
conversations, so inspect reads exactly the records a bot leaves behind.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.cli import main as cli_main
from stores import buffer_json
from stores.creds import AuthCreds
from stores.types import StoreSnapshot
from tests.signal.test_stores import (
    A_JID,
    B_JID,
    B_LID,
    DURABLE,
    GROUP,
    Party,
    close_all,
    establish,
    group_talk,
    location,
    open_auth,
    talk,
)

EXPECTED = {"pre-key": 2, "session": 2, "sender-key": 3, "identity-key": 2}
"""A: pre-keys 1 and 3 (2 consumed by B's pkmsg), sessions with B (PN) and C (LID),
its own sender key and B's and C's, and both contacts' identity keys."""


async def make_location(tmp_path: Path, kind: str) -> tuple[Path, list[bytes]]:
    """A (on ``kind``) talks to B and C (memory) 1:1 and in a group; returns A's location
    and every key byte string A's location and creds hold."""
    a = await Party.open(kind, location(tmp_path, kind, "a"), A_JID)
    b = await Party.open("memory", tmp_path / "b", B_JID)
    c = await Party.open("memory", tmp_path / "c", B_LID)
    try:
        await establish(b, a)  # B starts: A's pre-key 2 is consumed
        await establish(a, c)
        await talk(a, b, "1:1")
        await talk(a, c, "1:1")
        await group_talk(a, b, "group")
        await group_talk(a, c, "group")
        snapshot = await a.auth.backend.snapshot()
    finally:
        await close_all(a, b, c)
    assert {t: len(ids) for t, ids in snapshot.keys.items() if ids} == EXPECTED
    return a.path, sorted(set(key_material(snapshot)))


def key_material(snapshot: StoreSnapshot) -> Iterator[bytes]:
    """Every byte string of 16 bytes or more: creds keys, pre-keys, the base64 fields of
    session records, the Buffers inside sender-key records, identity keys."""
    assert isinstance(snapshot.creds, AuthCreds)
    yield from _walk(snapshot.creds.to_plain())
    yield from _walk(snapshot.keys)


def _walk(value: Any) -> Iterator[bytes]:
    if isinstance(value, bytes | bytearray):
        if len(value) >= 16:
            yield bytes(value)
        try:  # a sender-key record: JSON bytes with Buffers inside
            yield from _walk(buffer_json.loads(bytes(value), "sender-key"))
        except Exception:
            pass
    elif isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return
        if len(raw) >= 16:
            yield raw
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(key)
            yield from _walk(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _walk(item)


def encodings(secret: bytes) -> set[str]:
    """Ways a key could leak into text: base64 (both alphabets), hex, a byte list;
    each cut to a prefix long enough never to match by chance."""
    head = secret[:12]
    std = base64.b64encode(head).decode()
    return {
        std,
        base64.urlsafe_b64encode(head).decode(),
        head.hex(),
        head.hex().upper(),
        ",".join(str(b) for b in head),
        ", ".join(str(b) for b in head),
        repr(head)[2:-1][:24],
    }


def run_inspect(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli_main(["--log-format", "json", "inspect", *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("kind", DURABLE)
async def test_inspect_counts_signal_records_and_shows_no_key(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Console and JSON reports count each key type and hold no key, in any encoding."""
    path, secrets = await make_location(tmp_path, kind)
    assert len(secrets) > 20

    code, text = run_inspect(capsys, str(path))
    assert code == 0, text
    assert f"backend    {kind}" in text and "integrity ok" in text
    total = sum(EXPECTED.values())
    assert all(f"{t} {n}" in text for t, n in EXPECTED.items()), text
    assert f"keys     {total} (" in text, text

    code, out = run_inspect(capsys, str(path), "--json")
    assert code == 0, out
    report = json.loads(out)
    (account,) = report["accounts"]
    assert account["key_counts"] == EXPECTED
    assert account["total_keys"] == total

    for output in (text, out):
        leaked = [s.hex()[:8] for s in secrets if any(e in output for e in encodings(s))]
        assert leaked == [], f"key bytes in inspect output (first bytes {leaked})"


async def test_inspect_sees_the_counts_after_a_restart_and_a_migration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The counts are those of the records: reopening changes none, a migration copies them."""
    from stores.migrate import migrate

    path, _ = await make_location(tmp_path, "multi-file")
    auth = await open_auth("multi-file", path)
    await auth.aclose()
    for kind, name in (("native", "copy"), ("sqlite", "copy.db")):
        await migrate("multi-file", path, kind, tmp_path / name)
        code, out = run_inspect(capsys, str(tmp_path / name), "--json")
        assert code == 0, out
        assert json.loads(out)["accounts"][0]["key_counts"] == EXPECTED
    # The group's records are found by their Baileys file names.
    names = sorted(p.name for p in path.iterdir() if p.name.startswith("sender-key-"))
    assert names == [f"sender-key-{GROUP}--{u}--0.json" for u in ("111", "222", "333_1")]
