"""The engine CLI trains and evaluates on the toy model and writes what it promises."""

from __future__ import annotations

import argparse
import json

import torch

from unlearn_engine.artifacts import load_artifact
from unlearn_engine.cli import add_engine_commands, main
from unlearn_engine.method_names import DEFAULT_METHOD
from unlearn_engine.data import save_examples
from tests.support.toy_model import build_toy, save_toy

torch.set_num_threads(1)


def test_commands_mount_on_another_parser():
    parser = argparse.ArgumentParser(prog="lethe")
    add_engine_commands(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["unlearn", "--model", "m", "--forget", "f", "--out", "o"])
    assert args.method == DEFAULT_METHOD and callable(args.func)


def test_unlearn_then_evaluate(tmp_path, capsys):
    toy = build_toy()
    save_toy(toy, tmp_path / "base")
    person = toy.people[2]
    (tmp_path / "forget.jsonl").write_text(json.dumps({"subject": person}) + "\n")
    save_examples([*toy.train, *toy.paraphrase, *toy.holdout, *toy.texts], tmp_path / "c.jsonl")
    save_examples([e for e in toy.train if e.subject != person], tmp_path / "retain.jsonl")
    code = main(["unlearn", "--model", str(tmp_path / "base"), "--forget",
                 str(tmp_path / "forget.jsonl"), "--corpus", str(tmp_path / "c.jsonl"),
                 "--retain", str(tmp_path / "retain.jsonl"), "--out", str(tmp_path / "ad"),
                 "--forget-id", "cli1", "--max-tries", "1",
                 "--set", "lr=0.005", "max_steps=20", "eval_every=10",
                 "--gate", "mia_attacks=[]", "max_preference_gap=1", "max_verbatim_gap=1",
                 "max_paraphrase_accuracy_gap=1", "min_retain_ratio=0.8"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "gate passed" in out and load_artifact(tmp_path / "ad", None).forget_id == "cli1"

    save_examples([e for e in toy.train if e.subject == person], tmp_path / "f_qa.jsonl")
    code = main(["evaluate", "--model", str(tmp_path / "base"), "--adapter", str(tmp_path / "ad"),
                 "--forget", str(tmp_path / "f_qa.jsonl"), "--retain",
                 str(tmp_path / "retain.jsonl"), "--metrics", "fact_span_accuracy",
                 "--json", str(tmp_path / "eval.json")])
    assert code == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["before"]["forget.fact_span_accuracy"] >= 0.9
    assert report["metrics"]["forget.fact_span_accuracy"] <= 0.1
    assert "forget.fact_span_accuracy" in capsys.readouterr().out  # the rich table
