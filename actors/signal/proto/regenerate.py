"""Regenerate ``signal_pb2.py`` and ``signal_pb2.pyi`` from ``signal.proto``.

The exact command (run from the repository root)::

    .venv/bin/python -m actors.signal.proto.regenerate

The generated files are committed; ``tests/signal/test_proto.py`` regenerates
into a temporary folder and checks the bytes are identical.
"""

from __future__ import annotations

from pathlib import Path

from actors.connection.proto.regenerate import run_protoc

PROTO_DIR = Path(__file__).resolve().parent
PROTO_FILE = "signal.proto"
GENERATED = ("signal_pb2.py", "signal_pb2.pyi")


def regenerate(out_dir: Path = PROTO_DIR) -> list[Path]:
    """Run protoc into ``out_dir`` (default: in place); return the generated paths."""
    run_protoc(PROTO_DIR, PROTO_FILE, out_dir)
    return [out_dir / name for name in GENERATED]


if __name__ == "__main__":
    for path in regenerate():
        print(path)
