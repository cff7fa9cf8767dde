"""Lethe's embedded unlearning engine: turns "forget this" into a verified LoRA forget adapter.

Pure ML. It builds forget / retain sets (``data``), trains a LoRA adapter with one of the
registered methods (``methods``, ``trainer``), measures leakage and utility and decides a
verification gate (``evaluation``), writes checksummed PEFT artifacts (``artifacts``) and stacks or
compacts them (``stacking``). It can run alone from Python or from its CLI (``cli``).

It deliberately knows nothing about gRPC, protobuf, Prometheus or the server: the server embeds
it, never the other way round. It reads no environment variables; callers pass settings in.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
