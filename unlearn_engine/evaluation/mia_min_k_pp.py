"""Min-K%++ membership-inference attack (Zhang et al. 2024, arXiv 2404.02936).

Min-K% with each token's log-prob calibrated against the whole next-token distribution:
z_t = (log p(x_t) - mu_t) / sigma_t, mu_t and sigma_t the mean and standard deviation of
log p(.) under p(.) at position t. A member's tokens sit at local maxima of the likelihood, so
their z is high even where the distribution is flat. Score = mean of the lowest k % of z
(k = ``EvalSettings.min_k``); AUC forget vs holdout, read like the other MIA AUCs.
"""

from __future__ import annotations

from unlearn_engine.evaluation.base import EvalContext, Metric, auc, register_metric
from unlearn_engine.evaluation.mia_min_k import min_k_score


@register_metric("mia_min_k_pp")
class MiaMinKPlusPlus(Metric):
    def compute(self, ctx: EvalContext) -> dict[str, float]:
        if not (ctx.examples("forget") and ctx.examples("holdout")):
            return {}
        k = ctx.settings.min_k
        member = [min_k_score(s.zscores, k) for s in ctx.scored("forget")]
        nonmember = [min_k_score(s.zscores, k) for s in ctx.scored("holdout")]
        return {"mia.min_k_pp_auc": auc(member, nonmember)}
