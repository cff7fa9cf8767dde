"""Server settings: the only module that reads the environment.

Precedence: command-line flag > environment variable > default. Everything else in the server
receives a `Settings` (or the values it needs) explicitly. Client-side defaults for the CLI
(target address, operator token) are read here too, by `client_defaults()`.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from server.crash import POINTS as CRASH_POINTS
from server.guard.config import MAX_ENCODED_DEPTH, POLICIES, PROMPT_POLICIES, SEMANTIC_MODES


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _tokens(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"  # loopback by default: expose deliberately (containers set 0.0.0.0)
    port: int = 50051  # the conventional gRPC port
    metrics_port: int = 9464  # Prometheus exporter convention; -1 disables the endpoint
    data_dir: Path = Path("data")  # ledger, adapter store, tokens, guard state
    # a local HF causal-LM directory or a fetched registry name (`lethe model list`); None = demo
    model: Path | None = None
    demo: str = "full"  # demo preset when model is None: "full" or "small" (tests)
    cache_dir: Path = Path.home() / ".cache" / "lethe"  # demo builds and fetched models are cached here
    device: str = "auto"  # "auto" = cuda when available, else cpu
    max_batch_size: int = 8  # rows decoded together; more trades latency for throughput
    max_queue: int = 64  # waiting requests beyond this get RESOURCE_EXHAUSTED
    default_max_new_tokens: int = 64  # when a request leaves max_new_tokens at 0
    max_new_tokens_limit: int = 1024  # hard cap per request
    max_message_bytes: int = 4 * 1024 * 1024  # gRPC send/receive limit; a Forget can carry 2 MiB of text
    grace_seconds: float = 10.0  # drain time on SIGTERM before in-flight requests are cancelled
    reflection: bool = True  # gRPC server reflection (grpcurl, Postman); off for locked-down setups
    operator_token: str | None = None  # None = read or create <data_dir>/operator.token
    client_tokens: tuple[str, ...] = ()  # empty = Inference needs no credential
    log_level: str = "INFO"
    worker: bool = True  # spawn the unlearning worker process; off when workers run separately
    # torch threads; 0 = auto: with a worker on this machine, server and worker get half the
    # cores each (two processes with a thread per core each run many times slower, MEASURED.md).
    torch_threads: int = 0
    worker_threads: int = 0
    worker_timeout_seconds: float = 30.0  # a job whose worker was silent this long is re-queued
    default_method: str = "npo"  # NPO + retain loss: the most selective untuned method (UNLEARNING.md)
    corpus: Path | None = None  # JSONL for near-duplicate expansion and retain data; demo: its own corpus
    guard_semantic: str = "armed"  # off | armed (after a forgotten name / strict prompt) | always
    guard_policy: str = "end"  # end the stream on a hit | redact and continue
    # What a Forget's reply waits for: the lexical stages (milliseconds; sentence embeddings
    # follow ~0.1 s later) or all stages, embeddings included (~0.1 s more per Forget).
    guard_ack: str = "lexical"
    # Layers of encodings inside encodings the guard decodes (2: base64 of hex). Stream side only:
    # changing it needs no re-derivation of what was forgotten.
    guard_encoded_depth: int = 2
    prompt_policy: str = "arm"  # off | arm strict output checks | refuse prompts about forgotten content
    monitor_interval_seconds: float = 300.0  # leakage monitor: seconds between probe rounds, 0 = off
    monitor_probes: int = 32  # leakage monitor: probes replayed per round (its rate limit)
    crash_at: tuple[str, ...] = ()  # test hook only (env LETHE_CRASH_AT, no flag): see crash.py


# field -> the values it may take: the flags' choices and validate()'s check, one list (the
# guard's own tables where the guard defines them).
CHOICES: dict[str, tuple[str, ...]] = {
    "guard_semantic": SEMANTIC_MODES,
    "guard_policy": POLICIES,
    "guard_ack": ("lexical", "all"),
    "prompt_policy": PROMPT_POLICIES,
}

# field -> (environment variable, parser)
_ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "host": ("LETHE_HOST", str),
    "port": ("LETHE_PORT", int),
    "metrics_port": ("LETHE_METRICS_PORT", int),
    "data_dir": ("LETHE_DATA_DIR", Path),
    "model": ("LETHE_MODEL", Path),
    "demo": ("LETHE_DEMO", str),
    "cache_dir": ("LETHE_CACHE_DIR", Path),
    "device": ("LETHE_DEVICE", str),
    "max_batch_size": ("LETHE_MAX_BATCH_SIZE", int),
    "max_queue": ("LETHE_MAX_QUEUE", int),
    "default_max_new_tokens": ("LETHE_DEFAULT_MAX_NEW_TOKENS", int),
    "max_new_tokens_limit": ("LETHE_MAX_NEW_TOKENS_LIMIT", int),
    "max_message_bytes": ("LETHE_MAX_MESSAGE_BYTES", int),
    "grace_seconds": ("LETHE_GRACE_SECONDS", float),
    "reflection": ("LETHE_REFLECTION", _bool),
    "operator_token": ("LETHE_OPERATOR_TOKEN", str),
    "client_tokens": ("LETHE_CLIENT_TOKENS", _tokens),
    "log_level": ("LETHE_LOG_LEVEL", str),
    "worker": ("LETHE_WORKER", _bool),
    "worker_timeout_seconds": ("LETHE_WORKER_TIMEOUT_SECONDS", float),
    "torch_threads": ("LETHE_TORCH_THREADS", int),
    "worker_threads": ("LETHE_WORKER_THREADS", int),
    "default_method": ("LETHE_DEFAULT_METHOD", str),
    "corpus": ("LETHE_CORPUS", Path),
    "guard_semantic": ("LETHE_GUARD_SEMANTIC", str),
    "guard_policy": ("LETHE_GUARD_POLICY", str),
    "guard_ack": ("LETHE_GUARD_ACK", str),
    "guard_encoded_depth": ("LETHE_GUARD_ENCODED_DEPTH", int),
    "prompt_policy": ("LETHE_PROMPT_POLICY", str),
    "monitor_interval_seconds": ("LETHE_MONITOR_INTERVAL_SECONDS", float),
    "monitor_probes": ("LETHE_MONITOR_PROBES", int),
    "crash_at": ("LETHE_CRASH_AT", _tokens),
}


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by `lethe serve` and `lethe worker` (each None when unset -> env -> default)."""
    p = parser.add_argument
    p("--data-dir", type=Path, help="data directory (env LETHE_DATA_DIR; default ./data)")
    p("--model", type=Path, help="local HF causal-LM directory, or a registered name fetched with "
      "`lethe model fetch NAME`, e.g. smollm2 (env LETHE_MODEL; default: demo model)")
    p("--demo", choices=["full", "small"], help="demo preset when no --model (env LETHE_DEMO)")
    p("--cache-dir", type=Path, help="demo / fetched model cache (env LETHE_CACHE_DIR; default ~/.cache/lethe)")
    p("--corpus", type=Path, help="JSONL corpus for near-duplicates and retain data (env LETHE_CORPUS)")
    p("--device", help="auto, cpu, cuda, cuda:N (env LETHE_DEVICE)")
    p("--log-level", help="DEBUG, INFO, WARNING (env LETHE_LOG_LEVEL)")
    p("--worker-threads", type=int, help="torch threads of the unlearning worker, 0 = auto (env LETHE_WORKER_THREADS)")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `lethe serve`; each defaults to None so unset flags fall through to the env."""
    add_model_arguments(parser)
    p = parser.add_argument
    p("--host", help="address to listen on (env LETHE_HOST; default 127.0.0.1)")
    p("--port", type=int, help="gRPC port, 0 = any free port (env LETHE_PORT; default 50051)")
    p("--metrics-port", type=int, help="Prometheus port, -1 = off (env LETHE_METRICS_PORT; default 9464)")
    p("--torch-threads", type=int, help="torch threads of the server, 0 = auto (env LETHE_TORCH_THREADS)")
    p("--max-batch-size", type=int, help="rows decoded together (env LETHE_MAX_BATCH_SIZE)")
    p("--max-queue", type=int, help="waiting requests before RESOURCE_EXHAUSTED (env LETHE_MAX_QUEUE)")
    p("--grace-seconds", type=float, help="drain time on SIGTERM (env LETHE_GRACE_SECONDS)")
    p("--no-reflection", dest="reflection", action="store_const", const=False,
      help="disable gRPC server reflection (env LETHE_REFLECTION=0)")
    p("--no-worker", dest="worker", action="store_const", const=False,
      help="do not spawn the unlearning worker; run `lethe worker` separately (env LETHE_WORKER=0)")
    p("--worker-timeout-seconds", type=float,
      help="re-queue a job whose worker was silent this long (env LETHE_WORKER_TIMEOUT_SECONDS)")
    p("--default-method", help="unlearning method when a Forget names none (env LETHE_DEFAULT_METHOD)")
    p("--guard-semantic", choices=CHOICES["guard_semantic"], help="semantic guard stage (env LETHE_GUARD_SEMANTIC)")
    p("--guard-policy", choices=CHOICES["guard_policy"], help="on a guard hit (env LETHE_GUARD_POLICY)")
    p("--guard-ack", choices=CHOICES["guard_ack"],
      help="a Forget replies once the lexical stages block, or all stages incl. embeddings (env LETHE_GUARD_ACK)")
    p("--guard-encoded-depth", type=int,
      help=f"layers of nested encodings decoded, 1-{MAX_ENCODED_DEPTH} (env LETHE_GUARD_ENCODED_DEPTH; default 2)")
    p("--prompt-policy", choices=CHOICES["prompt_policy"],
      help="prompts naming forgotten content (env LETHE_PROMPT_POLICY)")
    p("--monitor-interval-seconds", type=float,
      help="leakage monitor: seconds between probe rounds, 0 = off (env LETHE_MONITOR_INTERVAL_SECONDS)")
    p("--monitor-probes", type=int,
      help="leakage monitor: probes replayed per round (env LETHE_MONITOR_PROBES)")


def load_settings(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        env_name, parse = _ENV[f.name]
        flag = getattr(args, f.name, None) if args is not None else None
        if flag is not None:
            values[f.name] = flag
        elif environ.get(env_name, "") != "":
            try:
                values[f.name] = parse(environ[env_name])
            except ValueError as exc:
                raise ValueError(f"{env_name}: {exc}") from None
    settings = Settings(**values)
    validate(settings)
    return settings


def thread_budget(s: Settings) -> tuple[int, int]:
    """(server torch threads, worker torch threads) after resolving 0 = auto."""
    cores = os.cpu_count() or 1
    share = max(1, cores // 2) if s.worker else cores
    return (s.torch_threads or share, s.worker_threads or max(1, cores // 2))


def validate(s: Settings) -> None:
    if not 0 <= s.port <= 65535:
        raise ValueError(f"port out of range: {s.port}")
    if s.demo not in ("full", "small"):
        raise ValueError(f"demo preset must be 'full' or 'small', not {s.demo!r}")
    for name in ("max_batch_size", "max_queue", "default_max_new_tokens", "max_new_tokens_limit"):
        if getattr(s, name) < 1:
            raise ValueError(f"{name} must be >= 1")
    for name, allowed in CHOICES.items():
        if getattr(s, name) not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}")
    if s.default_max_new_tokens > s.max_new_tokens_limit:
        raise ValueError("default_max_new_tokens exceeds max_new_tokens_limit")
    unknown = set(s.crash_at) - set(CRASH_POINTS)
    if unknown:
        raise ValueError(f"LETHE_CRASH_AT: unknown crash points {sorted(unknown)}")
    if not 1 <= s.guard_encoded_depth <= MAX_ENCODED_DEPTH:
        raise ValueError(f"guard_encoded_depth must be in 1..{MAX_ENCODED_DEPTH}")
    if s.monitor_interval_seconds < 0 or s.monitor_probes < 1:
        raise ValueError("monitor_interval_seconds must be >= 0 and monitor_probes >= 1")


@dataclass(frozen=True)
class ClientDefaults:
    target: str = "127.0.0.1:50051"
    token: str | None = None  # operator or client bearer token
    data_dir: Path = Path("data")  # where a local server keeps operator.token


def client_defaults(environ: Mapping[str, str] | None = None) -> ClientDefaults:
    environ = os.environ if environ is None else environ
    return ClientDefaults(
        target=environ.get("LETHE_TARGET") or ClientDefaults.target,
        token=environ.get("LETHE_TOKEN") or None,
        data_dir=Path(environ.get("LETHE_DATA_DIR") or ClientDefaults.data_dir),
    )
