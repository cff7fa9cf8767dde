"""Domain errors and their gRPC status codes.

Servicers raise these; `rpc_method` turns them into a status with their (client-safe) message.
Any other exception is logged with the request id and answered with a generic INTERNAL message:
internal error text never reaches a client.
"""

from __future__ import annotations

import grpc


class LetheError(Exception):
    """An error whose message is safe to show the client."""

    code = grpc.StatusCode.INTERNAL


class InvalidArgument(LetheError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(LetheError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(LetheError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(LetheError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(LetheError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(LetheError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(LetheError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unimplemented(LetheError):
    code = grpc.StatusCode.UNIMPLEMENTED
