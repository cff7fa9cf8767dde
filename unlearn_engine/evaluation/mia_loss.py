"""LOSS membership-inference attack: members have lower NLL. AUC of -ℓ, forget vs holdout.

0.5 = the attacker cannot tell forgotten data from never-seen data (the goal); ~1 = still
remembered; well below 0.5 = over-unlearned (forgotten data now *less* likely than unseen).
"""

from __future__ import annotations

from unlearn_engine.evaluation.base import EvalContext, Metric, auc, register_metric


@register_metric("mia_loss")
class MiaLoss(Metric):
    def compute(self, ctx: EvalContext) -> dict[str, float]:
        if not (ctx.examples("forget") and ctx.examples("holdout")):
            return {}
        member = [-s.nll for s in ctx.scored("forget")]
        nonmember = [-s.nll for s in ctx.scored("holdout")]
        return {"mia.loss_auc": auc(member, nonmember)}
