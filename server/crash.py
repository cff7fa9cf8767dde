"""Crash points: a test hook that kills this process with SIGKILL at a named point, once.

Restart safety has to be proven by killing real processes at the awkward moments (mid-write of
an artifact, between switching the model and committing the swap), which an outside `kill -9`
cannot hit reliably. `LETHE_CRASH_AT=artifact-write,mid-swap` (settings.py) arms points; each
fires once per data directory (a marker file records it), so the restarted process gets past
it. Unset in production, where `crash_point` is a set-membership check.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

logger = logging.getLogger(__name__)

POINTS = ("artifact-write", "mid-swap")


def crash_point(armed: tuple[str, ...], name: str, data_dir: Path) -> None:
    if name not in armed:
        return
    marker = data_dir / f".crashed-at-{name}"
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # fired before: let the restarted process through
    os.fsync(fd)
    os.close(fd)
    logger.warning("crash point %s: killing this process (LETHE_CRASH_AT test hook)", name)
    os.kill(os.getpid(), signal.SIGKILL)
