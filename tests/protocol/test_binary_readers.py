"""The two readers behind decode_node: the Python reference and the optional compiled one."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from actors.connection.binary import BinaryNode, DecodeError, decode_node, decoder, encode_node
from actors.connection.binary.decoder import Reader, available_readers, current_reader, use_reader
from actors.connection.binary.encoder import MAX_DEPTH
from actors.connection.binary.tokens import DOUBLE_BYTE_TOKENS, SINGLE_BYTE_TOKENS
from bench.fuzz_targets import realistic_nodes

compiled_only = pytest.mark.skipif(
    Reader.COMPILED not in available_readers(),
    reason="the compiled reader is not built here (no C compiler at install)",
)

LIST_8, BINARY_8, AD_JID, FB_JID, INTEROP_JID = 248, 252, 247, 246, 245


def frame_with_attr(value: bytes) -> bytes:
    """A frame of ``<x v=...>`` whose attribute value is written as ``value``."""
    return bytes([0, LIST_8, 3, BINARY_8, 1]) + b"x" + bytes([BINARY_8, 1]) + b"v" + value


def test_the_python_reader_is_always_there_and_the_compiled_one_is_the_default() -> None:
    """PYTHON is always available; decode_node uses COMPILED whenever it was built."""
    readers = available_readers()
    assert Reader.PYTHON in readers
    assert current_reader() is (Reader.COMPILED if Reader.COMPILED in readers else Reader.PYTHON)


def test_use_reader_switches_for_the_block_and_restores_after() -> None:
    """use_reader(PYTHON) holds inside the block only, also when the block raises."""
    before = current_reader()
    with pytest.raises(DecodeError), use_reader(Reader.PYTHON):
        assert current_reader() is Reader.PYTHON
        decode_node(b"\x00\x01")
    assert current_reader() is before


def test_use_reader_refuses_a_reader_that_is_not_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the compiled reader, asking for it is a LookupError that names it."""
    monkeypatch.setattr(decoder, "_COMPILED", None)
    assert available_readers() == [Reader.PYTHON]
    with (
        pytest.raises(LookupError, match="compiled reader is not built"),
        use_reader(Reader.COMPILED),
    ):
        pass


@compiled_only
def test_the_compiled_reader_reads_realistic_traffic_itself() -> None:
    """Every frame of the realistic corpus is read by C (none declined), to the Python node."""
    from actors.connection.binary import _speedups

    for node in realistic_nodes(200, seed=7):
        frame = encode_node(node)
        read = _speedups.read(frame, 1, MAX_DEPTH)
        assert read is not None, node.tag
        with use_reader(Reader.PYTHON):
            assert read == decode_node(frame)


@compiled_only
@pytest.mark.parametrize(
    ("written", "text"),
    [
        (
            bytes([FB_JID, BINARY_8, 2]) + b"55\x01\x00" + bytes([BINARY_8, 4]) + b"msgr",
            "55:256@msgr",
        ),
        (bytes([INTEROP_JID, BINARY_8, 2]) + b"55" + b"\x00\x02\x00\x09", "9-55:2@interop"),
        (bytes([AD_JID, 5, 2, BINARY_8, 2]) + b"77", "77_5:2@s.whatsapp.net"),
    ],
    ids=["fb_jid", "interop_jid", "ad_jid_agent"],
)
def test_rare_forms_are_left_to_the_python_reader(written: bytes, text: str) -> None:
    """FB_JID, INTEROP_JID, an AD_JID of another domain: C declines, decode_node reads them."""
    from actors.connection.binary import _speedups

    frame = frame_with_attr(written)
    assert _speedups.read(frame, 1, MAX_DEPTH) is None
    assert decode_node(frame).attrs["v"] == text


@compiled_only
def test_nesting_beyond_the_c_recursion_cap_is_read_by_python() -> None:
    """Nodes nested 300 deep (past C's cap of 256) still decode when max_depth allows."""
    from actors.connection.binary import _speedups

    # <x><x>...<x/>...</x></x>: LIST_8 of 2 (tag, one-child list), 300 times, then a leaf.
    data = b"\x00" + b"\xf8\x02\x0a\xf8\x01" * 300 + b"\xf8\x01\x0a"
    assert _speedups.read(data, 1, 1000) is None
    node = decode_node(data, max_depth=1000)
    for _ in range(300):
        [node] = node.children()
    assert node.content is None


def grown_bytes(work: Callable[[], None], rounds: int) -> int:
    """Bytes still allocated after ``rounds`` more calls of ``work`` than after a warm-up."""
    for _ in range(50):
        work()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(rounds):
            work()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


@compiled_only
def test_the_compiled_reader_leaks_nothing_on_good_or_bad_frames() -> None:
    """Thousands of decodes, good frames and every truncation of them, keep memory flat."""
    frames = [encode_node(node) for node in realistic_nodes(20, seed=3)]
    cuts = [f[:n] for f in frames[:5] for n in range(2, len(f), max(1, len(f) // 40))]

    def work() -> None:
        for data in frames:
            decode_node(data)
        for data in cuts:
            try:
                decode_node(data)
            except DecodeError:
                pass

    assert grown_bytes(work, 300) < 64 * 1024


def built_extension_files() -> list[Path]:
    """Compiled-reader files next to decoder.py that this interpreter could import."""
    here = Path(decoder.__file__).parent
    return [p for p in (here / f"_speedups{s}" for s in EXTENSION_SUFFIXES) if p.exists()]


def test_a_compiled_reader_that_was_built_is_the_one_in_use() -> None:
    """When the install built the C reader for this interpreter, decode_node uses it."""
    if built_extension_files():
        assert Reader.COMPILED in available_readers()
        assert current_reader() is Reader.COMPILED
    else:
        assert available_readers() == [Reader.PYTHON]


@compiled_only
def test_setup_refuses_tables_that_do_not_fit_and_keeps_the_good_ones() -> None:
    """A class without the three slots, or short token tables, is a TypeError; reading goes on."""
    from actors.connection.binary import _speedups

    class Plain:
        tag = attrs = content = None

    servers = ("s.whatsapp.net", "lid", "hosted", "hosted.lid")
    with pytest.raises(TypeError, match="is not a slot"):
        _speedups.setup(Plain, SINGLE_BYTE_TOKENS, DOUBLE_BYTE_TOKENS, servers)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="single-byte tokens"):
        _speedups.setup(BinaryNode, SINGLE_BYTE_TOKENS[:-1], DOUBLE_BYTE_TOKENS, servers)
    frame = encode_node(BinaryNode("ack", {"id": "1"}))
    assert _speedups.read(frame, 1, MAX_DEPTH) == BinaryNode("ack", {"id": "1"})


@compiled_only
def test_a_compiled_reader_that_does_not_fit_is_left_unused_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If setup refuses (a BinaryNode changed shape), the codec imports and reads in Python."""
    from actors.connection.binary import _speedups

    def refuse(*args: object) -> None:
        raise TypeError("BinaryNode.tag is not a slot")

    monkeypatch.setattr(_speedups, "setup", refuse)
    with pytest.warns(RuntimeWarning, match="compiled reader left unused: BinaryNode.tag"):
        assert decoder._load_compiled() is None
