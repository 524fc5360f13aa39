"""Fuzz targets: one function per parser that reads bytes from outside, and its contract.

Each target takes one input (``bytes``) and either returns or raises one of the
errors it is allowed to raise (``Target.allowed``, the typed errors of the module
under test). Anything else escaping, an input running longer than the per-input
time bound, or memory growing beyond ``Target.memory_bound(len(input))`` is an
invariant violation. ``Target.seeds()`` builds a seed corpus from valid encodings
made by our own encoders (never from files), and ``Target.fixup``, when set,
repairs what a blind mutation always breaks (checksums) so mutations reach the
parser behind them. ``Target.huge_lengths()`` are crafted inputs that declare
lengths far beyond their own size: they must be refused before anything that
large is allocated.

Used by ``bench/fuzz.py`` (the soak runner) and ``property_tests/test_fuzz_targets.py``.
"""

from __future__ import annotations

import atexit
import base64
import functools
import hashlib
import os
import random
import re
import shutil
import struct
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import cbor2

from actors.connection.binary import BinaryNode, DecodeError, decode_node, encode_node
from actors.connection.certs import RootKey, make_cert_chain
from actors.connection.errors import RemoteProtocolError
from actors.connection.framing import FrameSplitter, encode_frame, encode_intro, read_intro
from actors.connection.noise import (
    ClientFinish,
    ClientHello,
    Finish,
    Hello,
    NoiseInitiator,
    NoiseResponder,
    NoiseTransport,
    ServerHello,
    generate_key_pair,
)
from stores import _multi_file_journal as journal
from stores import _multi_file_layout as multi_file_layout
from stores import buffer_json, multi_file
from stores.creds import creds_to_baileys_json, init_auth_creds
from stores.errors import CorruptStateError, UnsupportedFormatError, WrongBackendError
from stores.fsio import REAL_FS
from stores.native_format import (
    FRAME_HEAD,
    FRAME_MARKER,
    MAGIC,
    MAX_PAYLOAD,
    FileHeader,
    LogScan,
    decode_snapshot,
    encode_header,
    encode_key_writes,
    encode_record,
    encode_record_body,
    encode_snapshot,
    frame,
    log_name,
    scan_log,
)
from stores.native_load import classify, load_state

#: Fixed memory every input may use whatever its size (interpreter noise, small objects).
MEMORY_BASE = 256 * 1024
#: Bytes of memory allowed per input byte: parsed objects cost a few times their bytes.
MEMORY_PER_BYTE = 64
#: The inflate bound the binary target decodes with (decode_node's ``max_size``):
#: a compressed frame may legitimately grow to it, whatever the input's size.
BINARY_MAX_SIZE = 1 << 20


def default_memory_bound(size: int) -> int:
    """Peak traced bytes allowed for an input of ``size`` bytes."""
    return MEMORY_BASE + MEMORY_PER_BYTE * size


StructureOp = Callable[[bytes, random.Random], bytes]


@dataclass(frozen=True)
class Target:
    """One fuzz target and the contract it is checked against."""

    name: str
    run: Callable[[bytes], None]
    allowed: tuple[type[Exception], ...]
    seeds: Callable[[], list[bytes]]
    huge_lengths: Callable[[], list[bytes]]
    doc: str
    fixup: Callable[[bytes], bytes] | None = None
    structure_ops: tuple[StructureOp, ...] = ()
    """Format-aware mutations (nesting, growing a number) a blind mutator rarely makes."""
    memory_bound: Callable[[int], int] = field(default=default_memory_bound)


class OracleError(AssertionError):
    """A target's own consistency check failed: a wrong result, not a crash."""


def _run_all(calls: list[Callable[[], object]], allowed: tuple[type[Exception], ...]) -> None:
    """Run every call; then raise the first allowed error any of them raised.

    So a target that drives several parsers still reports a typed error to the runner.
    """
    first: Exception | None = None
    for call in calls:
        try:
            call()
        except allowed as exc:
            # Dropped traceback: it would keep the failed parse's frames alive (deep
            # recursion: a frame per nesting level) while the next parser runs.
            first = first or exc.with_traceback(None)
    if first is not None:
        raise first


