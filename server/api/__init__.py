"""The versioned gRPC API (lethe.v1): generated stubs, re-exported under stable names.

Only the edge imports this package: the servicers (which convert to and from domain values in
`server/servicers/convert.py`), the client, the CLI and the app's wiring; tests/unit/test_layering.py
fails if any other server module does. The stubs are regenerated on import when they are missing
or older than the .proto files (see codegen.py), so an editable install works without `make proto`.
"""

from __future__ import annotations

from server import codegen

if codegen.is_stale():
    codegen.generate()

from server.api.gen.lethe.v1 import admin_pb2, admin_pb2_grpc  # noqa: E402
from server.api.gen.lethe.v1 import inference_pb2, inference_pb2_grpc  # noqa: E402

__all__ = ["admin_pb2", "admin_pb2_grpc", "inference_pb2", "inference_pb2_grpc"]
