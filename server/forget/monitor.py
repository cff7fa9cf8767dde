"""LeakageMonitor: does the served model itself still produce what was forgotten?

Guard hits say the filter caught something; they cannot say whether the model still *knows* it.
The monitor answers that: in the background it replays each ACTIVE forget's probes (sealed in
the ledger by the worker, see probes.py) through the live adapter stack — straight to the
runtime, *without* the guard — and checks each greedy answer against the fact's keyed digest.
It exports the leaked fraction of the latest round per job class (the unlearning method), a
bounded label set, and counts probes by result. A probe is asked the way a client asks: a model
with a chat template gets it as one user turn, rendered by the same path as a chat request
(runtime/chat.py; the engine's probes and gate do the same); a model without one, as plain text.

Rate-limited: at most `probes_per_round` probes per `interval_seconds`, a few at a time, marked
internal so they stay out of the client latency metrics. A round also starts soon after a swap
(`poke`), so a new adapter's residual leakage shows up without waiting a whole interval.
Nothing it sees is logged: prompts and outputs stay in memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from server.errors import LetheError
from server.guard.keys import GuardKeys
from server.forget.ledger import ForgetLedger
from server.metrics import ServerMetrics
from server.forget.probes import Probe, leaked, open_probes
from server.runtime.chat import CHAT_ADDS_SPECIAL_TOKENS, chat_messages, has_chat_template
from server.runtime.params import GenerateParams, SamplingParams
from server.runtime.scheduler import FinishEvent
from server.runtime.serving import ModelRuntime

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorConfig:
    interval_seconds: float = 300.0  # between rounds; 0 turns the monitor off
    probes_per_round: int = 32  # across all active forgets: the rate limit
    concurrency: int = 2  # probes decoding at once (each takes one batch slot)
    max_new_tokens: int = 32
    after_swap_seconds: float = 5.0  # a poke (new adapter ACTIVE) starts a round this soon


@dataclass
class ProbeResult:
    leaked: int = 0
    clean: int = 0
    errors: int = 0

    @property
    def ratio(self) -> float | None:
        total = self.leaked + self.clean
        return self.leaked / total if total else None


class LeakageMonitor:
    def __init__(self, ledger: ForgetLedger, keys: GuardKeys, runtime: ModelRuntime, metrics: ServerMetrics,
                 config: MonitorConfig = MonitorConfig()):
        self.ledger = ledger
        self.keys = keys
        self.runtime = runtime
        self.metrics = metrics
        self.config = config
        self.last: dict[str, ProbeResult] = {}  # per forget id, its latest round
        self._probes: dict[str, list[Probe]] = {}  # opened probes of active forgets
        self._cursor: dict[str, int] = {}  # next probe per forget: rounds cycle through all of them
        self._classes: set[str] = set()
        self._poked = asyncio.Event()
        self._rounds = 0

    def poke(self) -> None:
        """A stack changed: run a round soon (after `after_swap_seconds`)."""
        self._poked.set()

    async def run(self) -> None:
        cfg = self.config
        while True:
            try:
                await asyncio.wait_for(self._poked.wait(), cfg.interval_seconds)
                await asyncio.sleep(cfg.after_swap_seconds)
            except asyncio.TimeoutError:
                pass
            self._poked.clear()
            try:
                await self.run_round()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("leakage monitor round failed")

    async def run_round(self) -> dict[str, ProbeResult]:
        """Replay one round of probes; returns this round's result per forget id."""
        rows = await asyncio.to_thread(self.ledger.monitor_probes)
        methods = {fid: method for fid, method, _ in rows}
        for fid, _method, sealed in rows:
            if fid not in self._probes:
                try:
                    self._probes[fid] = open_probes(self.keys, fid, sealed)
                except Exception:  # sealed under another key or damaged: nothing to replay
                    logger.warning("leakage probes of %s cannot be opened; skipping them", fid)
                    self._probes[fid] = []
        for fid in set(self._probes) - set(methods):  # deactivated since: stop probing
            self._probes.pop(fid)
            self._cursor.pop(fid, None)
            self.last.pop(fid, None)

        chosen = self._choose(list(methods))
        results = {fid: ProbeResult() for fid in {fid for fid, _ in chosen}}
        gate = asyncio.Semaphore(max(1, self.config.concurrency))

        async def one(fid: str, probe: Probe) -> None:
            async with gate:
                outcome = await self._replay(probe)
            r = results[fid]
            if outcome is None:
                r.errors += 1
            elif outcome:
                r.leaked += 1
            else:
                r.clean += 1
            self.metrics.monitor_probes.labels("error" if outcome is None else "leaked" if outcome else "clean").inc()

        await asyncio.gather(*(one(fid, p) for fid, p in chosen))
        self.last.update(results)
        self._export(methods)
        self._rounds += 1
        leaked = sum(r.leaked for r in results.values())
        logger.info("leakage monitor round %d: %d probes over %d forgets, %d leaked", self._rounds,
                    len(chosen), len(results), leaked)
        return results

    def _choose(self, forget_ids: list[str]) -> list[tuple[str, Probe]]:
        """Round-robin across forgets from each one's cursor, up to the per-round budget."""
        budget = max(0, self.config.probes_per_round)
        queues = {fid: self._probes.get(fid, []) for fid in forget_ids}
        taken = {fid: 0 for fid in forget_ids}
        chosen: list[tuple[str, Probe]] = []
        while len(chosen) < budget:
            progressed = False
            for fid in forget_ids:
                probes = queues[fid]
                if len(chosen) >= budget or taken[fid] >= len(probes):
                    continue
                i = (self._cursor.get(fid, 0) + taken[fid]) % len(probes)
                chosen.append((fid, probes[i]))
                taken[fid] += 1
                progressed = True
            if not progressed:
                break
        for fid, n in taken.items():
            if n:
                self._cursor[fid] = (self._cursor.get(fid, 0) + n) % len(queues[fid])
        return chosen

    async def _replay(self, probe: Probe) -> bool | None:
        """Greedy answer through the live stack, no guard; None when the runtime refused it."""
        try:
            loaded, _ = self.runtime.require()
            prompt, special = probe.prompt, True
            if has_chat_template(loaded.tokenizer):  # a chat model: asked as a chat client asks it
                prompt = await self.runtime.render_chat(chat_messages([("user", probe.prompt)]))
                special = CHAT_ADDS_SPECIAL_TOKENS
            params = GenerateParams(prompt=prompt, max_new_tokens=self.config.max_new_tokens,
                                    sampling=SamplingParams(), stop=(), request_id=f"monitor-{self._rounds}",
                                    add_special_tokens=special)
            handle = await self.runtime.submit(params, deadline=None, internal=True)
        except LetheError:  # loading, draining, at capacity, or a prompt too long for the model
            return None
        parts: list[str] = []
        async for event in handle.events():
            parts.append(event.text)
            if isinstance(event, FinishEvent) and event.reason in ("cancelled", "error"):
                return None
        return leaked(self.keys, probe, "".join(parts))

    def _export(self, methods: dict[str, str]) -> None:
        by_class: dict[str, list[ProbeResult]] = {}
        for fid, method in methods.items():
            if fid in self.last:
                by_class.setdefault(method, []).append(self.last[fid])
        for job_class, results in by_class.items():
            leaked_n = sum(r.leaked for r in results)
            total = leaked_n + sum(r.clean for r in results)
            if total:
                self.metrics.monitor_leak_ratio.labels(job_class).set(leaked_n / total)
        exported = {c for c, rs in by_class.items() if any(r.ratio is not None for r in rs)}
        for gone in self._classes - exported:  # no active forget of that class any more
            self.metrics.monitor_leak_ratio.remove(gone)
        self._classes = exported
        self.metrics.monitor_last_round.set(time.time())
