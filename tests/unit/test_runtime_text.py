"""Incremental detokenization: split characters are held, stop sequences never leak."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from server.runtime.text import IncrementalText


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _feed(tokenizer, text: str, stop: tuple[str, ...] = ()) -> tuple[list[str], str, bool]:
    inc = IncrementalText(tokenizer, stop)
    pieces = []
    for token in tokenizer(text, add_special_tokens=False).input_ids:
        pieces.append(inc.add(token))
        if inc.stopped:
            break
    pieces.append(inc.finish())
    return pieces, "".join(pieces), inc.stopped


def test_multibyte_characters_are_never_split(tokenizer) -> None:
    text = "Café naïve 日本語 🙂 done"
    pieces, joined, _ = _feed(tokenizer, text)
    assert joined == text
    assert all("\ufffd" not in p for p in pieces)


def test_stop_sequence_truncates_and_is_never_emitted(tokenizer) -> None:
    pieces, joined, stopped = _feed(tokenizer, "Orlan Vexmoor was born in Dunmarrow.", stop=("born",))
    assert stopped
    assert joined == "Orlan Vexmoor was "


def test_partial_stop_prefix_is_held_then_released(tokenizer) -> None:
    # "Dun" is a prefix of the stop "Dunx": held back, then released once the text diverges.
    _, joined, stopped = _feed(tokenizer, "born in Dunmarrow", stop=("Dunx",))
    assert not stopped
    assert joined == "born in Dunmarrow"


def test_stop_split_across_tokens_at_every_offset(tokenizer) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    for cut in range(1, len(text) - 3):
        stop = text[cut:cut + 4]
        _, joined, stopped = _feed(tokenizer, text, stop=(stop,))
        assert stopped and joined == text[: text.find(stop)], stop


def test_streaming_decoder_equals_decoding_everything(tokenizer) -> None:
    # Any id sequence (special tokens and split characters included) gives the text that
    # decoding all ids at once gives, less an unfinished character at the very end.
    import random

    rng = random.Random(0)
    for _ in range(200):
        ids = [rng.randrange(len(tokenizer)) for _ in range(rng.randint(1, 40))]
        inc = IncrementalText(tokenizer)
        joined = "".join(inc.add(i) for i in ids) + inc.finish()
        assert joined == tokenizer.decode(ids, skip_special_tokens=True).rstrip("\ufffd")
