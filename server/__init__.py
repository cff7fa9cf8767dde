"""Lethe: a gRPC inference server that can forget."""

__version__ = "0.1.0"
