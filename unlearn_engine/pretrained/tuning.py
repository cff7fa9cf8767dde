"""Model-dependent forget-job defaults: what a registered pretrained model needs instead of the
engine's demo-model defaults.

The engine's ``MethodConfig`` defaults (learning rate, steps) and its generated retain set were
tuned on the 3.6M-parameter demo model; on SmolLM2 (135M, pretrained) the same settings wreck the
model in ten steps. A registry row (``registry.PretrainedModel.forget_config`` / ``forget_tries``)
carries the measured settings, and the model's general-knowledge set (``probes.py``, split
``retain``, and the row's ``retain_sets``) supplies retain data: the model's own chat answers to general questions, each with
the short answer as its fact, so the gate's retain check reads knowledge, not exact wording.

``forget_tuning(model_dir)`` finds the row from the fetched directory's ``pretrained.json``; any
other directory (the demo model, a user's own) gets None and the engine's defaults, unchanged.
It trains nothing and asks no model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from unlearn_engine.data.records import Example
from unlearn_engine.methods import MethodConfig, get_method
from unlearn_engine.pretrained.fetch import MANIFEST_NAME, load_manifest
from unlearn_engine.pretrained.probes import load_known, through_fact
from unlearn_engine.pretrained.registry import MODELS, PretrainedModel
from unlearn_engine.trainer import SweepConfig


@dataclass(frozen=True)
class ForgetTuning:
    spec: PretrainedModel

    def method_config(self, method: str) -> MethodConfig:
        """The method's config with this model's overrides (fields the method lacks are skipped)."""
        cls = get_method(method).config_cls
        base = cls()
        known = set(base.to_dict())
        return replace(base, **{k: v for k, v in self.spec.forget_config if k in known})

    def sweep_tries(self) -> int | None:
        return self.spec.forget_tries or None

    def sweep_config(self) -> SweepConfig | None:
        """The engine's retry sweep with this model's tries and retain-probe margin; None where
        the row changes neither (the engine's default sweep)."""
        if not self.spec.forget_tries and self.spec.retain_probe_margin is None:
            return None
        return SweepConfig(**({"max_tries": self.spec.forget_tries} if self.spec.forget_tries else {}),
                           retain_probe_margin=self.spec.retain_probe_margin)

    @property
    def reverse_questions(self) -> bool:
        return self.spec.reverse_questions

    @property
    def forward_questions(self) -> bool:
        return self.spec.forward_questions

    @property
    def work_questions(self) -> bool:
        return self.spec.work_questions

    def retain_corpus(self) -> tuple[Example, ...] | None:
        """The model's own replies to the general questions it answers correctly, each cut after
        the sentence that states its fact (``probes.through_fact``); None when no set was built
        for it (``bench/general_knowledge.py``)."""
        rows = load_known(self.spec.name, "retain")
        rows += [r for stem in self.spec.retain_sets for r in load_known(self.spec.name, "retain", stem)]
        return tuple(Example(prompt=k.question, target=through_fact(k.reply, k.answer), fact=k.answer,
                             source="generated") for k in rows) or None


def forget_tuning(model_dir: str | Path) -> ForgetTuning | None:
    """The tuning of a fetched registry model at ``model_dir``; None for any other model, or a
    fetched model whose digest no longer matches its row."""
    if not (Path(model_dir) / MANIFEST_NAME).is_file():
        return None
    try:
        manifest = load_manifest(model_dir)
    except (OSError, ValueError):
        return None
    spec = MODELS.get(str(manifest.get("name", "")))
    if spec is None or manifest.get("sha256") != spec.sha256:
        return None
    return ForgetTuning(spec)
