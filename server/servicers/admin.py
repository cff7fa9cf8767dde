"""The Admin service. Its messages are final; the handlers arrive with the forget flow.

Until then every method answers UNIMPLEMENTED (the generated base class does exactly that), but
it is registered, authenticated and visible through reflection like the finished service.
"""

from __future__ import annotations

from server.api import admin_pb2_grpc


class AdminServicer(admin_pb2_grpc.AdminServicer):
    pass