def _chunks(data: bytes) -> Iterator[bytes]:
    """``data`` cut at points drawn from its own CRC: random-looking, reproducible."""
    rng = random.Random(zlib.crc32(data))
    at = 0
    while at < len(data):
        step = rng.choice((1, 2, 3, 5, 64, len(data)))
        yield data[at : at + step]
        at += step


# --- frame splitter ----------------------------------------------------------------

#: A small bound so crafted lengths over it are exercised, not just over 8 MiB.
FRAMING_MAX = 4096


def run_framing(data: bytes) -> None:
    """The intro parser (when ``data`` starts like one), then the splitter fed the rest in chunks.

    Allowed: RemoteProtocolError. Oracle: the frames returned, re-framed, are exactly
    the bytes consumed, and what is buffered is the rest.
    """
    stream = data
    if data[:1] in (b"W", b"E"):  # an intro's first byte: parse it as the responder does
        parsed = read_intro(data)
        if parsed is None:
            return
        stream = data[parsed[1] :]
    _run_all(
        [lambda: _split(stream, FRAMING_MAX), lambda: _split(stream, 0xFFFFFF)],
        (RemoteProtocolError,),
    )


def _split(data: bytes, bound: int) -> None:
    splitter = FrameSplitter(max_frame_size=bound)
    frames: list[bytes] = []
    for chunk in _chunks(data):
        splitter.receive_data(chunk)
        frames += splitter.frames()
    frames += splitter.frames()
    consumed = b"".join(encode_frame(f) for f in frames)
    if not data.startswith(consumed) or splitter.buffered != len(data) - len(consumed):
        raise OracleError(
            f"splitter returned {len(frames)} frames covering {len(consumed)} bytes"
            f" and buffers {splitter.buffered} of a {len(data)}-byte stream"
        )


def framing_seeds() -> list[bytes]:
    rng = random.Random(1)
    frames = [encode_node(n) for n in realistic_nodes(12, seed=2)]
    return [
        b"".join(encode_frame(f) for f in frames[:4]),
        encode_intro() + encode_frame(frames[0]),
        encode_intro(b"\x08\x02\x08\x05") + encode_frame(frames[1]) + encode_frame(b""),
        b"".join(encode_frame(rng.randbytes(rng.randrange(300))) for _ in range(6)),
        encode_frame(b"x" * FRAMING_MAX),  # exactly at the small bound
    ]


def framing_huge() -> list[bytes]:
    return [
        b"\xff\xff\xff" + b"\x00" * 16,
        encode_frame(b"ok") + b"\x7f\xff\xff" + b"\x01",
        b"ED\x00\x01\xff\xff\xff",
        b"\x00\x10\x00" + b"\x00" * 100,  # 4096 declared: at the bound, body absent
    ]


# --- Noise transport ---------------------------------------------------------------


@dataclass(frozen=True)
class NoiseKeys:
    """The transport keys of the client side of one real in-memory handshake."""

    write_key: bytes
    read_key: bytes


