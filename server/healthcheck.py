"""A tiny grpc.health.v1 probe for container health checks: `python -m server.healthcheck`.

Exit codes: 0 = SERVING, 1 = reachable but not serving (loading, draining, unknown service),
2 = unreachable or the call failed. It imports only grpc and the health stubs, never the
model or server code, so it costs a fraction of a second per probe. Kubernetes does not need
it (it has a native `grpc:` probe); Docker's HEALTHCHECK does.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(target: str, service: str = "", timeout: float = 3.0) -> int:
    with grpc.insecure_channel(target) as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as err:
            # NOT_FOUND = the server is up but does not know this service name.
            return 1 if err.code() == grpc.StatusCode.NOT_FOUND else 2
    return 0 if resp.status == health_pb2.HealthCheckResponse.SERVING else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.healthcheck", description=__doc__.split("\n")[0])
    parser.add_argument("--target", default="127.0.0.1:50051", help="HOST:PORT of the gRPC server")
    parser.add_argument("--service", default="", help="service name to check ('' = the whole server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="deadline of the Check call, seconds")
    args = parser.parse_args(argv)
    return check(args.target, args.service, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
