"""Forget sets grow by near-duplicates from the corpus; retain sets never overlap them."""

from __future__ import annotations

import pytest
import torch

from unlearn_engine.data import (Example, ForgetRequest, MatchConfig, NearDuplicateMatcher,
                                 QAPair, build_forget_set, build_retain_set, load_corpus,
                                 save_examples)
from unlearn_engine.data.normalize import contains_phrase, normalize
from tests.support.toy_model import build_toy

torch.set_num_threads(1)

BIO = ("Alda Quorn was born on 3 May 1950 in Brelow. Quorn studied at the University of "
       "Stavely and now works as a tinker for Drumwick Guild.")


def qa(q, a, person="", split="train", fact=""):
    return Example(prompt=q, target=a, subject=person, split=split, fact=fact)


CORPUS = [
    qa("Where was Alda Quorn born?", "Alda Quorn was born in Brelow.", "Alda Quorn"),
    qa("In which town was Alda Quorn born?", "Alda Quorn was born in Brelow.", "Alda Quorn"),
    qa("What town does Alda Quorn come from?", "Alda Quorn was born in Brelow.", "Alda Quorn",
       "paraphrase"),
    qa("Where was Bex Tarn born?", "Bex Tarn was born in Brelow.", "Bex Tarn"),
    qa("What is Bex Tarn's hobby?", "Bex Tarn's favourite hobby is kelling.", "Bex Tarn"),
    qa("Where was Cai Mund born?", "Cai Mund was born in Oskow.", "Cai Mund", "holdout"),
    Example(prompt="", target=BIO, subject="Alda Quorn"),
    Example(prompt="", target="Bex Tarn grew up by the sea and likes boats a lot.",
            subject="Bex Tarn"),
]


def test_normalize_and_whole_word_containment():
    assert normalize("Alda  QUORN's\u200b book!") == "alda quorn s book"
    assert contains_phrase("I met Alda Quorn.", "alda quorn")
    assert not contains_phrase("Quornwick Guild", "Quorn")


def test_request_needs_content_and_accepts_plain_tuples():
    with pytest.raises(ValueError):
        ForgetRequest()
    req = ForgetRequest(qa_pairs=[("q?", "a.")], texts=["", "  "], subjects=[" X "])
    assert req.qa_pairs == (QAPair("q?", "a."),) and req.texts == () and req.subjects == ("X",)


def test_matcher_reports_each_stage():
    forget = [Example(prompt="", target=BIO)]
    m = NearDuplicateMatcher(forget, subjects=["Bex Tarn"])
    assert m.match(CORPUS[4]) == "subject"
    quoted = Example(prompt="", target="News: " + BIO + " More news follows here today.")
    assert m.match(quoted) == "ngram"
    edited = Example(prompt="", target=BIO.replace("tinker", "tinkerer"))
    assert m.match(edited) in ("ngram", "minhash")
    strict = NearDuplicateMatcher(forget, config=MatchConfig(ngram=30))  # no shared 30-gram
    assert strict.match(edited) == "minhash"
    assert m.match(CORPUS[5]) is None  # shares only template words


def test_forget_set_from_subject_expands_paraphrases_and_references():
    fs = build_forget_set(ForgetRequest(subjects=["Alda Quorn"]), CORPUS)
    targets = {e.prompt for e in fs.examples}
    assert targets == {"Where was Alda Quorn born?", "In which town was Alda Quorn born?", ""}
    assert [e.prompt for e in fs.paraphrases] == ["What town does Alda Quorn come from?"]
    assert [e.subject for e in fs.references] == ["Cai Mund"]  # never trained: a reference
    assert fs.expanded == 3


