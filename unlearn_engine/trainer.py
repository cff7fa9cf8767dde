"""Train, verify and save one forget adapter: the engine's main entry point.

``train_forget_adapter`` loads the base model and the current stack (verifying each artifact),
adds a fresh LoRA adapter above the frozen stack, and runs a small sweep: the method's config
first, then learning-rate x steps settings moved in the direction the miss points to. Each attempt is
probed during training; an attempt whose probes jump over the gate's window (one still remembers,
the next is over-unlearned) is retraced, probing every step between the two (``bracket``).
The checkpoint is chosen by ``checkpoints.select_checkpoint``; the
chosen adapter gets a full evaluation and the gate's final verdict. Only an adapter that passed
is written (atomically, as a PEFT artifact with a manifest).

``run_forget_job`` is a whole job for a caller that has only a forget set and a corpus (the
server's worker): it loads the model and stack once, lets that model pick the retain set, then
trains, verifies and saves as above. ``unlearn`` is the training part on a model already in
memory (tests and benchmarks use it).
It deliberately does not touch the ledger, the guard or serving: the caller owns those.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from unlearn_engine.adapter_setup import TrainableAdapter, lora_config
from unlearn_engine.artifacts import (AdapterArtifact, adapter_name_for, load_artifact,
                                      model_fingerprint, save_artifact)
from unlearn_engine.checkpoints import Checkpoint, select_checkpoint
from unlearn_engine.data.records import Example, ForgetSet, RetainSet
from unlearn_engine.data.retain_set import RetainFilter, build_retain_set
from unlearn_engine.devices import pick_device
from unlearn_engine.evaluation import EvalSettings, GateConfig, GateResult, gate_decision
from unlearn_engine.evaluation.attacks import AttackSets, run_attacks
from unlearn_engine.fact_margin import fact_margins
from unlearn_engine.folding import fold_stack  # re-exported: callers import it from here
from unlearn_engine.methods import DEFAULT_METHOD, MethodConfig, get_method
from unlearn_engine.progress import Progress, ProgressCallback
from unlearn_engine.training_loop import PROBE_METRICS, ProbeSets, run_attempt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepConfig:
    """Retry schedule when an attempt misses the gate. Defaults that work at one model scale
    often miss at another, so one job tries a few strengths instead of failing on the first.
    The direction follows the miss: still remembered -> stronger (more lr, more steps);
    over-unlearned or utility lost -> gentler (less lr, more steps, so the evaluations sample
    the crossing point more finely)."""

    max_tries: int = 4  # attempts in all, the first included
    stronger: tuple[float, float] = (2.0, 1.5)  # (lr, steps) multipliers after an under-forget
    gentler: tuple[float, float] = (0.5, 1.5)  # ... after over-unlearning or a utility loss
    retain_probe: int = 64  # retain examples held out of training to measure utility
    # None (the default): the probe is the first ``retain_probe`` retain examples. A number: only
    # examples the model before the job states with at least this fact margin (``fact_margin``,
    # nats) may be probed; near ties are trained on, not probed. A yardstick choice a registry
    # row makes with its measured reason (SmolLM2: bench/results/forget_real_subject.md).
    retain_probe_margin: float | None = None
    probe_holdout: int = 200  # cap on never-seen reference examples per evaluation
    # Retrace an attempt whose probes bracket the gate's window, probing every step between them
    # (``bracket``). Where the window lies on the step grid depends on the machine's numerics:
    # without this the same job passed on one machine and failed on another (NPO crossed the
    # MIA band within 10 steps at every learning rate; docs/architecture.md#bracketed-window).
    refine: bool = True


_UNDER = {"forget_accuracy", "paraphrase_accuracy", "verbatim", "truth_preference", "zero_delta",
          "attack_quant8", "attack_quant4", "attack_relearn"}


def _misses(verdict: GateResult) -> tuple[bool, bool]:
    """(still remembers, over-unlearned or utility lost): which ways the failed checks point."""
    failed = [c for c in verdict.checks if not c.passed]
    under = any(c.name in _UNDER or (c.name.startswith("mia_") and c.value > 0.5)
                for c in failed)
    over = any(c.name == "retain" or (c.name.startswith("mia_") and c.value < 0.5)
               for c in failed)
    return under, over


def sweep_direction(verdict: GateResult) -> str:
    """``stronger`` when only "still remembers" checks failed, else ``gentler``."""
    under, over = _misses(verdict)
    return "stronger" if under and not over else "gentler"


def bracket(points: Sequence[Checkpoint]) -> tuple[Checkpoint, Checkpoint] | None:
    """The first two consecutive probes of one attempt, with unprobed steps between them, where
    the verdict goes from only "still remembers" to "over-unlearned": if the gate's window
    exists on this trajectory it lies between them, narrower than the probe interval."""
    for a, b in zip(points, points[1:]):
        under_a, over_a = _misses(a.gate)
        if under_a and not over_a and _misses(b.gate)[1] and b.step - a.step > 1:
            return a, b
    return None


@dataclass(frozen=True)
class AttemptReport:
    attempt: int
    lr: float
    max_steps: int
    steps_run: int
    chosen_step: int
    passed: bool
    reasons: tuple[str, ...]
    wall_s: float
    replay_of: int | None = None  # the attempt this one retraced, probing a bracket finely


@dataclass(frozen=True)
class TrainResult:
    passed: bool
    metrics: Mapping[str, float]  # final evaluation of the chosen checkpoint, + "before.*"
    gate: GateResult
    method: str
    config: MethodConfig  # the config of the attempt that produced the chosen checkpoint
    chosen_attempt: int
    chosen_step: int
    attempts: tuple[AttemptReport, ...]
    wall_s: float
    train_s: float  # optimiser + probe time only, excluding loading and saving
    artifact: AdapterArtifact | None = None  # written only when the gate passed
    adapter_name: str = ""
    forget_id: str = ""
    history: tuple[Mapping[str, float], ...] = field(default=(), repr=False)  # probe metrics

    @property
    def artifact_path(self) -> Path | None:
        return None if self.artifact is None else self.artifact.path

    @property
    def retries(self) -> int:
        return len(self.attempts) - 1


def load_base(model_dir: str | Path, device: torch.device | str | None = None):
    """(model, tokenizer) from a local HF directory; bf16 on CUDA, fp32 on CPU. Never downloads."""
    device, dtype = pick_device(device)
    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype,
                                                 local_files_only=True).to(device)
    model.eval()
    return model, tok


def _retain_split(retain_set: RetainSet, sweep: SweepConfig, model: torch.nn.Module | None = None,
                  tokenizer=None) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
    """(probe, train): the retain examples the gate measures utility on, and the rest, which the
    retain loss trains on. With ``sweep.retain_probe_margin`` the probe takes the first examples
    ``model`` states with that margin, and every other example is trained on."""
    retain = retain_set.examples
    n_probe = min(sweep.retain_probe, len(retain) // 2) if len(retain) > 1 else 0
    probe_retain, train_retain = retain[:n_probe], retain[n_probe:]
    if n_probe and sweep.retain_probe_margin is not None and model is not None:
        margins = fact_margins(model, tokenizer, retain)
        firm = [i for i, m in enumerate(margins) if m >= sweep.retain_probe_margin][:n_probe]
        log.info("retain probe: %d of %d retain examples stated with margin >= %.2f; %d probed",
                 sum(m >= sweep.retain_probe_margin for m in margins), len(retain),
                 sweep.retain_probe_margin, len(firm))
        chosen = set(firm)
        probe_retain = tuple(retain[i] for i in firm)
        train_retain = tuple(e for i, e in enumerate(retain) if i not in chosen)
    if not probe_retain:  # a single retain example: measure on it and train on it
        probe_retain = train_retain = retain
    return probe_retain, train_retain


def _probe_sets(forget_set: ForgetSet, probe_retain: Sequence[Example],
                sweep: SweepConfig) -> ProbeSets:
    """What the gate evaluates: the forget set's examples, paraphrases and never-seen
    references, and the retain probe."""
    return ProbeSets(forget=forget_set.examples, paraphrase=forget_set.paraphrases,
                     retain=tuple(probe_retain), holdout=forget_set.references[:sweep.probe_holdout])


# The retain metrics the gate compares with a reference (``gate_decision``'s retain check).
_RETAIN_METRICS: dict[str, tuple[str, ...]] = {"fact_span_accuracy": ("retain",),
                                               "token_accuracy": ("retain",)}


@dataclass(frozen=True)
class RetainAnchor:
    """The original model's view of a job's retain data: the base before any forget adapter.
    A job on a stack otherwise measures utility against the stack before it, so each job may
    lose 5 % of what the last one kept and the losses compound (five sequential forgets on the
    full demo model: 0.969 -> 0.920 of the original); and a retain fact an earlier job lost by
    accident was never trained back, since the retain set kept only what the stack still
    stated. Anchored, the retain set is what the original states (less what the caller's screen
    refuses), the probe is split on the original, and the gate's retain check compares with the
    original's score on it (docs/architecture.md#retain-anchor)."""

    probe: tuple[Example, ...]
    train: tuple[Example, ...]
    metrics: Mapping[str, float]  # the original's retain metrics on ``probe``


