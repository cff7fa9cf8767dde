"""OpenAI-compatible HTTP front (FastAPI on uvicorn) on the same runtime, guard and credentials as gRPC.

Imports no protobuf: it speaks domain values (server/runtime/params.py, server/runtime/chat.py) and
runs every request through the guarded generation path (server/runtime/guarded.py).
"""

from server.http.front import HttpFront
from server.http.routes import HttpDeps

__all__ = ["HttpDeps", "HttpFront"]
