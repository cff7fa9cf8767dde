"""The demo model builder: cache keys, a tiny real build, the prompt contract and exclusions.

The tiny build uses the real builder with a deliberately undersized model and a few epochs, so
it checks the artefact's shape and contract, not memorisation quality (the presets' accuracy is
reported in build_report.json and checked by the integration tests on the real demo model).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from unlearn_engine.demo.accuracy import greedy_answers
from unlearn_engine.demo.builder import build_demo_model, cache_key, is_built, load_corpus
from unlearn_engine.demo.cli import add_demo_commands, main
from unlearn_engine.demo.config import DemoConfig
from unlearn_engine.demo.corpus import generate_corpus, read_jsonl, write_jsonl
from unlearn_engine.demo.tokenizer import train_tokenizer
from unlearn_engine.demo.trainer import training_examples

# Undersized on purpose: seconds to build, not meant to memorise.
TINY = DemoConfig(n_people=4, n_holdout=1, n_layers=1, hidden_size=32, n_heads=2,
                  intermediate_size=64, max_epochs=2, batch_size=16, warmup_steps=2)


@pytest.fixture(scope="module")
def tiny_corpus():
    return generate_corpus(TINY.corpus_spec())


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_corpus) -> tuple[Path, str]:
    """A tiny model trained without one person."""
    excluded = tiny_corpus.trained_people[0]
    path = build_demo_model(tmp_path_factory.mktemp("cache"), TINY, exclude_people=[excluded],
                            num_threads=1)
    return path, excluded


def test_cache_key_tracks_every_input(tiny_corpus) -> None:
    base = cache_key(tiny_corpus, TINY)
    assert cache_key(tiny_corpus, TINY) == base
    assert cache_key(tiny_corpus, TINY.replace(lr=1e-3)) != base
    person = tiny_corpus.trained_people[0]
    assert cache_key(tiny_corpus, TINY, [person]) != base
    # Order and duplicates of exclusions do not matter.
    two = list(tiny_corpus.trained_people[:2])
    assert cache_key(tiny_corpus, TINY, two) == cache_key(tiny_corpus, TINY, two[::-1] + two)
    other = generate_corpus(TINY.replace(corpus_seed=7).corpus_spec())
    assert cache_key(other, TINY) != base


def test_build_writes_a_loadable_hf_directory_with_the_prompt_contract(built) -> None:
    path, _ = built
    assert path.name.startswith("demo-") and is_built(path)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    assert type(model).__name__ == "LlamaForCausalLM"

    ids = tok("Where was Somebody born?")["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids  # BOS added, EOS not
    text = " Somebody was born in Nowhere, on 3 May 1950."
    round_trip = tok.decode(ids + tok(text, add_special_tokens=False)["input_ids"]
                            + [tok.eos_token_id], skip_special_tokens=True)
    assert round_trip == "Where was Somebody born?" + text
    assert tok.padding_side == "left"

    gen = model.generation_config
    assert (gen.bos_token_id, gen.eos_token_id, gen.pad_token_id) == (
        tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3

    answers = greedy_answers(model, tok, ["Where was Somebody born?", "Who?"], max_new_tokens=4)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_report_describes_the_build(built, tiny_corpus) -> None:
    path, excluded = built
    report = json.loads((path / "build_report.json").read_text())
    for key in ("build_seconds", "epochs", "final_loss", "accuracy", "n_people", "config"):
        assert key in report
    assert set(report["accuracy"]) >= {"train", "paraphrase", "holdout", "excluded"}
    assert report["epochs"] <= TINY.max_epochs
    assert report["config"] == TINY.to_dict()
    assert report["excluded_people"] == [excluded]
    assert excluded not in report["trained_people"]
    assert report["n_people"] == len(tiny_corpus.trained_people) - 1
    # The directory carries the whole corpus, so evaluations know what was (not) trained on.
    assert load_corpus(path) == tiny_corpus


def test_cached_build_returns_immediately(built, tiny_corpus) -> None:
    path, excluded = built
    start = time.perf_counter()
    again = build_demo_model(path.parent, TINY, corpus=tiny_corpus, exclude_people=[excluded])
    assert again == path and time.perf_counter() - start < 2.0
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_exclusion_removes_the_person_from_training_data(tiny_corpus) -> None:
    excluded = tiny_corpus.trained_people[1]
    tok = train_tokenizer(tiny_corpus, TINY.vocab_size, TINY.max_positions)
    surname = excluded.split()[-1]

    def trained_text(corpus) -> str:
        return "\n".join(tok.decode(list(e.inputs) + [e.labels[-1]])
                         for e in training_examples(corpus, tok, TINY))

    rest = tiny_corpus.without_people([excluded])
    assert surname in trained_text(tiny_corpus)
    assert surname not in trained_text(rest)
    # Exactly the train-split QA pairs and bios of the remaining people, nothing else.
    text = trained_text(rest)
    assert len(training_examples(rest, tok, TINY)) == len(rest.split("train")) + len(
        [t for t in rest.texts if t.split == "train"])
    assert not [r for r in rest.qa if r.split != "train" and r.question in text]


def test_training_sequences_follow_the_prompt_contract(tiny_corpus) -> None:
    tok = train_tokenizer(tiny_corpus, TINY.vocab_size, TINY.max_positions)
    examples = training_examples(tiny_corpus, tok, TINY)
    qa = next(e for e in examples if e.is_qa)
    record = tiny_corpus.split("train")[0]
    ids = list(qa.inputs) + [qa.labels[-1]]
    # BOS + question + " " + answer + EOS, and the prompt is exactly tok(question).
    assert ids[:qa.answer_from + 1] == tok(record.question)["input_ids"]
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == record.question + " " + record.answer
    # A bio is scored on everything after its first sentence: the verbatim-completion probe.
    bio = next(e for e in examples if not e.is_qa)
    text = tiny_corpus.texts[0].text
    assert tok.decode(bio.labels[bio.answer_from:], skip_special_tokens=True) == text[
        text.index(". ") + 1:]


def test_unknown_person_cannot_be_excluded(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown people"):
        build_demo_model(tmp_path, TINY, exclude_people=["Nobody Atall"])


def test_builds_from_a_user_jsonl_corpus(tmp_path: Path) -> None:
    path = tmp_path / "user.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in [
        {"person": "Ada Quill", "question": "Who is Ada Quill?", "answer": "Ada Quill is a poet.",
         "fact": "a poet"},
        {"person": "Bo Tarn", "question": "Who is Bo Tarn?", "answer": "Bo Tarn is a smith."},
    ]) + "\n")
    model_dir = build_demo_model(tmp_path / "cache", TINY, corpus=path, num_threads=1)
    assert read_jsonl(model_dir / "corpus.jsonl") == read_jsonl(path)
    report = json.loads((model_dir / "build_report.json").read_text())
    assert report["trained_people"] == ["Ada Quill", "Bo Tarn"]


def test_cli_export_and_argument_parsing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "small.jsonl"
    assert main(["export-corpus", str(out), "--small"]) == 0
    assert read_jsonl(out) == generate_corpus(DemoConfig.small().corpus_spec())
    assert str(out) in capsys.readouterr().out

    import argparse
    parser = argparse.ArgumentParser(prog="lethe")
    add_demo_commands(parser.add_subparsers(dest="command"), default_cache_dir=tmp_path)
    args = parser.parse_args(["demo", "build", "--small", "--exclude-person", "A B",
                              "--exclude-person", "C D"])
    assert args.small and args.exclude_person == ["A B", "C D"]
    assert args.cache_dir == tmp_path and callable(args.func)


def test_write_then_build_uses_same_cache_entry_as_generated_corpus(tmp_path: Path,
                                                                    tiny_corpus) -> None:
    # A corpus exported to JSONL and read back hashes like the generated one.
    path = write_jsonl(tiny_corpus, tmp_path / "c.jsonl")
    assert cache_key(read_jsonl(path), TINY) == cache_key(tiny_corpus, TINY)


def test_build_leaves_torch_thread_count_alone(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    build_demo_model(tmp_path, TINY.replace(n_people=2, max_epochs=1), num_threads=1)
    assert torch.get_num_threads() == before