def retain_anchor(model: torch.nn.Module, tokenizer, forget_set: ForgetSet, retain_set: RetainSet,
                  sweep: SweepConfig, eval_settings: EvalSettings | None = None) -> RetainAnchor:
    """``model`` must be the original (no forget adapter folded in)."""
    probe, train = _retain_split(retain_set, sweep, model, tokenizer)
    metrics = _probe_sets(forget_set, probe, sweep).evaluate(model, tokenizer, _RETAIN_METRICS,
                                                             eval_settings)
    return RetainAnchor(probe, train, {k: v for k, v in metrics.items() if k.startswith("retain.")})


def subject_count(forget_set: ForgetSet) -> int:
    """How many people the forget set is about: the requested subjects and the subjects its
    examples name (case-insensitive), for the forget batch size (``MethodConfig.sized_for``)."""
    names = {s.casefold() for s in forget_set.subjects}
    names |= {e.subject.casefold() for e in forget_set.examples if e.subject}
    return len(names)


def unlearn(model: torch.nn.Module, tokenizer, forget_set: ForgetSet, retain_set: RetainSet,
            method: str = DEFAULT_METHOD, config: MethodConfig | None = None,
            gate: GateConfig | None = None, *,
            adapter_name: str = "forget_new", sweep: SweepConfig | None = None,
            progress: ProgressCallback | None = None, seed: int = 0, forget_id: str = "",
            eval_settings: EvalSettings | None = None,
            anchor: RetainAnchor | None = None) -> tuple[torch.nn.Module, TrainResult]:
    """Train a forget adapter on an in-memory plain ``model`` (an earlier stack already folded
    into its weights: ``fold_stack``). Returns the PEFT model with the chosen adapter active, and
    the result. Nothing is written to disk. The config is first sized for the forget set's
    subjects (``MethodConfig.sized_for``). With an ``anchor`` (``retain_anchor``, measured on the
    original model) the retain probe is its split and the gate's retain check compares with its
    metrics; without one, with ``model`` before this job."""
    t_start = time.monotonic()
    gate = gate or GateConfig()
    sweep = sweep or SweepConfig()
    method_cls = get_method(method)
    base_config = (config or method_cls.config_cls()).sized_for(subject_count(forget_set))
    probe_retain, train_retain = ((anchor.probe, anchor.train) if anchor is not None else
                                  _retain_split(retain_set, sweep, model, tokenizer))
    probes = _probe_sets(forget_set, probe_retain, sweep)
    num_layers = int(getattr(model.config, "num_hidden_layers", 0) or 0)
    layers = method_cls(base_config).lora_layers(num_layers) if num_layers else None
    adapter = TrainableAdapter(model, adapter_name, (),
                               lora_config(base_config, layers, model), seed)

    with adapter.reference():  # the model before this job (its stack folded in)
        baseline = probes.evaluate(adapter.model, tokenizer, PROBE_METRICS, eval_settings)
    if progress:
        progress(Progress(forget_id, "baseline", metrics=baseline))
    before_job = baseline
    if anchor is not None:  # the gate's retain reference is the original, not the stack
        baseline = {**baseline, **anchor.metrics}

    all_points: list[Checkpoint] = []
    reports: list[AttemptReport] = []
    configs: dict[int, MethodConfig] = {}
    t_train = time.monotonic()
    # What to run next: (config, the attempt it retraces or None, the steps to probe or None).
    plan: list[tuple[MethodConfig, int | None, frozenset[int] | None]] = [(base_config, None, None)]
    for attempt in range(max(1, sweep.max_tries)):
        cfg, replay_of, probe_steps = plan.pop(0)
        configs[attempt] = cfg
        t0 = time.monotonic()
        points = run_attempt(adapter, tokenizer, method_cls(cfg), cfg, forget_set.examples,
                             train_retain, probes, gate, baseline, attempt=attempt, seed=seed,
                             forget_id=forget_id, progress=progress,
                             eval_settings=eval_settings, anchors=forget_set.anchors,
                             replay_of=replay_of, probe_steps=probe_steps)
        all_points += points
        best = select_checkpoint(points)
        reports.append(AttemptReport(attempt, cfg.lr, cfg.max_steps, points[-1].step, best.step,
                                     best.gate.passed, best.gate.reasons,
                                     time.monotonic() - t0, replay_of))
        log.info("attempt %d (lr %.2g, %d steps%s): %s at step %d", attempt, cfg.lr, cfg.max_steps,
                 "" if replay_of is None else f", retracing attempt {replay_of}",
                 "passed" if best.gate.passed else "missed", best.step)
        if best.gate.passed:
            break
        if replay_of is not None:
            continue  # the sweep's next setting is already planned
        window = bracket(points) if sweep.refine else None
        if window is not None:
            a, b = window
            plan.append((replace(cfg, max_steps=b.step - 1), attempt,
                         frozenset(range(a.step + 1, b.step))))
        # Crossed the window between two probes: slower, so the next attempt samples it finer.
        direction = "gentler" if window is not None else sweep_direction(best.gate)
        plan.append((cfg.scaled(*(sweep.stronger if direction == "stronger" else sweep.gentler)),
                     None, None))
    train_s = time.monotonic() - t_train

    chosen = select_checkpoint(all_points)
    adapter.load_state(dict(chosen.state))
    adapter.activate()
    adapter.model.eval()
    for p in adapter.params:
        p.requires_grad_(False)
    final = probes.evaluate(adapter.model, tokenizer, None, eval_settings)
    if gate.attacks:  # on the chosen checkpoint only: attacks copy the model, probes do not
        final.update(run_attacks(adapter.model, tokenizer,
                                 AttackSets(probes.forget, probes.paraphrase), gate.attacks))
    verdict = gate_decision(final, gate, baseline)
    # before.* = what the gate compared with; job_start.* = the stack before this job, where the
    # anchor replaced its retain metrics
    metrics = {**final, **{f"before.{k}": v for k, v in baseline.items()},
               **{f"job_start.{k}": v for k, v in before_job.items() if baseline.get(k) != v}}
    if progress:
        progress(Progress(forget_id, "final", chosen.attempt, chosen.step, metrics=metrics,
                          passed=verdict.passed))
    result = TrainResult(passed=verdict.passed, metrics=metrics, gate=verdict, method=method,
                         config=configs[chosen.attempt], chosen_attempt=chosen.attempt,
                         chosen_step=chosen.step, attempts=tuple(reports),
                         wall_s=time.monotonic() - t_start, train_s=train_s,
                         adapter_name=adapter_name, forget_id=forget_id,
                         history=tuple({"attempt": c.attempt, "step": c.step, **c.metrics}
                                       for c in all_points))
    return adapter.model, result


