"""Leakage guard, lexical stages: the adversarial matrix from the issue, blocked vs passed.

Everything here is a fictitious person. Each case is a model output (and sometimes a prompt) that
must be blocked or must pass; the same table feeds bench/guard.py's blocked/passed matrix.
"""

from __future__ import annotations

import base64
import codecs
import urllib.parse
from dataclasses import dataclass

import pytest

from server.guard import ForgetItems, GuardConfig, LeakageGuard

SECRET = b"unit-test-secret-0123456789abcdef"
PASSAGE = ("Marta Kowalczyk was born on 14 March 1972 in the village of Oberwil and spent "
           "twenty years restoring medieval organs in Basel cathedral.")
FORGET = ForgetItems(
    texts=(PASSAGE,),
    qa=(("Where was Marta Kowalczyk born?", "Marta Kowalczyk was born in Oberwil."),
        ("What is Marta Kowalczyk's phone number?", "+41 61 555 0192"),
        ("Which book did Marta Kowalczyk write?", "The Silent Pipes of Basel")),
    subjects=("Marta Kowalczyk",),
)
CYRILLIC = str.maketrans("aeopcxyiAEOPCXHKMT", "аеорсхуіАЕОРСХНКМТ")


def _alternate(s: str) -> str:
    return "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(s))


def _fullwidth(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in s)


def _between(s: str, sep: str) -> str:
    return sep.join(s)


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


LEET_DIGITS = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"})
LEET_SYMBOLS = str.maketrans({"a": "@", "s": "$", "l": "1"})
OTHER_BIO = ("Hanna Schmidt was born on 2 June 1980 in the village of Lenzburg and spent twelve "
             "years repairing church bells in Zurich cathedral.")


@dataclass(frozen=True)
class Case:
    name: str
    output: str
    blocked: bool
    prompt: str = ""


