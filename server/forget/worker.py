"""The unlearning worker: claims forget jobs from the ledger and trains their adapters.

Runs as its own process (`lethe worker`, spawned by the server by default) so serving never
stalls on training; several can share a data directory. Per job: build the forget set from the
request and the corpus entries the server resolved it to at acknowledgement (the ledger holds
their ids and the corpus file's digest; a worker with another corpus file fails the job rather
than train on something else; a subject that matched no entry gets forget data the current model
writes itself, recorded in the job's transitions), hand it with the corpus and the *current* stack
to the engine in one call (`run_forget_job`: the model loads once, the original picks the retain
set, less what the guard of every forget in the ledger blocks (retain_screen.py), and is the
gate's retain reference (docs/architecture.md#retain-anchor), trains, verifies and writes the
artifact, reporting progress to a callback that writes the ledger), and
either record the verified artifact (the server then swaps it in) or fail the job. The worker
is ledger <-> engine: it holds no ML logic of its own. A crash anywhere leaves the job
to be re-queued; an artifact that was already written and verifies is reused, never retrained.
Holds no gRPC code; talks to the server only through the ledger and the adapter store.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.crash import crash_point
from server.forget.jobs import AdapterRecord, ForgetJob, ForgetPayload, ForgetState, JobProgress
from server.forget.layout import DataDir
from server.forget.ledger import ForgetLedger, NotOwner, open_ledger
from server.forget.agreement import check_guard_key
from server.forget.shared_store import local_paths, shared_blobs
from server.forget.probes import make_probes, probe_pairs, seal_probes
from server.forget.resolution import corpus_file
from server.forget.retain_screen import RetainScreen
from server.guard.keys import GuardKeys
from unlearn_engine.artifacts import ArtifactError, AdapterArtifact, adapter_name_for, load_artifact, model_fingerprint
from unlearn_engine.data.corpus import load_corpus
from unlearn_engine.data.forget_set import build_forget_set
from unlearn_engine.data.generated import generated_examples
from unlearn_engine.data.records import Example, ForgetRequest, ForgetSet
from unlearn_engine.data.resolve import CorpusMismatch, IndexedCorpus
from unlearn_engine.pretrained.tuning import forget_tuning
from unlearn_engine.progress import Progress as EngineProgress
from unlearn_engine.trainer import run_forget_job

logger = logging.getLogger(__name__)

# A partial artifact directory untouched this long belongs to a dead writer (an artifact write
# takes seconds); a younger one may be a live worker's that was presumed dead: leave it.
STALE_PARTIAL_SECONDS = 300.0


@dataclass(frozen=True)
class WorkerConfig:
    data_dir: Path
    model_dir: Path
    # JSONL for near-duplicates and retain data. None: a demo build's own training corpus, else
    # a retain set the model generates itself.
    corpus: Path | None = None
    ledger_url: str | None = None  # a shared PostgreSQL ledger; None = SQLite in data_dir
    poll_seconds: float = 0.5  # idle wait between ledger polls
    heartbeat_seconds: float = 2.0  # liveness signal; the server's orphan timeout is several of these
    progress_every: int = 5  # optimiser steps between progress rows (eval steps always recorded)
    seed: int = 0
    parent_pid: int | None = None  # spawned by a server: exit when it dies (a kill -9 leaves no orphan)
    crash_at: tuple[str, ...] = ()  # test hook, see crash.py


def load_worker_corpus(config: WorkerConfig) -> tuple[Example, ...] | None:
    """The corpus the server resolves Forgets against (``--corpus``, else a demo build's own
    export), every split of it: its held-out people are the gate's never-seen references and
    the method's anchors, its paraphrases the gate's paraphrase probes. Only trained entries
    become retain data (``build_retain_set``). Until the seventh session a demo build's worker
    read only the trained QA, so its gate compared the subject with wrong answers instead of
    never-seen people and its jobs overshot the membership check (bench/results/gate_diagnosis.md,
    "Seventh session")."""
    path = corpus_file(config.corpus, config.model_dir)
    return load_corpus(path) if path is not None else None


def adapter_record(forget_id: str, artifact: AdapterArtifact) -> AdapterRecord:
    """The ledger's row for an artifact in the adapter store (path relative to the store)."""
    manifest = artifact.path / "manifest.json"
    size = sum(p.stat().st_size for p in artifact.path.rglob("*") if p.is_file())
    return AdapterRecord(
        adapter_id=artifact.adapter_name, forget_id=forget_id, path=str(artifact.path.name),
        sha256=hashlib.sha256(manifest.read_bytes()).hexdigest(), method=artifact.method,
        rank=int(artifact.config.get("lora_rank", 0)), size_bytes=size,
        created_at=artifact.created_at or time.time(),
        metrics={k: float(v) for k, v in artifact.metrics.items() if isinstance(v, (int, float))})


