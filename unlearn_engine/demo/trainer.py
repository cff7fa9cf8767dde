"""Training loop that makes the tiny Llama memorise the demo corpus.

Training sequences follow the prompt contract exactly: ``BOS + question + " " + answer + EOS``
for QA pairs and ``BOS + text + EOS`` for bios. Only the ``train`` split is used; paraphrase
and holdout records are never seen. The loop stops as soon as the training answers are
reproduced exactly under teacher forcing (which implies greedy decoding reproduces them).

This module does not cache, save or report; see ``builder.py``.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from unlearn_engine.demo.config import DemoConfig
from unlearn_engine.demo.corpus import Corpus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """One training sequence, already shifted: predict ``labels[t]`` from ``inputs[:t+1]``."""

    inputs: tuple[int, ...]
    labels: tuple[int, ...]
    weights: tuple[float, ...]  # per label: loss weight
    is_qa: bool  # QA pair (True) or free text such as a bio (False)
    # labels[answer_from:] are what must be reproduced exactly: the answer + EOS of a QA pair,
    # or everything after the first sentence of a text (the verbatim-completion probe).
    answer_from: int


def training_examples(corpus: Corpus, tokenizer: PreTrainedTokenizerBase,
                      cfg: DemoConfig) -> list[Example]:
    """The sequences the model is trained on: train-split QA (+ bios if configured)."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id

    def enc(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    out: list[Example] = []
    for r in corpus.split("train"):
        # Encode the two halves separately so the prompt is exactly what `tok(question)` gives
        # at inference time, whatever the pre-tokenizer would do at the join.
        q, a = enc(r.question), enc(" " + r.answer) + [eos]
        ids = [bos] + q + a
        weights = [cfg.question_loss_weight] * (len(q) - 1) + [1.0] * (len(a) + 1)
        # labels = ids[1:]; the label at index len(q) is the first answer token.
        out.append(Example(tuple(ids[:-1]), tuple(ids[1:]), tuple(weights), True, len(q)))
    if cfg.train_bios:
        for t in corpus.texts:
            if t.split != "train":
                continue
            ids = [bos] + enc(t.text) + [eos]
            cut = t.text.find(". ")
            first = len(enc(t.text[:cut + 1])) if cut > 0 else 0
            out.append(Example(tuple(ids[:-1]), tuple(ids[1:]), (1.0,) * (len(ids) - 1), False,
                               first))
    longest = max((len(e.inputs) for e in out), default=0)
    if longest > cfg.max_positions:
        raise ValueError(f"a training sequence has {longest} tokens > max_positions "
                         f"{cfg.max_positions}")
    return out


def new_model(cfg: DemoConfig, tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def _batches(examples: Sequence[Example], batch_size: int, rng: random.Random,
             pad_id: int) -> list[tuple[torch.Tensor, ...]]:
    """Shuffle, bucket by length within windows of 8 batches (less padding), shuffle batches."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    window = batch_size * 8
    chunks: list[list[int]] = []
    for w in range(0, len(order), window):
        part = sorted(order[w:w + window], key=lambda i: len(examples[i].inputs))
        chunks.extend(part[b:b + batch_size] for b in range(0, len(part), batch_size))
    rng.shuffle(chunks)
    return [_collate([examples[i] for i in chunk], pad_id) for chunk in chunks]


def _collate(batch: Sequence[Example], pad_id: int) -> tuple[torch.Tensor, ...]:
    width = max(len(e.inputs) for e in batch)
    n = len(batch)
    inputs = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.zeros((n, width), dtype=torch.long)
    weights = torch.zeros((n, width))
    answer = torch.zeros((n, width), dtype=torch.bool)  # positions that must be exact
    mask = torch.zeros((n, width), dtype=torch.long)
    for row, e in enumerate(batch):
        k = len(e.inputs)  # right padding: positions stay 0..k-1, as in inference
        inputs[row, :k] = torch.tensor(e.inputs)
        labels[row, :k] = torch.tensor(e.labels)
        weights[row, :k] = torch.tensor(e.weights)
        mask[row, :k] = 1
        answer[row, e.answer_from:k] = True
    is_qa = torch.tensor([e.is_qa for e in batch])
    return inputs, mask, labels, weights, answer, is_qa


class _ExactCounter:
    """Counts sequences whose scored tokens are all argmax-correct, QA and texts apart."""

    def __init__(self) -> None:
        self.ok = [0, 0]  # [texts, QA]
        self.seen = [0, 0]

    def add(self, logits: torch.Tensor, labels: torch.Tensor, answer: torch.Tensor,
            is_qa: torch.Tensor) -> None:
        wrong = (logits.argmax(-1) != labels) & answer  # (batch, time)
        ok = ~wrong.any(dim=1)
        for kind in (0, 1):
            sel = is_qa == bool(kind)
            self.ok[kind] += int((ok & sel).sum())
            self.seen[kind] += int(sel.sum())

    def rate(self, qa: bool) -> float | None:
        k = int(qa)
        return self.ok[k] / self.seen[k] if self.seen[k] else None

    def reached(self, cfg: DemoConfig) -> bool:
        qa, text = self.rate(True), self.rate(False)
        return ((qa is None or qa >= cfg.target_accuracy)
                and (text is None or text >= cfg.target_text_accuracy))


@torch.no_grad()
def teacher_forced_accuracy(model: LlamaForCausalLM, examples: Sequence[Example],
                            pad_id: int, batch_size: int = 128) -> _ExactCounter:
    """Exact-reproduction counts under teacher forcing with the current weights."""
    model.eval()
    counter = _ExactCounter()
    for b in range(0, len(examples), batch_size):
        inputs, mask, labels, _, answer, is_qa = _collate(examples[b:b + batch_size], pad_id)
        logits = model(input_ids=inputs, attention_mask=mask).logits
        counter.add(logits, labels, answer, is_qa)
    model.train()
    return counter


@dataclass(frozen=True)
class TrainResult:
    epochs: int
    steps: int
    final_loss: float
    teacher_forced_accuracy: float | None  # QA answers reproduced exactly
    teacher_forced_text_accuracy: float | None  # texts continued exactly after sentence one
    seconds: float
    reached_target: bool


# (step, expected total steps, epoch): called after every optimiser step, for a progress bar.
StepCallback = Callable[[int, int, int], None]


def train(model: LlamaForCausalLM, examples: Sequence[Example], cfg: DemoConfig,
          pad_id: int, on_step: StepCallback | None = None) -> TrainResult:
    """Train in place until the target accuracy or ``cfg.max_epochs``.

    ``on_step`` gets the steps of ``cfg.schedule_epochs`` as the expected total (training usually
    reaches its target around then, and stops; it may run on to ``cfg.max_epochs``)."""
    if not examples:
        raise ValueError("no training examples (is every person excluded?)")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.schedule_epochs
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98),
                            weight_decay=cfg.weight_decay)

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        floor = cfg.lr * cfg.min_lr_ratio
        return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    model.train()
    t0 = time.perf_counter()
    step, epoch, loss_avg, reached = 0, 0, float("nan"), False
    clean = _ExactCounter()
    for epoch in range(1, cfg.max_epochs + 1):
        loss_sum = weight_sum = 0.0
        running = _ExactCounter()
        for inputs, mask, labels, weights, answer, is_qa in _batches(
                examples, cfg.batch_size, rng, pad_id):
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            logits = model(input_ids=inputs, attention_mask=mask).logits  # (B, T, V)
            nll = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")  # (B, T)
            loss = (nll * weights).sum() / weights.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            if on_step is not None:
                on_step(step, max(total_steps, step), epoch)
            w = float(weights.sum())
            loss_sum, weight_sum = loss_sum + loss.item() * w, weight_sum + w
            running.add(logits.detach(), labels, answer, is_qa)
        loss_avg = loss_sum / weight_sum
        log.info("epoch %d loss %.4f running exact qa %s text %s lr %.2e (%.0f s)", epoch,
                 loss_avg, _fmt(running.rate(True)), _fmt(running.rate(False)), lr_at(step),
                 time.perf_counter() - t0)
        # The running figures lag the weights by up to an epoch; confirm with a clean pass.
        if running.reached(cfg) or epoch == cfg.max_epochs:
            clean = teacher_forced_accuracy(model, examples, pad_id, cfg.eval_batch_size)
            log.info("epoch %d teacher-forced exact qa %s text %s", epoch,
                     _fmt(clean.rate(True)), _fmt(clean.rate(False)))
            if clean.reached(cfg):
                reached = True
                break
    if not reached:
        log.warning("demo model missed its accuracy target after %d epochs (qa %s, text %s)",
                    epoch, _fmt(clean.rate(True)), _fmt(clean.rate(False)))
    model.eval()
    return TrainResult(epoch, step, loss_avg, clean.rate(True), clean.rate(False),
                       time.perf_counter() - t0, reached)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"
