"""The HTTP listener: uvicorn serving the OpenAI-compatible routes on the server's own event loop.

One process, two ports: `HttpFront` runs `uvicorn.Server.serve()` as a task beside grpc.aio, so
HTTP requests share the model runtime, the scheduler's batches and the guard with gRPC, and need
no second loop or thread. The socket is bound before serving starts, so the bound port (0 picks
one) is known when app.py logs its "listening on" line. Signals stay with app.py (uvicorn's own
handlers are switched off); `stop(grace)` is the drain: no new connections, in-flight requests
get `grace` seconds, then they are cancelled. Request bodies above `max_body_bytes` (the gRPC
message limit) get 413. TLS takes the gRPC server's files: a certificate and key, and with a
client CA, mutual TLS (a client without a certificate that CA signed fails the handshake).
Holds no request logic (routes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from pathlib import Path
from typing import Any, Iterator

import uvicorn
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.http.routes import HttpDeps, build_app, error_response

logger = logging.getLogger(__name__)


class _BodyLimit:
    """ASGI middleware: 413 for a body over the limit (declared length, or counted as it arrives)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await error_response(None, self._message(), status=413)(scope, receive, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, self._message())
            return message

        await self.app(scope, counted, send)

    def _message(self) -> str:
        return f"request body exceeds {self.max_bytes} bytes"


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # LetheServer owns SIGTERM/SIGINT and drains both fronts itself


class HttpFront:
    def __init__(self, deps: HttpDeps, host: str, port: int, max_body_bytes: int, grace_seconds: float,
                 tls_cert: Path | None = None, tls_key: Path | None = None, tls_client_ca: Path | None = None):
        self.host = host
        self.port = port
        tls: dict[str, Any] = {}
        if tls_cert is not None:
            tls = dict(ssl_certfile=str(tls_cert), ssl_keyfile=str(tls_key) if tls_key else None)
            if tls_client_ca is not None:
                tls.update(ssl_ca_certs=str(tls_client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
        config = uvicorn.Config(
            _BodyLimit(build_app(deps), max_body_bytes), log_config=None, access_log=False, lifespan="off",
            ws="none", timeout_graceful_shutdown=max(1, round(grace_seconds)), server_header=False, **tls)
        config.load()  # builds the SSL context now: a bad certificate fails start-up, not the first request
        self._server = _Server(config)
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[Any] | None = None

    def bind(self) -> int:
        """Bind and listen now (connections queue until serving starts); returns the bound port."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        sock.listen(2048)
        sock.setblocking(False)
        self._socket = sock
        self.port = int(sock.getsockname()[1])
        return self.port

    def start(self) -> None:
        assert self._socket is not None, "bind() first"
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish within the grace period, then cancel them."""
        if self._task is None:
            return
        self._server.should_exit = True
        try:
            await self._task
        except Exception:
            logger.exception("HTTP server stopped with an error")
        self._task = None

    def abort(self) -> None:
        """Close at once (no grace): the close() path."""
        self._server.force_exit = True
        self._server.should_exit = True