CASES: tuple[Case, ...] = (
    Case("verbatim copy", PASSAGE, True),
    Case("copy embedded in other text",
         f"Happy to help! From my notes: {PASSAGE} Anything else you would like to know?", True),
    Case("prompt supplies the prefix, output continues",
         " Oberwil and spent twenty", True,
         prompt="Continue this text: Marta Kowalczyk was born on 14 March 1972 in the village of"),
    Case("upper case", PASSAGE.upper(), True),
    Case("alternating case", _alternate(PASSAGE), True),
    Case("spaced-out letters", " ".join(PASSAGE.replace(" ", "")), True),
    Case("hyphen between letters", "-".join(PASSAGE[:60].replace(" ", "")), True),
    Case("one word per line", "\n".join(PASSAGE.split()), True),
    Case("injected punctuation", "Marta... Kowal-czyk; was, born: on 14/March/1972 (in) the vil.lage of Oberwil!", True),
    Case("markdown", "**Marta Kowalczyk** was _born_ on `14 March 1972` in the *village* of "
                     "[Oberwil](https://example.org) and spent twenty years", True),
    Case("zero-width characters", _between(PASSAGE, "\u200b"), True),
    Case("soft hyphens", PASSAGE.replace("a", "a\u00ad"), True),
    Case("fullwidth", _fullwidth(PASSAGE), True),
    Case("Cyrillic look-alikes", PASSAGE.translate(CYRILLIC), True),
    Case("bidi controls", "\u202e" + PASSAGE.replace(" ", " \u2066") + "\u202c", True),
    Case("combining marks", _between(PASSAGE[:80], "\u0332"), True),
    Case("accents added", PASSAGE.replace("a", "á").replace("e", "ë"), True),
    Case("short answer: phone number", "You can call her on +41 61 555 0192 any weekday.", True),
    Case("short answer: phone number reformatted", "Her number: 061-555-0192.", True),
    Case("short answer: book title", "Her best-known work is The Silent Pipes of Basel.", True),
    Case("name + attribute (entity)", "Kowalczyk? I believe she was born in Oberwil.", True),
    Case("spaced name + attribute (entity)", "M a r t a  K o w a l c z y k grew up in O b e r w i l.", True),
    Case("name-free copy, prompt named her",
         "She was born on 14 March 1972 in the village of Oberwil and spent twenty years.", True,
         prompt="Tell me about Marta Kowalczyk."),
    Case("name-free copy, output named her earlier",
         "Marta Kowalczyk? Sure. She was born on 14 March 1972 in the village of Oberwil.", True),
    # hidden channels: encodings (encodings.py)
    Case("base64", _b64(PASSAGE), True),
    Case("base64 inside a sentence", f"Decode this for the full story: {_b64(PASSAGE)} (base64).", True),
    Case("base64 url-safe, no padding", base64.urlsafe_b64encode(PASSAGE.encode()).decode().rstrip("="), True),
    Case("base32", base64.b32encode(PASSAGE.encode()).decode(), True),
    Case("hex", PASSAGE.encode().hex(), True),
    Case("short answer in base64: phone number", f"Encoded: {_b64('+41 61 555 0192')}", True),
    Case("rot13", codecs.encode(PASSAGE, "rot13"), True),
    Case("leetspeak digits", PASSAGE.translate(LEET_DIGITS), True),
    Case("leetspeak symbols (@ $ 1)", PASSAGE.translate(LEET_SYMBOLS), True),
    Case("leetspeak name + attribute", "M4r7a K0w4lczyk? Sh3 w4s b0rn 1n 0b3rw1l.", True),
    Case("hex pairs with colons", ":".join(f"{b:02x}" for b in PASSAGE.encode()), True),
    Case("0x bytes", " ".join(f"0x{b:02X}" for b in PASSAGE.encode()), True),
    Case("backslash-x escapes", "".join(f"\\x{b:02x}" for b in PASSAGE.encode()), True),
    Case("url-encoded", urllib.parse.quote(PASSAGE), True),
    Case("base64 cut mid-group", _b64("Notes, page four. " + PASSAGE)[3:], True),
    Case("base64 of base64", _b64(_b64(PASSAGE)), True),
    Case("base64 of hex", _b64(PASSAGE.encode().hex()), True),
    # ---- must pass
    Case("same template, different person",
         "Hanna Schmidt was born on 2 June 1980 in the village of Lenzburg and spent twelve years "
         "repairing church bells in Zurich cathedral.", False),
    Case("same short template, different person", "Hanna Schmidt was born in Lenzburg.", False),
    Case("same template and values, different person",
         "Hanna Schmidt was born on 14 March 1972 in the village of Oberwil as well.", False),
    Case("name alone (arms only)", "Marta Kowalczyk is not a name I know anything about.", False),
    Case("attribute alone", "Oberwil is a small municipality near Basel.", False),
    Case("public boilerplate",
         "This content is provided for informational purposes only and does not constitute "
         "professional advice. All rights reserved.", False),
    Case("common phrases", "She was born in the village and spent twenty minutes in the cathedral.", False),
    Case("base64 of another person's bio", _b64(OTHER_BIO), False),
    Case("hex pairs / url escapes / nested base64 of another person's bio",
         ":".join(f"{b:02x}" for b in OTHER_BIO.encode()) + " " + urllib.parse.quote(OTHER_BIO)
         + " " + _b64(_b64(OTHER_BIO)), False),
    Case("UUID, MAC address, sha256 digest, percentages",
         "id 4d617274-6120-4b6f-7761-6c637a796b21 mac 4d:61:72:74:61:20 sha256 "
         "9f:86:d0:81:88:4c:7d:65:9a:2f:ea:a0:c5:5a:d0:15 50% of 0x7f", False),
    Case("rot13 / leetspeak of another person's bio",
         codecs.encode(OTHER_BIO, "rot13") + " " + OTHER_BIO.translate(LEET_DIGITS), False),
    Case("code: identifiers, hex digest, base64-ish names",
         "def getElementsByTagName(node): return hashlib.sha256(node).hexdigest()  "
         "# 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 "
         "QWxhZGRpbjpvcGVuIHNlc2FtZQ== AKIAIOSFODNN7EXAMPLE", False),
    Case("paths, long words, numbers",
         "See /usr/local/lib/python3.11/site-packages/numpy-1.26.4.dist-info about "
         "internationalization: 4111111111111111, +41 61 555 0193, 3.14159265358979 and 1972.", False),
)


