"""Byte-level BPE tokenizer for the demo model, trained on the corpus text.

The saved tokenizer encodes a raw string as ``BOS + tokens`` (a TemplateProcessing
post-processor), never adds EOS, pads on the left and decodes with no space clean-up, so that
``decode(encode(q) + generated, skip_special_tokens=True)`` round-trips text exactly.

The tokenizer is trained on *every* record of the corpus (all people, all splits, perturbed
answers too), including people excluded from model training. That way a model retrained without
some people shares its vocabulary with the original model, so token-level metrics (loss, MIA,
truth ratio) compare like with like; an excluded name simply maps to a token whose embedding was
never trained. This module does not build models.
"""

from __future__ import annotations

from typing import Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerBase, TokenizersBackend

from unlearn_engine.demo.corpus import Corpus

PAD, BOS, EOS = "<pad>", "<s>", "</s>"


def _corpus_text(corpus: Corpus) -> Iterator[str]:
    # Answers are preceded by a space in training sequences, so train BPE on that form too.
    for r in corpus.qa:
        yield r.question
        yield " " + r.answer
        for p in r.perturbed:
            yield " " + p
    for t in corpus.texts:
        yield t.text


def train_tokenizer(corpus: Corpus, vocab_size: int, max_length: int) -> PreTrainedTokenizerBase:
    """Train a byte-level BPE on ``corpus`` and wrap it as a transformers fast tokenizer."""
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],  # ids 0, 1, 2
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any byte stays encodable
        show_progress=False,
    )
    tk.train_from_iterator(_corpus_text(corpus), trainer)
    bos_id = tk.token_to_id(BOS)
    tk.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                      special_tokens=[(BOS, bos_id)]),
    ])
    return TokenizersBackend(
        tokenizer_object=tk, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        padding_side="left",  # decoder-only batched generation needs prompts right-aligned
        clean_up_tokenization_spaces=False,  # exact round trip of text, spaces included
        model_max_length=max_length,
    )
