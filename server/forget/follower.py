"""ReplicaFollower: keeps this replica's guard and adapter stack in step with a shared ledger.

Other replicas arm forgets, commit stack versions and deactivate adapters in the shared ledger.
This replica hears of it through the ledger's notifications (`ForgetLedger.listen`, LISTEN /
NOTIFY on PostgreSQL) and also reconciles in full every `reconcile_seconds`, so a notification
lost to a dropped connection delays a change by at most that long and never loses it. A
notification that names forgets (armed, guard entries changed) reads and applies those rows
only, so arming one forget costs the same with ten thousand in the ledger; anything else (a
stack version, a reconnect) reconciles in full. A full reconcile applies every armed forget's guard entries as the ledger holds them (added, or
replaced where they differ from what the guard holds), each forget's phase from its state, and
the ledger's stack version when it is newer than the one serving. The server listens before it
restores and reconciles once more before it reports SERVING, so nothing committed before that
is missed. One node (SQLite) never hears anything, and its reconciles find nothing to do.

A replica that finds itself behind (a stack version it cannot load, entries it cannot arm)
exports for how long (lethe_replica_lag_seconds) and, past `max_lag_seconds`, tells the server
to report NOT_SERVING until it is in step again. Not reaching the ledger is not "behind": the
guard and the stack in memory keep serving through a database restart.

Never writes the ledger and never arms from plaintext (the coordinator's restore does that for
jobs that crashed between their durable write and arming).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from server.forget.coordinator import AFTER, BEFORE, ForgetCoordinator
from server.forget.jobs import ForgetState
from server.forget.ledger import ForgetLedger, LedgerUnavailable
from server.guard import GuardEntries, LeakageGuard
from server.metrics import ServerMetrics

logger = logging.getLogger(__name__)


class ReplicaFollower:
    def __init__(self, ledger: ForgetLedger, guard: LeakageGuard, coordinator: ForgetCoordinator,
                 metrics: ServerMetrics, reconcile_seconds: float, max_lag_seconds: float):
        self.ledger = ledger
        self.guard = guard
        self.coordinator = coordinator
        self.metrics = metrics
        self.reconcile_seconds = reconcile_seconds
        self.max_lag_seconds = max_lag_seconds
        self.too_far_behind = False  # known behind for longer than max_lag_seconds
        # Called with too_far_behind when it changes (the server's readiness follows it).
        self.on_lag_change: Callable[[bool], Awaitable[None]] | None = None
        self._behind_since: float | None = None  # time.monotonic() of the first reconcile found behind
        self.reconciled_at: float | None = None  # time.time() of the last complete reconcile
        self._applied: dict[str, tuple[bytes, ForgetState]] = {}  # forget -> (entries, state) applied
        self._armed_at: dict[str, float] = {}  # forget -> when another replica armed it (notified)
        self._notified: set[str] = set()  # forgets named by notifications since the last reconcile
        self._full = False  # a notification asked for a full reconcile
        self._wake = asyncio.Event()
        self._stop_listening: Callable[[], None] | None = None

    def listen(self) -> None:
        """Start hearing other replicas' changes (on the running loop); before the first restore."""
        loop = asyncio.get_running_loop()
        self._stop_listening = self.ledger.listen(lambda what: loop.call_soon_threadsafe(self._heard, what))

    def _heard(self, what: str) -> None:
        """On the loop: a change notification ("armed:<forget>:<unix time>" carries its commit time)."""
        kind, _, rest = what.partition(":")
        if kind == "armed":
            forget_id, _, at = rest.rpartition(":")
            self._armed_at[forget_id] = float(at)
            self._notified.add(forget_id)
        elif kind == "guard":
            self._notified.add(rest)
        else:  # a stack version, a (re)connect: what changed is not one forget's row
            self._full = True
        self._wake.set()

    def close(self) -> None:
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None

    async def reconcile(self, only: frozenset[str] | None = None) -> int:
        """Apply the ledger's guard entries, phases and stack; the number of forgets changed.
        With `only`, the guard entries and phases of those forgets and nothing else (the stack
        and the lag are a full reconcile's). Raises LedgerUnavailable when the ledger cannot be
        read (nothing is known then)."""
        changed, behind = 0, False
        for forget_id, blob, state in await asyncio.to_thread(self.ledger.guard_entries, only):
            if self._applied.get(forget_id) == (blob, state):
                continue
            phase = AFTER if state == ForgetState.ACTIVE else BEFORE
            try:
                entries = GuardEntries.from_bytes(blob)
                if self.guard.entries_of(forget_id) != entries:  # armed elsewhere, or updated since
                    self.guard.add(entries, phase)
                    changed += 1
                    armed_at = self._armed_at.pop(forget_id, None)
                    if armed_at is not None:
                        self.metrics.replica_arm.observe(max(0.0, time.time() - armed_at))
                else:
                    self._armed_at.pop(forget_id, None)  # our own forget: armed here first
                    self.guard.set_phase(forget_id, phase)
            except ValueError as exc:  # unreadable, or derived under another guard key: say so, go on
                logger.error("cannot arm forget %s from the shared ledger: %s", forget_id, exc)
                behind = True
                continue
            self._applied[forget_id] = (blob, state)
        if only is not None:
            return changed
        try:
            await self.coordinator.follow_stack()
        except LedgerUnavailable:
            raise
        except Exception:
            logger.exception("cannot serve the shared ledger's stack version; the previous one keeps serving")
            behind = True
        self.reconciled_at = time.time()
        await self._observe_lag(behind)
        return changed

    async def _observe_lag(self, behind: bool) -> None:
        now = time.monotonic()
        if not behind:
            self._behind_since = None
        elif self._behind_since is None:
            self._behind_since = now
        lag = 0.0 if self._behind_since is None else now - self._behind_since
        self.metrics.replica_lag.set(lag)
        too_far = lag > self.max_lag_seconds
        if too_far != self.too_far_behind:
            self.too_far_behind = too_far
            if too_far:
                logger.error("behind the shared ledger for %.0f s: reporting NOT_SERVING", lag)
            else:
                logger.warning("in step with the shared ledger again")
            if self.on_lag_change is not None:
                await self.on_lag_change(too_far)

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.reconcile_seconds)
            except asyncio.TimeoutError:
                pass
            # Taken before reading: a change committed during the read wakes us again.
            self._wake.clear()
            only = None if self._full or not self._notified else frozenset(self._notified)
            self._notified, self._full = set(), False
            try:
                changed = await self.reconcile(only)
                if changed:
                    logger.info("armed %d forgets filed on other replicas", changed)
            except asyncio.CancelledError:
                raise
            except LedgerUnavailable:
                self._full = True  # what the notifications named was not applied
                logger.warning("shared ledger unreachable; this replica keeps what it has armed and retries")
            except Exception:
                self._full = True
                logger.exception("reconcile with the shared ledger failed; retrying in %.0f s", self.reconcile_seconds)
