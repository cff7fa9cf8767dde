"""The Admin service: Forget, ForgetDryRun, GetForget, WatchForget, ListForgets, ListAdapters,
DeactivateAdapter, GetReceiptKey.

Operators only (the auth interceptor checks the token). Converts protobuf to domain values and
calls the ForgetCoordinator / ledger; never returns forgotten content, only counts and states.
The one exception is ForgetDryRun, which shows the operator entries of their own corpus that a
request *would* match before it is filed (nothing is stored).
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, TypeVar

import grpc

from server.api import admin_pb2 as pb
from server.api import admin_pb2_grpc
from server.forget.coordinator import ForgetCoordinator
from server.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from server.forget.jobs import MAX_KEY_CHARS, MAX_REASON_CHARS, ForgetJob, ForgetState
from server.forget.hits import HitTally
from server.forget.ledger import IdempotencyConflict, UnknownForget
from server.forget.receipts import public_pem
from server.metrics import ServerMetrics
from server.rpc import rpc_method
from server.servicers import convert
from server.tls import peer_identity
from unlearn_engine.methods import METHODS

MAX_PAGE = 500
MAX_DRY_RUN_ENTRIES = 2000  # entries listed by a dry run (counts are always complete)
DEFAULT_PAGE = 50
T = TypeVar("T")
ACTOR = "operator"  # the operator token's holder; with mutual TLS, the client certificate's name


def actor_of(context: grpc.aio.ServicerContext) -> str:
    """Who the audit log names: the verified client certificate, else the operator token."""
    name = peer_identity(context)
    return f"cert:{name}" if name else ACTOR


class AdminServicer(admin_pb2_grpc.AdminServicer):
    service_name = "lethe.v1.Admin"

    def __init__(self, coordinator: ForgetCoordinator, metrics: ServerMetrics, hits: HitTally,
                 max_watch_streams: int = 16, max_queued_forgets: int = 64):
        self.coordinator = coordinator
        self.ledger = coordinator.ledger
        self.metrics = metrics
        self.hits = hits
        self.max_watch_streams = max_watch_streams
        self.max_queued_forgets = max_queued_forgets
        self._watching = 0  # WatchForget streams open now (one event loop: a plain counter)

    def _read(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        """A ledger read that sees every guard hit counted so far (the tally writes in batches)."""
        def run() -> T:
            self.hits.flush()
            return fn(*args)
        return asyncio.to_thread(run)

    async def _job(self, forget_id: str) -> ForgetJob:
        if not forget_id:
            raise InvalidArgument("forget_id is required")
        try:
            return await self._read(self.ledger.get, forget_id)
        except UnknownForget:
            raise NotFound(f"no forget job {forget_id}") from None

    @rpc_method("Forget")
    async def Forget(self, request: pb.ForgetRequest, context: grpc.aio.ServicerContext) -> pb.ForgetResponse:
        payload = convert.forget_payload_from_pb(request)
        if request.method and request.method not in METHODS:
            raise InvalidArgument(f"unknown method {request.method!r}; valid: {', '.join(sorted(METHODS))}")
        if len(request.reason) > MAX_REASON_CHARS:
            raise InvalidArgument(f"reason must be at most {MAX_REASON_CHARS} characters")
        if len(request.idempotency_key) > MAX_KEY_CHARS:
            raise InvalidArgument(f"idempotency_key must be at most {MAX_KEY_CHARS} characters")
        await self._check_queue()
        try:
            done = await self.coordinator.submit(
                payload, request.method, request.reason, request.idempotency_key or None, actor_of(context))
        except IdempotencyConflict:
            raise AlreadyExists("this idempotency_key was used for a request with other content; "
                                "use a new key for a new request") from None
        return pb.ForgetResponse(job=convert.forget_job_to_pb(done.job), created=done.created,
                                 commitment_key=done.commitment_key)

    @rpc_method("ForgetDryRun")
    async def ForgetDryRun(self, request: pb.ForgetRequest, context: grpc.aio.ServicerContext) -> pb.ForgetDryRunResponse:
        resolved = await self.coordinator.dry_run(convert.forget_payload_from_pb(request))
        return convert.dry_run_to_pb(resolved, MAX_DRY_RUN_ENTRIES)

    async def _check_queue(self) -> None:
        """Refuse new work while max_queued_forgets are not yet ACTIVE or FAILED. Checked before
        the write, so concurrent Forgets can pass it together: a bound, not an exact count."""
        counts = await asyncio.to_thread(self.ledger.counts_by_state)
        queued = sum(n for state, n in counts.items() if not state.terminal)
        if queued >= self.max_queued_forgets:
            raise ResourceExhausted(f"{queued} forgets are in progress (limit {self.max_queued_forgets}); "
                                    "retry when some are done")

    @rpc_method("GetForget")
    async def GetForget(self, request: pb.GetForgetRequest, context: grpc.aio.ServicerContext) -> pb.ForgetJob:
        job = await self._job(request.forget_id)
        receipt = None
        if job.state in (ForgetState.ACTIVE, ForgetState.DEACTIVATED):
            receipt = await asyncio.to_thread(self.coordinator.receipt, job.forget_id)
        return convert.forget_job_to_pb(job, receipt)

    @rpc_method("GetReceiptKey")
    async def GetReceiptKey(self, request: pb.GetReceiptKeyRequest,
                            context: grpc.aio.ServicerContext) -> pb.ReceiptKey:
        signer = self.coordinator.signer
        if signer is None:
            raise FailedPrecondition("this server signs no receipts")
        return pb.ReceiptKey(algorithm="Ed25519", public_key_pem=public_pem(signer.public).decode(),
                             key_id=signer.key_id)

    @rpc_method("WatchForget")
    async def WatchForget(self, request: pb.WatchForgetRequest, context: grpc.aio.ServicerContext):
        if self._watching >= self.max_watch_streams:
            raise ResourceExhausted(f"{self._watching} WatchForget streams are open (the limit); poll GetForget "
                                    "or retry later")
        self._watching += 1
        try:
            async for event in self._watch(request):
                yield event
        finally:
            self._watching -= 1

    async def _watch(self, request: pb.WatchForgetRequest):
        job = await self._job(request.forget_id)
        seen_transitions, seen_progress = 0, 0
        while True:
            for transition in job.transitions[seen_transitions:]:
                yield pb.ForgetEvent(job=convert.forget_job_to_pb(job), transition=convert.transition_to_pb(transition))
            seen_transitions = len(job.transitions)
            for seq, progress in await asyncio.to_thread(self.ledger.progress_after, job.forget_id, seen_progress):
                seen_progress = seq
                yield pb.ForgetEvent(job=convert.forget_job_to_pb(job), progress=convert.progress_to_pb(progress))
            if job.state.terminal:
                return
            await self.coordinator.changed(timeout=1.0)
            job = await self._job(request.forget_id)

    @rpc_method("ListForgets")
    async def ListForgets(self, request: pb.ListForgetsRequest, context: grpc.aio.ServicerContext) -> pb.ListForgetsResponse:
        size = request.page_size or DEFAULT_PAGE
        if size > MAX_PAGE:
            raise InvalidArgument(f"page_size must be at most {MAX_PAGE}")
        unknown = [s for s in request.states if s not in pb.ForgetState.values()]
        if unknown:
            raise InvalidArgument(f"unknown states {unknown}; valid: {', '.join(pb.ForgetState.keys()[1:])}")
        states = [convert.forget_state_from_pb(s) for s in request.states if s != pb.FORGET_STATE_UNSPECIFIED]
        before = request.page_token or None
        if before is not None:
            await self._job(before)  # an unknown token is a client error, not an empty page
        jobs = await self._read(self.ledger.list, states, size + 1, before)
        page, more = jobs[:size], len(jobs) > size
        return pb.ListForgetsResponse(forgets=[convert.forget_job_to_pb(j) for j in page],
                                      next_page_token=page[-1].forget_id if more else "")

    @rpc_method("ListAdapters")
    async def ListAdapters(self, request: pb.ListAdaptersRequest, context: grpc.aio.ServicerContext) -> pb.ListAdaptersResponse:
        return await asyncio.to_thread(self._adapters_pb)

    def _adapters_pb(self) -> pb.ListAdaptersResponse:
        stack = self.ledger.current_stack()
        adapters = [convert.adapter_to_pb(self.ledger.adapter(a), i, self.ledger.activated_at(a))
                    for i, a in enumerate(stack.adapter_ids)]
        return pb.ListAdaptersResponse(stack_version=stack.version, adapters=adapters)

    @rpc_method("DeactivateAdapter")
    async def DeactivateAdapter(self, request: pb.DeactivateAdapterRequest,
                                context: grpc.aio.ServicerContext) -> pb.ListAdaptersResponse:
        if not request.adapter_id:
            raise InvalidArgument("adapter_id is required")
        if not request.reason.strip():  # it undoes a forget at the model level: the audit log says why
            raise InvalidArgument("reason is required: why this forget's adapter is removed (kept in the audit log)")
        if len(request.reason) > MAX_REASON_CHARS:
            raise InvalidArgument(f"reason must be at most {MAX_REASON_CHARS} characters")
        await self.coordinator.deactivate(request.adapter_id, request.reason, actor_of(context))
        return await asyncio.to_thread(self._adapters_pb)
