"""Arrays encoded once in binary reach the server as the arrays psycopg would have sent.

Each array type is sent to a real server and read back (``array_recv`` validates the
binary form: a wrong header, length or element oid is an error there), against the
same values passed as psycopg's own lists.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stores.postgres_arrays import ByteaArray, Int2Array, Int8Array, TextArray
from tests.stores.postgres_server import (  # noqa: F401 (fixtures, used by name)
    postgres_dsn_fixture,
    postgres_server_fixture,
)

CASES: list[tuple[Any, str, list[Any]]] = [
    (TextArray, "text[]", []),
    (TextArray, "text[]", ["session", "pre-key", "ümlaut ✓", "", "a" * 300]),
    (ByteaArray, "bytea[]", [b"", b"\x00\xff" * 600, bytes(range(256))]),
    (Int8Array, "bigint[]", [0, 1, -1, 2**63 - 1, -(2**63), 0xFFFF_FFFF]),
    (Int8Array, "bigint[]", [None, 7, None]),
    (Int2Array, "smallint[]", [0, 1, -32768, 32767]),
    (Int2Array, "smallint[]", []),
]


@pytest.fixture
def conn(postgres_dsn: str) -> Any:
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        yield connection


@pytest.mark.parametrize(("array", "sql_type", "items"), CASES)
def test_each_array_reads_back_as_the_list_it_was_made_of(
    conn: Any, array: Any, sql_type: str, items: list[Any]
) -> None:
    ours = conn.execute(f"SELECT %b::{sql_type}", (array.of(items),)).fetchone()[0]
    theirs = conn.execute(f"SELECT %b::{sql_type}", (items,)).fetchone()[0] if items else []
    assert ours == theirs == items


def test_unnest_of_several_arrays_pairs_their_elements(conn: Any) -> None:
    """What the commit statement does with them: rows from parallel arrays."""
    rows = conn.execute(
        "SELECT * FROM unnest(%b::text[], %b::bigint[], %b::bytea[])",
        (TextArray.of(["a", "b"]), Int8Array.of([1, None]), ByteaArray.of([b"x", b""])),
    ).fetchall()
    assert rows == [("a", 1, b"x"), ("b", None, b"")]


def test_an_element_out_of_its_type_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(OverflowError):
        Int2Array.of([40_000])
    with pytest.raises(OverflowError):
        Int8Array.of([2**63])


def test_the_repr_shows_no_values() -> None:
    assert "secret" not in repr(ByteaArray.of([b"secret"])) + repr(TextArray.of(["secret"]))


# The fixture is a database name, the same for every example: nothing to reset.
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(items=st.lists(st.text(), max_size=12))
def test_any_text_list_round_trips(postgres_dsn: str, items: list[str]) -> None:
    # Strings with NUL cannot be PostgreSQL text at all (psycopg refuses them too).
    items = [s for s in items if "\x00" not in s]
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        got = connection.execute("SELECT %b::text[]", (TextArray.of(items),)).fetchone()[0]
    assert got == items
