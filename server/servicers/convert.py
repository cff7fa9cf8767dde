"""Every conversion between generated protobuf types and domain values, in one place.

The edge of the server: servicers call these and hand domain values inward, so nothing past
`server/servicers/` imports the generated stubs. Validation itself lives on the domain values
(`GenerateParams.validated`, `ForgetPayload.validated`); this module only reads and writes fields.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from server.api import admin_pb2 as apb
from server.api import inference_pb2 as ipb
from server.forget.jobs import AdapterRecord, ForgetJob, ForgetPayload, ForgetState, JobProgress, Transition
from server.forget.receipts import SignedReceipt
from server.forget.resolution import Resolved
from server.runtime.params import GenerateParams, GenerationLimits, GenerationResult

_FINISH_REASONS = {
    "length": ipb.FINISH_REASON_LENGTH,
    "stop": ipb.FINISH_REASON_STOP,
    "filtered": ipb.FINISH_REASON_FILTERED,
    "cancelled": ipb.FINISH_REASON_CANCELLED,
    "error": ipb.FINISH_REASON_ERROR,
}


# --- inference -------------------------------------------------------------------------------

def generate_params_from_pb(req: ipb.GenerateRequest, limits: GenerationLimits, prompt: str | None = None,
                            add_special_tokens: bool = True) -> GenerateParams:
    """`prompt` replaces req.prompt when the servicer rendered `req.messages` into one."""
    return GenerateParams.validated(
        limits, req.prompt if prompt is None else prompt,
        max_new_tokens=req.max_new_tokens if req.HasField("max_new_tokens") else None,
        temperature=req.temperature if req.HasField("temperature") else None,
        top_p=req.top_p if req.HasField("top_p") else None,
        top_k=req.top_k,
        seed=req.seed if req.HasField("seed") else None,
        stop=tuple(req.stop), request_id=req.request_id, ignore_eos=req.ignore_eos,
        add_special_tokens=add_special_tokens)


def finish_reason_to_pb(reason: str) -> int:
    return _FINISH_REASONS[reason]


def usage_to_pb(result: GenerationResult) -> ipb.Usage:
    return ipb.Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens)


def generation_result_to_pb(result: GenerationResult) -> ipb.GenerateResponse:
    return ipb.GenerateResponse(
        text=result.text, finish_reason=finish_reason_to_pb(result.finish_reason), usage=usage_to_pb(result),
        stack_version=result.stack_version, request_id=result.request_id)


def stream_finish_to_pb(result: GenerationResult) -> ipb.GenerateStreamResponse:
    return ipb.GenerateStreamResponse(
        finish_reason=finish_reason_to_pb(result.finish_reason), usage=usage_to_pb(result),
        stack_version=result.stack_version, request_id=result.request_id)


# --- admin -----------------------------------------------------------------------------------

def forget_state_to_pb(state: ForgetState) -> int:
    return apb.ForgetState.Value(f"FORGET_STATE_{state.value}")


def forget_state_from_pb(value: int) -> ForgetState:
    return ForgetState(apb.ForgetState.Name(value).removeprefix("FORGET_STATE_"))


def forget_payload_from_pb(req: apb.ForgetRequest) -> ForgetPayload:
    return ForgetPayload.validated(
        texts=req.texts, qa_pairs=[(p.question, p.answer) for p in req.qa_pairs], subjects=req.subjects)


def transition_to_pb(transition: Transition) -> apb.StateTransition:
    return apb.StateTransition(state=forget_state_to_pb(transition.state), at=_ts(transition.at),
                               detail=transition.detail)


def forget_job_to_pb(job: ForgetJob, receipt: SignedReceipt | None = None) -> apb.ForgetJob:
    return apb.ForgetJob(
        receipt=receipt_to_pb(receipt) if receipt is not None else None,
        forget_id=job.forget_id, state=forget_state_to_pb(job.state), method=job.method, reason=job.reason,
        num_texts=job.num_texts, num_qa_pairs=job.num_qa_pairs, num_subjects=job.num_subjects,
        created_at=_ts(job.created_at), updated_at=_ts(job.updated_at), failure_reason=job.failure_reason,
        adapter_id=job.adapter_id, stack_version=job.stack_version, metrics=job.metrics,
        transitions=[transition_to_pb(t) for t in job.transitions], attempts=job.attempts,
        guard_hits=[apb.GuardHitCount(stage=s, phase=p, count=n) for s, p, n in job.guard_hits],
        text_matches=job.matches.texts, qa_matches=job.matches.qa_pairs, subject_matches=job.matches.subjects,
        corpus_digest=job.matches.corpus_digest)


def receipt_to_pb(r: SignedReceipt) -> apb.DeletionReceipt:
    return apb.DeletionReceipt(body=r.body, signature=r.signature, key_id=r.key_id, revoked=r.revoked,
                               revocation_body=r.revocation_body, revocation_signature=r.revocation_signature)


def dry_run_to_pb(resolved: Resolved, max_entries: int) -> apb.ForgetDryRunResponse:
    counts = resolved.resolution.counts
    entries = [apb.MatchedEntry(entry_id=eid, subject=e.subject, question=e.prompt, text=e.target)
               for eid, e in zip(resolved.resolution.entry_ids[:max_entries], resolved.entries)]
    return apb.ForgetDryRunResponse(
        corpus_digest=counts.corpus_digest, text_matches=counts.texts, qa_matches=counts.qa_pairs,
        subject_matches=counts.subjects, entries=entries, total_entries=len(resolved.entries),
        problems=resolved.problems)


def adapter_to_pb(record: AdapterRecord, position: int, activated_at: float) -> apb.Adapter:
    return apb.Adapter(adapter_id=record.adapter_id, forget_id=record.forget_id, position=position,
                       method=record.method, rank=record.rank, size_bytes=record.size_bytes, sha256=record.sha256,
                       activated_at=_ts(activated_at), metrics=record.metrics)


def progress_to_pb(progress: JobProgress) -> apb.TrainingProgress:
    return apb.TrainingProgress(attempt=progress.attempt, step=progress.step, total_steps=progress.total_steps,
                                losses=progress.losses, metrics=progress.metrics,
                                elapsed_seconds=progress.elapsed_seconds, eta_seconds=progress.eta_seconds)


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts
