"""``each_reader``: run a test module once with each reader behind ``decode_node``.

The pure-Python reader is the reference; the compiled one must behave the same, so
the codec's tests run against both (``pytestmark = pytest.mark.usefixtures("each_reader")``).
Where the compiled reader was not built, its run is skipped, saying why.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from actors.connection.binary.decoder import Reader, available_readers, use_reader


@pytest.fixture(scope="module", params=list(Reader), ids=lambda reader: reader.value)
def each_reader(request: pytest.FixtureRequest) -> Iterator[Reader]:
    """decode_node uses this reader for the module's tests (module scope: Hypothesis-safe)."""
    reader: Reader = request.param
    if reader not in available_readers():
        pytest.skip(f"the {reader.value} reader is not built here (no C compiler at install)")
    with use_reader(reader):
        yield reader
