"""Dictionary v3 is Baileys v7's token tables, kept as a data file with their source.

To regenerate ``tokens_v3.json`` (after a Baileys upgrade, with a new ``source``),
write ``render(header, exported)`` with ``exported`` from ``EXPORT_SCRIPT``; the
drift test below fails until the file matches the installed Baileys again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actors.connection.binary import tokens
from tests.baileys_peer import BaileysPeer

DATA_FILE = Path(tokens.__file__).with_name("tokens_v3.json")

EXPORT_SCRIPT = r"""
import * as C from 'baileys/lib/WABinary/constants.js';
console.log(JSON.stringify({
  single_byte: C.SINGLE_BYTE_TOKENS, double_byte: C.DOUBLE_BYTE_TOKENS, tags: C.TAGS,
}));
"""


HEADER_KEYS = ("source", "dictionary", "layout")


def render(header: dict[str, str], exported: dict[str, object]) -> str:
    """The exact text of the data file for a header and Baileys' exported tables."""
    data = {
        **{key: header[key] for key in HEADER_KEYS},
        "single_byte": exported["single_byte"],
        "double_byte": exported["double_byte"],
    }
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"


def test_data_file_names_its_source() -> None:
    """The data file says which Baileys version and file the tables come from."""
    data = json.loads(DATA_FILE.read_text("utf-8"))
    assert "baileys 7.0.0-rc13" in data["source"]
    assert "lib/WABinary/constants.js" in data["source"]
    assert tokens.SOURCE == data["source"]


def test_tables_have_the_v3_shape() -> None:
    """236 single-byte tokens (index 0 unused) and four double-byte tables of 256."""
    assert len(tokens.SINGLE_BYTE_TOKENS) == 236
    assert tokens.SINGLE_BYTE_TOKENS[0] == ""
    assert [len(t) for t in tokens.DOUBLE_BYTE_TOKENS] == [256, 256, 256, 256]
    assert tokens.SINGLE_BYTE_TOKENS[3] == "s.whatsapp.net"
    assert tokens.DOUBLE_BYTE_TOKENS[0][0] == "read-self"


def test_token_index_points_back_at_each_token() -> None:
    """Every token is found by the encoder's index at the place the decoder reads it."""
    for i, token in enumerate(tokens.SINGLE_BYTE_TOKENS[1:], start=1):
        assert tokens.TOKEN_INDEX[token] == (None, i)
    for n, table in enumerate(tokens.DOUBLE_BYTE_TOKENS):
        for i, token in enumerate(table):
            assert tokens.TOKEN_INDEX[token] == (n, i)
    assert "" not in tokens.TOKEN_INDEX


@pytest.mark.peer
def test_data_file_equals_what_baileys_exports(baileys_peer: BaileysPeer) -> None:
    """The committed tables and tag bytes equal the installed Baileys' constants (drift check)."""
    from actors.connection.binary import PACKED_MAX, Tag

    exported = baileys_peer.run_json(EXPORT_SCRIPT)
    data = json.loads(DATA_FILE.read_text("utf-8"))
    assert data["single_byte"] == exported["single_byte"]
    assert data["double_byte"] == exported["double_byte"]
    ours = {tag.name: int(tag) for tag in Tag} | {"PACKED_MAX": PACKED_MAX}
    assert ours == exported["tags"]
    # The file is exactly what ``render`` writes, so regenerating it is one call.
    assert DATA_FILE.read_text("utf-8") == render(data, exported)