@cache
def noise_keys() -> NoiseKeys:
    """Run a real XX handshake in memory once; return the client's transport keys.

    A transport is rebuilt from these keys for every input (a handshake per input
    would cost more than the input). The keys are checked against the handshake's
    own server transport before use, both directions.
    """
    root, intermediate, static = generate_key_pair(), generate_key_pair(), generate_key_pair()
    chain = make_cert_chain(
        root_private_key=root.private,
        intermediate_private_key=intermediate.private,
        server_static_public=static.public,
    )
    client = NoiseInitiator(noise_key=generate_key_pair(), root=RootKey(root.public, 0))
    server = NoiseResponder(static_key=static, cert_chain=chain)
    server.receive_data(client.send(Hello()))
    if not isinstance(server.next_event(), ClientHello):
        raise RuntimeError("handshake: no ClientHello")
    client.receive_data(server.send(Hello()))
    if not isinstance(client.next_event(), ServerHello):
        raise RuntimeError("handshake: no ServerHello")
    server.receive_data(client.send(Finish(b"fuzz")))
    if not isinstance(server.next_event(), ClientFinish):
        raise RuntimeError("handshake: no ClientFinish")
    # The transport keeps its keys private; the handshake's split is the one place
    # they are derived, so read them there (the check below proves they are right).
    write_key, read_key = client._symmetric.split()
    keys = NoiseKeys(write_key, read_key)
    rebuilt = client_transport(keys)
    rebuilt.receive_data(server.transport.send(b"probe"))
    server.transport.receive_data(rebuilt.send(b"echo"))
    if [f.payload for f in rebuilt.events()] != [b"probe"] or [
        f.payload for f in server.transport.events()
    ] != [b"echo"]:
        raise RuntimeError("the keys read from the handshake do not match its transport")
    return keys


def client_transport(keys: NoiseKeys) -> NoiseTransport:
    """A fresh client transport (counters at 0) on the handshake's keys."""
    return NoiseTransport(write_key=keys.write_key, read_key=keys.read_key)


def server_transport(keys: NoiseKeys) -> NoiseTransport:
    """A fresh server transport: the client's keys, swapped."""
    return NoiseTransport(write_key=keys.read_key, read_key=keys.write_key)


def run_noise(data: bytes) -> None:
    """Bytes from the server into a fresh client transport, in chunks; each frame decoded.

    The receive path as the connection runs it: split, decrypt, decode_node.
    Allowed: RemoteProtocolError (DecodeError is one).
    """
    transport = client_transport(noise_keys())
    for chunk in _chunks(data):
        transport.receive_data(chunk)
        for event in transport.events():
            decode_node(event.payload, max_size=BINARY_MAX_SIZE)
    for event in transport.events():
        decode_node(event.payload, max_size=BINARY_MAX_SIZE)


def noise_seeds() -> list[bytes]:
    keys = noise_keys()
    nodes = [encode_node(n) for n in realistic_nodes(16, seed=3)]
    seeds = []
    for start in range(0, len(nodes), 4):
        sender = server_transport(keys)
        seeds.append(b"".join(sender.send(f) for f in nodes[start : start + 4]))
    sender = server_transport(keys)
    seeds.append(sender.send(b"\x02" + zlib.compress(nodes[0][1:])) + sender.send(nodes[1]))
    return seeds


def noise_huge() -> list[bytes]:
    keys = noise_keys()
    sender = server_transport(keys)
    binary32 = b"\x00\xf8\x02\x13\xfe\xff\xff\xff\xf0"  # a node whose content claims 4 GiB
    return [
        b"\xff\xff\xff" + b"\x00" * 32,
        sender.send(encode_node(BinaryNode("ack", {"id": "1"}))) + b"\x7f\xff\xff",
        server_transport(keys).send(binary32),
    ]


# --- binary node decoder -----------------------------------------------------------


def run_binary(data: bytes) -> None:
    """``decode_node`` on one frame. Allowed: DecodeError.

    Oracle: a decoded node is a BinaryNode with a non-empty string tag.
    """
    node = decode_node(data, max_size=BINARY_MAX_SIZE)
    if not isinstance(node, BinaryNode) or not isinstance(node.tag, str) or not node.tag:
        raise OracleError(f"decode_node returned {node!r}")


def binary_seeds() -> list[bytes]:
    frames = [encode_node(n) for n in realistic_nodes(24, seed=4)]
    compressed = [b"\x02" + zlib.compress(frames[i][1:]) for i in (0, 5)]
    return [*frames, *compressed]


