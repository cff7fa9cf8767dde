"""A tiny grpc.health.v1 probe for container health checks: `python -m server.healthcheck`.

Exit codes: 0 = SERVING, 1 = reachable but not serving (loading, draining, unknown service),
2 = unreachable or the call failed. It imports only grpc, the health stubs and server/tls.py
(for --tls-ca / --tls-cert / --tls-key), never the model or server code, so it costs a fraction
of a second per probe. Kubernetes does not need it (it has a native `grpc:` probe); Docker's
HEALTHCHECK does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.tls import TlsFiles, channel_credentials


def check(target: str, service: str = "", timeout: float = 3.0, tls: TlsFiles | None = None) -> int:
    channel = grpc.secure_channel(target, channel_credentials(tls)) if tls else grpc.insecure_channel(target)
    with channel:
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
    parser.add_argument("--tls-ca", type=Path, help="the server speaks TLS: trust this PEM CA")
    parser.add_argument("--tls-cert", type=Path, help="PEM client certificate, when the server requires one")
    parser.add_argument("--tls-key", type=Path, help="PEM key of --tls-cert")
    args = parser.parse_args(argv)
    tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_ca) if args.tls_ca or args.tls_cert else None
    return check(args.target, args.service, args.timeout, tls)


if __name__ == "__main__":
    sys.exit(main())
