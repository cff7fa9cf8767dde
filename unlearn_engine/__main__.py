"""``python -m unlearn_engine ...``: the engine's CLI without the server's ``lethe`` script."""

from __future__ import annotations

import sys

from unlearn_engine.cli import main

if __name__ == "__main__":
    sys.exit(main())
