"""Domain errors, their status codes, and the one rule for what a client may see of a failure.

Servicers and the HTTP front raise these; `client_error` turns any exception into a status code
and a client-safe message: a domain error keeps its own, anything else is logged with an error id
and answered with a generic INTERNAL message, so internal error text never reaches a client.
`rpc_method` (gRPC) and server/http/ (through `HTTP_STATUS`) both answer with it.
"""

from __future__ import annotations

import logging
import uuid

import grpc

logger = logging.getLogger(__name__)

# The standard gRPC -> HTTP status mapping (google.rpc.Code), used by the HTTP front.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.DATA_LOSS: 500,
}


def client_error(exc: BaseException, where: str) -> tuple[grpc.StatusCode, str]:
    """The status and client-safe message for a failed handler `where` (a method or route)."""
    if isinstance(exc, LetheError):
        return exc.code, str(exc)
    error_id = uuid.uuid4().hex[:12]
    logger.error("%s failed (error id %s)", where, error_id, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error (error id {error_id})"


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


class Unauthenticated(LetheError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(LetheError):
    code = grpc.StatusCode.PERMISSION_DENIED
