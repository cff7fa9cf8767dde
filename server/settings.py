"""Server settings: the only module that reads the environment.

Precedence: command-line flag > environment variable > default. Everything else in the server
receives a `Settings` (or the values it needs) explicitly. Client-side defaults for the CLI
(target address, operator token) are read here too, by `client_defaults()`.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from server.crash import POINTS as CRASH_POINTS
from server.guard.config import (MAX_ENCODED_DEPTH, POLICIES, PROMPT_POLICIES, SEMANTIC_MODES,
                                 SUBJECT_POLICIES)


# Bearer tokens shorter than this are refused at start-up: 32 URL-safe characters carry ~190 bits.
MIN_TOKEN_CHARS = 32
_MAKE_TOKEN = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


class SettingsError(ValueError):
    """A setting the server refuses to start with; the message says how to fix it."""


def check_token(what: str, token: str) -> None:
    """Refuse a credential too short to resist guessing, saying how to make a good one."""
    if len(token) < MIN_TOKEN_CHARS:
        raise SettingsError(f"{what} is {len(token)} characters; tokens must be at least {MIN_TOKEN_CHARS}. "
                         f"Make one with: {_MAKE_TOKEN}")


def is_loopback(host: str) -> bool:
    """Bind addresses that may go without TLS: nothing off this machine can reach them."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def check_transport(s: Settings) -> None:
    if (s.tls_cert is None) != (s.tls_key is None):
        raise SettingsError("--tls-cert and --tls-key (LETHE_TLS_CERT, LETHE_TLS_KEY) go together")
    if s.tls_client_ca is not None and s.tls_cert is None:
        raise SettingsError("--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS first")
    for path in (s.tls_cert, s.tls_key, s.tls_client_ca):
        if path is not None and not path.is_file():
            raise SettingsError(f"TLS file {path} does not exist")
    if s.receipt_key is not None and not s.receipt_key.is_file():
        raise SettingsError(f"receipt key {s.receipt_key} does not exist: mount the deployment's Ed25519 key "
                            "(`openssl genpkey -algorithm ed25519 -out FILE`) or leave --receipt-key unset")
    if s.tls_cert is None and not s.insecure and not is_loopback(s.host):
        raise SettingsError(
            f"refusing to listen on {s.host} without TLS: bearer tokens would cross the network in clear "
            "text. Give --tls-cert and --tls-key (env LETHE_TLS_CERT, LETHE_TLS_KEY), or --insecure "
            "(env LETHE_INSECURE=1) when a TLS-terminating proxy or a private network carries the traffic")


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
    http_port: int = 8000  # OpenAI-compatible HTTP (vLLM's and most OpenAI servers' port); 0 = off
    metrics_host: str | None = None  # bind address of the metrics and health-only listeners; None = host
    # A plaintext listener serving only grpc.health.v1, for probes that cannot do (m)TLS; -1 = off.
    health_port: int = -1
    # TLS (server/tls.py): certificate and key in PEM; a client CA turns on mutual TLS, and the
    # client certificate's name becomes the actor in the audit log.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    # Ed25519 key (PEM, PKCS#8) that signs deletion receipts; every replica sharing a ledger must
    # mount the same one. None = <data_dir>/receipt.key, generated once (one node only).
    receipt_key: Path | None = None
    insecure: bool = False  # allow plaintext on a non-loopback address (a TLS proxy in front)
    data_dir: Path = Path("data")  # ledger, adapter store, tokens, guard state
    # A PostgreSQL URL: the ledger several replicas and workers share (server/forget/ledger/
    # postgres.py). None = SQLite in data_dir, one node.
    ledger_url: str | None = None
    # With a shared ledger: seconds between full reconciles with it, the bound on how long a lost
    # change notification can leave this replica behind (notifications apply in milliseconds).
    reconcile_seconds: float = 5.0
    # A replica known to be behind the shared ledger this long reports NOT_SERVING, so the load
    # balancer sends its traffic to replicas that serve every forget's adapter. Not reaching the
    # ledger at all does not count: serving goes on from memory through a database restart.
    max_replica_lag_seconds: float = 30.0
    # a local HF causal-LM directory or a fetched registry name (`lethe model list`); None = demo
    model: Path | None = None
    demo: str = "full"  # demo preset when model is None: "full" or "small" (tests)
    cache_dir: Path = Path.home() / ".cache" / "lethe"  # demo builds and fetched models are cached here
    device: str = "auto"  # "auto" = cuda when available, else cpu
    max_batch_size: int = 8  # rows decoded together; more trades latency for throughput
    max_queue: int = 64  # waiting requests beyond this get RESOURCE_EXHAUSTED
    # tokens per streamed chunk when a request does not choose: 8 brought 8 gRPC streams from
    # 0.86-0.93x to 0.94-1.00x raw batched generate in quiet interleaved pairs (bench/results/serving.md)
    stream_interval: int = 8
    default_max_new_tokens: int = 64  # when a request leaves max_new_tokens at 0
    max_new_tokens_limit: int = 1024  # hard cap per request
    max_message_bytes: int = 4 * 1024 * 1024  # gRPC send/receive limit; a Forget can carry 2 MiB of text
    grace_seconds: float = 10.0  # drain time on SIGTERM before in-flight requests are cancelled
    # Bounded work per request and per client (server/limits.py). A prompt is measured in
    # characters before anything else reads it: 64 Ki characters is ~16k tokens, beyond any
    # context the server is likely to serve, and the guard scans it in well under a second.
    max_prompt_chars: int = 65536
    max_concurrent_rpcs: int = 256  # all calls on the server at once; beyond: RESOURCE_EXHAUSTED
    max_client_rpcs: int = 32  # calls in flight per credential (per address when anonymous)
    max_watch_streams: int = 16  # concurrent WatchForget streams (each polls the ledger)
    max_queued_forgets: int = 64  # forgets not yet ACTIVE / FAILED; more wait for RESOURCE_EXHAUSTED
    keepalive_seconds: float = 60.0  # ping idle connections this often; a peer silent 20 s more is dropped
    max_connection_age_seconds: float = 1800.0  # GOAWAY then, so clients rebalance across replicas; 0 = never
    max_connection_age_grace_seconds: float = 300.0  # calls still running at max age get this long to finish
    reflection: bool = True  # gRPC server reflection (grpcurl, Postman); off for locked-down setups
    operator_token: str | None = None  # None = read or create <data_dir>/operator.token
    client_tokens: tuple[str, ...] = ()  # empty = Inference needs no credential
    log_level: str = "INFO"
    worker: bool = True  # spawn the unlearning worker process; off when workers run separately
    # torch threads; 0 = auto: with a worker on this machine, server and worker get half the
    # cores each (two processes with a thread per core each run many times slower, docs/architecture.md#measured).
    torch_threads: int = 0
    # The worker's torch threads. Fixed (not per core count) because an adapter is a function of
    # the seed *and* the thread count (it sets the reduction order), and the gate decides on it:
    # the same job must train the same adapter on every machine. Raise it for large models.
    worker_threads: int = 1
    worker_timeout_seconds: float = 30.0  # a job whose worker was silent this long is re-queued
    default_method: str = "counterfactual"  # fixed point at the never-seen level (docs/architecture.md#unlearning)
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
    # What a listed subject blocks until its adapter is verified (the guard policy says how):
    # name = any output naming it, and any answer to a prompt naming it (default: "forget this
    # person" means not talking about them, and before the adapter the guard is all there is);
    # value = the name next to a capitalised, numeric or date-like word; off = the name only arms.
    subject_policy: str = "name"
    # What a client sees when the guard blocks: "transparent" = finish_reason FILTERED and the
    # neutral message (honest, but it tells the client someone filed an erasure about what it
    # asked); "private" = the text released so far and finish_reason STOP, like a model that
    # simply stopped. Either way filtered responses are counted per client (probing alert).
    filtered_response: str = "transparent"
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
    "subject_policy": SUBJECT_POLICIES,
    "filtered_response": ("transparent", "private"),
}

