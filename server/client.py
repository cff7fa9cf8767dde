"""A small synchronous Python client for Lethe (used by the CLI and the tests).

Wraps a gRPC channel (plaintext, TLS or mutual TLS) with the bearer token attached to every call. Returns protobuf messages:
it adds no caching, retries or connection pooling of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.api import admin_pb2 as apb, admin_pb2_grpc, inference_pb2 as pb, inference_pb2_grpc
from server.auth import OPERATOR_TOKEN_FILE
from server.tls import TlsFiles, channel_credentials

if TYPE_CHECKING:
    from server.forget.receipts import SignedReceipt


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
        self.channel = (grpc.secure_channel(target, channel_credentials(tls)) if tls is not None
                        else grpc.insecure_channel(target))
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
