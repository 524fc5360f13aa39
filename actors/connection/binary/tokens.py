"""Dictionary v3: the token tables of Baileys v7, loaded from ``tokens_v3.json``.

The tables are protocol data, not code: ``tokens_v3.json`` holds them verbatim with
the version they were taken from, and a test checks them against what the
reference peer exports.

Since 0.1.0.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

#: Where the tables come from (also stored in the data file).
SOURCE: str
#: ``SINGLE_BYTE_TOKENS[b]`` is the string of tag byte ``b`` (1..235); index 0 is unused.
SINGLE_BYTE_TOKENS: tuple[str, ...]
#: ``DOUBLE_BYTE_TOKENS[n][b]`` is the string of ``DICTIONARY_n`` followed by byte ``b``.
DOUBLE_BYTE_TOKENS: tuple[tuple[str, ...], ...]
#: string -> (dictionary number or None for single byte, index): what the encoder writes.
TOKEN_INDEX: dict[str, tuple[int | None, int]]


def _load() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("tokens_v3.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    single, double = data["single_byte"], data["double_byte"]
    # A short or reshaped table would shift every token: refuse to start with one.
    if len(single) != 236 or single[0] != "" or len(double) != 4:
        raise RuntimeError("tokens_v3.json: single_byte must hold 236 entries, double_byte 4")
    if any(len(table) != 256 for table in double):
        raise RuntimeError("tokens_v3.json: every double_byte table must hold 256 entries")
    return data


def _index(
    single: tuple[str, ...], double: tuple[tuple[str, ...], ...]
) -> dict[str, tuple[int | None, int]]:
    # Same precedence as Baileys' TOKEN_MAP: later entries overwrite earlier ones
    # (the v3 tables hold no duplicates, so this only matters if they ever do).
    index: dict[str, tuple[int | None, int]] = {}
    for i, token in enumerate(single):
        if i:
            index[token] = (None, i)
    for n, table in enumerate(double):
        for i, token in enumerate(table):
            index[token] = (n, i)
    return index


_DATA = _load()
SOURCE = _DATA["source"]
SINGLE_BYTE_TOKENS = tuple(_DATA["single_byte"])
DOUBLE_BYTE_TOKENS = tuple(tuple(table) for table in _DATA["double_byte"])
TOKEN_INDEX = _index(SINGLE_BYTE_TOKENS, DOUBLE_BYTE_TOKENS)
del _DATA
