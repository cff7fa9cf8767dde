"""A forget watch outlives its connection: `lethe forget --wait` and `LetheClient.watch_forget`
against a real `lethe serve` that closes every connection after 2 s (+ 1 s grace), one that
restarts mid-watch, and one that is gone for good.

A reopened WatchForget replays the job from its start; the client must hand each event on once.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import grpc
import pytest

from server import cli
from server.api import admin_pb2 as apb
from server.client import LetheClient, WatchLost
from server.forget.layout import LEDGER_FILE
from server.forget.ledger import SqliteLedger
from tests.procs import ServeProcess
from tests.support.standin_worker import train_standin
from unlearn_engine.demo.builder import load_corpus

SHORT_LIVED = ("--max-connection-age-seconds", "2", "--max-connection-age-grace-seconds", "1")
QA = ("Where did Orla Penhallow study?", "the Drummond Conservatory")


def _by_kind(events: list[apb.ForgetEvent]) -> tuple[list[bytes], list[bytes]]:
    """(transitions, progress rows), each serialized in arrival order."""
    transitions = [e.transition.SerializeToString() for e in events if e.HasField("transition")]
    progress = [e.progress.SerializeToString() for e in events if e.HasField("progress")]
    return transitions, progress


def _reopenings(caplog: pytest.LogCaptureFixture) -> int:
    return sum("reopening" in r.getMessage() for r in caplog.records if r.name == "server.client")


@pytest.mark.slow
def test_forget_wait_outlives_many_connection_ages(demo_model_dir: Path, tmp_path: Path, capsys,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A real training job (minutes on CPU) against connections that live 3 s: the CLI's watch is
    cut again and again, and still ends with the job's final state, exit 0, and no event twice."""
    caplog.set_level(logging.INFO, logger="server.client")
    corpus = load_corpus(demo_model_dir)
    person = corpus.trained_people[5]
    qa = [r for r in corpus.qa if r.person == person and r.split == "train"][:6]
    sp = ServeProcess(demo_model_dir, tmp_path / "data", *SHORT_LIVED)
    try:
        sp.wait_serving()
        base = ["--target", sp.target, "--token", sp.token]
        request = apb.ForgetRequest(subjects=[person], qa_pairs=[apb.QAPair(question=r.question, answer=r.answer)
                                                                 for r in qa], idempotency_key="watch-resume")
        with LetheClient(sp.target, sp.token, timeout=60) as c:
            fid = c.admin.Forget(request, metadata=c._metadata).job.forget_id
            seen: list[apb.ForgetEvent] = []
            watcher = threading.Thread(target=lambda: seen.extend(c.watch_forget(fid)), daemon=True)
            watcher.start()
            # The same request again (same idempotency key): the CLI attaches to the running job.
            args = ["forget", "--subject", person, "--idempotency-key", "watch-resume", "--wait", *base]
            for r in qa:
                args += ["--qa", f"{r.question}|{r.answer}"]
            assert cli.main(args) == 0, capsys.readouterr()
            out = capsys.readouterr().out.strip().splitlines()
            assert out[0].startswith(f"{fid} ") and "(existing)" in out[0]
            assert out[-1] == f"{fid} ACTIVE"
            watcher.join()
            assert _reopenings(caplog) >= 2, "the job ended before its watches were cut: nothing was tested"

            # Every event once: what the cut-and-reopened watch saw is what one uncut replay of
            # the finished job shows, kind by kind (across a reopening, transitions come first).
            assert seen[-1].job.state == apb.FORGET_STATE_ACTIVE
            replay = list(c.watch_forget(fid))
            assert _by_kind(seen) == _by_kind(replay)
            transitions, progress = _by_kind(seen)
            assert len(transitions) == len(seen[-1].job.transitions) and progress
    finally:
        sp.kill()


def test_watch_survives_a_server_restart(demo_model_dir: Path, tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """kill -9 the server mid-watch and start it again on the same port and data dir: the watch
    reconnects and ends ACTIVE when a (stand-in) worker finishes the job."""
    caplog.set_level(logging.INFO, logger="server.client")
    data = tmp_path / "data"
    first = ServeProcess(demo_model_dir, data, "--no-worker", "--monitor-interval-seconds", "0")
    second = None
    try:
        first.wait_serving()
        with LetheClient(first.target, first.token, timeout=60) as c:
            fid = c.admin.Forget(apb.ForgetRequest(qa_pairs=[apb.QAPair(question=QA[0], answer=QA[1])]),
                                 metadata=c._metadata).job.forget_id
            watch = c.watch_forget(fid)
            seen = [next(watch)]  # the stream is open
            watcher = threading.Thread(target=lambda: seen.extend(watch), daemon=True)
            watcher.start()  # it watches on while the server is down and loads its model again
            first.kill()
            second = ServeProcess(demo_model_dir, data, "--no-worker", "--monitor-interval-seconds", "0",
                                  "--port", str(first.port))
            second.wait_serving()
            train_standin(SqliteLedger(data / LEDGER_FILE), data, demo_model_dir)
            watcher.join()
        assert seen[-1].job.state == apb.FORGET_STATE_ACTIVE and _reopenings(caplog) >= 1
        states = [e.transition.state for e in seen if e.HasField("transition")]
        assert len(states) == len(set(states)) == len(seen[-1].job.transitions)
    finally:
        first.kill()
        if second is not None:
            second.kill()


def test_watch_of_a_server_gone_for_good_ends_with_a_clear_error(demo_model_dir: Path, tmp_path: Path) -> None:
    """Not a hang: after `reconnect_seconds` without an answer the watch raises WatchLost, which
    names the job and the server. Errors other than UNAVAILABLE are not retried at all."""
    sp = ServeProcess(demo_model_dir, tmp_path / "data", "--no-worker", "--monitor-interval-seconds", "0")
    try:
        sp.wait_serving()
        with LetheClient(sp.target, sp.token, timeout=60) as c:
            with pytest.raises(grpc.RpcError) as unknown:
                list(c.watch_forget("fg_nosuchjob"))
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
            fid = c.admin.Forget(apb.ForgetRequest(qa_pairs=[apb.QAPair(question=QA[0], answer=QA[1])]),
                                 metadata=c._metadata).job.forget_id
            watch = c.watch_forget(fid, reconnect_seconds=5)
            assert next(watch).job.forget_id == fid
            sp.kill()
            with pytest.raises(WatchLost) as lost:
                list(watch)
            assert fid in str(lost.value) and sp.target in str(lost.value)
    finally:
        sp.kill()
