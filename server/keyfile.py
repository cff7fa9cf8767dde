"""Secrets kept as files in the data directory: created once, mode 0600, fsynced.

Used for the operator token and the guard's hashing key. Created atomically (server/atomic.py):
concurrent first starts agree on one secret, and no reader ever sees an empty or partial file.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Callable

from server.atomic import create_exclusive


def read_or_create(path: Path, make: Callable[[], bytes]) -> tuple[bytes, bool]:
    """(secret, created). Never overwrites an existing file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        secret = make()
        if create_exclusive(path, secret):
            return secret, True
    return path.read_bytes(), False


GUARD_KEY_FILE = "guard.key"


def guard_secret(data_dir: Path) -> bytes:
    """The guard's hashing and sealing key; the server and its workers share it via the data dir."""
    secret, _ = read_or_create(data_dir / GUARD_KEY_FILE, lambda: secrets.token_bytes(32))
    return secret