def binary_huge() -> list[bytes]:
    return [
        b"\x00\xf8\x02\x13\xfe\xff\xff\xff\xff",  # BINARY_32 content of 4 GiB - 1
        b"\x00\xf8\x02\x13\xfd\x0f\xff\xff",  # BINARY_20 content of 1 MiB - 1
        b"\x00\xf9\xff\xff\x13" + b"\x13" * 8,  # LIST_16 of 65535 items, 9 given
        b"\x00\xf8\x02\x13\xf9\xff\xff",  # 65535 children declared, none given
        b"\x00\xf8\x02\xfe\x7f\xff\xff\xff",  # a tag string of 2 GiB
        b"\x02" + zlib.compress(b"\x00" * (4 << 20)),  # inflates past BINARY_MAX_SIZE
    ]


def _binary_bound(size: int) -> int:
    # A compressed frame may inflate to BINARY_MAX_SIZE: that, not its size, bounds it.
    return default_memory_bound(size) + 2 * BINARY_MAX_SIZE


# --- native record reader ----------------------------------------------------------

NATIVE_LOCATION = "fuzz/log"


def run_native(data: bytes) -> None:
    """The native log scan (strict, then salvaging) and the snapshot reader on ``data``.

    Allowed: CorruptStateError, WrongBackendError, UnsupportedFormatError.
    Oracle: when the strict scan succeeds, the salvaging scan finds the same records.
    """
    scans: list[LogScan] = []
    _run_all(
        [
            lambda: scans.append(scan_log(data, NATIVE_LOCATION)),
            lambda: _check_salvage(data, scans),
            lambda: decode_snapshot(data, "fuzz/snapshot"),
        ],
        _NATIVE_ERRORS,
    )


def _check_salvage(data: bytes, strict: list[LogScan]) -> None:
    salvaged = scan_log(data, NATIVE_LOCATION, salvage=True)
    if strict and salvaged.records != strict[0].records:
        raise OracleError("salvaging scan disagrees with a strict scan that succeeded")


@cache
def _native_dir() -> Path:
    # A memory-backed directory when there is one: the target measures parsing, not disk.
    shm = Path("/dev/shm")
    parent = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="btrio-fuzz-native-", dir=parent))
    atexit.register(shutil.rmtree, path, True)
    (path / "store").mkdir(mode=0o700)
    return path / "store"


def run_native_dir(data: bytes) -> None:
    """Recovery as ``open`` runs it: ``data`` as the only log of a directory, then load.

    Allowed: CorruptStateError, WrongBackendError, UnsupportedFormatError.
    """
    directory = _native_dir()
    (directory / log_name(0)).write_bytes(data)
    listing = classify(directory, REAL_FS)
    _run_all(
        [
            lambda: load_state(directory, listing, REAL_FS),
            lambda: load_state(directory, listing, REAL_FS, salvage=True),
        ],
        _NATIVE_ERRORS,
    )


def native_log(records: int, seed: int, *, base_seq: int = 0, generation: int = 0) -> bytes:
    """A valid native log: header, then ``records`` commits in write groups."""
    rng = random.Random(seed)
    out = [encode_header(FileHeader("log", generation, base_seq, 1_700_000_000.5))]
    seq = group = base_seq
    for _ in range(records):
        seq += 1
        if rng.random() < 0.5:
            group = seq
        keys = encode_key_writes(
            {
                "pre-key": {
                    str(rng.randrange(1000)): {
                        "public": rng.randbytes(32),
                        "private": rng.randbytes(32),
                    }
                },
                "session": {f"{rng.randrange(10**6)}.0": None},
            }
        )
        creds = (
            cbor2.dumps({"registrationId": rng.randrange(16384)}) if rng.random() < 0.3 else None
        )
        out.append(encode_record(seq, group, encode_record_body(keys, creds)))
    return b"".join(out)


def native_snapshot(seed: int) -> bytes:
    rng = random.Random(seed)
    header = FileHeader("snapshot", 1, 7, 1_700_000_000.0)
    keys = {"pre-key": {str(i): cbor2.dumps({"k": rng.randbytes(32)}) for i in range(5)}}
    return encode_snapshot(header, cbor2.dumps({"me": None}), None, keys)


