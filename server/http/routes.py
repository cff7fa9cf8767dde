"""The OpenAI-compatible routes: completions, chat completions, models, health.

Each generation route validates through the domain (`GenerateParams.validated`,
`chat_messages`), submits through the guarded generation path the gRPC servicer uses
(runtime/guarded.py), and answers in OpenAI's shapes (format.py): a JSON body, or Server-Sent
Events ending `data: [DONE]`. Authentication is `check_inference` from server/auth.py; every
failure goes through `errors.client_error` and `errors.HTTP_STATUS`, so HTTP answers the same
codes and client-safe messages as gRPC, in OpenAI's error JSON. A client that disconnects
cancels its generation and frees its batch slot. A deadline does the same without a disconnect
(a proxy may hold the connection open): `X-Request-Timeout: <seconds>` bounds any request, as
gRPC's deadline does; a non-streamed request also honours the official OpenAI client's own
`X-Stainless-Read-Timeout` (how long it will wait for the response; a stream's read timeout is
per chunk, so it is no deadline). Past it the row leaves the batch: a 504 `deadline_exceeded`,
or, mid-stream, an error event. No Admin routes: operators use gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import grpc
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from server import __version__
from server.auth import bearer, check_inference, token_label
from server.errors import HTTP_STATUS, InvalidArgument, LetheError, PermissionDenied, Unauthenticated, client_error
from server.runtime.params import GenerateParams, GenerationLimits, GenerationResult
from server.http.format import DONE, Envelope, error_body, sse
from server.http.schemas import ChatCompletionRequest, CompletionRequest
from server.metrics import ServerMetrics
from server.runtime.chat import CHAT_ADDS_SPECIAL_TOKENS, chat_messages
from server.runtime.guarded import GuardedGenerator, GuardedRun

METHODS = {"/v1/completions": "completions", "/v1/chat/completions": "chat.completions", "/v1/models": "models"}
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "invalid_request_error", 429: "rate_limit_error"}
_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
RETRY_AFTER_SECONDS = 1  # a 429's hint: a batch slot frees within a few decode steps
TIMEOUT_HEADER = "x-request-timeout"  # seconds, any request: Lethe's deadline, as gRPC's
OPENAI_TIMEOUT_HEADER = "x-stainless-read-timeout"  # the openai client's timeout: non-streamed only
MAX_TIMEOUT_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class HttpDeps:
    """What the routes need from the server (app.py builds it)."""

    generator: GuardedGenerator
    limits: GenerationLimits
    metrics: ServerMetrics
    operator_token: str
    client_tokens: tuple[str, ...]
    serving: Callable[[], bool]  # the gRPC health state: True when SERVING


def error_response(code: grpc.StatusCode | None, message: str, param: str | None = None,
                   status: int | None = None) -> JSONResponse:
    """OpenAI's error JSON for a status code (`status` overrides the code's HTTP status)."""
    if status is None:
        status = HTTP_STATUS.get(code, 500) if code is not None else 500
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 429 else None
    kind = _ERROR_TYPES.get(status, "server_error")
    name = code.name.lower() if code is not None else None
    return JSONResponse(error_body(message, kind, param, name), status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """The first pydantic error as `field: message`, and the field (OpenAI's `param`)."""
    err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    parts = [p for p in err.get("loc", ()) if p != "body"]
    param = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".") or None
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return (f"{param}: {msg}" if param else msg), param


