"""The ``baileys-trio`` command line."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``baileys-trio`` console script."""
    print("baileys-trio: no commands yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
