"""Secrets kept as files in the data directory: created once, mode 0600, fsynced.

Used for the operator token, the guard's hashing key and the receipt signing key. Created atomically (server/atomic.py):
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
RECEIPT_KEY_FILE = "receipt.key"


def guard_secret(data_dir: Path) -> bytes:
    """The guard's hashing and sealing key; the server and its workers share it via the data dir."""
    secret, _ = read_or_create(data_dir / GUARD_KEY_FILE, lambda: secrets.token_bytes(32))
    return secret


def receipt_key(data_dir: Path, explicit: Path | None, generate: Callable[[], bytes]) -> bytes:
    """The PEM of the key that signs deletion receipts. `explicit` (a mounted secret that every
    replica shares) must exist; without it, one is generated (`generate`) into the data dir once."""
    if explicit is not None:
        if not explicit.is_file():
            raise FileNotFoundError(f"receipt key {explicit} does not exist (generate one with "
                                    "`openssl genpkey -algorithm ed25519 -out FILE`)")
        return explicit.read_bytes()
    pem, _ = read_or_create(data_dir / RECEIPT_KEY_FILE, generate)
    return pem
