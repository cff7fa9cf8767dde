"""One training attempt: optimise the new adapter with a method's loss, probing as it goes.

Every ``eval_every`` steps the adapter is evaluated on the probe sets and judged by the gate;
its weights are kept as a checkpoint. In between, every ``quick_probe_every`` steps, a cheap
teacher-forced probe (the MIA AUCs only: two forward passes, no generation) watches for the
narrow window in which forget data looks like never-seen data; a full evaluation (and a
checkpoint) is added whenever the quick probe lands inside it. On the demo model unlearning is a
cliff: nothing for tens of steps, then the MIA AUC falls from 1 to far below 0.5 within ~10
steps, so a fixed coarse schedule usually steps over the window (measured: 3.4 s per full
evaluation vs ~0.1 s per training step, so evaluating every step is not affordable).

The quick probe also steers: for methods with a retain term the forget term is switched off
("repair": retain-only steps) once the forget data no longer stands out, and back on if it
does again (``_needs_forget_push``). On the demo model the cliff dips retain accuracy to
0.7-0.8 exactly when the MIA AUC crosses 0.5; left on, the forget term then drives the AUC to
~0.05 while the retain term catches up. With repair NPO settled at AUC ~0.55 and recovered
retain to 1.0 (measured, small preset).

The attempt stops early ``patience`` evaluations after the first passing checkpoint (the forget
criterion is met; see ``checkpoints`` for why not at once), or once the quick probe shows
over-unlearning (every MIA AUC below the window) on ``patience`` probes in a row (5x that
with repair, which can climb back): further steps only push the forget data further below
never-seen data, so the sweep's gentler retry is the remedy. Deterministic for a given seed on one device: data order and refusal choices come from
seeded generators.

It deliberately does not pick among attempts, save artifacts or load models (``trainer`` does).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import torch

from unlearn_engine.adapter_setup import TrainableAdapter
from unlearn_engine.checkpoints import Checkpoint
from unlearn_engine.data.records import Example
from unlearn_engine.evaluation import EvalSettings, GateConfig, evaluate, gate_decision
from unlearn_engine.methods.base import MethodConfig, TrainContext, UnlearningMethod
from unlearn_engine.progress import Progress, ProgressCallback

log = logging.getLogger(__name__)

# Everything the gate reads and nothing more: probes run every few steps and, at demo scale,
# cost more than the training steps between them.
PROBE_METRICS: dict[str, tuple[str, ...]] = {
    "fact_span_accuracy": ("forget", "paraphrase", "retain", "holdout"),
    "verbatim": ("forget", "holdout"),
    "truth_ratio": ("forget", "holdout"),
    "mia_loss": (), "mia_min_k": (), "mia_zlib": (),
    "token_accuracy": ("retain",),
}
# The quick probe: teacher-forced MIA scores on forget and holdout only.
QUICK_METRICS: dict[str, tuple[str, ...]] = {"mia_loss": (), "mia_min_k": (), "mia_zlib": ()}


def _mia_state(metrics: Mapping[str, float], gate: GateConfig) -> str:
    """"inside" when every gate MIA attack is within tolerance, "over" when every one is below
    the window (forget data less likely than never-seen data), else "outside"."""
    aucs = [metrics.get(f"mia.{a}_auc") for a in gate.mia_attacks]
    aucs = [a for a in aucs if a is not None and a == a]
    if not aucs:
        return "outside"
    if all(abs(a - 0.5) <= gate.mia_tolerance for a in aucs):
        return "inside"
    if all(a < 0.5 - gate.mia_tolerance for a in aucs):
        return "over"
    return "outside"


def _needs_forget_push(probes: ProbeSets, model, tokenizer, quick: Mapping[str, float],
                       gate: GateConfig, pushing: bool, settings: EvalSettings | None) -> bool:
    """Should the forget term be on for the next steps? With hysteresis, so the run settles
    inside the window instead of chattering at its edge:
    - on while some MIA attack still tells forget data from never-seen data (AUC above the
      window); off once any attack falls below it (pushing on would over-unlearn);
    - inside the window, a push keeps going until every AUC is within a third of the
      tolerance above 0.5, and then only stops if forget answers are no longer likelier than
      wrong ones clearly more often than never-seen answers are (the gate's truth check, scored
      only at that switch because it costs about two quick probes); a repair stays a repair."""
    aucs = [a for a in (quick.get(f"mia.{n}_auc") for n in gate.mia_attacks) if a is not None]
    if any(a > 0.5 + gate.mia_tolerance for a in aucs):
        return True
    if not aucs or any(a < 0.5 - gate.mia_tolerance for a in aucs):
        return False
    if not pushing:
        return False
    if any(a > 0.5 + gate.mia_tolerance / 3 for a in aucs):
        return True
    truth = probes.evaluate(model, tokenizer, {"truth_ratio": ("forget", "holdout")}, settings)
    forget, holdout = truth.get("forget.correct_preference"), truth.get("holdout.correct_preference")
    if forget is None:
        return False
    return forget > (0.5 if holdout is None else holdout) + gate.max_preference_gap


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
                eval_settings: EvalSettings | None = None) -> list[Checkpoint]:
    """Train from the adapter's initial weights; return every evaluated checkpoint."""
    adapter.reset()
    adapter.activate()
    model = adapter.model
    if config.gradient_checkpointing:
        adapter.enable_gradient_checkpointing()
    ctx = TrainContext(model, tokenizer, config, adapter.reference, seed=seed + 1000 * attempt)
    gen = torch.Generator().manual_seed(seed + 1000 * attempt)
    forget_s, retain_s = _Sampler(forget, gen), _Sampler(retain, gen)
    method.prepare(ctx, forget)
    opt = torch.optim.AdamW(adapter.params, lr=config.lr, weight_decay=0.0)
    # Repair mode: the forget term is off (retain term only) while the quick probe says the
    # forget data no longer stands out, so the retain term can undo the collateral damage of
    # the cliff instead of racing a still-active forget push. Momentum is what overshoots, so
    # each switch clears Adam's first moment; the second moment stays, since a fresh optimiser's
    # first steps move every weight by ~lr and undid the forgetting in one step (SimNPO, measured).
    repair = copy.copy(method)
    repair.config = replace(config, forget_weight=0.0)
    repairing = False
    can_repair = config.repair and method.uses_retain and bool(retain)
    # Over-unlearned probes in a row before giving up; a repair gets more of them to climb back.
    over_limit = max(1, config.patience) * (5 if can_repair else 1)
    checkpoints: list[Checkpoint] = []
    first_pass: int | None = None  # index of the first passing evaluation
    over_streak = 0  # consecutive quick probes showing over-unlearning
    last_full = 0  # step of the last full evaluation
    t0 = time.monotonic()
    model.train()
    for step in range(1, config.max_steps + 1):
        fb = forget_s.take(config.batch_size)
        rb = retain_s.take(config.retain_batch_size) if method.uses_retain and retain else None
        loss, parts = (repair if repairing else method).loss(ctx, fb, rb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(adapter.params, config.max_grad_norm)
        opt.step()
        parts["repairing"] = float(repairing)
        if progress:
            progress(Progress(forget_id, "train", attempt, step, config.max_steps, config.lr,
                              parts, elapsed_s=time.monotonic() - t0))
        full_due = step % config.eval_every == 0 or step == config.max_steps
        if not full_due:
            quick_due = config.quick_probe_every > 0 and step % config.quick_probe_every == 0
            if not quick_due or not gate.mia_attacks:
                continue
            quick = probes.evaluate(model, tokenizer, QUICK_METRICS, eval_settings)
            state = _mia_state(quick, gate)
            model.train()
            log.debug("attempt %d step %d: quick probe %s (%s)", attempt, step, state,
                      {k: round(v, 3) for k, v in quick.items() if k.startswith("mia.")})
            if can_repair and _needs_forget_push(probes, model, tokenizer, quick, gate,
                                                 not repairing, eval_settings) == repairing:
                repairing = not repairing
                for moments in opt.state.values():
                    moments["exp_avg"].zero_()
            over_streak = over_streak + 1 if state == "over" else 0
            over = over_streak >= over_limit and first_pass is None
            if not over and (state != "inside"
                             or step - last_full < config.window_eval_every):
                continue
        last_full = step
        metrics = probes.evaluate(model, tokenizer, PROBE_METRICS, eval_settings)
        verdict = gate_decision(metrics, gate, baseline)
        checkpoints.append(Checkpoint(attempt, step, metrics, verdict, adapter.state()))
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
        if first_pass is not None and len(checkpoints) - 1 - first_pass >= config.patience:
            break  # forget criterion met: stop before further steps erode utility
        if full_due and gate.mia_attacks:
            over_streak = over_streak + 1 if _mia_state(metrics, gate) == "over" else 0
        if first_pass is None and over_streak >= over_limit:
            log.info("attempt %d step %d: over-unlearned, stopping", attempt, step)
            break  # only deeper from here; the sweep retries gentler
    model.eval()
    return checkpoints
