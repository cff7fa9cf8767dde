"""Cache entries built once and shared by processes: a lock per entry and an atomic install.

``build_once(target, build, is_complete)`` returns ``target`` at once when it is complete;
otherwise it takes ``.<name>.lock`` beside it (so two processes never build the same entry
twice), builds into a temporary sibling ``.<name>.<random>.tmp`` and renames that into place. A
failed or interrupted build leaves no directory behind (only the zero-byte lock file), and a
reader never sees a half-written entry. The demo builder and the pretrained-model fetcher
share it.

It does not know what is built, where the cache lives or how an entry proves it is complete:
callers pass the target path, the build function and the completeness check.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

# The engine's CLIs default to this; the server passes its own setting (LETHE_CACHE_DIR).
DEFAULT_CACHE_DIR = Path("~/.cache/lethe")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if missing) for the ``with`` body."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: rely on the atomic rename alone
        yield
        return
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_once(target: Path, build: Callable[[Path], None],
               is_complete: Callable[[Path], bool]) -> Path:
    """``target``, built by ``build(tmp_dir)`` first unless ``is_complete(target)`` already."""
    if is_complete(target):
        return target
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    with file_lock(parent / f".{target.name}.lock"):
        if is_complete(target):  # another process finished it while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
        try:
            build(tmp)
            if target.exists():  # a stale, incomplete directory: replace it
                shutil.rmtree(target)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target
