"""The crash soak's CI variant (issue 7): 30 SIGKILLs, nothing acknowledged lost, no re-pairing.

The same code as ``python -m bench.soak`` (bench/soak.py, bench/soak_child.py), with
fewer kills. The first tests show the soak's checks can fail: a store missing an
acknowledged write, or damaged, is counted.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.soak import Folder, Tally, check_store, creds_lost, print_summary, run_soak
from bench.soak_child import KEY_TYPE, value
from stores.auth import use_native_file_auth_state
from stores.creds import init_auth_creds
from stores.native_format import scan_log

KILLS = 30
SEED = int(os.environ.get("SOAK_SEED", "20261127"))


async def write_key(path: Path, key_id: str, run: int, i: int) -> None:
    auth = await use_native_file_auth_state(path)
    try:
        await auth.state.keys.set({KEY_TYPE: {key_id: value(run, i)}})
    finally:
        await auth.aclose()


async def test_a_store_behind_an_acknowledged_key_write_counts_as_data_lost(tmp_path: Path) -> None:
    """A key holding an older write than the acknowledged one is counted as lost data."""
    await write_key(tmp_path / "auth", "soak-1", 1, 3)
    folder = Folder(tmp_path / "auth", links_before=0, keys={"soak-1": (1, 5)})
    tally = Tally()
    await check_store(folder, tally, "test")
    assert tally.data_lost == 1 and tally.corruptions == 0
    folder.keys = {"soak-1": (1, 3)}
    await check_store(folder, tally, "test")
    assert tally.data_lost == 1, "the acknowledged write itself is present"


async def test_a_damaged_log_record_counts_as_a_corruption(tmp_path: Path) -> None:
    """Flipping a byte inside a committed record makes the soak report a corruption."""
    await write_key(tmp_path / "auth", "soak-1", 1, 1)
    await write_key(tmp_path / "auth", "soak-2", 1, 2)
    logs = sorted(p for p in (tmp_path / "auth").iterdir() if p.name.startswith("log-"))
    assert logs, "the native store writes log files"
    raw = bytearray(logs[0].read_bytes())
    end = scan_log(bytes(raw), str(logs[0])).end  # the records, before the zero-filled tail
    raw[end // 3] ^= 0xFF
    logs[0].write_bytes(bytes(raw))
    tally = Tally()
    await check_store(Folder(tmp_path / "auth", 0, keys={"soak-1": (1, 1)}), tally, "test")
    assert tally.corruptions + tally.data_lost >= 1


def test_creds_behind_an_acknowledged_update_are_reported() -> None:
    """Monotone creds fields, registration and identity below the acknowledged ones are lost."""
    creds = init_auth_creds()
    assert creds_lost({"next_pre_key_id": creds.next_pre_key_id}, creds) == []
    lost = creds_lost({"next_pre_key_id": creds.next_pre_key_id + 30, "registered": True}, creds)
    assert len(lost) == 2


@pytest.mark.slow
def test_thirty_sigkills_lose_nothing_corrupt_nothing_and_never_force_a_repairing() -> None:
    """30 random SIGKILLs over pairing, login, pre-key upload and key transactions: all kept."""
    tally, seconds = run_soak(KILLS, seed=SEED, per_dir=10)
    print_summary(tally, seconds)
    assert tally.kills == KILLS, f"seed {SEED}: {tally.problems}"
    assert tally.data_lost == 0, f"seed {SEED}: {tally.problems}"
    assert tally.corruptions == 0, f"seed {SEED}: {tally.problems}"
    assert tally.repairings == 0, f"seed {SEED}: {tally.problems}"
    assert tally.failed_logins == 0, f"seed {SEED}: {tally.problems}"
    # The kills must land inside pairing and in acknowledged writes, not only around them.
    assert tally.kills_by_stage.get("pairing", 0) > 0, f"seed {SEED}: {tally.kills_by_stage}"
    assert tally.acked_key_commits > 0 and tally.acked_creds_commits > 0
    assert tally.pairings_acknowledged >= 1 and tally.logins_verified >= 1
