"""The shared ledger goes away while a replica serves (issue 17, faults): Generate keeps working
and keeps blocking what was forgotten (the guard lives in memory), Forget answers UNAVAILABLE
with a message that says why, and once PostgreSQL is back a retried Forget is accepted and
nothing acknowledged before the outage is lost."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import grpc
import pytest

from server.api import admin_pb2 as apb
from server.api import inference_pb2 as ipb
from server.client import LetheClient
from tests.conftest import ServerThread, make_settings
from unlearn_engine.demo.builder import load_corpus


def test_generate_survives_a_ledger_outage_and_forget_resumes(demo_model_dir: Path, tmp_path: Path,
                                                              postgres_cluster: Any) -> None:
    corpus = load_corpus(demo_model_dir)
    first, second = corpus.trained_people[:2]
    question = {p: next(r.question for r in corpus.qa if r.person == p) for p in (first, second)}
    url = postgres_cluster.create_database()
    st = ServerThread(make_settings(tmp_path, demo_model_dir, ledger_url=url, worker=False))
    try:
        st.wait_ready()
        with LetheClient(st.target, st.server.operator_token, timeout=60) as c:
            acked = c.admin.Forget(apb.ForgetRequest(subjects=[first], reason="r"), metadata=c._metadata)
            postgres_cluster.stop_server()
            try:
                assert c.generate(question[first], max_new_tokens=8).finish_reason == ipb.FINISH_REASON_FILTERED
                assert c.generate("The weather today is", max_new_tokens=8).text  # serving goes on
                with pytest.raises(grpc.RpcError) as err:
                    c.admin.Forget(apb.ForgetRequest(subjects=[second], reason="r", idempotency_key="k2"),
                                   metadata=c._metadata)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "ledger" in (err.value.details() or "") and "retry" in (err.value.details() or "")
            finally:
                postgres_cluster.start_server()
            ev = threading.Event()
            for _ in range(300):  # the pool reconnects in the background
                try:
                    retried = c.admin.Forget(apb.ForgetRequest(subjects=[second], reason="r", idempotency_key="k2"),
                                             metadata=c._metadata)
                    break
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE
                    ev.wait(0.1)  # wait-ok: the database is starting; its reachability is the signal
            else:
                raise AssertionError("Forget never recovered after the ledger came back")
            assert retried.created
            assert c.generate(question[second], max_new_tokens=8).finish_reason == ipb.FINISH_REASON_FILTERED
            kept = c.admin.GetForget(apb.GetForgetRequest(forget_id=acked.job.forget_id), metadata=c._metadata)
            assert kept.state == apb.FORGET_STATE_FILTERING
    finally:
        st.stop()
