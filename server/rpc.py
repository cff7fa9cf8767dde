"""One wrapper for every RPC handler: status mapping, request metrics and safe error text.

`rpc_method("Generate")` decorates a method of a servicer that has `metrics` and `service_name`
attributes: a unary handler (`async def`) or a server-streaming one
(`async def` generator). Domain errors (`LetheError`) become their status code and message;
anything else is logged with a fresh error id and the client sees only "internal error (id)".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import time
from typing import Any, Callable

import grpc

from server.errors import LetheError, client_error
from server.metrics import ServerMetrics


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> grpc.StatusCode:
    code, message = client_error(exc, method)
    await context.abort(code, message)
    return code  # not reached: abort raises


@contextlib.asynccontextmanager
async def _observed(metrics: ServerMetrics, labels: tuple[str, str, str], context: grpc.aio.ServicerContext):
    """Count the call, map its failure to a status for the client, record code and latency."""
    metrics.grpc_started.labels(*labels).inc()
    metrics.grpc_msg_received.labels(*labels).inc()
    start, code = time.monotonic(), grpc.StatusCode.OK
    try:
        yield
    except asyncio.CancelledError:
        code = grpc.StatusCode.CANCELLED
        raise
    except Exception as exc:
        code = _code_of(exc, context)
        await _answer(context, exc, labels[2])
        raise
    finally:
        _handled(metrics, labels, code, time.monotonic() - start)


def rpc_method(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(fn):
            @functools.wraps(fn)
            async def stream(self: Any, request: Any, context: grpc.aio.ServicerContext):
                labels = ("server_stream", self.service_name, name)
                async with _observed(self.metrics, labels, context):
                    async for item in fn(self, request, context):
                        self.metrics.grpc_msg_sent.labels(*labels).inc()
                        yield item
            return stream

        @functools.wraps(fn)
        async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext):
            labels = ("unary", self.service_name, name)
            async with _observed(self.metrics, labels, context):
                response = await fn(self, request, context)
                self.metrics.grpc_msg_sent.labels(*labels).inc()
                return response
        return unary
    return decorate


async def _answer(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    """Set the client's status for a failed handler (abort raises), unless it aborted itself."""
    if not _is_abort(exc):
        await _abort(context, exc, method)


def _handled(metrics: ServerMetrics, labels: tuple[str, str, str], code: grpc.StatusCode, seconds: float) -> None:
    method = labels[2]
    metrics.requests.labels("grpc", method, code.name).inc()
    metrics.request_duration.labels("grpc", method).observe(seconds)
    metrics.grpc_handled.labels(*labels, code.name).inc()
    metrics.grpc_handling.labels(*labels).observe(seconds)


def _is_abort(exc: BaseException) -> bool:
    # grpc.aio raises AbortError out of context.abort(); it has already set the status.
    return isinstance(exc, grpc.aio.AbortError)


def _code_of(exc: BaseException, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    if isinstance(exc, LetheError):
        return exc.code
    if _is_abort(exc):
        return context.code() or grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.INTERNAL