# field -> (environment variable, parser)
_ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "host": ("LETHE_HOST", str),
    "port": ("LETHE_PORT", int),
    "metrics_port": ("LETHE_METRICS_PORT", int),
    "http_port": ("LETHE_HTTP_PORT", int),
    "metrics_host": ("LETHE_METRICS_HOST", str),
    "health_port": ("LETHE_HEALTH_PORT", int),
    "tls_cert": ("LETHE_TLS_CERT", Path),
    "tls_key": ("LETHE_TLS_KEY", Path),
    "tls_client_ca": ("LETHE_TLS_CLIENT_CA", Path),
    "receipt_key": ("LETHE_RECEIPT_KEY", Path),
    "insecure": ("LETHE_INSECURE", _bool),
    "data_dir": ("LETHE_DATA_DIR", Path),
    "ledger_url": ("LETHE_LEDGER_URL", str),
    "reconcile_seconds": ("LETHE_RECONCILE_SECONDS", float),
    "max_replica_lag_seconds": ("LETHE_MAX_REPLICA_LAG_SECONDS", float),
    "model": ("LETHE_MODEL", Path),
    "demo": ("LETHE_DEMO", str),
    "cache_dir": ("LETHE_CACHE_DIR", Path),
    "device": ("LETHE_DEVICE", str),
    "max_batch_size": ("LETHE_MAX_BATCH_SIZE", int),
    "max_queue": ("LETHE_MAX_QUEUE", int),
    "stream_interval": ("LETHE_STREAM_INTERVAL", int),
    "default_max_new_tokens": ("LETHE_DEFAULT_MAX_NEW_TOKENS", int),
    "max_new_tokens_limit": ("LETHE_MAX_NEW_TOKENS_LIMIT", int),
    "max_message_bytes": ("LETHE_MAX_MESSAGE_BYTES", int),
    "grace_seconds": ("LETHE_GRACE_SECONDS", float),
    "max_prompt_chars": ("LETHE_MAX_PROMPT_CHARS", int),
    "max_concurrent_rpcs": ("LETHE_MAX_CONCURRENT_RPCS", int),
    "max_client_rpcs": ("LETHE_MAX_CLIENT_RPCS", int),
    "max_watch_streams": ("LETHE_MAX_WATCH_STREAMS", int),
    "max_queued_forgets": ("LETHE_MAX_QUEUED_FORGETS", int),
    "keepalive_seconds": ("LETHE_KEEPALIVE_SECONDS", float),
    "max_connection_age_seconds": ("LETHE_MAX_CONNECTION_AGE_SECONDS", float),
    "max_connection_age_grace_seconds": ("LETHE_MAX_CONNECTION_AGE_GRACE_SECONDS", float),
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
    "subject_policy": ("LETHE_SUBJECT_POLICY", str),
    "filtered_response": ("LETHE_FILTERED_RESPONSE", str),
    "monitor_interval_seconds": ("LETHE_MONITOR_INTERVAL_SECONDS", float),
    "monitor_probes": ("LETHE_MONITOR_PROBES", int),
    "crash_at": ("LETHE_CRASH_AT", _tokens),
}


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by `lethe serve` and `lethe worker` (each None when unset -> env -> default)."""
    p = parser.add_argument
    p("--data-dir", type=Path, help="data directory (env LETHE_DATA_DIR; default ./data)")
    p("--ledger-url", help="postgresql://... ledger shared by replicas and workers "
      "(env LETHE_LEDGER_URL; default: SQLite in the data directory)")
    p("--model", type=Path, help="local HF causal-LM directory, or a registered name fetched with "
      "`lethe model fetch NAME`, e.g. smollm2 (env LETHE_MODEL; default: demo model)")
    p("--demo", choices=["full", "small"], help="demo preset when no --model (env LETHE_DEMO)")
    p("--cache-dir", type=Path, help="demo / fetched model cache (env LETHE_CACHE_DIR; default ~/.cache/lethe)")
    p("--corpus", type=Path, help="JSONL corpus for near-duplicates and retain data (env LETHE_CORPUS)")
    p("--device", help="auto, cpu, cuda, cuda:N (env LETHE_DEVICE)")
    p("--log-level", help="DEBUG, INFO, WARNING (env LETHE_LOG_LEVEL)")
    p("--worker-threads", type=int, help="torch threads of the unlearning worker (default 1: the same adapter on every machine; 0 = half the cores) (env LETHE_WORKER_THREADS)")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `lethe serve`; each defaults to None so unset flags fall through to the env."""
    add_model_arguments(parser)
    p = parser.add_argument
    p("--host", help="address to listen on (env LETHE_HOST; default 127.0.0.1)")
    p("--port", type=int, help="gRPC port, 0 = any free port (env LETHE_PORT; default 50051)")
    p("--metrics-port", type=int, help="Prometheus port, -1 = off (env LETHE_METRICS_PORT; default 9464)")
    p("--http-port", type=int,
      help="OpenAI-compatible HTTP port, 0 = off (env LETHE_HTTP_PORT; default 8000)")
    p("--metrics-host", help="address of the metrics and health-only listeners (env LETHE_METRICS_HOST; default: --host)")
    p("--health-port", type=int,
      help="plaintext grpc.health.v1-only port for probes without client certificates, -1 = off (env LETHE_HEALTH_PORT)")
    p("--tls-cert", type=Path, help="PEM server certificate: serve gRPC and HTTP over TLS (env LETHE_TLS_CERT)")
    p("--tls-key", type=Path, help="PEM private key of --tls-cert (env LETHE_TLS_KEY)")
    p("--tls-client-ca", type=Path,
      help="PEM CA of client certificates: require mutual TLS (env LETHE_TLS_CLIENT_CA)")
    p("--insecure", action="store_const", const=True,
      help="allow plaintext gRPC on a non-loopback --host, e.g. behind a TLS proxy (env LETHE_INSECURE=1)")
    p("--torch-threads", type=int, help="torch threads of the server, 0 = auto (env LETHE_TORCH_THREADS)")
    p("--max-batch-size", type=int, help="rows decoded together (env LETHE_MAX_BATCH_SIZE)")
    p("--max-queue", type=int, help="waiting requests before RESOURCE_EXHAUSTED (env LETHE_MAX_QUEUE)")
    p("--stream-interval", type=int,
      help="tokens per streamed chunk when a request sets none; the first token is always sent alone "
           "(env LETHE_STREAM_INTERVAL)")
    p("--grace-seconds", type=float, help="drain time on SIGTERM (env LETHE_GRACE_SECONDS)")
    p("--max-prompt-chars", type=int,
      help="longer prompts get INVALID_ARGUMENT before any other work (env LETHE_MAX_PROMPT_CHARS; default 65536)")
    p("--max-concurrent-rpcs", type=int, help="calls in flight on the server (env LETHE_MAX_CONCURRENT_RPCS)")
    p("--max-client-rpcs", type=int,
      help="calls in flight per credential, or per address without one (env LETHE_MAX_CLIENT_RPCS)")
    p("--max-watch-streams", type=int, help="concurrent WatchForget streams (env LETHE_MAX_WATCH_STREAMS)")
    p("--max-queued-forgets", type=int,
      help="forgets not yet ACTIVE or FAILED before Forget answers RESOURCE_EXHAUSTED (env LETHE_MAX_QUEUED_FORGETS)")
    p("--keepalive-seconds", type=float, help="keepalive ping interval, seconds (env LETHE_KEEPALIVE_SECONDS)")
    p("--max-connection-age-seconds", type=float,
      help="close connections after this long, 0 = never (env LETHE_MAX_CONNECTION_AGE_SECONDS)")
    p("--max-connection-age-grace-seconds", type=float,
      help="calls still running at the max connection age get this long to finish before the connection "
           "closes (env LETHE_MAX_CONNECTION_AGE_GRACE_SECONDS; default 300)")
    p("--no-reflection", dest="reflection", action="store_const", const=False,
      help="disable gRPC server reflection (env LETHE_REFLECTION=0)")
    p("--receipt-key", type=Path,
      help="Ed25519 private key (PEM) signing deletion receipts; replicas sharing a ledger mount the same "
           "file (env LETHE_RECEIPT_KEY; default: <data-dir>/receipt.key, generated once)")
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
    p("--subject-policy", choices=CHOICES["subject_policy"],
      help="what a forgotten subject blocks before its adapter: its name alone, its name next to a "
           "value, or nothing beyond arming (env LETHE_SUBJECT_POLICY; default name)")
    p("--filtered-response", choices=CHOICES["filtered_response"],
      help="a blocked response ends FILTERED with a neutral message (transparent, default) or just "
           "stops (private) (env LETHE_FILTERED_RESPONSE)")
    p("--reconcile-seconds", type=float,
      help="with --ledger-url: seconds between full reconciles with the shared ledger (env LETHE_RECONCILE_SECONDS)")
    p("--max-replica-lag-seconds", type=float,
      help="with --ledger-url: NOT_SERVING once known to be behind the shared ledger this long "
           "(env LETHE_MAX_REPLICA_LAG_SECONDS; default 30)")
    p("--monitor-interval-seconds", type=float,
      help="leakage monitor: seconds between probe rounds, 0 = off (env LETHE_MONITOR_INTERVAL_SECONDS)")
    p("--monitor-probes", type=int,
      help="leakage monitor: probes replayed per round (env LETHE_MONITOR_PROBES)")


