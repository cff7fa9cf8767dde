"""Guard hits per forget job: counted on the request path, written to the ledger in batches.

The Prometheus counter has bounded labels (stage, phase); the forget id each hit belongs to is
kept here. A hit is counted in memory (from any thread: a push that may embed runs off the
event loop) and `flush` adds the batch to the ledger, every `interval` seconds from `run()`,
before a job is read and at shutdown, so a blocked output costs no disk write on its way out.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter

from server.forget.ledger.base import ForgetLedger

logger = logging.getLogger(__name__)


class HitTally:
    def __init__(self, ledger: ForgetLedger, interval: float = 1.0) -> None:
        self._ledger = ledger
        self._interval = interval
        self._lock = threading.Lock()
        self._pending: Counter[tuple[str, str, str]] = Counter()

    def add(self, forget_id: str, stage: str, phase: str) -> None:
        with self._lock:
            self._pending[(forget_id, stage, phase)] += 1

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, Counter()
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
