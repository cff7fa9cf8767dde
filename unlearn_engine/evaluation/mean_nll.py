"""Mean token NLL per split: how surprised the model is by the targets (teacher-forced).

The gate's zero-delta check reads it: an adapter whose forget-split NLL is where it was before
the job changed nothing (LoRA can train to a no-op; open-unlearning #178), whatever the other
checks say — on facts the model never knew, every forget check passes with no adapter at all.
"""

from __future__ import annotations

from unlearn_engine.evaluation.base import EvalContext, Metric, register_metric


@register_metric("mean_nll")
class MeanNll(Metric):
    def compute(self, ctx: EvalContext) -> dict[str, float]:
        out = {}
        for split in self.splits:
            if ctx.examples(split):
                scored = ctx.scored(split)
                total = sum(s.logps.numel() for s in scored)
                out[f"{split}.mean_nll"] = -sum(float(s.logps.sum()) for s in scored) / max(1, total)
        return out
