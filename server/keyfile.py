"""Secrets kept as files in the data directory: created once, mode 0600, fsynced.

Used for the operator token and the guard's hashing key. O_EXCL makes concurrent first starts
agree on one secret instead of overwriting each other's.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable


def read_or_create(path: Path, make: Callable[[], bytes]) -> tuple[bytes, bool]:
    """(secret, created). Never overwrites an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes(), False
    secret = make()
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
        f.flush()
        os.fsync(f.fileno())
    return secret, True


GUARD_KEY_FILE = "guard.key"


def guard_secret(data_dir: Path) -> bytes:
    """The guard's hashing and sealing key; the server and its workers share it via the data dir."""
    secret, _ = read_or_create(data_dir / GUARD_KEY_FILE, lambda: secrets.token_bytes(32))
    return secret