def native_log_seeds() -> list[bytes]:
    return [
        native_log(0, 1),
        native_log(3, 2),
        native_log(8, 3),
        native_log(4, 4)[:-5],  # a torn tail
    ]


def native_seeds() -> list[bytes]:
    return [*native_log_seeds(), native_snapshot(5)]


def native_fixup(data: bytes) -> bytes:
    """Recompute the checksum of every frame found (so mutations reach CBOR and records)."""
    out = bytearray(data)
    at = out.find(FRAME_MARKER)
    while at != -1 and at + FRAME_HEAD.size <= len(out):
        length = int.from_bytes(out[at + 4 : at + 8], "big")
        end = at + FRAME_HEAD.size + length
        if end <= len(out):
            out[at:end] = frame(bytes(out[at + FRAME_HEAD.size : end]))
            at = out.find(FRAME_MARKER, end)
        else:
            at = out.find(FRAME_MARKER, at + 1)
    return bytes(out)


def native_huge() -> list[bytes]:
    header = encode_header(FileHeader("log", 0, 0, 0.0))
    return [
        # a frame declaring MAX_PAYLOAD, then more than that: refused as unsound length
        header + FRAME_MARKER + struct.pack(">I", MAX_PAYLOAD) + bytes(16) + b"\x00" * 8,
        header + FRAME_MARKER + b"\xff\xff\xff\xff" + bytes(16),
        # checksummed frames whose CBOR declares huge strings, arrays and maps
        header
        + frame(b"\x84\x01\x01\xa1\x67pre-key\xa1\x61\x31\x5b" + (1 << 62).to_bytes(8, "big")),
        header + frame(b"\x9b" + (1 << 62).to_bytes(8, "big") + b"\x00"),
        header + frame(b"\xbb" + (1 << 62).to_bytes(8, "big") + b"\x00"),
        header + frame(b"\x7b" + (1 << 40).to_bytes(8, "big") + b"a"),
        MAGIC + frame(b"\x81" * 100_000),
    ]


# --- Baileys JSON reader -----------------------------------------------------------

JSON_LOCATION = "fuzz/creds.json"
_KEY_FILE_TYPES = ("pre-key", "session", "app-state-sync-key", "sender-key", "lid-mapping")


def run_baileys_json(data: bytes) -> None:
    """``buffer_json.loads``, the creds.json parser and the key-file parsers on ``data``.

    Allowed: CorruptStateError.
    """
    calls: list[Callable[[], object]] = [
        lambda: buffer_json.loads(data, JSON_LOCATION),
        # The creds file parser behind open (private: the public entry needs a directory).
        lambda: multi_file._parse_creds(data, JSON_LOCATION),
    ]
    calls += [
        functools.partial(multi_file_layout.decode_key, type_, data, f"fuzz/{type_}-1.json")
        for type_ in _KEY_FILE_TYPES
    ]
    _run_all(calls, (CorruptStateError,))


@cache
def _creds_json() -> bytes:
    return buffer_json.dump_bytes(creds_to_baileys_json(init_auth_creds()))


def baileys_json_seeds() -> list[bytes]:
    rng = random.Random(6)
    key = rng.randbytes(32)
    return [
        _creds_json(),
        multi_file_layout.encode_key("pre-key", "1", {"public": key, "private": key[::-1]}),
        multi_file_layout.encode_key(
            "app-state-sync-key",
            "AAAAAP8D",
            {"keyData": key, "fingerprint": {"rawId": 1, "currentIndex": 2}, "timestamp": 17},
        ),
        multi_file_layout.encode_key(
            "session", "123.0", {"_sessions": {"x": {"registrationId": 7, "chainKey": key}}}
        ),
        # v6 forms: number arrays, {buffer: true}, and an index-keyed object
        b'{"a":{"type":"Buffer","data":[1,2,255]},"b":{"buffer":true,"value":"AQI="},'
        b'"c":{"0":1,"1":2,"2":3}}',
        b'{"type":"Buffer","data":"' + base64.urlsafe_b64encode(key).rstrip(b"=") + b'"}',
        # Edges a mutation can push over: deep nesting, long numbers and numeric keys.
        b"[" * 200 + b"]" * 200,
        b'{"a":' * 150 + b"1" + b"}" * 150,
        b'{"' + b"1" * 4_000 + b'":1}',
        b"[" + b"9" * 4_000 + b"]",
    ]


