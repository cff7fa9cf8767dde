"""Put a fresh trainable LoRA adapter on top of a frozen stack, and switch to the reference.

Training happens on one PEFT model holding the stack's adapters (frozen) and the new adapter
(the only trainable parameters), all active, so the forward pass is base + stack + new. The
reference policy pi_ref is the same model with the new adapter switched off and the stack still
on — no copy of the model. Switching adapters in PEFT re-enables gradients on whatever is active,
so every switch ends by re-freezing everything but the new adapter.

It deliberately knows nothing about losses, data or evaluation.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from unlearn_engine.methods.base import MethodConfig


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Leaf names of every Linear layer except the output head: what PEFT's "all-linear" means
    (spelled out, because PEFT refuses ``layers_to_transform`` with the string form). On a model
    that already holds a stack, LoRA's own factors are skipped and a wrapped layer
    (``q_proj.base_layer``) counts under its own name (``q_proj``)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = set()
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear) or mod is head:
            continue
        parts = name.split(".")
        if "lora_A" in parts or "lora_B" in parts:
            continue
        if parts[-1] == "base_layer":
            parts.pop()
        names.add(parts[-1])
    return sorted(names)


def lora_config(config: MethodConfig, layers: list[int] | None,
                model: torch.nn.Module | None = None) -> LoraConfig:
    """The new adapter's LoRA config; ``model`` is needed to restrict "all-linear" to layers."""
    targets: str | list[str] = list(config.lora_targets)
    if targets == ["all-linear"]:
        if layers is None:
            targets = "all-linear"
        elif model is None:
            raise ValueError("restricting all-linear targets to layers needs the model")
        else:
            targets = linear_module_names(model)
    return LoraConfig(
        r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=targets, layers_to_transform=layers, bias="none", task_type="CAUSAL_LM")


class TrainableAdapter:
    """The new adapter ``name`` on ``model`` above the frozen ``stack`` adapters."""

    def __init__(self, model: torch.nn.Module, name: str, stack: Sequence[str],
                 config: LoraConfig, seed: int = 0) -> None:
        torch.manual_seed(seed)  # LoRA-A init is random; B starts at zero
        if isinstance(model, PeftModel):
            if name in model.peft_config:
                raise ValueError(f"adapter {name!r} already exists on the model")
            model.add_adapter(name, config)
        else:
            if stack:
                raise ValueError("a stack needs a PeftModel that already holds its adapters")
            model = get_peft_model(model, config, adapter_name=name)
        self.model: PeftModel = model
        self.name = name
        self.stack = list(stack)
        self.params = [p for n, p in model.named_parameters() if f".{name}." in n]
        if not self.params:
            raise ValueError(f"adapter {name!r} has no parameters: check lora targets")
        self.initial = self.state()
        self.activate()

    def _freeze_others(self) -> None:
        for n, p in self.model.named_parameters():
            p.requires_grad_(f".{self.name}." in n)

    def activate(self) -> None:
        """Stack + new adapter active; only the new adapter trainable."""
        self.model.base_model.set_adapter(self.stack + [self.name])
        self._freeze_others()

    @contextmanager
    def reference(self) -> Iterator[None]:
        """pi_ref: the stack alone (or the bare base when the stack is empty)."""
        try:
            if self.stack:
                self.model.base_model.set_adapter(self.stack, inference_mode=True)
                yield
            else:
                with self.model.disable_adapter():
                    yield
        finally:
            self.activate()

    def state(self) -> dict[str, torch.Tensor]:
        """A detached copy of the new adapter's weights (a checkpoint)."""
        return {n: p.detach().clone() for n, p in self.model.named_parameters()
                if f".{self.name}." in n}

    @torch.no_grad()
    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.model.named_parameters())
        for n, t in state.items():
            params[n].copy_(t)

    @contextmanager
    def scaled(self, factor: float) -> Iterator[None]:
        """The new adapter's delta (LoRA B) multiplied by ``factor`` inside the block; the
        trained weights come back after it. A no-op at 1.0."""
        if factor == 1.0:
            yield
            return
        saved = self.state()
        try:
            with torch.no_grad():
                for n, p in self.model.named_parameters():
                    if f".{self.name}." in n and "lora_B" in n:
                        p.mul_(factor)
            yield
        finally:
            self.load_state(saved)

    def reset(self) -> None:
        """Back to the freshly initialised adapter (for the next sweep attempt)."""
        self.load_state(self.initial)

    def enable_gradient_checkpointing(self) -> None:
        self.model.gradient_checkpointing_enable()
        # Without this the checkpointed blocks see inputs that need no grad, so no gradient
        # reaches LoRA and B stays zero (a known PEFT trap).
        self.model.enable_input_require_grads()
