"""Where a native log's records end, for tests that cut or damage logs by offset.

A live log ends in a preallocated, zero-filled tail; tests that place damage
relative to the end of the records find that end here (or trim the tail, which
leaves a log laid out as an append-only writer leaves it: also a valid log).
"""

from __future__ import annotations

import os
from pathlib import Path

from stores.native_format import MAGIC, read_frame, zero_tail


def records_end(log: Path) -> int:
    """The offset just past the last intact frame (the header's, if no record)."""
    data = log.read_bytes()
    offset = len(MAGIC)
    while (found := read_frame(data, offset)) is not None:
        offset = found[1]
    assert zero_tail(data, offset), f"{log}: not a clean log (damage at {offset})"
    return offset


def trim_log(log: Path) -> int:
    """Cut the zero tail off ``log``; return its new size (= its records' end)."""
    end = records_end(log)
    os.truncate(log, end)
    return end
