"""Replicas load adapters they never trained (issue 17, shared adapter store): a worker on
another machine (its own directory) publishes a verified adapter to the shared PostgreSQL
ledger; replica B, which has never seen that directory, fetches it, checks it and swaps it in;
replica C, started afterwards, serves the same stack version from its first SERVING response.

The worker's training is replaced by a random LoRA adapter saved with the engine's own
artifact writer (training takes minutes here; the worker's own path is test_forget_flow.py).
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from server.api import admin_pb2 as apb
from server.client import LetheClient
from server.forget.ledger.postgres import PostgresLedger
from server.forget.receipts import ReceiptSigner
from server.forget.shared_store import artifact_blobs
from server.forget.worker import adapter_record
from server.guard import LeakageGuard
from server.keyfile import GUARD_KEY_FILE, guard_secret
from tests.conftest import ServerThread, make_settings
from tests.support.replicas import WORKER, claim_to_verifying, file_and_arm, guard_for, wait_for
from unlearn_engine.artifacts import adapter_name_for, model_fingerprint, save_artifact
from unlearn_engine.trainer import load_base


def _train_elsewhere(ledger: PostgresLedger, guard: LeakageGuard, model_dir: Path, store: Path) -> str:
    """What a worker on another machine leaves behind: a job VERIFYING with its adapter recorded
    and published. Returns the adapter id."""
    forget_id = file_and_arm(ledger, guard, "Orlan Vexmoor")
    claim_to_verifying(ledger, forget_id)
    torch.manual_seed(0)
    model, _ = load_base(model_dir, "cpu")
    name = adapter_name_for(forget_id)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                            init_lora_weights=False), adapter_name=name)
    artifact = save_artifact(peft, name, store / name, forget_id=forget_id, method="npo", config={},
                             base_fingerprint=model_fingerprint(model_dir))
    ledger.record_adapter(adapter_record(forget_id, artifact), worker_id=WORKER, blobs=artifact_blobs(artifact.path))
    return name


def test_replicas_load_an_adapter_trained_on_another_machine(demo_model_dir: Path, tmp_path: Path,
                                                             postgres_url: str) -> None:
    receipt_key = tmp_path / "receipt.pem"  # the replicas' one receipt-signing key
    receipt_key.write_bytes(ReceiptSigner.generate_pem())
    b_settings = make_settings(tmp_path / "b", demo_model_dir, ledger_url=postgres_url, worker=False,
                               receipt_key=receipt_key)
    c_settings = make_settings(tmp_path / "c", demo_model_dir, ledger_url=postgres_url, worker=False,
                               receipt_key=receipt_key)
    key = guard_secret(b_settings.data_dir)
    c_settings.data_dir.mkdir(parents=True)
    (c_settings.data_dir / GUARD_KEY_FILE).write_bytes(key)  # one guard key for every replica
    guard = guard_for(key, b_settings.cache_dir)
    ledger = PostgresLedger(postgres_url)
    b = ServerThread(b_settings)
    c = None
    try:
        b.wait_ready()
        adapter_id = _train_elsewhere(ledger, guard, demo_model_dir, tmp_path / "worker" / "adapters")
        with LetheClient(b.target, b.server.operator_token, timeout=60) as cb:
            # the model switches first, the ledger commits the version right after
            wait_for(lambda: cb.model_info().stack_version == 1 and ledger.current_stack().version == 1,
                      "replica B to swap in the shared adapter")
            listed = cb.admin.ListAdapters(apb.ListAdaptersRequest(), metadata=cb._metadata)
            assert [a.adapter_id for a in listed.adapters] == [adapter_id]
        assert (b_settings.data_dir / "adapters" / adapter_id / "manifest.json").is_file()  # B's local cache
        c = ServerThread(c_settings)
        c.wait_ready()
        with LetheClient(c.target, timeout=60) as cc:
            assert cc.model_info().stack_version == 1  # fetched and verified before SERVING
        assert (c_settings.data_dir / "adapters" / adapter_id).is_dir()
    finally:
        for st in (b, c):
            if st is not None:
                st.stop()
        ledger.close()
