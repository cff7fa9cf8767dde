"""A toy model for fast tests: a word-level tokenizer and a tiny Llama memorising a tiny corpus.

Built in seconds on one CPU thread from the demo corpus generator (a few people), so unit tests
exercise real training, real PEFT and real metrics without the cached demo model. It is not a
substitute for the demo model in integration tests or benchmarks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from unlearn_engine.data.records import Example
from unlearn_engine.demo.corpus import CorpusSpec, generate_corpus
from unlearn_engine.encoding import collate

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


@dataclass(frozen=True)
class Toy:
    model: LlamaForCausalLM
    tokenizer: PreTrainedTokenizerFast
    people: tuple[str, ...]
    train: tuple[Example, ...]
    paraphrase: tuple[Example, ...]
    holdout: tuple[Example, ...]
    texts: tuple[Example, ...]

    def of(self, split: str, people: set[str]) -> tuple[Example, ...]:
        return tuple(e for e in getattr(self, split) if e.subject in people)


def toy_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    pre = pre_tokenizers.Whitespace()
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for text in texts:
        for word, _ in pre.pre_tokenize_str(text):
            vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


def tiny_llama(vocab_size: int, hidden: int = 64, layers: int = 2, seed: int = 0
               ) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=128, bos_token_id=1, eos_token_id=2,
                      pad_token_id=0, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


@functools.lru_cache(maxsize=2)
def build_toy(n_people: int = 6, steps: int = 250, seed: int = 0) -> Toy:
    """Train a tiny Llama on the train-split QA and bios of ``n_people`` demo people."""
    corpus = generate_corpus(CorpusSpec(n_people=n_people, n_holdout=2, seed=seed))
    qa = [Example.from_record(r) for r in corpus.qa]
    texts = tuple(Example.from_record(t) for t in corpus.texts if t.split == "train")
    train = tuple(e for e in qa if e.split == "train")
    tok = toy_tokenizer([e.text for e in qa] + [t.text for t in corpus.texts]
                        + [p for e in qa for p in e.perturbed] + ["I don't know ."])
    model = tiny_llama(len(tok), seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    data = list(train) + list(texts)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(data), (32,), generator=gen).tolist()
        batch = collate(tok, [data[i] for i in idx])
        loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                     labels=batch.labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return Toy(model, tok, corpus.trained_people, train,
               tuple(e for e in qa if e.split == "paraphrase"),
               tuple(e for e in qa if e.split == "holdout"), texts)


def save_toy(toy: Toy, directory) -> None:
    """Write the toy model and tokenizer as a local HF model directory."""
    toy.model.save_pretrained(str(directory))
    toy.tokenizer.save_pretrained(str(directory))
