"""Bearer-token authentication for the two audiences: operators (Admin) and clients (Inference).

- Admin always needs the operator token. With none configured, a random one is created in the
  data directory (mode 0600, atomically) on first start, so the default set-up is never open.
  Tokens shorter than 32 characters (an empty file included) are refused at start-up.
- Inference (gRPC, and the HTTP front through `check_inference`) needs a client (or the
  operator) token only when client tokens are configured.
- Health and reflection are open (orchestrators and tools probe them unauthenticated).
Missing, empty or wrong credentials -> UNAUTHENTICATED; a client token on Admin -> PERMISSION_DENIED.
Comparisons are constant-time. Does not do TLS (see app.py) or per-user identities.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from pathlib import Path
from typing import Awaitable, Callable

import grpc

from server.keyfile import read_or_create
from server.settings import SettingsError, check_token

logger = logging.getLogger(__name__)

OPERATOR_TOKEN_FILE = "operator.token"
ADMIN_PREFIX = "/lethe.v1.Admin/"
INFERENCE_PREFIX = "/lethe.v1.Inference/"


def ensure_operator_token(data_dir: Path, configured: str | None) -> str:
    """The configured operator token, else the one in the data dir, created (0600) if missing."""
    if configured:
        return configured
    path = data_dir / OPERATOR_TOKEN_FILE
    token, created = read_or_create(path, lambda: (secrets.token_urlsafe(32) + "\n").encode())
    if created:
        logger.info("created operator token file %s", path)
    text = token.decode().strip()
    try:
        check_token(f"the operator token in {path}", text)
    except SettingsError as exc:
        raise SettingsError(f"{exc} and write it there, or delete the file to have one made") from None
    return text


def _matches(presented: str, tokens: tuple[str, ...]) -> bool:
    # Compare against every token (no early exit) so timing reveals nothing about which matched.
    found = False
    for token in tokens:
        found |= hmac.compare_digest(presented.encode(), token.encode())
    return found


def bearer(value: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value (gRPC metadata or HTTP header)."""
    if value is not None and value.startswith("Bearer "):
        return value[len("Bearer "):].strip() or None  # "Bearer " alone is no credential
    return None


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            return bearer(value)
    return None


def check_inference(token: str | None, operator_tokens: tuple[str, ...], client_tokens: tuple[str, ...]
                    ) -> tuple[grpc.StatusCode, str] | None:
    """Inference access (gRPC Inference, the HTTP front): None = allowed, else the status to answer."""
    if client_tokens:
        if token is None:
            return grpc.StatusCode.UNAUTHENTICATED, "bearer token required"
        if not (_matches(token, client_tokens) or _matches(token, operator_tokens)):
            return grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token"
    return None


def _deny(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    async def abort(request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)
    return grpc.unary_unary_rpc_method_handler(abort)


def _deny_stream(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    async def abort(request: object, context: grpc.aio.ServicerContext):
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator
    return grpc.unary_stream_rpc_method_handler(abort)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, operator_token: str, client_tokens: tuple[str, ...] = (), streaming: frozenset[str] = frozenset()):
        self.operator_tokens = (operator_token,)
        self.client_tokens = client_tokens
        self.streaming = streaming  # full method names that are server-streaming

    def decide(self, method: str, token: str | None) -> tuple[grpc.StatusCode, str] | None:
        """None = allowed, else the status to answer with."""
        if method.startswith(ADMIN_PREFIX):
            if token is None:
                return grpc.StatusCode.UNAUTHENTICATED, "operator bearer token required"
            if _matches(token, self.operator_tokens):
                return None
            if self.client_tokens and _matches(token, self.client_tokens):
                return grpc.StatusCode.PERMISSION_DENIED, "client credentials cannot call Admin"
            return grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token"
        if method.startswith(INFERENCE_PREFIX):
            return check_inference(token, self.operator_tokens, self.client_tokens)
        return None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        verdict = self.decide(details.method, bearer_token(details.invocation_metadata))
        if verdict is None:
            return await continuation(details)
        deny = _deny_stream if details.method in self.streaming else _deny
        return deny(*verdict)


def caller_label(metadata: tuple[tuple[str, str | bytes], ...] | None, operator_token: str,
                 client_tokens: tuple[str, ...]) -> str:
    """`token_label` of a gRPC call's bearer token."""
    return token_label(bearer_token(metadata), operator_token, client_tokens)


def token_label(token: str | None, operator_token: str, client_tokens: tuple[str, ...]) -> str:
    """Who called, as a bounded metric label: "operator", "client-N" (the Nth configured client
    token, 1-based) or "anonymous". Never the token itself."""
    if token is None:
        return "anonymous"
    if _matches(token, (operator_token,)):
        return "operator"
    label = "anonymous"
    for i, t in enumerate(client_tokens, 1):  # every token compared: timing says nothing
        if hmac.compare_digest(token.encode(), t.encode()):
            label = f"client-{i}"
    return label
