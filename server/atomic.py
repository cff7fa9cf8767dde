"""Create a file atomically and exclusively: no reader ever sees it empty or half written.

The bytes go to a private temporary file in the same directory, which is fsynced and then
hard-linked to its final name (link fails if the name exists, so two first starts agree on one
file), and the directory is fsynced so the name survives a power cut. A crash at any point
leaves either no file or the whole file, plus at worst a stray `.tmp-*` file nobody reads.
Does not replace existing files (secrets here are created once, never rotated in place).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_exclusive(path: Path, data: bytes, mode: int = 0o600) -> bool:
    """Write `data` to `path` unless it exists. True when this call created it."""
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        fsync_dir(path.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)