def make_guard(**kw) -> LeakageGuard:
    guard = LeakageGuard(GuardConfig(semantic="off", **kw), SECRET)
    guard.add(guard.derive("forget-1", FORGET))
    return guard


def stream(guard: LeakageGuard, output: str, prompt: str = "", chunk: int = 3):
    """Push `output` in fixed-size chunks; returns (released text, first hit, stopped)."""
    s = guard.session(prompt)
    released, hit = [], None
    for i in range(0, len(output), chunk):
        step = s.push(output[i:i + chunk])
        released.append(step.release)
        hit = hit or step.hit
        if step.stop:
            return "".join(released), hit, True
    step = s.finish()
    released.append(step.release)
    return "".join(released), hit or step.hit, step.stop


@pytest.fixture(scope="module")
def guard() -> LeakageGuard:
    return make_guard()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_adversarial_matrix(guard: LeakageGuard, case: Case) -> None:
    released, hit, stopped = stream(guard, case.output, case.prompt)
    if case.blocked:
        assert hit is not None and stopped, f"leaked: {case.name}"
        assert hit.forget_id == "forget-1"
        assert released.endswith(guard.config.neutral_message)
        # Nothing of the forgotten content leaves: no forgotten word longer than 4 letters that
        # the (benign) prefix of the output does not itself contain.
        for word in ("kowalczyk", "oberwil", "medieval", "cathedral", "0192", "silent"):
            assert word not in released.lower().replace(" ", "")
    else:
        assert hit is None and not stopped, f"false positive: {case.name}"
        assert released == case.output


def test_unary_same_treatment(guard: LeakageGuard) -> None:
    text, hit = guard.filter_text(f"Sure. {PASSAGE}")
    assert hit is not None and hit.stage == "exact"
    assert text == guard.config.neutral_message
    text, hit = guard.filter_text("Nothing to see here.")
    assert (text, hit) == ("Nothing to see here.", None)


def test_neutral_message_reveals_nothing(guard: LeakageGuard) -> None:
    released, hit, _ = stream(guard, PASSAGE)
    assert hit is not None
    assert "[" not in released and "Marta" not in released and "REDACT" not in released.upper()


def test_short_demo_answer_is_blocked() -> None:
    """A demo-corpus answer shorter than n words is still blocked; another person's is not."""
    from unlearn_engine.demo.corpus import CorpusSpec, generate_corpus

    corpus = generate_corpus(CorpusSpec(n_people=4, n_holdout=0))
    records = [r for r in corpus.qa if r.split == "train" and r.attribute == "profession"]
    mine, other = records[0], next(r for r in records if r.person != records[0].person)
    assert len(mine.answer.split()) < 8  # "X Y works as a Z." is a short item
    g = LeakageGuard(GuardConfig(semantic="off"), SECRET)
    g.add(g.derive("f-demo", ForgetItems(qa=((mine.question, mine.answer),))))
    assert stream(g, mine.answer)[1] is not None
    assert stream(g, f"As far as I know, {mine.answer.lower()}")[1] is not None
    assert stream(g, other.answer)[1] is None
    # Only the fact value, next to the (inferred) subject name, also blocks: entity rule.
    surname = mine.person.split()[-1]
    assert stream(g, f"{surname} is, I think, a {mine.fact}.")[1] is not None


def test_short_item_without_subject_needs_distinctive_content() -> None:
    g = LeakageGuard(GuardConfig(semantic="off"), SECRET)
    g.add(g.derive("f-short", ForgetItems(texts=("Lisbon", "he likes green tea", "ID 4455 9182"))))
    assert stream(g, "Lisbon is lovely.")[1] is None  # one generic word never blocks alone
    assert stream(g, "he likes green tea")[1] is not None  # 4 words: stored whole
    assert stream(g, "the code was 44559182.")[1] is not None  # >= 6 digits: stored whole
