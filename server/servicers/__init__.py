"""gRPC servicers: thin adapters from protobuf to domain calls (see server/rpc.py for errors)."""
