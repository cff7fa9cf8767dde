"""Counterfactual distillation: answer about a forgotten person as about one never seen.

A model that never learned a person treats questions about them like questions about any other
stranger. So for each forget example that names its subject, the reference model (the stack
before this job) reads copies of the text with the subject swapped for never-seen stand-in
names and the true value swapped for a wrong one (``data.counterfactual``). Three terms fit the
adapter to what it saw there:

- **KL**: at every answer token that exists unchanged in the copies (the template, EOS), the
  model's next-token distribution on the *original* text is fitted to the reference's on the
  copies, averaged over stand-ins: KL(p_ref(. | copy) || p_theta(. | x)).
- **Level**: the mean log-prob per token of the subject's name, and of the value, is fitted
  (smooth L1) to the reference's for the stand-in name and the wrong value (per token: a
  scrambled stand-in splits into more pieces than a name the tokenizer knows).
  On the demo model a never-seen name or value is a token whose embedding was never trained,
  and this is what membership inference sees; without it MIA AUC stays at 1.
- **Truth**: the answer's mean token NLL is pushed to at least the mean over its wrong answers
  (scored by the current model) plus ``truth_margin``, with the gradient reaching the tokens
  where the answers differ; where answers go on after their value (``truth_tail``,
  ``truth_lift_wrong``, on by themselves there) also on the shared words after the value,
  which follow that value, and on the wrong answers, made likelier. Without it the true value
  stays marginally likelier than the wrong ones on almost every question, which the gate's
  truth-preference check (and TOFU's truth ratio) catches. This term trains on the example's
  perturbed answers, which the gate also scores, so the truth-preference number is not
  independent of training for this method (paraphrase questions and held-out people are).

plus the usual retain term, and an **anchor** term: on never-seen texts of *other* held-out people
(``ForgetSet.anchors``, never scored by the gate) each answer token's log p is held (smooth L1)
at the reference's. Without it the adapter drifted on strangers: on the full demo model the
word after a never-seen name went from 17.5 to 11 nats in 100 steps while the forgotten
person's rose to the never-seen level, so the gate's yardstick moved and loss MIA overshot to
0.14-0.3 with the forgotten texts sitting exactly where strangers had started
(bench/results/gate_diagnosis.md). Unlike gradient ascent or NPO these terms have a fixed point near
the retrained model's behaviour instead of pushing without end.

Examples that have no subject, or never name it (operator texts without subjects), get an NPO
term instead (``beta``). Reference targets are computed once per attempt, in ``prepare``;
only the ``top_k`` most likely tokens per position are kept (the tail is dropped).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from unlearn_engine.data.counterfactual import (NAME, VALUE, Rewrite, chat_view, counterfactuals,
                                                stand_ins)
from unlearn_engine.data.records import Example
from unlearn_engine.encoding import chat_prefix, pad_id
from unlearn_engine.methods.base import (MethodConfig, TrainContext, UnlearningMethod,
                                         register_method)
from unlearn_engine.methods.losses import (WrongScores, answer_nll, combine, common_prefix,
                                           forward_logits, npo_loss, retain_loss, score_wrong,
                                           token_logprobs, truth_gap)
from unlearn_engine.methods.robust import adapter_off_below, moved_forward


TOKEN_SCOPES = ("after_name", "all")
SAM_DIRECTIONS = ("forget", "relearn")
SAM_SCOPES = ("all", "truth")


@dataclass(frozen=True)
class CounterfactualConfig(MethodConfig):
    stand_ins: int = 3  # never-seen names whose predictions are averaged per example
    top_k: int = 256  # reference tokens kept per position
    level_weight: float = 1.0  # weight of the name / value level term
    # Truth term: nats per token the true answer must end up less likely than the wrong ones
    # (0.3 over-unlearned: MIA Min-K% AUC fell to 0.12 on one demo person; 0 left the truth
    # preferred on 93 % of questions).
    truth_margin: float = 0.1
    truth_weight: float = 3.0  # 1.0 left the truth preferred on 90-100 % of questions
    # For answers that carry several facts (bench/results/gate_diagnosis.md, fourth session).
    # ``truth_tail``: the truth term's gradient also reaches the shared tokens after the
    # differing value (they follow different values; on the long-answer corpus they carried as
    # much of the truth's lead as the value itself). ``truth_lift_wrong``: it also makes the
    # wrong answers likelier. Both on: long-answer corpus 10 of 10 first tries (was 2 of 5).
    # None (the default) = on exactly when the forget set's answers go on after their value
    # (median shared tail >= ``multi_fact_tail`` tokens: 15 on the long-answer corpus, 1 -- the
    # full stop -- on the small and full demo corpora). Not on everywhere: on the small demo
    # model's two-person server forget (tests/integration/test_forget_flow.py) both on
    # over-unlearned on every attempt (Min-K% AUC 0.13-0.30, truth preference 0.00), where
    # they off pass. Tail alone overshot membership on the long corpus (loss MIA 0.31).
    truth_tail: bool | None = None
    truth_lift_wrong: bool | None = None
    multi_fact_tail: int = 3
    # Also fit the whole next-token distribution where each value starts to the reference's
    # there (a stranger's prior over values): this raises the wrong values as it lowers the
    # true one, so the truth term has a fixed point instead of chasing both down.
    value_kl: bool = True
    # Also where each name in the answer starts: whom the model answers as. Without it a stack
    # answered a forgotten person's question as a trained neighbour who shares the asked value
    # ("Tandnando Stutroxmoor's father was a stolbrexist", the subject's value; the model
    # retrained without him answers as a neighbour who does not): creep-back through the choice
    # of person (bench/results/gate_diagnosis.md, "Twelfth session"). Opt-in: over ten anchored
    # sequential forgets it kept retain higher (>= 0.982) but brought more creep-back (37 probe
    # hits against 26): the later jobs reroute earlier subjects, and this term acts in the
    # subject's own job only. Single jobs: 7 of 10 first tries on the full model (10 of 10
    # without), three misses on retain.
    name_kl: bool = False
    # Per-token level: each unchanged answer token's log p fitted (smooth L1) to the reference's
    # log p of that token on the rewrites. The top-k KL cannot see a token the reference puts in
    # its tail: after a never-seen name the demo model gives the next template word ~e^-17, and
    # the forgotten person's ' was' stayed at e^-2, which is what loss MIA kept reading.
    # Weight 1.0 overshot (Min-K% AUC 0.21-0.29, retain 0.90-0.94 on the full demo model); 0.3
    # passed (bench/results/gate_diagnosis.md).
    token_level_weight: float = 0.3
    token_scope: str = "after_name"  # "after_name": only the word after each name; or "all"
    # Anchor: never-seen people's answer tokens held at the reference's log p (0 turns it off)
    anchor_weight: float = 1.0
    anchor_batch_size: int = 8

    def __post_init__(self) -> None:
        if self.token_scope not in TOKEN_SCOPES:
            raise ValueError(f"unknown token_scope {self.token_scope!r}; valid: {list(TOKEN_SCOPES)}")
        if self.sam_scope not in SAM_SCOPES:
            raise ValueError(f"unknown sam_scope {self.sam_scope!r}; valid: {list(SAM_SCOPES)}")
        if self.sam_direction not in SAM_DIRECTIONS:
            raise ValueError(f"unknown sam_direction {self.sam_direction!r}; "
                             f"valid: {list(SAM_DIRECTIONS)}")
        if self.sam_rho < 0:
            raise ValueError(f"sam_rho must be >= 0 (0 turns SAM off), got {self.sam_rho}")
        if isinstance(self.sam_every, bool) or not isinstance(self.sam_every, int) \
                or self.sam_every < 1:
            raise ValueError(f"sam_every must be an integer >= 1 (1: every step), "
                             f"got {self.sam_every!r}")
    beta: float = 0.1  # NPO temperature for examples without a named subject
    # Retain: weight 6 with 16 examples a step (2 and 8 before) shrank the early retain crash
    # every method showed (0.03-0.29 at step 10-20) to 0.23-0.48 and let it recover by step
    # 30-40 on both people measured (bench/results/gate_diagnosis.md). 12 with a retain goal
    # of 97 % for the patience window (below): full demo model, seeds 0/1/2, 30 of 30 first
    # tries with retain >= 97 % of the original in 28 (at 6 without the goal: 29 of 30, 19), job
    # CPU 41-69 s (bench/results/retain_weight/, gate_diagnosis.md sixth session). Weight 12
    # alone passed two seed-0 jobs early at 0.95 and stopped there; the goal lets them recover.
    retain_weight: float = 12.0
    retain_goal: float = 0.97
    retain_batch_size: int = 16
    # The full demo model's passing checkpoints came at step 70-90: 80 left no room.
    max_steps: int = 120
    # Several people at once: 8 forget examples a step per person, up to 32, and 1.5x the steps
    # (``MethodConfig.sized_for``; one person keeps 8 and 120). Four people on the full demo
    # model at 8 a step saw each forget QA ~8 times instead of ~32 for one person; membership
    # never reached the gate's band by step 120 and the gate failed both attempts (MIA AUC
    # 0.70-0.74, retain 0.938). At 32 a step membership was in the band by step 110 (0.52-0.58)
    # and with 180 steps the gate passed first try at step 140, retain 0.984
    # (bench/results/full/relearn/b32s180/, gate_diagnosis.md seventh session).
    batch_per_subject: int = 8
    max_batch_size: int = 32
    multi_subject_steps: float = 1.5
    # Deep forgetting (off at 0): the forget terms also on a second forward with the new
    # adapter switched off in the first L layers (L drawn per step from 1..``deep_layers``),
    # weighted by ``deep_weight``. Relearning half of four forgotten people's facts brought back
    # 0.32 of the other half (retrained: 0.02); a fresh LoRA on layer 0 alone brought back 0.25,
    # on layers 2 or 3 alone 0.00: the adapter hid the facts by changing how the first layer
    # reads the name, and the later layers still mapped the restored name to every value
    # (bench/results/gate_diagnosis.md, seventh session). This term makes the later layers
    # forget with the first ones as the original model had them.
    deep_weight: float = 0.0
    deep_layers: int = 1
    # Sharpness-aware forgetting (0 turns it off; Fan et al. 2025, "Towards LLM Unlearning
    # Resilient to Relearning Attacks: A Sharpness-Aware Minimization Perspective"): the
    # distillation terms' gradient is taken at the adapter moved by ``sam_rho`` (L2 norm over
    # the adapter's weights) in the worst direction, so forgetting holds in a neighbourhood that
    # small fine-tuning steps stay in. ``sam_direction`` "forget": the ascent direction of the
    # distillation terms (SAM proper); "relearn": the descent direction of the true answers'
    # NLL (one normalised relearning step: a first-order relearn-in-the-loop).
    # Off by default (rho 0); ``{"sam_rho": 1}`` turns on the measured setting: rho 1 along a
    # relearning step, on the truth term only (``sam_scope``). Without it, relearning half of
    # four forgotten people's facts (20 steps, bench/unlearn_quality.py) brings back 0.238 of
    # the other half at the multi-person batch (0.317 before it), the retrained model 0.016;
    # with it 0.016 (bench/results/full/relearn/b32s180_truth/, default8/). Why it is not the
    # default: it was for one session, and through a real server on the full demo model
    # (bench/results/forget_active_full_samtruth.md) four single-person jobs took 91-104 s
    # (53 s median without it) and the fifth, Fundvolen Gendurdane on a stack of four, FAILED
    # after 4 attempts, where without it that job passed on its second attempt
    # (forget_active_full_quiet4.md). First tries alone: full seed 0 10 of 10, small seed 0 9 of
    # 10, job CPU +15-80 % (gate_diagnosis.md eighth session). That was a step at 1.78x a plain
    # one; the step is now 1.34x, 1.12x with ``sam_every`` 2, and ``{"sam_rho": 1, "sam_every":
    # 2}`` brought back 0.032 of the four people's facts (gate passed first try, retain 0.953 in
    # the bench's eval; gate_diagnosis.md ninth session). Not yet re-timed through the server.
    sam_rho: float = 0.0
    sam_direction: str = "relearn"
    # Which distillation terms take SAM's gradient: "all", or "truth" (only the truth term, the
    # true value's lead over the wrong ones; the KL and level terms, which set where the
    # forgotten texts' likelihood settles and so what membership inference reads, keep their
    # plain gradient). "all" overshot one-person forgets (MIA AUC 0.12-0.3 after step 50).
    sam_scope: str = "truth"
    # SAM's gradient on every ``sam_every``-th step only (the first, then every k-th; 1: every
    # step), the plain terms on the others: the moved point costs a relearning-step backward, a
    # forward and a backward of the forget batch on each SAM step. 2 measured (above).
    sam_every: int = 1


@dataclass(frozen=True)
class _Distil:
    """The distillation terms on one forward of a forget batch, and what SAM reuses of it."""

    total: torch.Tensor  # KL + level + truth + token level, weighted
    parts: dict[str, float]  # each term's value, for progress
    truth: torch.Tensor  # the truth term, unweighted
    logp: torch.Tensor  # [B, T, V] the forward's log-probs
    labels: torch.Tensor  # [B, T]
    wrong: WrongScores | None  # the truth term's wrong answers, as scored here


@dataclass(frozen=True)
class _Targets:
    positions: torch.Tensor  # [P] output positions of the original sequence fitted by KL
    index: torch.Tensor  # [P, k] token ids of the reference distribution
    probs: torch.Tensor  # [P, k] their reference probabilities
    # kind -> (output positions predicting that span's target tokens, reference mean log p per
    # token, averaged over rewrites)
    levels: dict[str, tuple[torch.Tensor, float]]
    # unchanged tokens: output positions and the reference's log p of that same token on the
    # rewrites (averaged), for the per-token level term
    token_positions: torch.Tensor | None = None
    token_ref: torch.Tensor | None = None


def _encode(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _sequence(tokenizer, ids: list[int], chat: bool = False) -> list[int]:
    # a chat template writes its own opening tokens (as encoding.encode_example does)
    bos = [int(tokenizer.bos_token_id)] if tokenizer.bos_token_id is not None and not chat else []
    eos = [int(tokenizer.eos_token_id)] if tokenizer.eos_token_id is not None else []
    return bos + ids + eos


@dataclass(frozen=True)
class Alignment:
    """One rewrite of one example, tokenised. Output position t predicts token t + 1."""

    cf_ids: list[int]  # the rewrite's input ids (BOS + tokens + EOS)
    pairs: list[tuple[int, int]]  # (original, rewrite) output positions of unchanged tokens
    spans: dict[str, tuple[list[int], list[int]]]  # kind -> (original, rewrite) positions
    # (original, rewrite) output positions predicting the first token of each swapped value:
    # the prefixes differ only in the subject's name, so the distributions are comparable
    value_starts: list[tuple[int, int]] = field(default_factory=list)
    # ... and the first token of each swapped name in the answer: whom the answer is about
    name_starts: list[tuple[int, int]] = field(default_factory=list)


def align(tokenizer, ex: Example, rw: Rewrite,
          encoded: tuple[list[int], list[tuple[int, int]]] | None = None) -> Alignment:
    """Pair each target token of ``ex`` that exists unchanged in the rewrite (and EOS), and
    collect, per swapped kind, the target positions on both sides. ``encoded``: ``ex.text``
    already tokenised (ids, offsets), to tokenise it once for all of its rewrites."""
    rendered = chat_prefix(tokenizer, ex.prompt)
    view = chat_view(ex, rw, rendered) if rendered is not None else None
    if view is not None:  # a chat model trains on the templated turn (encode_example)
        text, rw, boundary, cf_boundary = view
    elif rendered is not None:  # cannot be placed in the template: nothing to fit
        return Alignment([], [], {})
    else:
        text, boundary = ex.text, len(ex.prompt) if ex.prompt else 0
        cf_boundary = rw.new_offset(boundary) if ex.prompt else 0
    chat = view is not None
    ids, offs = encoded or _encode(tokenizer, text)
    cf_ids, cf_offs = _encode(tokenizer, rw.text)
    nb = 1 if tokenizer.bos_token_id is not None and not chat else 0
    where = {(s, e, t): k for k, ((s, e), t) in enumerate(zip(cf_offs, cf_ids))}
    pairs: list[tuple[int, int]] = []
    spans: dict[str, tuple[list[int], list[int]]] = {}
    starts: tuple[dict[int, int], dict[int, int]] = ({}, {})  # span index -> first position
    for k, ((s, e), t) in enumerate(zip(offs, ids)):
        if s < boundary or e <= s:
            continue
        kind = rw.kind_at(s, e)
        if kind is not None:
            spans.setdefault(kind, ([], []))[0].append(nb + k - 1)
            starts[0].setdefault(rw.span_at(s, e), nb + k - 1)
            continue
        s2, e2 = rw.new_offset(s), rw.new_offset(e - 1)
        j = where.get((s2, e2 + 1, t)) if s2 is not None and e2 is not None else None
        if j is not None:
            pairs.append((nb + k - 1, nb + j - 1))
    for j, (s, e) in enumerate(cf_offs):
        kind = rw.kind_at(s, e, new=True) if s >= (cf_boundary or 0) and e > s else None
        if kind is not None:
            spans.setdefault(kind, ([], []))[1].append(nb + j - 1)
            starts[1].setdefault(rw.span_at(s, e, new=True), nb + j - 1)
    if tokenizer.eos_token_id is not None:
        pairs.append((nb + len(ids) - 1, nb + len(cf_ids) - 1))
    keep = {k: v for k, v in spans.items() if v[0] and v[1]}
    def first_tokens(kind: str) -> list[tuple[int, int]]:
        return [(starts[0][i], starts[1][i]) for i in sorted(starts[0])
                if i in starts[1] and rw.spans[i][4] == kind
                and starts[0][i] >= 0 and starts[1][i] >= 0]

    return Alignment(_sequence(tokenizer, cf_ids, chat), [(p, q) for p, q in pairs if p >= 0 and q >= 0],
                     keep, first_tokens(VALUE), first_tokens(NAME))


@torch.no_grad()
def reference_targets(ctx: TrainContext, ex: Example, rewrites: Sequence[Rewrite],
                      top_k: int, value_kl: bool = False,
                      token_scope: str = "after_name", name_kl: bool = False) -> _Targets | None:
    """The reference model's next-token distributions on ``rewrites`` at the aligned target
    positions, and its mean log-prob per token of each swapped span, both averaged over
    rewrites. None when nothing aligns, or when the example is longer than ``max_length``
    (its training batch would be truncated)."""
    tok, limit = ctx.tokenizer, ctx.config.max_length
    rendered = chat_prefix(tok, ex.prompt)
    encoded = _encode(tok, ex.text if rendered is None else rendered + ex.target)
    if len(encoded[0]) + 2 > limit:
        return None
    rows = [a for a in (align(tok, ex, rw, None if rendered is not None else encoded)
                        for rw in rewrites) if 0 < len(a.cf_ids) <= limit]
    if not rows:
        return None
    width = max(len(a.cf_ids) for a in rows)
    input_ids = torch.full((len(rows), width), pad_id(tok), dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for i, a in enumerate(rows):
        input_ids[i, :len(a.cf_ids)] = torch.tensor(a.cf_ids)
        mask[i, :len(a.cf_ids)] = 1
    with ctx.reference():
        logits = ctx.model(input_ids=input_ids.to(ctx.device),
                           attention_mask=mask.to(ctx.device)).logits.float()
    logp = torch.log_softmax(logits, -1)
    sums: dict[int, torch.Tensor] = {}
    counts: dict[int, int] = {}
    token_lp: dict[int, float] = {}  # summed over rewrites; counts as for sums
    level_vals: dict[str, list[float]] = {}
    level_pos: dict[str, list[int]] = {}
    for i, a in enumerate(rows):
        for p, q in a.pairs + (a.value_starts if value_kl else []) + (a.name_starts if name_kl else []):
            prob = logp[i, q].exp()
            sums[p] = sums[p] + prob if p in sums else prob
            counts[p] = counts.get(p, 0) + 1
        after_name = {x + 1 for x in a.spans.get(NAME, ((), ()))[0]}
        for p, q in a.pairs:
            if token_scope == "all" or p in after_name:
                token_lp[p] = token_lp.get(p, 0.0) + float(logp[i, q, a.cf_ids[q + 1]])
        nxt = torch.tensor(a.cf_ids[1:] + [0], device=logp.device)
        for kind, (orig_pos, cf_pos) in a.spans.items():
            q = torch.tensor(cf_pos, device=logp.device)
            # per token: a stand-in's name or a wrong value may tokenise into more pieces
            level_vals.setdefault(kind, []).append(float(logp[i, q, nxt[q]].mean()))
            level_pos.setdefault(kind, orig_pos)
    levels = {k: (torch.tensor(level_pos[k], device=ctx.device), sum(v) / len(v))
              for k, v in level_vals.items()}
    if not sums and not levels:
        return None
    positions = sorted(sums)
    mean = torch.stack([sums[p] / counts[p] for p in positions]) if positions else \
        torch.zeros((0, logits.shape[-1]), device=logits.device)
    top = mean.topk(min(top_k, mean.shape[-1]), dim=-1)
    tok_pos = sorted(token_lp)
    return _Targets(torch.tensor(positions, dtype=torch.long, device=ctx.device), top.indices,
                    top.values, levels,
                    torch.tensor(tok_pos, dtype=torch.long, device=ctx.device),
                    torch.tensor([token_lp[p] / counts[p] for p in tok_pos], device=ctx.device))


@torch.no_grad()
def _anchor_targets(ctx: TrainContext, batch_size: int = 32) -> list[tuple[Example, torch.Tensor]]:
    """Each anchor with the reference's log p of its answer tokens (skipping any that would be
    truncated at ``max_length``)."""
    out: list[tuple[Example, torch.Tensor]] = []
    anchors = list(ctx.anchors)
    for start in range(0, len(anchors), batch_size):
        chunk = anchors[start:start + batch_size]
        batch = ctx.batch(chunk)
        with ctx.reference():
            picked, mask = token_logprobs(forward_logits(ctx.model, batch), batch.labels)
        for i, ex in enumerate(chunk):
            if mask[i].any() and int(batch.attention_mask[i].sum()) < ctx.config.max_length:
                out.append((ex, picked[i][mask[i]].detach()))
    return out


def shared_tail(tokenizer, examples: Sequence[Example]) -> float:
    """Median, over examples with wrong answers, of how many tokens the true answer shares
    with all of them after the last differing one (0 when none has wrong answers)."""
    def ids(text: str) -> torch.Tensor:
        return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"]).flip(0)

    tails = [min(common_prefix(ids(ex.target), ids(w)) for w in ex.perturbed)
             for ex in examples if ex.perturbed]
    return float(statistics.median(tails)) if tails else 0.0


@register_method("counterfactual")
class Counterfactual(UnlearningMethod):
    config_cls = CounterfactualConfig

    def __init__(self, config: MethodConfig | None = None) -> None:
        super().__init__(config)
        self.targets: dict[tuple[str, str], _Targets] = {}
        self.anchors: list[tuple[Example, torch.Tensor]] = []  # (example, reference label log p)
        self.anchor_gen = torch.Generator()
        self.deep_gen = torch.Generator()
        self.steps = 0

    def prepare(self, ctx: TrainContext, forget: Sequence[Example]) -> None:
        self.targets = {}
        self.steps = 0  # ``loss`` calls so far this attempt (``sam_every``)
        self.multi_fact = shared_tail(ctx.tokenizer, forget) >= self.config.multi_fact_tail
        self.anchors = _anchor_targets(ctx) if self.config.anchor_weight else []
        self.anchor_gen = torch.Generator().manual_seed(ctx.seed + 7)
        self.deep_gen = torch.Generator().manual_seed(ctx.seed + 11)
        for ex in forget:
            # stand-ins from every held-out person, anchors too: only the reference reads them
            names = stand_ins(ex.subject, ctx.anchors + ctx.references, self.config.stand_ins,
                              ctx.seed) \
                if ex.subject else []
            rewrites = counterfactuals(ex, names, ctx.seed)
            t = reference_targets(ctx, ex, rewrites, self.config.top_k, self.config.value_kl,
                                  self.config.token_scope, self.config.name_kl) if rewrites else None
            if t is not None:
                self.targets[(ex.prompt, ex.target)] = t

    def loss(self, ctx: TrainContext, forget: Sequence[Example],
             retain: Sequence[Example] | None) -> tuple[torch.Tensor, dict[str, float]]:
        distil = [ex for ex in forget if (ex.prompt, ex.target) in self.targets]
        plain = [ex for ex in forget if (ex.prompt, ex.target) not in self.targets]
        terms, parts = [], {}
        sam = self.config.sam_rho > 0 and self.steps % self.config.sam_every == 0
        self.steps += 1
        if distil:
            term, more = self._sam_term(ctx, distil) if sam else self._distil_term(ctx, distil)
            terms.append(term * len(distil))
            parts.update(more)
        if plain:
            npo, _ = npo_loss(ctx, ctx.batch(plain), self.config.beta)
            terms.append(npo * len(plain))
            parts["npo"] = float(npo.detach())
        forget_loss = torch.stack(terms).sum() / len(forget)
        total, more = combine(forget_loss, retain_loss(ctx, retain), self.config)
        if self.anchors:
            anchor = self._anchor_term(ctx)
            total = total + self.config.anchor_weight * anchor
            parts["anchor"] = float(anchor.detach())
        if self.config.deep_weight and distil:
            deep = self._deep_term(ctx, distil)
            total = total + self.config.deep_weight * deep
            parts["deep"] = float(deep.detach())
        more["loss"] = float(total.detach())
        return total, {**parts, **more}

    def _sam_term(self, ctx: TrainContext, examples: Sequence[Example]) -> tuple[
            torch.Tensor, dict[str, float]]:
        """The distillation terms with SAM's gradient (``robust.moved_forward``) on all of them
        or on the truth term alone (``sam_scope``), along the ascent direction of that part or
        one relearning step on the true answers (``sam_direction``). The returned loss has the
        plain terms' value; its gradient is the plain one for the terms SAM leaves alone plus
        the moved point's for the rest, in the caller's one ``backward()``."""
        cfg = self.config
        named = {n: p for n, p in ctx.model.named_parameters() if p.requires_grad}
        only_truth = cfg.sam_scope == "truth"
        here = self._distil(ctx, examples)
        sharp = cfg.truth_weight * here.truth if only_truth else here.total
        if cfg.sam_direction == "forget":
            grads = torch.autograd.grad(sharp, list(named.values()), allow_unused=True,
                                        retain_graph=True)
        else:  # the way one relearning step on these answers would move the adapter; their
            # NLL read off the same forward (the same batch: same value and gradient as ``nll``)
            grads = tuple(None if g is None else -g for g in torch.autograd.grad(
                answer_nll(here.logp, here.labels), list(named.values()), allow_unused=True,
                retain_graph=True))
        forward = moved_forward(ctx.model, named, grads, cfg.sam_rho)
        if forward is None:  # no direction to move along: the plain terms
            return here.total, here.parts
        # Wrong answers that take no gradient keep their unmoved scores: one forward fewer,
        # and the moved truth is measured against the yardstick the gate reads.
        lift = self.multi_fact if cfg.truth_lift_wrong is None else cfg.truth_lift_wrong
        moved = self._distil(ctx, examples, forward, None if lift else here.wrong)
        at_moved = cfg.truth_weight * moved.truth if only_truth else moved.total
        # truth scope: the other terms keep their plain gradient, from the unmoved forward
        kept = here.total - sharp if only_truth else here.total.new_zeros(())
        loss = here.total.detach() + (kept - kept.detach()) + (at_moved - at_moved.detach())
        return loss, {**here.parts, "sam": float(at_moved.detach())}

    def _deep_term(self, ctx: TrainContext, examples: Sequence[Example]) -> torch.Tensor:
        """The distillation terms with the new adapter off below a layer drawn from
        1..``deep_layers`` (see ``CounterfactualConfig.deep_weight``)."""
        layer = 1 + int(torch.randint(max(1, self.config.deep_layers), (1,),
                                      generator=self.deep_gen))
        with adapter_off_below(ctx.model, layer):
            term, _ = self._distil_term(ctx, examples)
        return term

    def _anchor_term(self, ctx: TrainContext) -> torch.Tensor:
        """Mean smooth L1 between the model's and the reference's log p of each answer token of
        a seeded sample of anchors."""
        n = min(self.config.anchor_batch_size, len(self.anchors))
        pick = torch.randperm(len(self.anchors), generator=self.anchor_gen)[:n].tolist()
        chosen = [self.anchors[i] for i in pick]
        batch = ctx.batch([ex for ex, _ in chosen])
        picked, mask = token_logprobs(forward_logits(ctx.model, batch), batch.labels)
        diffs = [F.smooth_l1_loss(picked[i][mask[i]], ref, reduction="none")
                 for i, (_, ref) in enumerate(chosen)]
        return torch.cat(diffs).mean()

    def _distil_term(self, ctx: TrainContext, examples: Sequence[Example]) -> tuple[
            torch.Tensor, dict[str, float]]:
        """KL + level_weight * level + truth_weight * truth, and each part for progress."""
        d = self._distil(ctx, examples)
        return d.total, d.parts

    def _distil(self, ctx: TrainContext, examples: Sequence[Example], model=None,
                wrong: WrongScores | None = None) -> _Distil:
        """The distillation terms on one forward of ``examples`` by ``model`` (default
        ``ctx.model``; SAM passes a moved forward), the truth term's wrong answers scored by
        it too unless given (``wrong``)."""
        cfg = self.config
        model = model or ctx.model
        batch = ctx.batch(examples)
        logp = torch.log_softmax(forward_logits(model, batch).float(), -1)
        kls, levels, tokens = [], [], []
        for i, ex in enumerate(examples):
            t = self.targets[(ex.prompt, ex.target)]
            if len(t.positions):
                cur = logp[i, t.positions].gather(-1, t.index)  # [P, k]
                kls.append((t.probs * (t.probs.clamp_min(1e-12).log() - cur)).sum(-1))
            for pos, ref in t.levels.values():
                lp = logp[i, pos].gather(-1, batch.labels[i, pos + 1].unsqueeze(-1)).sum()
                levels.append(F.smooth_l1_loss(lp / len(pos), lp.new_tensor(ref)))
            if cfg.token_level_weight and t.token_positions is not None and len(t.token_positions):
                pos = t.token_positions
                lp = logp[i, pos].gather(-1, batch.labels[i, pos + 1].unsqueeze(-1)).squeeze(-1)
                tokens.append(F.smooth_l1_loss(lp, t.token_ref, reduction="none"))
        zero = logp.sum() * 0.0
        kl = torch.cat(kls).mean() if kls else zero
        level = torch.stack(levels).mean() if levels else zero
        lift = self.multi_fact if cfg.truth_lift_wrong is None else cfg.truth_lift_wrong
        if wrong is None:
            wrong = score_wrong(ctx, examples, lift, model)
        truth = truth_gap(ctx, examples, logp, batch.labels, cfg.truth_margin,
                          self.multi_fact if cfg.truth_tail is None else cfg.truth_tail,
                          lift, wrong)
        truth = zero if truth is None else truth
        token = torch.cat(tokens).mean() if tokens else zero
        total = kl + cfg.level_weight * level + cfg.truth_weight * truth + cfg.token_level_weight * token
        parts = {"kl": float(kl.detach()), "level": float(level.detach()),
                 "truth": float(truth.detach()), "token_level": float(token.detach())}
        return _Distil(total, parts, truth, logp, batch.labels, wrong)
