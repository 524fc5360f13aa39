"""Build hook: compile the optional C reader of ``decode_node`` when a C compiler is present.

The pure-Python reader (actors/connection/binary/decoder.py) is the reference and
always ships; the compiled one (``_speedups.c``) only makes decoding faster. So no
compiler, no Python headers or a failed compile print a warning and the build goes
on without it: nothing needs it. An editable install builds it next to its source
(the editable wheel points at the source tree); a normal wheel carries it and is
then tagged for this interpreter and platform. ``BAILEYS_TRIO_PURE_PYTHON=1``
skips it on purpose.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = "actors/connection/binary/_speedups.c"
MODULE = "actors/connection/binary/_speedups"


def compile_command(source: Path, output: Path) -> list[str] | str:
    """The compiler command for ``source``, or a string saying why there is none."""
    ldshared = shlex.split(sysconfig.get_config_var("LDSHARED") or "")
    if not ldshared or shutil.which(ldshared[0]) is None:
        return "no C compiler found"
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").is_file():
        return f"no Python.h in {include}"
    ccshared = shlex.split(sysconfig.get_config_var("CCSHARED") or "")
    return [*ldshared, *ccshared, "-O2", f"-I{include}", str(source), "-o", str(output)]


def build_extension(source: Path, target: Path) -> str | None:
    """Compile ``source`` to ``target`` (atomically); a string says why it was not built."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        partial = Path(scratch) / target.name
        command = compile_command(source, partial)
        if isinstance(command, str):
            return command
        try:
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            return f"compiling failed: {detail.strip()[-400:]}"
        os.replace(partial, target)
    return None


class SpeedupsBuildHook(BuildHookInterface):  # type: ignore[type-arg]  # hatchling's generic
    """Adds the compiled reader to wheels (and editable installs) where it can be built."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or os.environ.get("BAILEYS_TRIO_PURE_PYTHON"):
            return
        root = Path(self.root)
        name = MODULE + str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")
        if version == "editable":
            target = root / name
        else:
            self._scratch = tempfile.TemporaryDirectory()
            target = Path(self._scratch.name) / name
        why = build_extension(root / SOURCE, target)
        if why is not None:
            self.app.display_warning(f"decode_node's C reader not built ({why}): pure Python")
            return
        if version != "editable":
            build_data["force_include"][str(target)] = name
            build_data["pure_python"] = False
            build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        scratch = getattr(self, "_scratch", None)
        if scratch is not None:
            scratch.cleanup()
