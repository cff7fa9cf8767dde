"""Guard hits per forget job: counted on the request path, written to the ledger in batches.

The Prometheus counter has bounded labels (stage, phase); the forget id each hit belongs to is
kept here. A hit is counted in memory (from any thread: a push that may embed runs off the
event loop) and `flush` adds the batch to the ledger, every `interval` seconds from `run()`,
before a job is read and at shutdown, so a blocked output costs no disk write on its way out.
A Forget blocks before the ledger has given it an id (coordinator.py), under a provisional id:
its hits wait here until `rename` says which job they belong to.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter

from server.forget.ledger.base import ForgetLedger

logger = logging.getLogger(__name__)
PROVISIONAL_PREFIX = "arming-"  # a forget id the ledger has not given yet (coordinator._write)
_RENAMES_KEPT = 1024  # provisional ids remembered after rename: a push racing the rename still lands


class HitTally:
    def __init__(self, ledger: ForgetLedger, interval: float = 1.0) -> None:
        self._ledger = ledger
        self._interval = interval
        self._lock = threading.Lock()
        self._pending: Counter[tuple[str, str, str]] = Counter()
        self._renamed: dict[str, str | None] = {}  # provisional id -> job id (None: not taken)

    def add(self, forget_id: str, stage: str, phase: str) -> None:
        with self._lock:
            forget_id = self._renamed.get(forget_id, forget_id)  # type: ignore[assignment]
            if forget_id is not None:
                self._pending[(forget_id, stage, phase)] += 1

    def rename(self, provisional: str, forget_id: str | None) -> None:
        """Hits counted under `provisional` belong to `forget_id` (None: the Forget was not
        stored; they stay in the Prometheus counter only)."""
        with self._lock:
            for key in [k for k in self._pending if k[0] == provisional]:
                n = self._pending.pop(key)
                if forget_id is not None:
                    self._pending[(forget_id, *key[1:])] += n
            self._renamed[provisional] = forget_id
            while len(self._renamed) > _RENAMES_KEPT:
                del self._renamed[next(iter(self._renamed))]

    def flush(self) -> None:
        with self._lock:  # hits under a provisional id not yet renamed wait for the next flush
            batch = Counter({k: n for k, n in self._pending.items() if not k[0].startswith(PROVISIONAL_PREFIX)})
            self._pending = self._pending - batch
        if not batch:
            return
        try:
            self._ledger.add_guard_hits(dict(batch))
        except Exception:
            with self._lock:  # kept for the next flush; counts are never dropped silently
                self._pending.update(batch)
            raise

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await asyncio.to_thread(self.flush)
            except Exception:
                logger.exception("writing guard hit counts to the ledger failed; retrying")
