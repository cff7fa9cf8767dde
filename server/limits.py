"""Bounds on what one connection and one client can make the server hold at once.

- `server_options`: gRPC channel arguments (message size, keepalive, connection age) for the
  server; `maximum_concurrent_rpcs` is passed to `grpc.aio.server` beside them.
- `ClientConcurrencyLimit`: an interceptor that counts Inference and Admin calls in flight per
  client — per bearer token, else per TLS client identity, else per peer address — and answers
  RESOURCE_EXHAUSTED beyond the limit, so one client cannot take every slot.
Per-request bounds (prompt size, WatchForget streams, queued forgets) sit where the request is
understood: the servicers. Health and reflection are not counted (probes must always get in).
"""

from __future__ import annotations

import hashlib
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc

from server.auth import ADMIN_PREFIX, INFERENCE_PREFIX, bearer_token
from server.settings import Settings

KEEPALIVE_TIMEOUT_MS = 20_000  # a peer that does not answer a ping this long is dropped
LIMITED = (INFERENCE_PREFIX, ADMIN_PREFIX)


def server_options(s: Settings) -> list[tuple[str, int]]:
    options = [
        ("grpc.max_receive_message_length", s.max_message_bytes),
        ("grpc.max_send_message_length", s.max_message_bytes),
        ("grpc.keepalive_time_ms", int(s.keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        # Clients may ping as often as we do, but not more: faster pings get a GOAWAY.
        ("grpc.http2.min_ping_interval_without_data_ms", int(s.keepalive_seconds * 1000) // 2),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    if s.max_connection_age_seconds > 0:
        options += [("grpc.max_connection_age_ms", int(s.max_connection_age_seconds * 1000)),
                    ("grpc.max_connection_age_grace_ms", int(s.max_connection_age_grace_seconds * 1000))]
    return options


def _peer_host(peer: str) -> str:
    """'ipv4:10.0.0.7:51234' -> 'ipv4:10.0.0.7' (the port changes per connection)."""
    return peer.rsplit(":", 1)[0] if peer.count(":") > 1 else peer


def client_key(token: str | None, context: grpc.aio.ServicerContext) -> str:
    """Who a call is counted against. Tokens are hashed so the table holds no credential."""
    if token:
        return "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    identity = context.auth_context().get("x509_common_name")
    if identity:
        return "tls:" + identity[0].decode(errors="replace")
    return "peer:" + _peer_host(context.peer())


class ClientConcurrencyLimit(grpc.aio.ServerInterceptor):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight: dict[str, int] = {}  # one event loop: no lock needed

    def _enter(self, key: str) -> bool:
        n = self.in_flight.get(key, 0)
        if n >= self.limit:
            return False
        self.in_flight[key] = n + 1
        return True

    def _leave(self, key: str) -> None:
        n = self.in_flight[key] - 1
        if n:
            self.in_flight[key] = n
        else:
            del self.in_flight[key]

    async def _refuse(self, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"more than {self.limit} calls in flight from this client; retry with backoff")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(LIMITED):
            return handler
        token = bearer_token(details.invocation_metadata)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, token), request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, token), request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler  # no client-streaming methods in this API

    def _unary(self, inner: Callable[..., Awaitable[Any]], token: str | None) -> Callable[..., Awaitable[Any]]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            key = client_key(token, context)
            if not self._enter(key):
                await self._refuse(context)
            try:
                return await inner(request, context)
            finally:
                self._leave(key)
        return call

    def _stream(self, inner: Callable[..., AsyncIterator[Any]], token: str | None) -> Callable[..., AsyncIterator[Any]]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            key = client_key(token, context)
            if not self._enter(key):
                await self._refuse(context)
            try:
                async for item in inner(request, context):
                    yield item
            finally:
                self._leave(key)
        return call
