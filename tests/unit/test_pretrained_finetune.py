"""Fine-tuning a base on QA, with and without some people (the TOFU protocol), cached by what
determines it: a tiny Llama stands in for the pretrained base (SmolLM2 takes minutes a step
here); the code path is the one ``bench/unlearn_quality.py --model`` runs."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from argparse import Namespace
from pathlib import Path

import pytest
import torch

from unlearn_engine.data.corpus import load_corpus, save_examples
from unlearn_engine.data.records import Example
from unlearn_engine.demo.corpus import CorpusSpec, generate_corpus
from unlearn_engine.evaluation import evaluate
from unlearn_engine.pretrained import finetune
from unlearn_engine.pretrained.finetune import FinetuneRecipe, finetuned_model, qa_subset
from unlearn_engine.trainer import load_base
from tests.support.toy_model import tiny_llama, toy_tokenizer

RECIPE = FinetuneRecipe(lr=3e-3, warmup_steps=5, schedule_epochs=60, max_epochs=60,
                        batch_size=8, weight_decay=0.0, target_accuracy=0.9, max_length=96)


@pytest.fixture(scope="module")
def corpus() -> tuple[Example, ...]:
    spec = CorpusSpec(n_people=4, n_holdout=1, seed=0)
    return tuple(Example.from_record(r) for r in generate_corpus(spec).qa)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, corpus) -> Path:
    """An untrained tiny Llama saved as a local HF directory: the 'pretrained' base."""
    texts = [e.text for e in corpus] + [p for e in corpus for p in e.perturbed]
    tok = toy_tokenizer(texts)
    out = tmp_path_factory.mktemp("base")
    tiny_llama(len(tok)).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def _subset(corpus) -> tuple[Example, ...]:
    return qa_subset(corpus, n_people=3, phrasings=1, seed=0)


def test_the_subset_keeps_n_people_one_phrasing_per_fact_and_every_holdout(corpus) -> None:
    sub = _subset(corpus)
    train = [e for e in sub if e.split == "train"]
    people = {e.subject for e in train}
    assert len(people) == 3
    assert len(train) == len({(e.subject, e.target) for e in train})  # one question per fact
    assert {e.subject for e in sub if e.split == "paraphrase"} == people
    assert [e for e in sub if e.split == "holdout"] == [e for e in corpus if e.split == "holdout"]


def test_fine_tuning_teaches_the_answers_and_a_rerun_is_a_cache_hit(base_dir, corpus, tmp_path,
                                                                     monkeypatch) -> None:
    torch.set_num_threads(1)
    train = [e for e in _subset(corpus) if e.split == "train"]
    out = finetuned_model(base_dir, train, RECIPE, tmp_path)
    report = finetune.load_report(out)
    assert report["reached_target"] and report["teacher_forced_accuracy"] >= 0.9
    assert report["base_digest"] == finetune.base_digest(base_dir)
    model, tok = load_base(out)
    acc = evaluate(model, tok, [], train, metrics=["fact_span_accuracy"])
    assert acc["retain.fact_span_accuracy"] >= 0.9  # greedy answers carry the facts
    assert load_corpus(out / finetune.TRAIN_NAME) == tuple(train)

    def no_training(*_a, **_k):
        raise AssertionError("a cached fine-tune was trained again")

    monkeypatch.setattr(finetune, "train", no_training)
    assert finetuned_model(base_dir, train, RECIPE, tmp_path) == out
    with pytest.raises(AssertionError):  # another recipe is another model
        finetuned_model(base_dir, train, RECIPE.__class__(**{**RECIPE.__dict__, "lr": 1e-3}),
                        tmp_path)


def test_the_gold_standard_never_sees_the_forget_people(base_dir, corpus, tmp_path) -> None:
    torch.set_num_threads(1)
    train = [e for e in _subset(corpus) if e.split == "train"]
    forget = sorted({e.subject for e in train})[:1]
    out = finetuned_model(base_dir, train, RECIPE, tmp_path, exclude_people=forget)
    report = finetune.load_report(out)
    assert report["excluded_people"] == forget
    assert forget[0] not in report["trained_people"]
    assert all(e.subject not in forget for e in load_corpus(out / finetune.TRAIN_NAME))
    digest = report["base_digest"]  # the exclusions are part of the key
    assert out.name.endswith(finetune.cache_key(digest, train, RECIPE, forget))
    assert finetune.cache_key(digest, train, RECIPE) != finetune.cache_key(digest, train, RECIPE,
                                                                           forget)
    with pytest.raises(ValueError, match="absent"):
        finetuned_model(base_dir, train, RECIPE, tmp_path, exclude_people=["Nobody Anywhere"])


def _bench():
    path = Path(__file__).resolve().parents[2] / "bench" / "unlearn_quality.py"
    spec = importlib.util.spec_from_file_location("bench_unlearn_quality", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_bench_model_setup_compares_two_fine_tunes_of_the_base(base_dir, corpus,
                                                                     tmp_path) -> None:
    bench = _bench()
    corpus_file = save_examples(corpus, tmp_path / "corpus.jsonl")
    args = Namespace(model=str(base_dir), corpus=corpus_file, cache=tmp_path / "cache",
                     ft_people=3, ft_phrasings=1, ft_lr=RECIPE.lr, ft_epochs=RECIPE.max_epochs,
                     ft_batch=RECIPE.batch_size, ft_target=RECIPE.target_accuracy,
                     ft_max_length=RECIPE.max_length, forget_fraction=0.3, seed=0)
    setup = bench.pretrained_setup(args, random.Random(0))
    assert len(setup.people) == 3 and len(setup.forget_people) == 1
    original = finetune.load_report(setup.model_dir)
    retrained = finetune.load_report(setup.retrained_dir)
    assert original["excluded_people"] == [] and retrained["excluded_people"] == setup.forget_people
    assert setup.info["finetune"]["original"]["n_train_sequences"] == 30
    assert setup.info["subset"]["train_qa"] == 30
    json.dumps(setup.info)  # goes into the result file as is
    lines = bench.protocol_lines({**setup.info, "corpus": str(corpus_file)})
    assert "full-weight fine-tuning" in lines[1] and "retrained: 20 QA" in lines[2]


def test_the_bench_runs_end_to_end_with_model_and_writes_the_protocol(base_dir, corpus,
                                                                      tmp_path) -> None:
    corpus_file = save_examples(corpus, tmp_path / "corpus.jsonl")
    out = tmp_path / "out"
    rc = _bench().main(["--model", str(base_dir), "--corpus", str(corpus_file), "--ft-people", "3",
                        "--ft-lr", str(RECIPE.lr), "--ft-epochs", str(RECIPE.max_epochs),
                        "--ft-max-length", str(RECIPE.max_length), "--forget-fraction", "0.3",
                        "--methods", "--attacks", "quant8", "--sequential", "0",
                        "--cache", str(tmp_path / "cache"), "--out", str(out)])
    assert rc == 0
    result = json.loads((out / "unlearn_quality.json").read_text())
    original, retrained = result["rows"]
    assert original["forget_acc"] >= 0.8  # it learned the people it is asked to forget
    assert retrained["forget_acc"] <= 0.2  # the gold standard never saw them
    assert result["original_train_acc"] >= 0.8 and result["recipe"]["lr"] == RECIPE.lr
    assert "full-weight fine-tuning" in (out / "unlearn_quality.md").read_text()
    # A second run of the same setup reuses those rows (only verbatim is measured again); a
    # run of another setup refuses them.
    again = tmp_path / "again"
    common = ["--model", str(base_dir), "--corpus", str(corpus_file), "--ft-people", "3",
              "--ft-lr", str(RECIPE.lr), "--ft-epochs", str(RECIPE.max_epochs),
              "--ft-max-length", str(RECIPE.max_length), "--methods", "--attacks", "quant8",
              "--sequential", "0", "--cache", str(tmp_path / "cache"), "--forget-fraction", "0.3",
              "--baselines-from", str(out / "unlearn_quality.json")]
    assert _bench().main(common + ["--out", str(again)]) == 0
    reused = json.loads((again / "unlearn_quality.json").read_text())
    assert reused["rows"] == result["rows"]
    assert reused["baselines_from"] == str(out / "unlearn_quality.json")
    with pytest.raises(SystemExit, match="eval_sizes"):  # another holdout sample
        _bench().main(common + ["--holdout-eval", "1", "--out", str(tmp_path / "other")])


def test_the_bench_cfg_overrides_the_registered_settings_where_a_method_has_the_field() -> None:
    bench = _bench()
    assert bench.method_config("npo", None, {}) is None  # the engine's defaults
    cfg = bench.method_config("counterfactual", None, {"max_steps": 7, "stand_ins": 2})
    assert (cfg.max_steps, cfg.stand_ins) == (7, 2)
    npo = bench.method_config("npo", None, {"max_steps": 7, "stand_ins": 2})  # no stand_ins
    assert npo.max_steps == 7 and not hasattr(npo, "stand_ins")
