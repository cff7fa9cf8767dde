"""A replica on a shared PostgreSQL ledger arms what other replicas forgot even when it hears
nothing of it: what was forgotten before it started blocks from its first SERVING response, and
a forget whose notification was lost blocks after the next periodic reconcile.

The "other replica" here is a second PostgresLedger writing as a replica would, with entries
derived under the same guard key; the lost notification is a row written without NOTIFY.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from server.api import inference_pb2 as ipb
from server.client import LetheClient
from server.forget.jobs import ForgetPayload, ForgetState
from server.forget.ledger.postgres import PostgresLedger
from server.forget.resolution import guard_items
from server.guard import LeakageGuard
from server.keyfile import guard_secret
from tests.conftest import ServerThread, make_settings
from tests.support.replicas import file_and_arm, guard_for, wait_for
from unlearn_engine.demo.builder import load_corpus


def _forget_without_notify(other: PostgresLedger, guard: LeakageGuard, person: str) -> None:
    payload = ForgetPayload(subjects=(person,))
    job, _ = other.submit(payload, "npo", "r", None, "op")
    entries = guard.derive(job.forget_id, guard_items(payload), semantic=False).to_bytes()
    with psycopg.connect(other.url) as conn:  # as if this replica missed the NOTIFY
        conn.execute("UPDATE forgets SET guard_entries = %s, state = %s WHERE forget_id = %s",
                     (entries, ForgetState.FILTERING.value, job.forget_id))


def test_a_replica_arms_before_serving_and_reconciles_missed_notifications(
        demo_model_dir: Path, tmp_path: Path, postgres_url: str) -> None:
    corpus = load_corpus(demo_model_dir)
    (early, late) = corpus.trained_people[:2]
    questions = {p: next(r.question for r in corpus.qa if r.person == p) for p in (early, late)}
    settings = make_settings(tmp_path, demo_model_dir, ledger_url=postgres_url, reconcile_seconds=0.5,
                             worker=False)
    guard = guard_for(guard_secret(settings.data_dir), settings.cache_dir)
    other = PostgresLedger(postgres_url)
    file_and_arm(other, guard, early)  # before this replica exists
    st = ServerThread(settings)
    try:
        st.wait_ready()
        with LetheClient(st.target, timeout=60) as c:
            assert c.generate(questions[early], max_new_tokens=16).finish_reason == ipb.FINISH_REASON_FILTERED
            assert c.generate(questions[late], max_new_tokens=16).finish_reason != ipb.FINISH_REASON_FILTERED
            _forget_without_notify(other, guard, late)
            wait_for(lambda: c.generate(questions[late], max_new_tokens=16).finish_reason == ipb.FINISH_REASON_FILTERED,
                     "the periodic reconcile to arm a forget whose notification was lost", 60)
    finally:
        st.stop()
        other.close()