_NESTING_DEPTHS = (1, 8, 64, 200, 400, 600, 1000, 5000)
_DIGIT_RUN = re.compile(rb"[0-9]+")


def json_nest(data: bytes, rng: random.Random) -> bytes:
    """Wrap the document in arrays or objects, from 1 to 5,000 levels deep."""
    depth = rng.choice(_NESTING_DEPTHS)
    opener, closer = rng.choice(((b"[", b"]"), (b'{"a":', b"}"), (b'{"0":', b"}")))
    return opener * depth + data + closer * depth


def json_grow_number(data: bytes, rng: random.Random) -> bytes:
    """Repeat one run of digits (a number, or a numeric key) to a few thousand digits."""
    runs = list(_DIGIT_RUN.finditer(data))
    if not runs:
        return data
    run = rng.choice(runs)
    digits = run.group()
    size = rng.choice((20, 309, 4_300, 4_301, 10_000))
    grown = (digits * (size // len(digits) + 1))[:size]
    return data[: run.start()] + grown + data[run.end() :]


def binary_nest(data: bytes, rng: random.Random) -> bytes:
    """Make the frame's root the only child of 1 to 5,000 nested ``LIST_8`` nodes."""
    if not data:
        return data
    depth = rng.choice(_NESTING_DEPTHS)
    # Each wrapper: list of 2 items (tag token 0x13 and content), content a 1-item list.
    return data[:1] + b"\xf8\x02\x13\xf8\x01" * depth + data[1:]


def _json_bound(size: int) -> int:
    # Reviving nested JSON recurses: a few Python frames per level (about 1 KiB, kept
    # alive by the traceback when the innermost value is bad). json.loads refuses
    # nesting past the recursion limit, so that term is capped there.
    return default_memory_bound(size) + 2048 * min(size, sys.getrecursionlimit())


def baileys_json_huge() -> list[bytes]:
    return [
        b'{"type":"Buffer","data":[' + b"1," * 20_000 + b"1]}",
        b'{"type":"Buffer","data":"' + b"A" * 100_000 + b'"}',
        b"[" * 100_000,
        b'{"0":' + b"9" * 4_000 + b"}",
    ]


# --- multi-file journal ---------------------------------------------------------------

JOURNAL_LOCATION = "fuzz/.baileys-trio-journal"


def run_multi_file_journal(data: bytes) -> None:
    """The multi-file commit journal reader that replays a crashed commit on open.

    Allowed: CorruptStateError, UnsupportedFormatError. Oracle: what it accepts maps
    plain file names to bytes or None.
    """
    ops = journal.decode_journal(data, JOURNAL_LOCATION)
    for name, content in ops.items():
        if not journal.is_plain_name(name) or not (content is None or isinstance(content, bytes)):
            raise OracleError(f"journal accepted entry {name!r} -> {type(content).__name__}")


def journal_seeds() -> list[bytes]:
    rng = random.Random(8)
    return [
        journal.encode_journal({}),
        journal.encode_journal({"creds.json": _creds_json()}),
        journal.encode_journal(
            {
                "pre-key-1.json": b'{"public":"' + base64.b64encode(rng.randbytes(32)) + b'"}',
                "session-123.0.json": None,
                "app-state-sync-key-AAAAAP8D.json": rng.randbytes(64),
            }
        ),
    ]


def journal_fixup(data: bytes) -> bytes:
    """Make the header's length and SHA-256 match the body (magic and version left as they are)."""
    head = struct.calcsize(">6sHI32s")
    if len(data) < head:
        return data
    body = data[head:]
    return data[:8] + struct.pack(">I", len(body)) + hashlib.sha256(body).digest() + body


def journal_huge() -> list[bytes]:
    def framed(body: bytes) -> bytes:
        return journal_fixup(journal.MAGIC + b"\x00\x01" + bytes(36) + body)

    return [
        journal.MAGIC + b"\x00\x01\xff\xff\xff\xff" + bytes(32) + b"\x80",
        framed(b"\x81\x82\x61a\x5b" + (1 << 62).to_bytes(8, "big")),
        framed(b"\x9b" + (1 << 62).to_bytes(8, "big")),
        framed(b"\x81" * 100_000),
    ]


# --- the realistic node corpus ------------------------------------------------------


def realistic_nodes(count: int, seed: int = 0) -> list[BinaryNode]:
    """``count`` nodes shaped like live traffic (messages, receipts, acks, iqs, usync)."""
    rng = random.Random(seed)
    makers = (
        _message,
        _message,
        _message,
        _receipt,
        _receipt,
        _ack,
        _ping,
        _presence,
        _notification,
        _group_message,
        _usync,
        _prekey_upload,
    )
    return [makers[i % len(makers)](rng) for i in range(count)]


def _user(rng: random.Random) -> str:
    return f"{rng.randrange(10**10, 10**12)}@s.whatsapp.net"


def _device(rng: random.Random) -> str:
    return f"{rng.randrange(10**10, 10**12)}:{rng.randrange(1, 30)}@s.whatsapp.net"


def _msg_id(rng: random.Random) -> str:
    return "3EB0" + rng.randbytes(8).hex().upper()


def _stamp(rng: random.Random) -> str:
    return str(rng.randrange(1_700_000_000, 1_800_000_000))


def _message(rng: random.Random) -> BinaryNode:
    enc = BinaryNode(
        "enc",
        {"v": "2", "type": rng.choice(["msg", "pkmsg"])},
        rng.randbytes(rng.randrange(80, 1500)),
    )
    return BinaryNode(
        "message",
        {
            "id": _msg_id(rng),
            "from": _device(rng),
            "type": "text",
            "t": _stamp(rng),
            "notify": "Ann",
        },
        [enc],
    )


def _receipt(rng: random.Random) -> BinaryNode:
    items = [BinaryNode("item", {"id": _msg_id(rng)}) for _ in range(rng.randrange(0, 5))]
    content = [BinaryNode("list", {}, items)] if items else None
    return BinaryNode(
        "receipt",
        {"id": _msg_id(rng), "from": _device(rng), "t": _stamp(rng), "type": "read"},
        content,
    )


def _ack(rng: random.Random) -> BinaryNode:
    return BinaryNode(
        "ack", {"class": "receipt", "id": _msg_id(rng), "from": _user(rng), "type": "read"}
    )


def _ping(rng: random.Random) -> BinaryNode:
    return BinaryNode(
        "iq",
        {
            "id": f"{rng.randrange(10**5)}.{rng.randrange(10**5)}-1",
            "to": "s.whatsapp.net",
            "type": "get",
            "xmlns": "w:p",
        },
        [BinaryNode("ping")],
    )


def _presence(rng: random.Random) -> BinaryNode:
    return BinaryNode("presence", {"type": rng.choice(["available", "unavailable"]), "name": "bot"})


def _notification(rng: random.Random) -> BinaryNode:
    return BinaryNode(
        "notification",
        {
            "from": "s.whatsapp.net",
            "type": "encrypt",
            "id": str(rng.randrange(10**9)),
            "t": _stamp(rng),
        },
        [BinaryNode("count", {"value": str(rng.randrange(0, 30))})],
    )


def _group_message(rng: random.Random) -> BinaryNode:
    participants = [
        BinaryNode(
            "to",
            {"jid": _device(rng)},
            [BinaryNode("enc", {"v": "2", "type": "pkmsg"}, rng.randbytes(180))],
        )
        for _ in range(rng.randrange(2, 8))
    ]
    return BinaryNode(
        "message",
        {"id": _msg_id(rng), "to": f"{rng.randrange(10**17)}@g.us", "type": "text"},
        [
            BinaryNode("participants", {}, participants),
            BinaryNode("enc", {"v": "2", "type": "skmsg"}, rng.randbytes(rng.randrange(60, 400))),
        ],
    )


def _usync(rng: random.Random) -> BinaryNode:
    users = [BinaryNode("user", {"jid": _user(rng)}) for _ in range(rng.randrange(5, 40))]
    return BinaryNode(
        "iq",
        {"id": str(rng.randrange(10**6)), "to": "s.whatsapp.net", "type": "get", "xmlns": "usync"},
        [
            BinaryNode(
                "usync",
                {
                    "sid": str(rng.randrange(10**6)),
                    "mode": "query",
                    "last": "true",
                    "index": "0",
                    "context": "message",
                },
                [
                    BinaryNode("query", {}, [BinaryNode("devices", {"version": "2"})]),
                    BinaryNode("list", {}, users),
                ],
            )
        ],
    )


def _prekey_upload(rng: random.Random) -> BinaryNode:
    keys = [
        BinaryNode(
            "key",
            {},
            [BinaryNode("id", {}, rng.randbytes(3)), BinaryNode("value", {}, rng.randbytes(32))],
        )
        for _ in range(30)
    ]
    return BinaryNode(
        "iq",
        {
            "id": str(rng.randrange(10**6)),
            "xmlns": "encrypt",
            "type": "set",
            "to": "s.whatsapp.net",
        },
        [
            BinaryNode("registration", {}, rng.randbytes(4)),
            BinaryNode("type", {}, b"\x05"),
            BinaryNode("identity", {}, rng.randbytes(32)),
            BinaryNode("list", {}, keys),
            BinaryNode(
                "skey",
                {},
                [
                    BinaryNode("id", {}, rng.randbytes(3)),
                    BinaryNode("value", {}, rng.randbytes(32)),
                    BinaryNode("signature", {}, rng.randbytes(64)),
                ],
            ),
        ],
    )


# --- the table -----------------------------------------------------------------------

_NATIVE_ERRORS: tuple[type[Exception], ...] = (
    CorruptStateError,
    WrongBackendError,
    UnsupportedFormatError,
)

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "framing",
            run_framing,
            (RemoteProtocolError,),
            framing_seeds,
            framing_huge,
            "intro parser and FrameSplitter (random chunking), checked against the framing rule",
        ),
        Target(
            "noise",
            run_noise,
            (RemoteProtocolError,),
            noise_seeds,
            noise_huge,
            "NoiseTransport receive path after a real handshake: split, decrypt, decode_node",
        ),
        Target(
            "binary",
            run_binary,
            (DecodeError,),
            binary_seeds,
            binary_huge,
            "decode_node on one frame (plain and zlib-compressed)",
            structure_ops=(binary_nest,),
            memory_bound=_binary_bound,
        ),
        Target(
            "native",
            run_native,
            _NATIVE_ERRORS,
            native_seeds,
            native_huge,
            "native log scan (strict and salvaging) and snapshot reader, in memory",
            fixup=native_fixup,
        ),
        Target(
            "native_dir",
            run_native_dir,
            _NATIVE_ERRORS,
            native_log_seeds,
            native_huge,
            "native recovery on a temp directory: classify + load_state (strict and salvage)",
            fixup=native_fixup,
        ),
        Target(
            "baileys_json",
            run_baileys_json,
            (CorruptStateError,),
            baileys_json_seeds,
            baileys_json_huge,
            "Baileys Buffer JSON: buffer_json.loads, the creds.json parser, key-file parsers",
            structure_ops=(json_nest, json_grow_number),
            memory_bound=_json_bound,
        ),
        Target(
            "multi_file_journal",
            run_multi_file_journal,
            (CorruptStateError, UnsupportedFormatError),
            journal_seeds,
            journal_huge,
            "the multi-file commit journal reader (replayed on open after a crash)",
            fixup=journal_fixup,
        ),
    )
}