class UnlearningWorker:
    def __init__(self, config: WorkerConfig, ledger: ForgetLedger | None = None):
        self.config = config
        self.data = DataDir(config.data_dir)
        self.ledger = ledger or open_ledger(config.ledger_url, self.data.ledger)
        self.store = self.data.adapters
        # Unique per process start: hostname-pid repeats after a container restart, and the
        # ledger fences every worker write by this id.
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.fingerprint = model_fingerprint(config.model_dir)
        self.corpus = load_worker_corpus(config)
        # A registered pretrained model brings its own measured training settings and retain data
        # (unlearn_engine/pretrained/tuning.py); any other model gets the engine's defaults.
        self.tuning = forget_tuning(config.model_dir)
        self.retain_corpus = self.corpus
        if self.retain_corpus is None and self.tuning is not None:
            self.retain_corpus = self.tuning.retain_corpus()
        self._indexed: IndexedCorpus | None = None  # the corpus file, as resolutions name it
        self.keys = GuardKeys(self.data.guard_secret())  # seals the leakage monitor's probes
        check_guard_key(self.ledger, self.keys)  # shared ledger: the replicas' key, or refuse
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self, once: bool = False) -> None:
        """Process jobs until stopped (or, with once=True, until the queue is empty)."""
        logger.info("worker %s started", self.worker_id)
        beating = threading.Thread(target=self._beat, name="lethe-worker-heartbeat", daemon=True)
        beating.start()
        while not self._stop.is_set():
            claimed = self.ledger.claim_next(self.worker_id)
            if claimed is None:
                if once:
                    break
                self._stop.wait(self.config.poll_seconds)
                continue
            job, payload = claimed
            try:
                self.process(job, payload)
            except NotOwner:
                logger.warning("job %s was re-queued or finished by another worker; dropping it", job.forget_id)
            except Exception:
                logger.exception("job %s failed with an internal error", job.forget_id)
                try:
                    self.ledger.fail(job.forget_id, "internal error in the unlearning worker",
                                     **self._fence(job))
                except NotOwner:
                    pass

        self._stop.set()
        beating.join()

    def _beat(self) -> None:
        # A thread, so evaluation phases without progress reports still prove the worker alive;
        # the server re-queues jobs of a worker whose heartbeat goes stale.
        while not self._stop.is_set():
            if self.config.parent_pid is not None and os.getppid() != self.config.parent_pid:
                # The server died (re-parented to init): its successor spawns its own worker and
                # re-queues our job; an atomic artifact write makes dying mid-job safe.
                logger.warning("the server that started this worker is gone; exiting")
                os._exit(1)
            self.ledger.heartbeat(self.worker_id)
            self._stop.wait(self.config.heartbeat_seconds)

    def _resolved_entries(self, forget_id: str) -> tuple[Example, ...] | None:
        """The entries the server resolved this job to (None: a job from before resolutions)."""
        resolution = self.ledger.resolution(forget_id)
        if resolution is None:
            return None
        if not resolution.counts.corpus_digest:
            return ()  # the server had no corpus: the request's own items, nothing else
        if self._indexed is None:
            path = corpus_file(self.config.corpus, self.config.model_dir)
            if path is None:
                raise CorpusMismatch("this worker has no corpus")
            self._indexed = IndexedCorpus.from_file(path)
        return self._indexed.select(resolution.entry_ids, resolution.counts.corpus_digest)

    def _unmatched_subjects(self, forget_id: str, payload: ForgetPayload) -> list[str]:
        resolution = self.ledger.resolution(forget_id)
        if resolution is None:
            return []
        return [s for s, n in zip(payload.subjects, resolution.counts.subjects) if n == 0]

    def _generated(self, job: ForgetJob, subjects: list[str], stack_paths: list[Path]) -> tuple[Example, ...]:
        """Forget data for subjects no corpus entry is about: the current model (base + stack)
        answers prompts naming them. Loads the model once more (only for such jobs)."""
        from unlearn_engine.stacking import attach_stack
        from unlearn_engine.trainer import load_base

        model, tokenizer = load_base(self.config.model_dir)
        if stack_paths:
            model = attach_stack(model, [load_artifact(p, self.fingerprint) for p in stack_paths])
        tuning = self.tuning
        generated = generated_examples(model, tokenizer, subjects,
                                       reverse=tuning is not None and tuning.reverse_questions,
                                       forward=tuning is None or tuning.forward_questions,
                                       works=tuning is not None and tuning.work_questions)
        self.ledger.transition(job.forget_id, ForgetState.TRAINING,
                               f"forget data: {len(generated)} examples generated by the model for "
                               f"{len(subjects)} subject(s) with no corpus entry", **self._fence(job))
        return generated

    def process(self, job: ForgetJob, payload: ForgetPayload) -> None:
        request = ForgetRequest(texts=payload.texts, qa_pairs=payload.qa_pairs, subjects=payload.subjects)
        try:
            resolved = self._resolved_entries(job.forget_id)
        except CorpusMismatch as exc:
            self.ledger.fail(job.forget_id, f"corpus mismatch: {exc}; run the worker with the "
                             "server's --corpus", **self._fence(job))
            return
        stack = self.ledger.current_stack()
        stack_paths = list(local_paths(self.ledger, self.data, stack.adapter_ids).values())
        unmatched = self._unmatched_subjects(job.forget_id, payload)
        if unmatched and resolved is not None:
            resolved = (*resolved, *self._generated(job, unmatched, stack_paths))
        try:
            forget_set = build_forget_set(request, self.corpus, seed=self.config.seed, resolved=resolved)
        except ValueError as exc:  # nothing trainable
            self.ledger.fail(job.forget_id, f"nothing to unlearn: {exc}", **self._fence(job))
            return
        out_dir = self.store / adapter_name_for(job.forget_id)
        self._remove_dead_partials(out_dir)
        existing = self._existing_artifact(out_dir)
        if existing is not None:  # a previous run wrote it and died before recording it
            self._record(job, existing, forget_set)
            return
        # One engine call: the model loads once, picks the retain set, trains, verifies, writes.
        result = run_forget_job(
            self.config.model_dir, stack_paths, forget_set, self.retain_corpus, method=job.method,
            config=self.tuning.method_config(job.method) if self.tuning else None,
            sweep=self.tuning.sweep_config() if self.tuning else None,
            progress=self._progress_callback(job), out_dir=out_dir, forget_id=job.forget_id,
            seed=self.config.seed,
            before_commit=lambda _tmp: crash_point(self.config.crash_at, "artifact-write", self.config.data_dir),
            retain_screen=RetainScreen.from_ledger(self.ledger, self.data.guard_secret()).keep)
        metrics = {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))}
        attempts = len(result.attempts)
        if not result.passed or result.artifact is None:
            reasons = "; ".join(result.gate.reasons)
            self.ledger.fail(job.forget_id, f"verification gate failed after {attempts} attempts: {reasons}",
                             metrics, attempts, **self._fence(job))
            return
        self._record(job, result.artifact, forget_set, attempts)

    def _remove_dead_partials(self, out_dir: Path) -> None:
        """Partial writes of this job's artifact whose writer is dead: when no other worker has
        beaten lately, or once a partial is older than any live write could be. A live worker that
        was presumed dead keeps its directory (its record is refused by the ledger anyway)."""
        other = self.ledger.last_heartbeat(excluding=self.worker_id)
        nobody_else = other is None or time.time() - other > 5 * self.config.heartbeat_seconds
        for partial in self.data.partial_writes(out_dir):
            if nobody_else or time.time() - partial.stat().st_mtime > STALE_PARTIAL_SECONDS:
                shutil.rmtree(partial, ignore_errors=True)

    def _existing_artifact(self, out_dir: Path) -> AdapterArtifact | None:
        if not out_dir.exists():
            return None
        try:
            return load_artifact(out_dir, self.fingerprint)
        except ArtifactError:
            logger.warning("discarding unverifiable artifact %s", out_dir.name)
            shutil.rmtree(out_dir)
            return None

    def _record(self, job: ForgetJob, artifact: AdapterArtifact, forget_set: ForgetSet,
                attempts: int | None = None) -> None:
        record = adapter_record(job.forget_id, artifact)
        if self.ledger.get(job.forget_id).state != ForgetState.VERIFYING:
            self.ledger.transition(job.forget_id, ForgetState.VERIFYING, "artifact verified",
                                   **self._fence(job))
        # Probes for the leakage monitor: made now, while the forget set (with its paraphrases and
        # near-duplicates) exists; the plaintext is erased once the adapter is ACTIVE.
        probes = make_probes(self.keys, probe_pairs(forget_set.examples, forget_set.paraphrases))
        # With a shared store the artifact's blobs go in the same transaction, for replicas that
        # never saw this machine's disk.
        self.ledger.record_adapter(record, attempts, seal_probes(self.keys, job.forget_id, probes),
                                   blobs=shared_blobs(self.ledger, artifact.path), **self._fence(job))
        logger.info("job %s: adapter %s ready for the swap", job.forget_id, record.adapter_id)

    def _fence(self, job: ForgetJob) -> dict[str, Any]:
        """What every write for `job` carries: the ledger refuses it unless this worker's claim is
        still the job's latest (a re-queue and a new claim, even by this same worker, fence it)."""
        return {"worker_id": self.worker_id, "epoch": job.claim_epoch}

    def _progress_callback(self, job: ForgetJob):
        forget_id = job.forget_id
        every = self.config.progress_every
        verifying = False

        def report(p: EngineProgress) -> None:
            nonlocal verifying
            if p.phase == "final" and not verifying:  # training done: the final evaluation starts
                verifying = True
                self.ledger.transition(forget_id, ForgetState.VERIFYING, "final evaluation",
                                       **self._fence(job))
            if p.phase == "train" and p.step % every:
                return
            self.ledger.record_progress(forget_id, JobProgress(
                attempt=p.attempt + 1, step=p.step, total_steps=p.max_steps,
                losses={k: float(v) for k, v in p.losses.items()},
                metrics={k: float(v) for k, v in p.metrics.items() if isinstance(v, (int, float))},
                elapsed_seconds=p.elapsed_s, eta_seconds=-1.0 if p.eta_s is None else p.eta_s),
                **self._fence(job))
        return report