def train_forget_adapter(base_model_dir: Path, stack: Sequence[Path], forget_set: ForgetSet,
                         retain_set: RetainSet, method: str = DEFAULT_METHOD,
                         config: MethodConfig | None = None, gate: GateConfig | None = None,
                         progress: ProgressCallback | None = None, *, out_dir: Path,
                         forget_id: str, seed: int = 0, sweep: SweepConfig | None = None,
                         device: torch.device | str | None = None,
                         eval_settings: EvalSettings | None = None,
                         before_commit: Callable[[Path], None] | None = None) -> TrainResult:
    """Train a forget adapter above ``stack`` (artifact dirs, oldest first) and, if it passes
    the gate, save it at ``out_dir`` (``before_commit``: see ``save_artifact``). Raises
    ``ArtifactError`` if a stack artifact is corrupt or belongs to another base model."""
    t0 = time.monotonic()
    model, tok, fingerprint, stack_arts = _load_stacked(base_model_dir, stack, device)
    return _train_and_save(model, tok, fingerprint, stack_arts, forget_set, retain_set, method, config,
                           gate, progress, out_dir=out_dir, forget_id=forget_id, seed=seed, sweep=sweep,
                           eval_settings=eval_settings, before_commit=before_commit, t0=t0)


def run_forget_job(base_model_dir: Path, stack: Sequence[Path], forget_set: ForgetSet,
                   corpus: Sequence[Example] | None, method: str = DEFAULT_METHOD,
                   config: MethodConfig | None = None, gate: GateConfig | None = None,
                   progress: ProgressCallback | None = None, *, out_dir: Path, forget_id: str,
                   seed: int = 0, sweep: SweepConfig | None = None,
                   device: torch.device | str | None = None,
                   eval_settings: EvalSettings | None = None,
                   before_commit: Callable[[Path], None] | None = None,
                   retain_screen: RetainFilter | None = None) -> TrainResult:
    """One forget job end to end, the model loaded once: the retain set, picked from ``corpus``
    (or generated when there is none) -> ``train_forget_adapter``'s sweep, verification and
    artifact. With a corpus the retain set keeps only what the model states.

    Which model decides that depends on ``retain_screen`` (the server's guard: it refuses what
    earlier forgets blocked, such as a forgotten person's bio that still reads like a bio). With a
    screen on a stack the job is anchored to the original (``RetainAnchor``): the screen keeps
    earlier forgets out of the retain data, so facts an earlier adapter lost by accident are
    trained back, and the gate's retain check compares with the original. Without a screen the
    known-answer filter is the only guard against re-teaching an earlier forget, so the current
    model (base + stack) picks the retain set and the gate compares with it."""
    t0 = time.monotonic()
    sweep = sweep or SweepConfig()
    model, tok, fingerprint, stack_arts = _load_unfolded(base_model_dir, stack, device)
    anchored = bool(stack_arts) and retain_screen is not None and corpus is not None
    if not anchored:  # base + stack picks the retain set
        model = fold_stack(model, stack_arts)
    retain_set = build_retain_set(model, tok, corpus, exclude=forget_set, seed=seed, screen=retain_screen)
    anchor = retain_anchor(model, tok, forget_set, retain_set, sweep, eval_settings) if anchored else None
    if anchored:  # the original has picked and measured; the job trains above the stack
        model = fold_stack(model, stack_arts)
    return _train_and_save(model, tok, fingerprint, stack_arts, forget_set, retain_set, method, config,
                           gate, progress, out_dir=out_dir, forget_id=forget_id, seed=seed, sweep=sweep,
                           eval_settings=eval_settings, before_commit=before_commit, t0=t0,
                           anchor=anchor)