def load_settings(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None,
                  check: bool = True) -> Settings:
    """`check=False` for a command that only reads a default (a client command must not fail
    on the server's own settings, e.g. LETHE_HOST=0.0.0.0 inside a container)."""
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
    if check:
        validate(settings)
    return settings


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may actually use: its affinity set, capped by a cgroup v2 CPU quota
    (``cpu.max``, what a Kubernetes CPU limit becomes). ``os.cpu_count()`` is the node's count,
    so a pod limited to 1 CPU on a 64-core node would otherwise start 64 torch threads."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def thread_budget(s: Settings) -> tuple[int, int]:
    """(server torch threads, worker torch threads) after resolving 0 = auto."""
    cores = usable_cores()
    share = max(1, cores // 2) if s.worker else cores
    return (s.torch_threads or share, s.worker_threads or max(1, cores // 2))


def validate(s: Settings) -> None:
    if not 0 <= s.port <= 65535:
        raise ValueError(f"port out of range: {s.port}")
    if not 0 <= s.http_port <= 65535:
        raise ValueError(f"http_port out of range: {s.http_port}")
    if s.demo not in ("full", "small"):
        raise ValueError(f"demo preset must be 'full' or 'small', not {s.demo!r}")
    for name in ("max_batch_size", "max_queue", "stream_interval", "default_max_new_tokens", "max_new_tokens_limit", "max_prompt_chars",
                 "max_concurrent_rpcs", "max_client_rpcs", "max_watch_streams", "max_queued_forgets"):
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
    if s.ledger_url is not None and not s.ledger_url.startswith(("postgresql://", "postgres://")):
        raise ValueError("ledger_url (--ledger-url, LETHE_LEDGER_URL) must be a postgresql:// URL")
    if s.reconcile_seconds <= 0 or s.max_replica_lag_seconds <= 0:
        raise ValueError("reconcile_seconds and max_replica_lag_seconds must be > 0")
    if s.keepalive_seconds <= 0 or s.max_connection_age_seconds < 0 or s.max_connection_age_grace_seconds <= 0:
        raise ValueError("keepalive_seconds and max_connection_age_grace_seconds must be > 0 and "
                         "max_connection_age_seconds >= 0")
    check_transport(s)
    if s.operator_token is not None:
        check_token("the operator token (LETHE_OPERATOR_TOKEN)", s.operator_token)
    for i, token in enumerate(s.client_tokens):
        check_token(f"client token {i + 1} of LETHE_CLIENT_TOKENS", token)


@dataclass(frozen=True)
class ClientDefaults:
    target: str = "127.0.0.1:50051"
    token: str | None = None  # operator or client bearer token
    data_dir: Path = Path("data")  # where a local server keeps operator.token
    tls_ca: Path | None = None  # trust this CA for the server's certificate (TLS on)
    tls_cert: Path | None = None  # present this client certificate (mutual TLS)
    tls_key: Path | None = None


def client_defaults(environ: Mapping[str, str] | None = None) -> ClientDefaults:
    environ = os.environ if environ is None else environ
    return ClientDefaults(
        target=environ.get("LETHE_TARGET") or ClientDefaults.target,
        token=environ.get("LETHE_TOKEN") or None,
        data_dir=Path(environ.get("LETHE_DATA_DIR") or ClientDefaults.data_dir),
        # Not LETHE_TLS_CERT / _KEY: those are the server's own, in the same environment.
        tls_ca=_path(environ.get("LETHE_TLS_CA")),
        tls_cert=_path(environ.get("LETHE_CLIENT_CERT")),
        tls_key=_path(environ.get("LETHE_CLIENT_KEY")),
    )


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None
