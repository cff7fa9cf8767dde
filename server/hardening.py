"""Process hardening shared by `lethe serve` and `lethe worker`, applied before anything is opened.

- umask 077: every file the process creates (ledger, WAL, logs, adapters, secrets) is 0600 and
  every directory 0700, whatever the caller's umask was.
- no core dumps: a crash must not write the model's inputs, forget texts or secrets to disk.
- the data directory is created 0700 (and tightened to 0700 when it already exists and is ours).
Does not drop privileges, chroot or sandbox: the container runtime does that (deploy/).
"""

from __future__ import annotations

import logging
import os
import resource
import stat
from pathlib import Path

logger = logging.getLogger(__name__)

UMASK = 0o077


def harden_process(data_dir: Path) -> None:
    os.umask(UMASK)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    private_dir(data_dir)


def private_dir(path: Path) -> None:
    """Create `path` (and parents) 0700; tighten an existing one that we own."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.getuid():
        os.chmod(path, 0o700)
        logger.info("data directory %s was readable by others; now 0700", path)