def _load_unfolded(base_model_dir: Path, stack: Sequence[Path], device: torch.device | str | None):
    """(base model, tokenizer, base fingerprint, verified stack artifacts), the stack not yet
    applied. Raises ``ArtifactError`` for a corrupt or foreign artifact."""
    fingerprint = model_fingerprint(base_model_dir)
    stack_arts = [load_artifact(p, fingerprint) for p in stack]
    model, tok = load_base(base_model_dir, device)
    return model, tok, fingerprint, stack_arts


def _load_stacked(base_model_dir: Path, stack: Sequence[Path], device: torch.device | str | None):
    """``_load_unfolded`` with the stack folded into the base's weights (``fold_stack``)."""
    model, tok, fingerprint, stack_arts = _load_unfolded(base_model_dir, stack, device)
    return fold_stack(model, stack_arts), tok, fingerprint, stack_arts


def _train_and_save(model: torch.nn.Module, tok, fingerprint: str, stack_arts: Sequence[AdapterArtifact],
                    forget_set: ForgetSet, retain_set: RetainSet, method: str = DEFAULT_METHOD,
                    config: MethodConfig | None = None, gate: GateConfig | None = None,
                    progress: ProgressCallback | None = None, *, out_dir: Path, forget_id: str,
                    seed: int = 0, sweep: SweepConfig | None = None,
                    eval_settings: EvalSettings | None = None,
                    before_commit: Callable[[Path], None] | None = None, t0: float,
                    anchor: RetainAnchor | None = None) -> TrainResult:
    name = adapter_name_for(forget_id)
    peft_model, result = unlearn(model, tok, forget_set, retain_set, method, config, gate,
                                 adapter_name=name,
                                 sweep=sweep, progress=progress, seed=seed, forget_id=forget_id,
                                 eval_settings=eval_settings, anchor=anchor)
    artifact = None
    if result.passed:
        artifact = save_artifact(
            peft_model, name, out_dir, forget_id=forget_id, method=method,
            config={**result.config.to_dict(), "seed": seed,
                    "chosen_attempt": result.chosen_attempt, "chosen_step": result.chosen_step},
            base_fingerprint=fingerprint,
            metrics={**result.metrics, "gate": result.gate.to_dict()},
            parents=[a.forget_id for a in stack_arts], before_commit=before_commit)
        if progress:
            progress(Progress(forget_id, "saved", result.chosen_attempt, result.chosen_step,
                              passed=True))
    else:
        log.warning("forget %s: gate failed after %d attempts: %s", forget_id,
                    len(result.attempts), "; ".join(result.gate.reasons))
    return replace(result, artifact=artifact, wall_s=time.monotonic() - t0)