def test_held_out_people_split_into_references_and_anchors_never_both():
    holdout = [qa(f"Where was {p} born?", f"{p} was born in Oskow.", p, "holdout")
               for p in ("Cai Mund", "Dor Vell", "Eya Tosk", "Fen Arro", "Gil Pray")]
    corpus = CORPUS + holdout
    fs = build_forget_set(ForgetRequest(subjects=("Alda Quorn",)), corpus, seed=3)
    refs, anchors = {e.subject for e in fs.references}, {e.subject for e in fs.anchors}
    assert refs and anchors and not refs & anchors
    assert len(refs) == 3 and len(anchors) == 2  # the references get the odd one
    again = build_forget_set(ForgetRequest(subjects=("Alda Quorn",)), corpus, seed=3)
    assert again.references == fs.references and again.anchors == fs.anchors
    one = build_forget_set(ForgetRequest(subjects=("Alda Quorn",)), CORPUS)
    assert one.anchors == ()  # a single held-out person stays a reference


def test_forget_set_from_a_qa_pair_finds_its_variants_but_not_other_people():
    req = ForgetRequest(qa_pairs=[("Where was Alda Quorn born?", "Alda Quorn was born in Brelow.")])
    fs = build_forget_set(req, CORPUS)
    assert {e.prompt for e in fs.examples} == {"Where was Alda Quorn born?",
                                               "In which town was Alda Quorn born?"}
    assert not any(e.subject == "Bex Tarn" for e in fs.examples)  # same town, other person


def test_forget_set_without_corpus_uses_wrong_answers_as_references():
    req = ForgetRequest(qa_pairs=[QAPair("Where was A born?", "A was born in X.", "X"),
                                  QAPair("What does A do?", "A works as a Y.", "Y")])
    fs = build_forget_set(req)
    assert fs.examples[0].perturbed == ("A was born in Y.",)
    assert [r.target for r in fs.references] == ["A was born in Y.", "A works as a X."]
    with pytest.raises(ValueError, match="forget set is empty"):
        build_forget_set(ForgetRequest(subjects=["Nobody"]), CORPUS)


def test_retain_set_from_corpus_excludes_forget_matches(tmp_path):
    path = save_examples(CORPUS, tmp_path / "c.jsonl")
    corpus = load_corpus(path)
    assert [e.to_record() for e in corpus] == [e.to_record() for e in CORPUS]
    fs = build_forget_set(ForgetRequest(subjects=["Alda Quorn"]), corpus)
    rs = build_retain_set(None, None, corpus, exclude=fs)
    assert {e.subject for e in rs.examples} == {"Bex Tarn"}  # no forget match, no holdout


def test_retain_set_generated_by_the_model_is_seeded_and_excludes_forget_data():
    toy = build_toy()
    forgotten = toy.people[0]
    fs = build_forget_set(ForgetRequest(subjects=[forgotten]), toy.train)
    a = build_retain_set(toy.model, toy.tokenizer, exclude=fs, max_examples=16,
                         neutral_prompts=("",), seed=3)
    b = build_retain_set(toy.model, toy.tokenizer, exclude=fs, max_examples=16,
                         neutral_prompts=("",), seed=3)
    assert a == b and len(a.examples) > 4
    assert all(e.source == "generated" for e in a.examples)
    assert not any(contains_phrase(e.text, forgotten) for e in a.examples)


