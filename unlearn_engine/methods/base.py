"""The method interface, the shared config, the training context and the method registry.

A method is a small class that turns a forget batch (and optionally a retain batch) into a
scalar loss. It does not build the model, step the optimiser, evaluate or save: the trainer
does all of that, identically for every method, so methods differ only in their loss.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, fields, replace
from typing import Callable, ClassVar, Sequence

import torch

from unlearn_engine.data.records import Example
from unlearn_engine.encoding import Batch, collate
from unlearn_engine.registry import Registry


@dataclass(frozen=True)
class MethodConfig:
    """Hyper-parameters every method shares. Defaults were tuned on the demo model (4.5 M params,
    fp32, CPU); ``trainer.SweepConfig`` scales lr and steps when the gate is missed."""

    lr: float = 2e-3  # LoRA tolerates ~10x full-FT rates; 1e-3 was too weak (docs/architecture.md#measured)
    max_steps: int = 80  # upper bound; early stopping usually ends sooner
    batch_size: int = 8  # forget examples per step
    # Forget batch in proportion to the forget set (``sized_for``; 0 = off, ``batch_size`` as
    # is): with several subjects the batch is ``batch_per_subject`` per subject, at least
    # ``batch_size`` and at most ``max_batch_size``, and ``max_steps`` is multiplied by
    # ``multi_subject_steps``. A single subject keeps ``batch_size``. Off here; the methods that
    # measured it turn it on (counterfactual).
    batch_per_subject: int = 0
    max_batch_size: int = 32
    multi_subject_steps: float = 1.0
    retain_batch_size: int = 8  # OU pairs each forget example with a retain one
    retain_weight: float = 1.0  # alpha in gamma*L_forget + alpha*L_retain
    forget_weight: float = 1.0  # gamma
    retain_loss: str = "nll"  # "nll" (retain NLL) or "kl" (KL(ref || theta) on retain data)
    # Which forget tokens the forget loss pushes down: "answer" = the whole answer, "fact" =
    # only the fact span where an example has one (the private value, not the template shared
    # with retained people). "fact" lost retain accuracy on the toy model (0.77 < 0.80 of
    # before): values are shared between people too, so the push concentrates on tokens others
    # need; kept as an option for the bench until it is measured on the demo models.
    forget_tokens: str = "answer"
    lora_rank: int = 8  # r=8 is what UNDIAL/OU used; forget adapters need little capacity
    lora_alpha: int = 16  # scaling alpha/r = 2, the PEFT-common choice
    lora_dropout: float = 0.0  # dropout only adds noise to a few dozen steps
    lora_targets: tuple[str, ...] = ("all-linear",)  # every linear layer but the LM head
    max_grad_norm: float = 1.0  # ascent losses are unbounded; clipping keeps steps sane
    eval_every: int = 10  # probe evaluation (and a checkpoint) every this many steps
    patience: int = 2  # evaluations to keep going after the first passing one (best retain wins)
    # Off by default (0): while the best passing checkpoint's retain accuracy is below this
    # fraction, keep going up to ``retain_wait`` more evaluations after ``patience``. Retain
    # recovers as training goes on, and a gate pass at 95 % stopped some jobs early at 0.95
    # (bench/results/gate_diagnosis.md, sixth session); counterfactual turns it on (0.97).
    retain_goal: float = 0.0
    retain_wait: int = 3
    # Each checkpoint is the trained adapter with its delta (LoRA B) scaled by this, probed,
    # judged and kept as such; training goes on from the unscaled weights. 1.0 (the default):
    # off. SmolLM2's row uses 0.85 (bench/results/forget_real_subject.md, seventh session): in
    # the sweep its unscaled step-5 adapter left 1 of 8 subject answers at general knowledge
    # 0.944x / 0.951x (two retain splits); x0.85 left 0 of 8 at 0.951x on both.
    delta_scale: float = 1.0
    # "" (the default): each step is the joint loss's gradient. "global" / "tensor": the forget
    # gradient's component against the retain gradient is projected out first (PCGrad-style,
    # ``unlearn_engine/projection.py``), over the whole adapter or per LoRA tensor.
    retain_projection: str = ""
    max_length: int = 256  # tokens per example; demo answers are ~20
    gradient_checkpointing: bool = False  # for large models; needs enable_input_require_grads

    def scaled(self, lr_mult: float = 1.0, steps_mult: float = 1.0) -> MethodConfig:
        """A stronger (or weaker) copy for the retry sweep."""
        return replace(self, lr=self.lr * lr_mult,
                       max_steps=max(1, int(round(self.max_steps * steps_mult))))

    def sized_for(self, subjects: int) -> MethodConfig:
        """This config for a forget set about ``subjects`` people (see ``batch_per_subject``)."""
        if self.batch_per_subject <= 0 or subjects <= 1:
            return self
        batch = max(self.batch_size, min(self.batch_per_subject * subjects, self.max_batch_size))
        return replace(self, batch_size=batch,
                       max_steps=max(1, int(round(self.max_steps * self.multi_subject_steps))))

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> MethodConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}; valid: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


class TrainContext:
    """What a method may use: the model being trained, a way to reach the reference policy,
    batching, and seeded randomness. The reference is the same model with the new adapter
    switched off (the frozen stack stays on) — no copy of the model is ever made."""

    def __init__(self, model: torch.nn.Module, tokenizer, config: MethodConfig,
                 reference: Callable[[], AbstractContextManager], seed: int = 0,
                 references: Sequence[Example] = (), anchors: Sequence[Example] = ()) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.reference = reference
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        # Texts the model never saw (held-out people): counterfactual methods take stand-in
        # names from them. Never trained on.
        self.references = tuple(references)
        # Never-seen texts of other people than the references (``ForgetSet.anchors``): a
        # method may train the model to keep predicting them as the reference does.
        self.anchors = tuple(anchors)
        self.device = next(model.parameters()).device

    def batch(self, examples: Sequence[Example], targets: Sequence[str] | None = None) -> Batch:
        return collate(self.tokenizer, examples, self.config.max_length, targets, self.device)

    def forget_batch(self, examples: Sequence[Example]) -> Batch:
        """A forget batch scored on ``config.forget_tokens`` (see ``MethodConfig``)."""
        kind = self.config.forget_tokens
        if kind not in ("fact", "answer"):
            raise ValueError(f"unknown forget_tokens {kind!r}; valid: ['answer', 'fact']")
        return collate(self.tokenizer, examples, self.config.max_length, None, self.device,
                       fact_only=kind == "fact")


class UnlearningMethod:
    """Base class: subclasses set ``name`` / ``config_cls`` and implement ``loss``."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    uses_retain: ClassVar[bool] = True

    def __init__(self, config: MethodConfig | None = None) -> None:
        config = config or self.config_cls()
        if not isinstance(config, self.config_cls):
            raise TypeError(f"{self.name} needs a {self.config_cls.__name__}, "
                            f"got {type(config).__name__}")
        self.config = config

    def lora_layers(self, num_layers: int) -> list[int] | None:
        """Layers the adapter may touch (None = all). RMU restricts this."""
        return None

    def prepare(self, ctx: TrainContext, forget: Sequence[Example]) -> None:
        """One-off setup before the first step (e.g. reference statistics)."""

    def loss(self, ctx: TrainContext, forget: Sequence[Example],
             retain: Sequence[Example] | None) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError


class UnknownMethodError(ValueError):
    pass


METHODS: Registry[type[UnlearningMethod]] = Registry("unlearning method", UnknownMethodError)


def register_method(name: str) -> Callable[[type[UnlearningMethod]], type[UnlearningMethod]]:
    """Class decorator: ``@register_method("npo")``. Stores the class, never an instance."""
    return METHODS.register(name)


def get_method(name: str) -> type[UnlearningMethod]:
    return METHODS.get_class(name)
