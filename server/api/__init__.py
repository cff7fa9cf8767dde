"""The versioned gRPC API (lethe.v1): generated stubs, re-exported under stable names.

Protobuf types stay at the edge: servicers convert them to domain values and back. Generation
happens on first import if `make proto` has not run (see codegen.py).
"""

from __future__ import annotations

from server import codegen

if codegen.is_stale():
    codegen.generate()

from server.api.gen.lethe.v1 import admin_pb2, admin_pb2_grpc  # noqa: E402
from server.api.gen.lethe.v1 import inference_pb2, inference_pb2_grpc  # noqa: E402

__all__ = ["admin_pb2", "admin_pb2_grpc", "inference_pb2", "inference_pb2_grpc"]
