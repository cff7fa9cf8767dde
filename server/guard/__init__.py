"""The leakage guard: filters every output against everything that has been forgotten.

Wiring (the server owns persistence, metrics and gRPC; this package owns none of them):

    guard = LeakageGuard(GuardConfig(model_cache_dir=data_dir / "models"), secret,
                         on_hit=lambda h: hits.labels(h.stage, h.phase, h.source).inc())
    guard.warm_up()                                   # at start: homoglyph map, ONNX model
    # restart: for each ledger row
    guard.add(GuardEntries.from_bytes(row.guard_entries), phase=row.phase)
    # Forget, before the reply (fast ack: lexical now, embeddings right after)
    e = guard.derive(forget_id, ForgetItems(texts, qa, subjects), semantic=False)
    ledger.store(forget_id, e.to_bytes()); guard.add(e); reply(...)
    full = guard.derive(forget_id, items); ledger.store(forget_id, full.to_bytes()); guard.add(full)
    guard.set_phase(forget_id, "after_adapter")       # when its adapter goes live
    # each request
    verdict = guard.check_prompt(prompt)              # refuse if verdict.refused
    s = guard.session(prompt, verdict)
    for delta in deltas: step = s.push(delta)         # send step.release; stop on step.stop
    step = s.finish()                                 # finish_reason "filtered" if step.hit

Imports no gRPC, protobuf or Prometheus code: hits reach metrics through `on_hit`.
The per-token modules may run compiled (native.py); `native.STATUS` says whether they do.
"""

from server.guard import native

native.use_source_if_stale()  # before any module that may be compiled is imported

from server.guard.config import GuardConfig
from server.guard.embedder import OnnxMiniLM, SentenceEmbedder, TorchMiniLM, export_onnx
from server.guard.entries import GuardEntries
from server.guard.guard import GuardEntriesMismatch, LeakageGuard
from server.guard.session import GuardSession
from server.guard.stages import OutputFilter, register_stage, stage_class, stage_names
from server.guard.values import ForgetItems, GuardHit, GuardStep, PromptVerdict

__all__ = [
    "ForgetItems", "GuardConfig", "GuardEntries", "GuardEntriesMismatch",
    "GuardHit", "GuardSession", "GuardStep", "LeakageGuard", "OnnxMiniLM", "OutputFilter",
    "PromptVerdict", "SentenceEmbedder", "TorchMiniLM", "export_onnx",
    "register_stage", "stage_class", "stage_names",
]
