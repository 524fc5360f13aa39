"""``python -m runtime``: the same CLI as ``baileys-trio``."""

import sys

from runtime.cli import main

sys.exit(main())
