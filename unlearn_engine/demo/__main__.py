"""``python -m unlearn_engine.demo build|export-corpus ...`` (see ``cli.py``)."""

from __future__ import annotations

import sys

from unlearn_engine.demo.cli import main

if __name__ == "__main__":
    sys.exit(main())