class Routes:
    def __init__(self, deps: HttpDeps):
        self.deps = deps
        self.runtime = deps.generator.runtime

    # ---- plumbing ------------------------------------------------------------------------
    def _record(self, method: str, code: grpc.StatusCode, start: float) -> None:
        self.deps.metrics.requests.labels("http", method, code.name).inc()
        self.deps.metrics.request_duration.labels("http", method).observe(time.monotonic() - start)

    def _failed(self, method: str, exc: BaseException, start: float) -> JSONResponse:
        code, message = client_error(exc, method)
        self._record(method, code, start)
        return error_response(code, message)

    def _caller(self, request: Request) -> str:
        """The bounded label blocked responses are counted under (as for gRPC)."""
        return token_label(bearer(request.headers.get("authorization")), self.deps.operator_token,
                           self.deps.client_tokens)

    async def authorize(self, request: Request) -> None:  # async: FastAPI would run a sync one on a thread
        verdict = check_inference(bearer(request.headers.get("authorization")),
                                  (self.deps.operator_token,), self.deps.client_tokens)
        if verdict is not None:
            code, message = verdict
            raise (Unauthenticated if code == grpc.StatusCode.UNAUTHENTICATED else PermissionDenied)(message)

    # ---- generation ----------------------------------------------------------------------
    async def completions(self, body: CompletionRequest, request: Request) -> Response:
        method, start = "completions", time.monotonic()
        try:
            self.deps.generator.check_prompt_size(body.prompt_text)  # first, as gRPC does
            params = GenerateParams.validated(
                self.deps.limits, body.prompt_text, max_new_tokens=body.max_tokens, **_sampling(body, request),
                max_new_tokens_field="max_tokens")
            deadline = _deadline(request, body.stream, start)
            run = await self.deps.generator.start(params, deadline, self._caller(request))
        except Exception as exc:
            return self._failed(method, exc, start)
        return await self._answer(request, run, body, False, method, start)

    async def chat_completions(self, body: ChatCompletionRequest, request: Request) -> Response:
        method, start = "chat.completions", time.monotonic()
        try:
            self.deps.generator.check_prompt_size("".join(m.text for m in body.messages))  # before rendering
            messages = chat_messages((m.role, m.text) for m in body.messages)
            prompt = await self.runtime.render_chat(messages)
            budget, field = body.token_budget()
            params = GenerateParams.validated(
                self.deps.limits, prompt, max_new_tokens=budget, **_sampling(body, request),
                add_special_tokens=CHAT_ADDS_SPECIAL_TOKENS, max_new_tokens_field=field)
            deadline = _deadline(request, body.stream, start)
            run = await self.deps.generator.start(params, deadline, self._caller(request))
        except Exception as exc:
            return self._failed(method, exc, start)
        return await self._answer(request, run, body, True, method, start)

    async def _answer(self, request: Request, run: GuardedRun, body: Any, chat: bool, method: str,
                      start: float) -> Response:
        loaded, _ = self.runtime.require()
        rid = run.params.request_id
        envelope = Envelope(("chatcmpl-" if chat else "cmpl-") + rid, chat, int(time.time()), loaded.name)
        if body.stream:
            return StreamingResponse(self._events(run, envelope, body.include_usage, method, start),
                                     media_type="text/event-stream", headers={**_STREAM_HEADERS, "X-Request-Id": rid})
        collect = asyncio.ensure_future(_collect(run))
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({collect, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not collect.done():  # the client left (or shutdown): cancelling frees the batch slot now
                collect.cancel()
        if collect.cancelled() or not collect.done():
            with contextlib.suppress(asyncio.CancelledError):
                await collect
            self._record(method, grpc.StatusCode.CANCELLED, start)
            return Response(status_code=499)  # nobody reads it: nginx's "client closed request"
        try:
            text, result = collect.result()
        except Exception as exc:
            return self._failed(method, exc, start)
        self._record(method, grpc.StatusCode.OK, start)
        return JSONResponse(envelope.response(text, result), headers={"X-Request-Id": rid})

    async def _events(self, run: GuardedRun, env: Envelope, include_usage: bool, method: str,
                      start: float) -> AsyncIterator[bytes]:
        """SSE bytes for one run; a chunk leaves only after the guard released its text."""
        code, last = grpc.StatusCode.OK, None
        try:
            if env.chat:  # OpenAI opens a chat stream with the role and empty content
                yield env.chunk(0, "", first=True, include_usage=include_usage)
            async with contextlib.aclosing(run.chunks()) as chunks:
                async for c in chunks:
                    now = time.monotonic()
                    if last is not None:
                        self.deps.metrics.inter_token.observe(now - last)
                    last = now
                    if c.result is None:
                        yield env.chunk(c.stack_version, c.text, include_usage=include_usage)
                        continue
                    _check_result(c.result)
                    yield env.chunk(c.result.stack_version, None, c.result.finish_reason,
                                    include_usage=include_usage)
                    if include_usage:
                        yield env.usage_chunk(c.result)
            yield DONE
        except (asyncio.CancelledError, GeneratorExit):
            code = grpc.StatusCode.CANCELLED  # the client went away
            raise
        except Exception as exc:  # after the 200 went out: the error travels as an event
            code, message = client_error(exc, method)
            yield sse(error_body(message, "server_error", None, code.name.lower()))
            yield DONE
        finally:
            run.cancel()  # a no-op when it finished; frees the slot when the client left
            self._record(method, code, start)

    # ---- models and health ---------------------------------------------------------------
    async def models(self) -> Response:
        start = time.monotonic()
        try:
            loaded, scheduler = self.runtime.require()
        except Exception as exc:
            return self._failed("models", exc, start)
        self._record("models", grpc.StatusCode.OK, start)
        return JSONResponse({"object": "list", "data": [{
            "id": loaded.name, "object": "model", "created": 0, "owned_by": "lethe",
            "max_model_len": loaded.max_context, "stack_version": scheduler.stack.version,
            "fingerprint": loaded.fingerprint, "server_version": __version__}]})

    async def health(self) -> Response:
        serving = self.deps.serving()
        return JSONResponse({"status": "SERVING" if serving else "NOT_SERVING"}, status_code=200 if serving else 503)


def _sampling(body: Any, request: Request) -> dict[str, Any]:
    return dict(temperature=body.temperature, top_p=body.top_p, top_k=body.top_k or 0, seed=body.seed,
                stop=body.stop_sequences(), request_id=request.headers.get("x-request-id", ""),
                ignore_eos=body.ignore_eos)


def _deadline(request: Request, stream: bool, start: float) -> float | None:
    """time.monotonic() by which the request must finish: `start` (its arrival) plus the
    shortest of its timeout headers; None without one."""
    names = (TIMEOUT_HEADER,) if stream else (TIMEOUT_HEADER, OPENAI_TIMEOUT_HEADER)
    seconds = []
    for name in names:
        raw = request.headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not 0 < value <= MAX_TIMEOUT_SECONDS:  # NaN fails too
            raise InvalidArgument(f"header {name} must be a number of seconds in (0, {MAX_TIMEOUT_SECONDS:.0f}]")
        seconds.append(value)
    return start + min(seconds) if seconds else None


def _check_result(result: GenerationResult) -> None:
    if result.finish_reason == "error":
        raise RuntimeError("the decode step failed")  # logged with an error id; the client sees only that


async def _collect(run: GuardedRun) -> tuple[str, GenerationResult]:
    parts: list[str] = []
    async with contextlib.aclosing(run.chunks()) as chunks:
        async for c in chunks:
            if c.result is not None:
                _check_result(c.result)
                return "".join(parts), c.result
            parts.append(c.text)
    raise RuntimeError("generation ended without a finish event")


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body is already read: only disconnect remains)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def build_app(deps: HttpDeps) -> FastAPI:
    routes = Routes(deps)
    app = FastAPI(title="Lethe", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    auth = [Depends(routes.authorize)]
    app.add_api_route("/v1/completions", routes.completions, methods=["POST"], dependencies=auth)
    app.add_api_route("/v1/chat/completions", routes.chat_completions, methods=["POST"], dependencies=auth)
    app.add_api_route("/v1/models", routes.models, methods=["GET"], dependencies=auth)
    app.add_api_route("/health", routes.health, methods=["GET"])

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        routes._record(METHODS.get(request.url.path, "other"), grpc.StatusCode.INVALID_ARGUMENT, time.monotonic())
        return error_response(grpc.StatusCode.INVALID_ARGUMENT, message, param)

    @app.exception_handler(LetheError)  # the refusals `authorize` raises
    async def refused(request: Request, exc: Exception) -> JSONResponse:
        code, message = client_error(exc, request.url.path)
        routes._record(METHODS.get(request.url.path, "other"), code, time.monotonic())
        return error_response(code, message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(None, str(exc.detail), status=exc.status_code)  # 404, 405, 413

    return app
