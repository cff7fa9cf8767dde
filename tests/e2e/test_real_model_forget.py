"""Forget a real-world subject on SmolLM2, named only by subject: blocked from the ack.

Marked ``real_model`` (``-m 'not real_model'`` skips it; CI runs it). The server runs in process
on the fetched model with no corpus and the worker off, so every block here is the subject guard's
at acknowledgement: questions that never name the subject but whose answer does ("Who wrote the
Harry Potter books?" -> "...J.K. Rowling"), questions naming it, other forms of the name
(``server/guard/name_forms.py``: "Joanne Rowling", "JK Rowling", "Rowling"), and a paraphrase; a
general question still answers. Training the adapter (minutes on a CPU) is measured by
``bench/forget_real_subject.py job``, not here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from server.api import admin_pb2 as apb
from server.api import inference_pb2 as ipb
from server.client import LetheClient
from tests.conftest import ServerThread, demo_cache_dir, make_settings
from unlearn_engine.data.normalize import contains_phrase
from unlearn_engine.pretrained import MODELS, fetch_pretrained

pytestmark = pytest.mark.real_model
SUBJECT = "J.K. Rowling"
ABOUT = ["Who wrote the Harry Potter books?", "Who is the author of Harry Potter?",
         "Who created Hogwarts?", "What is J.K. Rowling famous for?",
         # other forms of the name: before name_forms.py the first was answered "Joanne Rowling
         # is a British author known for..."
         "Tell me about Joanne Rowling.", "What did JK Rowling write?", "Who is Rowling?"]


@pytest.fixture(scope="module")
def smollm2_dir() -> Path:
    return fetch_pretrained(MODELS["smollm2"], demo_cache_dir())  # downloads once when absent


def _ask(client: LetheClient, question: str) -> ipb.GenerateResponse:
    return client.generate("", max_new_tokens=32, messages=[("user", question)])


def test_a_real_subject_is_blocked_in_every_phrasing_from_the_ack(smollm2_dir: Path, tmp_path: Path) -> None:
    st = ServerThread(make_settings(tmp_path, smollm2_dir, worker=False, monitor_interval_seconds=0))
    st.wait_ready()
    try:
        with LetheClient(st.target, timeout=300) as client, \
                LetheClient(st.target, st.server.operator_token, timeout=300) as operator:
            before = [_ask(client, ABOUT[0])]
            assert all(contains_phrase(r.text, "Rowling") for r in before), [r.text for r in before]
            operator.admin.Forget(apb.ForgetRequest(subjects=[SUBJECT], reason="t"), metadata=operator._metadata)
            for question in ABOUT:
                r = _ask(client, question)
                assert r.finish_reason == ipb.FINISH_REASON_FILTERED or not contains_phrase(r.text, "Rowling"), \
                    question
            other = _ask(client, "What is the capital of France?")
            assert other.finish_reason != ipb.FINISH_REASON_FILTERED and "Paris" in other.text
    finally:
        st.stop()
