"""Regenerate ``wa_pb2.py`` and ``wa_pb2.pyi`` from ``wa.proto``.

The exact command (run from the repository root)::

    .venv/bin/python -m actors.connection.proto.regenerate

which runs ``python -m grpc_tools.protoc -I <this folder> --python_out=<out>
--pyi_out=<out> wa.proto``. The generated files are committed;
``tests/protocol/test_proto.py`` regenerates into a temporary folder and checks
the bytes are identical, so an edited ``.proto`` without a regeneration fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
PROTO_FILE = "wa.proto"
GENERATED = ("wa_pb2.py", "wa_pb2.pyi")


def protoc_command(proto_dir: Path, proto_file: str, out_dir: Path) -> list[str]:
    """The protoc invocation that compiles ``proto_file`` into ``out_dir``."""
    return [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        proto_file,
    ]


def run_protoc(proto_dir: Path, proto_file: str, out_dir: Path) -> None:
    """Compile ``proto_dir/proto_file`` into ``out_dir`` (the pinned grpcio-tools protoc)."""
    command = protoc_command(proto_dir, proto_file, out_dir)
    subprocess.run(command, check=True, timeout=120, cwd=proto_dir)


def regenerate(out_dir: Path = PROTO_DIR) -> list[Path]:
    """Run protoc into ``out_dir`` (default: in place); return the generated paths."""
    run_protoc(PROTO_DIR, PROTO_FILE, out_dir)
    return [out_dir / name for name in GENERATED]


if __name__ == "__main__":
    for path in regenerate():
        print(path)
