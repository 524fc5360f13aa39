import subprocess
import sys

import actors.connection


def test_every_public_name_of_the_protocol_core_exists() -> None:
    """Each name in actors.connection.__all__ resolves to an object."""
    missing = [n for n in actors.connection.__all__ if not hasattr(actors.connection, n)]
    assert missing == []


def test_importing_the_core_does_not_pull_in_sockets_or_the_runtime() -> None:
    """The sans-IO core imports neither trio_websocket, trio, nor the actor runtime."""
    probe = (
        "import sys, actors.connection\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('trio_websocket', 'runtime', 'trio')"
        " or m == 'actors.connection.actor']\n"
        "print(','.join(sorted(bad)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
