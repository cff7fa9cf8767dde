"""The retain screen: what the guard of the ledger's forgets blocks is never retain data.

An earlier forget's plaintext is gone; its guard entries are what the worker screens with. The
known-answer filter let a forgotten person's bio through on its template words, and the retain
loss taught its facts back (server/forget/retain_screen.py)."""

from __future__ import annotations

import secrets

from server.forget.jobs import ForgetPayload
from server.forget.ledger import SqliteLedger
from server.forget.retain_screen import RetainScreen
from server.guard import GuardConfig, LeakageGuard
from server.guard.values import ForgetItems
from unlearn_engine.data import Example, build_retain_set

ALDA_BIO = ("Alda Quorn was born on 3 May 1950 in Brelow. Quorn studied at the University of "
            "Stavely and now works as a tinker for Drumwick Guild.")
ALDA = [Example(prompt="Where was Alda Quorn born?", target="Alda Quorn was born in Brelow.",
                subject="Alda Quorn"),
        Example(prompt="", target=ALDA_BIO, subject="Alda Quorn"),
        # the surname alone still names her
        Example(prompt="", target="Quorn studied at the University of Stavely for four years.")]
OTHERS = [Example(prompt="Where was Bex Tarn born?", target="Bex Tarn was born in Brelow.",
                  subject="Bex Tarn"),
          Example(prompt="", target="Bex Tarn grew up by the sea in Oskow and likes boats a lot."),
          Example(prompt="What is the capital of France?", target="The capital of France is Paris.")]


def _ledger_with_forgets(tmp_path, secret: bytes, names: list[str]) -> SqliteLedger:
    ledger = SqliteLedger(tmp_path / "ledger.db")
    guard = LeakageGuard(GuardConfig(), secret)
    for name in names:
        job, _ = ledger.submit(ForgetPayload(subjects=(name,)), "counterfactual", "r", None, "op")
        entries = guard.derive(job.forget_id, ForgetItems(subjects=(name,)), semantic=False)
        ledger.arm(job.forget_id, entries.to_bytes())
    return ledger


def test_screen_drops_every_example_naming_a_forgotten_subject_and_keeps_the_rest(tmp_path):
    secret = secrets.token_bytes(32)
    ledger = _ledger_with_forgets(tmp_path, secret, ["Alda Quorn", "Cai Mund"])
    screen = RetainScreen.from_ledger(ledger, secret)
    assert screen.forgets == 2
    assert screen.keep([*ALDA, *OTHERS]) == [False] * len(ALDA) + [True] * len(OTHERS)
    # a subject named only in the prompt: the answer is about them whatever it says
    assert screen.keep([Example(prompt="Tell me about Cai Mund.", target="A quiet man.")]) == [False]


def test_screen_of_an_empty_ledger_blocks_nothing(tmp_path):
    secret = secrets.token_bytes(32)
    empty = RetainScreen.from_ledger(SqliteLedger(tmp_path / "empty.db"), secret)
    assert empty.forgets == 0 and empty.keep([*ALDA, *OTHERS]) == [True] * 6


def test_retain_set_leaves_out_what_the_screen_refuses(tmp_path):
    secret = secrets.token_bytes(32)
    screen = RetainScreen.from_ledger(_ledger_with_forgets(tmp_path, secret, ["Alda Quorn"]), secret)
    corpus = [*ALDA, *OTHERS]
    kept = build_retain_set(None, None, corpus, screen=screen.keep).examples
    assert sorted(e.target for e in kept) == sorted(e.target for e in OTHERS)
    assert len(build_retain_set(None, None, corpus).examples) == len(corpus)  # no screen: all
