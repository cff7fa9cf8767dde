"""The live stack stays bounded as forgets accumulate (issue 14 item 5), on a real server.

"Depth" has two meanings here. The *membership* (the ledger's stack record, ModelInfo's
stack_depth, ListAdapters) lists every adapter that went live, one more per forget: it is the
audit trail and grows. What a token and a training job pay for is the *representation*: the
server serves a version as one folded copy of the target weights (base + the members' summed
deltas, server/adapters/lora.py), frees an old version once no row runs it, and runs no hook at
steady state; the worker trains the next adapter on the stack folded into the base
(`fold_stack`), a plain model. This test files several forgets whose adapters a stand-in worker
records (random-weight artifacts, seconds each, instead of minutes of training; the real
ten-forget run is bench/sequential_server.py) and asserts that the representation after the
last swap is the size it was after the first: one folded copy, no hooks, the worker's starting
model as small as the base. It does not measure time.
"""

from __future__ import annotations

from pathlib import Path

import torch

from server.api import admin_pb2 as apb
from server.client import LetheClient
from server.forget.layout import LEDGER_FILE
from server.forget.ledger import SqliteLedger
from tests.conftest import ServerThread, make_settings
from tests.support.standin_worker import train_standin, wait_state
from unlearn_engine.artifacts import load_artifact, model_fingerprint
from unlearn_engine.demo.builder import load_corpus
from unlearn_engine.folding import adapter_deltas, fold_stack
from unlearn_engine.trainer import load_base

FORGETS = 4


def _folded_numel(lora) -> int:
    return sum(w.numel() for v in lora.versions for w in lora._versions[v].values())


def test_the_served_and_trained_stack_stay_one_folded_copy(demo_model_dir: Path, tmp_path: Path) -> None:
    corpus = load_corpus(demo_model_dir)
    people = corpus.trained_people[:FORGETS]
    settings = make_settings(tmp_path, demo_model_dir, worker=False, monitor_interval_seconds=0)
    st = ServerThread(settings)
    worker = None
    try:
        st.wait_ready()
        stacks = st.server.coordinator.stacks
        worker = SqliteLedger(settings.data_dir / LEDGER_FILE)
        sizes = []
        with LetheClient(st.target, st.server.operator_token, timeout=60) as c:
            md = c._metadata
            for i, person in enumerate(people, 1):
                qa = [apb.QAPair(question=r.question, answer=r.answer)
                      for r in corpus.qa if r.person == person and r.split == "train"][:4]
                reply = c.admin.Forget(apb.ForgetRequest(subjects=[person], qa_pairs=qa, reason="depth",
                                                         idempotency_key=f"depth-{i}"), metadata=md)
                train_standin(worker, settings.data_dir, demo_model_dir, seed=i)
                job = wait_state(c, reply.job.forget_id, apb.FORGET_STATE_ACTIVE)
                assert job.stack_version == i
                assert c.generate(corpus.qa[0].question, max_new_tokens=4).stack_version == i
                info = c.model_info()
                assert (info.stack_version, info.stack_depth) == (i, i)  # membership: one more per forget
                # representation: the old version was freed (no row ran it), one folded copy is left
                assert stacks.lora.versions == {i} and stacks.lora.served == i
                assert not stacks.lora._hooks
                assert not any(m._forward_hooks for m in st.server.runtime.scheduler.loaded.model.modules())
                sizes.append(_folded_numel(stacks.lora))
            listed = c.admin.ListAdapters(apb.ListAdaptersRequest(), metadata=md)
        assert len(listed.adapters) == FORGETS  # the audit trail keeps every member
        assert sizes == [sizes[0]] * FORGETS, sizes  # one folded copy of the same layers, at any depth

        # The served weights are the exact sum of every member's delta (nothing dropped by folding).
        fingerprint = model_fingerprint(demo_model_dir)
        arts = [load_artifact(settings.data_dir / "adapters" / a.adapter_id, fingerprint) for a in listed.adapters]
        base, _ = load_base(demo_model_dir, "cpu")
        path = next(iter(stacks.lora._versions[FORGETS]))
        expected = dict(base.named_modules())[path].weight.detach().clone()
        for art in arts:
            a, b = adapter_deltas(art)[path]
            expected += b @ a
        assert torch.allclose(stacks.lora._versions[FORGETS][path], expected, atol=1e-5)

        # The worker's starting model for the next forget: the stack folded into the base, a plain
        # model with the base's parameters (training adds one LoRA on top, whatever the depth).
        n_base = sum(p.numel() for p in base.parameters())
        folded = fold_stack(base, arts)
        assert sum(p.numel() for p in folded.parameters()) == n_base
        assert not any("lora" in name for name, _ in folded.named_modules())
    finally:
        if worker is not None:
            worker.close()
        st.stop()
