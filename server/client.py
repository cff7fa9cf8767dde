"""A small synchronous Python client for Lethe (used by the CLI and the tests).

Wraps a gRPC channel (plaintext, TLS or mutual TLS) with the bearer token attached to every call. Returns protobuf messages:
it adds no caching or connection pooling of its own, and retries one thing only: `watch_forget`
reopens a WatchForget stream the connection dropped (a forget job outlives the server's max
connection age), since grpc cannot retry a stream that already answered.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.api import admin_pb2 as apb, admin_pb2_grpc, inference_pb2 as pb, inference_pb2_grpc
from server.auth import OPERATOR_TOKEN_FILE
from server.tls import TlsFiles, channel_credentials

if TYPE_CHECKING:
    from server.forget.receipts import SignedReceipt

log = logging.getLogger(__name__)

# How long `watch_forget` keeps trying while the server cannot be reached, counted from the
# first failure after the last event: a restart (model load included) fits; a server gone for
# good ends the watch with WatchLost instead of a hang.
WATCH_RECONNECT_SECONDS = 180.0
_BACKOFF_SECONDS = (0.5, 5.0)  # between reopenings: first wait, cap (doubling)
# The channel redials a lost server with grpc's own backoff; capped below grpc's 120 s default
# so a restarted server is found within seconds, not minutes.
_MAX_RECONNECT_BACKOFF_MS = 5_000


class WatchLost(ConnectionError):
    """A WatchForget stream could not be reopened within its bound. The job itself goes on on
    the server: GetForget (or `lethe forgets`) tells how it ended."""


def find_token(explicit: str | None, data_dir: Path | None) -> str | None:
    """An explicit token, else the operator token a local server wrote into its data dir."""
    if explicit:
        return explicit
    if data_dir is not None:
        path = data_dir / OPERATOR_TOKEN_FILE
        if path.is_file():
            return path.read_text().strip()
    return None


class LetheClient:
    def __init__(self, target: str = "127.0.0.1:50051", token: str | None = None, timeout: float | None = None,
                 tls: TlsFiles | None = None):
        """`tls`: connect over TLS, trusting `tls.ca` (else the system roots) and presenting
        `tls.cert` / `tls.key` when given (mutual TLS); None = plaintext."""
        self.target = target
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        options = [("grpc.max_reconnect_backoff_ms", _MAX_RECONNECT_BACKOFF_MS)]
        self.channel = (grpc.secure_channel(target, channel_credentials(tls), options) if tls is not None
                        else grpc.insecure_channel(target, options))
        self.inference = inference_pb2_grpc.InferenceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)

    def __enter__(self) -> LetheClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    @staticmethod
    def request(prompt: str, max_new_tokens: int | None = None, temperature: float | None = None,
                top_p: float | None = None, top_k: int = 0, seed: int | None = None,
                stop: Sequence[str] = (), request_id: str = "", ignore_eos: bool = False,
                messages: Sequence[tuple[str, str]] = (), stream_interval: int | None = None) -> pb.GenerateRequest:
        """A GenerateRequest; `messages` ((role, content) pairs) with prompt "" asks for chat."""
        req = pb.GenerateRequest(prompt=prompt, top_k=top_k, stop=list(stop), request_id=request_id,
                                 ignore_eos=ignore_eos,
                                 messages=[pb.ChatMessage(role=r, content=c) for r, c in messages])
        if max_new_tokens is not None:
            req.max_new_tokens = max_new_tokens
        if stream_interval is not None:
            req.stream_interval = stream_interval
        if temperature is not None:
            req.temperature = temperature
        if top_p is not None:
            req.top_p = top_p
        if seed is not None:
            req.seed = seed
        return req

    def generate(self, prompt: str, **params: object) -> pb.GenerateResponse:
        return self.inference.Generate(self.request(prompt, **params), timeout=self.timeout,  # type: ignore[arg-type]
                                       metadata=self._metadata)

    def stream(self, prompt: str, **params: object) -> Iterator[pb.GenerateStreamResponse]:
        return self.inference.GenerateStream(self.request(prompt, **params), timeout=self.timeout,  # type: ignore[arg-type]
                                             metadata=self._metadata)

    def model_info(self) -> pb.ModelInfoResponse:
        return self.inference.ModelInfo(pb.ModelInfoRequest(), timeout=self.timeout, metadata=self._metadata)

    def watch_forget(self, forget_id: str, timeout: float | None = None,
                     reconnect_seconds: float = WATCH_RECONNECT_SECONDS) -> Iterator[apb.ForgetEvent]:
        """WatchForget's events for `forget_id` until the server ends the stream (it does when the
        job is ACTIVE, FAILED or DEACTIVATED), reopened whenever it breaks with UNAVAILABLE: the
        server closed the connection at its max age, or restarted. Other errors propagate as
        grpc.RpcError (DEADLINE_EXCEEDED once `timeout`, for the whole watch, runs out); a server
        unreachable for `reconnect_seconds` raises WatchLost.

        Each event is yielded once. A reopened stream replays the job from its start (the
        servicer keeps no cursor), but the ledger only appends transitions and progress rows and
        replays each kind in order, so the first N of each kind are the ones already seen.
        Events missed while disconnected arrive transitions first, then progress."""
        request = apb.WatchForgetRequest(forget_id=forget_id)
        seen = {"transition": 0, "progress": 0}
        end = None if timeout is None else time.monotonic() + timeout
        failures, lost_since = 0, 0.0
        while True:
            replayed = {"transition": 0, "progress": 0}
            left = None if end is None else max(end - time.monotonic(), 0.0)
            call = self.admin.WatchForget(request, metadata=self._metadata, timeout=left)
            try:
                for event in call:
                    failures = 0
                    kind = event.WhichOneof("event") or "transition"
                    replayed[kind] += 1
                    if replayed[kind] > seen[kind]:
                        seen[kind] += 1
                        yield event
                return
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                lost_since = time.monotonic() if failures == 0 else lost_since
                failures += 1
                log.info("WatchForget %s lost (%s: %s); reopening", forget_id, err.code().name, err.details())
                give_up = lost_since + reconnect_seconds if end is None else min(lost_since + reconnect_seconds, end)
                if not self._reconnect(give_up, failures):
                    raise WatchLost(f"lost {self.target} while watching {forget_id}: no answer for "
                                    f"{time.monotonic() - lost_since:.0f} s (last error: {err.code().name}: "
                                    f"{err.details()}); the job goes on on the server") from err
            finally:
                call.cancel()  # a caller that stops early frees its server watch slot at once

    def wait_forget(self, forget_id: str, timeout: float | None = None,
                    reconnect_seconds: float = WATCH_RECONNECT_SECONDS) -> apb.ForgetJob:
        """The job as `watch_forget` last saw it, when the server ends the watch: ACTIVE, FAILED
        or DEACTIVATED."""
        job = None
        for event in self.watch_forget(forget_id, timeout, reconnect_seconds):
            job = event.job
        if job is None:  # every job has a transition, so this is only a guard
            job = self.admin.GetForget(apb.GetForgetRequest(forget_id=forget_id), timeout=self.timeout,
                                       metadata=self._metadata)
        return job

    def _reconnect(self, deadline: float, failures: int) -> bool:
        """Back off (doubling with each failure in a row), then wait until the channel is READY
        again; False when `deadline` (time.monotonic) comes first."""
        pause = min(_BACKOFF_SECONDS[0] * 2 ** (failures - 1), _BACKOFF_SECONDS[1])
        if time.monotonic() + pause >= deadline:
            return False
        time.sleep(pause)
        ready = grpc.channel_ready_future(self.channel)
        try:
            ready.result(timeout=max(deadline - time.monotonic(), 0.0))
        except grpc.FutureTimeoutError:
            ready.cancel()  # stops watching the channel's state
            return False
        return True

    def receipt(self, forget_id: str) -> SignedReceipt | None:
        """The forget's signed deletion receipt, or None while it has none (not ACTIVE yet)."""
        from server.forget.receipts import SignedReceipt

        job = self.admin.GetForget(apb.GetForgetRequest(forget_id=forget_id), timeout=self.timeout,
                                   metadata=self._metadata)
        if not job.HasField("receipt"):
            return None
        r = job.receipt
        return SignedReceipt(r.body, r.signature, r.key_id, r.revoked, r.revocation_body, r.revocation_signature)

    def receipt_public_key(self) -> bytes:
        """The PEM public key that verifies this server's receipts."""
        return self.admin.GetReceiptKey(apb.GetReceiptKeyRequest(), timeout=self.timeout,
                                        metadata=self._metadata).public_key_pem.encode()

    def health(self, service: str = "") -> int:
        resp = self.health_stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout)
        return resp.status
