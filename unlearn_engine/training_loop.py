"""One training attempt: optimise the new adapter with a method's loss, probing as it goes.

Every ``eval_every`` steps the adapter is evaluated on the probe sets and judged by the gate;
its weights are kept as a checkpoint. The attempt stops early ``patience`` evaluations after the
first passing checkpoint (the forget criterion is met; see ``checkpoints`` for why not at once). Deterministic for a given seed on
one device: data order and refusal choices come from seeded generators.

It deliberately does not pick among attempts, save artifacts or load models (``trainer`` does).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Collection, Mapping, Sequence

import torch

from unlearn_engine.adapter_setup import TrainableAdapter
from unlearn_engine.checkpoints import Checkpoint, retain_score
from unlearn_engine.data.records import Example
from unlearn_engine.evaluation import EvalSettings, GateConfig, evaluate, gate_decision
from unlearn_engine.methods.base import MethodConfig, TrainContext, UnlearningMethod
from unlearn_engine.progress import Progress, ProgressCallback
from unlearn_engine.projection import backward

log = logging.getLogger(__name__)

# Everything the gate reads and nothing more: probes run every few steps and, at demo scale,
# cost more than the training steps between them.
PROBE_METRICS: dict[str, tuple[str, ...]] = {
    "fact_span_accuracy": ("forget", "paraphrase", "retain", "holdout"),
    "verbatim": ("forget", "holdout"),
    "truth_ratio": ("forget", "holdout"),
    "mia_loss": (), "mia_min_k": (), "mia_zlib": (),
    "token_accuracy": ("retain",),
    "mean_nll": ("forget",),  # the zero-delta check
}
# The gate's checks that need no generation (teacher-forced likelihoods only): run first at a
# checkpoint; when one of them already fails, the checkpoint cannot pass and the generation
# metrics (greedy answers for four splits, most of a probe's cost) are skipped there.
CHEAP_METRICS: dict[str, tuple[str, ...]] = {
    "truth_ratio": ("forget", "holdout"),
    "mia_loss": (), "mia_min_k": (), "mia_zlib": (),
    "mean_nll": ("forget",),
}
_REST_METRICS: dict[str, tuple[str, ...]] = {
    name: splits for name, splits in PROBE_METRICS.items() if CHEAP_METRICS.get(name) != splits}


@dataclass(frozen=True)
class ProbeSets:
    """What the gate looks at; none of it is trained on except ``forget``."""

    forget: tuple[Example, ...]
    paraphrase: tuple[Example, ...]
    retain: tuple[Example, ...]  # held back from the retain loss
    holdout: tuple[Example, ...]

    def evaluate(self, model: torch.nn.Module, tokenizer,
                 metrics: Sequence[str] | Mapping[str, Sequence[str]] | None,
                 settings: EvalSettings | None = None) -> dict[str, float]:
        return evaluate(model, tokenizer, self.forget, self.retain, self.holdout, self.paraphrase,
                        metrics=metrics, settings=settings)


class _Sampler:
    """Cycles through shuffled epochs of ``items`` with a seeded generator."""

    def __init__(self, items: Sequence[Example], generator: torch.Generator) -> None:
        self.items, self.gen, self.order, self.pos = list(items), generator, [], 0

    def take(self, n: int) -> list[Example]:
        out = []
        while len(out) < min(n, len(self.items)):
            if self.pos >= len(self.order):
                self.order = torch.randperm(len(self.items), generator=self.gen).tolist()
                self.pos = 0
            out.append(self.items[self.order[self.pos]])
            self.pos += 1
        return out


def run_attempt(adapter: TrainableAdapter, tokenizer, method: UnlearningMethod,
                config: MethodConfig, forget: Sequence[Example], retain: Sequence[Example],
                probes: ProbeSets, gate: GateConfig, baseline: Mapping[str, float], *,
                attempt: int = 0, seed: int = 0, forget_id: str = "",
                progress: ProgressCallback | None = None,
                eval_settings: EvalSettings | None = None,
                anchors: Sequence[Example] = (), replay_of: int | None = None,
                probe_steps: Collection[int] | None = None) -> list[Checkpoint]:
    """Train from the adapter's initial weights; return every evaluated checkpoint.

    ``replay_of``: train with that attempt's seeds (data order, sampled answers) instead of this
    one's, so with the same config the run retraces it step for step (exactly on one device at
    ``lora_dropout`` 0, the default). ``probe_steps``: probe at these steps instead of every
    ``eval_every``; the last step is always probed."""
    adapter.reset()
    adapter.activate()
    model = adapter.model
    if config.gradient_checkpointing:
        adapter.enable_gradient_checkpointing()
    run_seed = seed + 1000 * (attempt if replay_of is None else replay_of)
    ctx = TrainContext(model, tokenizer, config, adapter.reference, seed=run_seed,
                       references=probes.holdout, anchors=anchors)
    gen = torch.Generator().manual_seed(run_seed)
    forget_s, retain_s = _Sampler(forget, gen), _Sampler(retain, gen)
    method.prepare(ctx, forget)
    opt = torch.optim.AdamW(adapter.params, lr=config.lr, weight_decay=0.0)
    checkpoints: list[Checkpoint] = []
    first_pass: int | None = None  # index of the first passing evaluation
    t0 = time.monotonic()
    model.train()
    for step in range(1, config.max_steps + 1):
        fb = forget_s.take(config.batch_size)
        rb = retain_s.take(config.retain_batch_size) if method.uses_retain and retain else None
        loss, parts = backward(method, ctx, fb, rb, adapter.params, config.retain_projection)
        torch.nn.utils.clip_grad_norm_(adapter.params, config.max_grad_norm)
        opt.step()
        if progress:
            progress(Progress(forget_id, "train", attempt, step, config.max_steps, config.lr,
                              parts, elapsed_s=time.monotonic() - t0))
        probe = step % config.eval_every == 0 if probe_steps is None else step in probe_steps
        if not probe and step != config.max_steps:
            continue
        with adapter.scaled(config.delta_scale):  # the checkpoint is what is probed
            metrics, verdict, complete = _probe(probes, model, tokenizer, gate, baseline,
                                                eval_settings, full=step == config.max_steps)
            state = adapter.state()
        checkpoints.append(Checkpoint(attempt, step, metrics, verdict, state, complete))
        model.train()
        log.info("attempt %d step %d: forget acc %.3f, retain acc %.3f, gate %s", attempt, step,
                 metrics.get("forget.fact_span_accuracy", float("nan")),
                 metrics.get("retain.fact_span_accuracy", float("nan")),
                 "pass" if verdict.passed else "fail")
        if progress:
            progress(Progress(forget_id, "eval", attempt, step, config.max_steps, config.lr,
                              parts, metrics, verdict.passed, time.monotonic() - t0))
        if verdict.passed and first_pass is None:
            first_pass = len(checkpoints) - 1
        if first_pass is not None and _done_waiting(checkpoints, first_pass, config):
            break  # forget criterion met: stop before further steps erode utility
    model.eval()
    return checkpoints


def _done_waiting(checkpoints: list[Checkpoint], first_pass: int, config: MethodConfig) -> bool:
    """``patience`` evaluations after the first pass; longer (``retain_wait`` at most) while
    the best passing checkpoint is short of ``retain_goal``."""
    waited = len(checkpoints) - 1 - first_pass
    if waited < config.patience:
        return False
    best = max(retain_score(c.metrics) for c in checkpoints[first_pass:] if c.gate.passed)
    return best >= config.retain_goal or waited >= config.patience + config.retain_wait


def _probe(probes: ProbeSets, model: torch.nn.Module, tokenizer, gate: GateConfig,
           baseline: Mapping[str, float], settings: EvalSettings | None, full: bool):
    """(metrics, verdict, complete) at one checkpoint. The likelihood checks run first; if one
    fails, the checkpoint fails whatever the rest says, so the generation metrics are skipped
    (``complete`` False) unless ``full`` (an attempt's last checkpoint is always complete, so
    the sweep's direction and the fallback choice always have every check to go on)."""
    if full:
        metrics = probes.evaluate(model, tokenizer, PROBE_METRICS, settings)
        return metrics, gate_decision(metrics, gate, baseline), True
    cheap = probes.evaluate(model, tokenizer, CHEAP_METRICS, settings)
    verdict = gate_decision(cheap, gate, baseline)
    if any(not c.passed for c in verdict.checks):
        return cheap, verdict, False
    # The likelihood metrics are already measured on these weights: only the rest is run.
    metrics = {**cheap, **probes.evaluate(model, tokenizer, _REST_METRICS, settings)}
    return metrics, gate_decision(metrics, gate, baseline), True
