"""Model runtime: loading a causal LM, the batched KV state, sampling, detokenization and the
step-level scheduler that runs all torch work on one dedicated thread (never the asyncio loop)."""