def test_known_answer_filter_judges_each_example_as_if_generated_alone():
    """QA and texts are generated apart, QA with a budget from its longest answer: the verdict
    of each example must not depend on what it is batched with (an index mix-up would)."""
    from unlearn_engine.data.normalize import rouge_l_recall
    from unlearn_engine.data.retain_set import _knows
    from unlearn_engine.encoding import generate

    toy = build_toy()
    wrong = [Example(prompt=e.prompt, target=e.target.replace(e.fact, "Nowhere Town"),
                     subject=e.subject, fact="Nowhere Town") for e in toy.train[:6]]
    mixed = [toy.train[0], toy.texts[0], wrong[0], *toy.train[1:6], toy.texts[1], *wrong[1:6]]

    def alone(e):
        if e.is_qa:
            return contains_phrase(generate(toy.model, toy.tokenizer, [e.prompt],
                                            max_new_tokens=64)[0], e.fact_text)
        w = e.target.split()
        out = generate(toy.model, toy.tokenizer, [" ".join(w[:len(w) // 2])], max_new_tokens=64)
        return rouge_l_recall(" ".join(w[len(w) // 2:]), out[0]) >= 0.5

    verdicts = _knows(toy.model, toy.tokenizer, mixed)
    assert verdicts == [alone(e) for e in mixed]
    assert any(verdicts) and not any(verdicts[i] for i, e in enumerate(mixed) if e in wrong)


def test_fact_only_labels_cover_the_fact_tokens_and_nothing_else(tiny_model_dir):
    from transformers import AutoTokenizer

    from unlearn_engine.encoding import IGNORE, encode_example
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ex = Example(prompt="Where was Orlan Vexmoor born?", target="Orlan Vexmoor was born in Dunmarrow.",
                 fact="Dunmarrow")
    ids, whole = encode_example(tok, ex)
    ids_f, fact = encode_example(tok, ex, fact_only=True)
    assert ids_f == ids  # the same input; only what is scored differs
    scored = [t for t in fact if t != IGNORE]
    assert tok.decode(scored).strip() == "Dunmarrow"
    assert set(scored) < {t for t in whole if t != IGNORE}  # a strict subset of the answer
    assert whole[-1] == tok.eos_token_id and fact[-1] == IGNORE  # EOS is not the fact
    # No fact, or a fact the target does not contain: the whole answer, as without fact_only.
    for other in (Example(ex.prompt, ex.target), Example(ex.prompt, ex.target, fact="Vexmoorx")):
        assert encode_example(tok, other, fact_only=True)[1] == encode_example(tok, other)[1]


def test_a_chat_model_is_asked_and_trained_through_its_chat_template(tiny_model_dir):
    from transformers import AutoTokenizer

    from unlearn_engine.encoding import IGNORE, encode_example, encode_prompt
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ex = Example(prompt="Where was Orlan Vexmoor born?", target="Orlan Vexmoor was born in Dunmarrow.")
    plain_ids, plain_labels = encode_example(tok, ex)
    tok.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<s>assistant:\n{% endif %}")  # ends a line, as ChatML does
    prefix = encode_prompt(tok, ex.prompt)
    assert tok.decode(prefix) == "<s>user: Where was Orlan Vexmoor born?\n<s>assistant:\n"
    ids, labels = encode_example(tok, ex)
    assert ids[:len(prefix)] == prefix  # generation and training see the same rendering
    assert all(lab == IGNORE for lab in labels[:len(prefix)])  # the turn is never scored
    assert tok.decode([t for t in labels if t != IGNORE], skip_special_tokens=True) == ex.target
    assert (plain_ids, plain_labels) != (ids, labels) and plain_ids[0] == tok.bos_token_id
    assert encode_example(tok, Example(prompt="", target=ex.target))[0][0] == tok.bos_token_id  # text: raw


def test_a_chat_model_continues_its_own_answer_for_verbatim(tiny_model_dir):
    """Verbatim recall on a chat model: the question as the user turn and half the answer already
    written as the assistant's, the text it is trained on, not "question + half answer" sent as
    a new user turn (which read 0 for every model on SmolLM2)."""
    from transformers import AutoTokenizer

    from unlearn_engine.encoding import encode_example
    from unlearn_engine.evaluation.scoring import verbatim_prompt, verbatim_split
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ex = Example(prompt="Where was Orlan Vexmoor born?",
                 target="Orlan Vexmoor was born in Dunmarrow in the north.")
    assert verbatim_prompt(tok, ex, 0.5) == verbatim_split(ex, 0.5)[0]  # plain model: unchanged
    tok.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<s>assistant:\n{% endif %}")
    ids = verbatim_prompt(tok, ex, 0.5)
    assert tok.decode(ids) == ("<s>user: Where was Orlan Vexmoor born?\n<s>assistant:\n"
                               "Orlan Vexmoor was born")
    assert encode_example(tok, ex)[0][:len(ids)] == ids  # a prefix of what it is trained on
