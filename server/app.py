"""Assembles the server: gRPC (inference, admin, health, reflection), the OpenAI-compatible HTTP
front (server/http/, same runtime, guard and credentials), auth, metrics, model, ledger, leakage
guard, forget coordinator and the unlearning worker process.

`LetheServer.start()` rebuilds the guard from the ledger, listens at once with health
NOT_SERVING, loads the model and the ledger's adapter stack in a worker thread, then flips
health to SERVING and starts the coordinator loop and the worker. `drain()` is the SIGTERM path: NOT_SERVING, refuse new
work, let in-flight requests finish for `grace_seconds`, then stop. Does not parse flags or read
the environment (settings.py) and holds no request logic (servicers/).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from pathlib import Path
from typing import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from server import __version__
from server.adapters.stack import AdapterStackManager
from server.api import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc
from server.auth import TokenAuthInterceptor, caller_label, ensure_operator_token
from server.forget.coordinator import ForgetCoordinator
from server.forget.hits import HitTally
from server.forget.layout import DataDir
from server.forget.agreement import check_corpus, check_guard_key, check_receipt_key
from server.forget.follower import ReplicaFollower
from server.forget.ledger import open_ledger
from server.forget.monitor import LeakageMonitor, MonitorConfig
from server.forget.receipts import ReceiptSigner
from server.forget.resolution import CorpusResolver, corpus_file
from server.forget.supervisor import WorkerSupervisor
from server.guard import GuardConfig, GuardHit, LeakageGuard
from server.limits import ClientConcurrencyLimit, server_options
from server.guard.keys import GuardKeys
from server.metrics import ServerMetrics
from server.http import HttpDeps, HttpFront
from server.keyfile import receipt_key
from server.runtime.guarded import GuardedGenerator
from server.runtime.model import LoadedModel, load_model
from server.runtime.params import GenerationLimits
from server.runtime.serving import ModelRuntime, RuntimeLimits
from server.servicers.admin import AdminServicer
from server.servicers.inference import InferenceServicer
from server.settings import Settings, SettingsError, thread_budget, validate
from server.tls import TlsFiles, server_credentials

logger = logging.getLogger(__name__)

SERVICES = (inference_pb2.DESCRIPTOR.services_by_name["Inference"], admin_pb2.DESCRIPTOR.services_by_name["Admin"])


def _streaming_methods() -> frozenset[str]:
    return frozenset(f"/{s.full_name}/{m.name}" for s in SERVICES for m in s.methods if m.server_streaming)


def resolve_model_dir(settings: Settings) -> Path:
    """The model to serve: --model (a directory or a fetched registry name), else the demo model."""
    if settings.model is not None:
        from unlearn_engine.pretrained import resolve_model

        return resolve_model(settings.model, settings.cache_dir)
    from unlearn_engine.demo.builder import default_demo_model

    return default_demo_model(settings.cache_dir, small=settings.demo == "small")


class LetheServer:
    def __init__(self, settings: Settings, loader: Callable[[Path], LoadedModel] | None = None):
        validate(settings)  # also when built in code, not from flags: tokens too short are refused
        self.settings = settings
        self.metrics = ServerMetrics()
        self._loader = loader or (lambda model_dir: load_model(model_dir, settings.device))
        self.runtime = ModelRuntime(RuntimeLimits(settings.max_batch_size, settings.max_queue,
                                                   settings.stream_interval), self.metrics)
        self.health = health.aio.HealthServicer()
        self.operator_token = ensure_operator_token(settings.data_dir, settings.operator_token)
        self.data = DataDir(settings.data_dir)
        self.ledger = open_ledger(settings.ledger_url, self.data.ledger)
        self.hits = HitTally(self.ledger)
        secret = self.data.guard_secret()
        self.guard = LeakageGuard(
            GuardConfig(model_cache_dir=settings.cache_dir / "guard", semantic=settings.guard_semantic,
                        policy=settings.guard_policy, prompt_policy=settings.prompt_policy,
                        subject_policy=settings.subject_policy,
                        encoded_depth=settings.guard_encoded_depth,
                        # private: nothing in the text says a guard acted (see --filtered-response)
                        **({"neutral_message": "", "redaction_text": ""}
                           if settings.filtered_response == "private" else {})),
            secret, on_hit=self._on_guard_hit)
        self.coordinator = ForgetCoordinator(self.ledger, self.guard, self.data,
                                             self.metrics, settings.default_method,
                                             orphan_after_seconds=settings.worker_timeout_seconds,
                                             crash_at=settings.crash_at,
                                             ack_all_stages=settings.guard_ack == "all",
                                             resolver=CorpusResolver(),
                                             signer=ReceiptSigner.from_pem(receipt_key(
                                                 settings.data_dir, settings.receipt_key, ReceiptSigner.generate_pem)))
        self.monitor = LeakageMonitor(
            self.ledger, GuardKeys(secret), self.runtime, self.metrics,
            MonitorConfig(interval_seconds=settings.monitor_interval_seconds,
                          probes_per_round=settings.monitor_probes))
        try:  # a shared ledger: one guard key and one receipt key for every replica
            check_guard_key(self.ledger, GuardKeys(secret))
            if self.coordinator.signer is not None:
                check_receipt_key(self.ledger, self.coordinator.signer.key_id)
        except SettingsError:
            self.ledger.close()
            raise
        self.coordinator.on_stack_change = self.monitor.poke
        self.coordinator.on_renamed = self.hits.rename
        self.follower = ReplicaFollower(self.ledger, self.guard, self.coordinator, self.metrics,
                                        settings.reconcile_seconds, settings.max_replica_lag_seconds)
        self.follower.on_lag_change = self._on_replica_lag
        self.generator = GuardedGenerator(self.runtime, self.guard, self.metrics,  # gRPC and HTTP alike
                                          settings.max_prompt_chars, settings.filtered_response == "private")
        self.worker: WorkerSupervisor | None = None
        self.model_dir: Path | None = None
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.http: HttpFront | None = None
        self.http_port: int | None = None
        self._serving = False  # the health state, for HTTP's /health
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None  # plaintext, health only (--health-port)
        self.health_port: int | None = None
        self._load_task: asyncio.Task | None = None
        self._coordinator_task: asyncio.Task | None = None
        self._monitor_task: asyncio.Task | None = None
        self._hits_task: asyncio.Task | None = None
        self._follower_task: asyncio.Task | None = None
        self.load_error: BaseException | None = None
        self._stop = asyncio.Event()  # serve_forever's end: a signal, or a refusal to serve
        self._loaded = False  # model and stack loaded: readiness may follow the shared ledger
        self._draining = False

    def _on_guard_hit(self, hit: GuardHit) -> None:
        if hit.source == "output":
            self.metrics.guard_hits.labels(hit.stage, hit.phase).inc()
            self.hits.add(hit.forget_id, hit.stage, hit.phase)  # per job: GetForget's guard_hits

    async def start(self) -> None:
        s = self.settings
        if s.corpus is not None or s.model is not None:  # known now: resolve Forgets from the start
            await asyncio.to_thread(self.coordinator.resolver.load, corpus_file(s.corpus, s.model))
        self.follower.listen()  # before the restore: a forget armed elsewhere meanwhile is heard
        await self.coordinator.restore()  # the guard blocks everything forgotten before we listen
        self._follower_task = asyncio.create_task(self.follower.run())
        self._hits_task = asyncio.create_task(self.hits.run())
        server = grpc.aio.server(
            interceptors=[TokenAuthInterceptor(self.operator_token, s.client_tokens, _streaming_methods()),
                          ClientConcurrencyLimit(s.max_client_rpcs)],
            options=server_options(s), maximum_concurrent_rpcs=s.max_concurrent_rpcs,
        )
        limits = GenerationLimits(s.default_max_new_tokens, s.max_new_tokens_limit)
        inference_pb2_grpc.add_InferenceServicer_to_server(
            InferenceServicer(self.generator, limits, self.metrics,
                              caller=lambda md: caller_label(md, self.operator_token, s.client_tokens)), server)
        admin_pb2_grpc.add_AdminServicer_to_server(
            AdminServicer(self.coordinator, self.metrics, self.hits, s.max_watch_streams, s.max_queued_forgets), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if s.reflection:
            names = [svc.full_name for svc in SERVICES] + [health.SERVICE_NAME, reflection.SERVICE_NAME]
            reflection.enable_server_reflection(names, server)
        address = f"{s.host}:{s.port}"
        if s.tls_cert is not None:
            self.port = server.add_secure_port(address, server_credentials(TlsFiles(s.tls_cert, s.tls_key,
                                                                                   s.tls_client_ca)))
            logger.info("gRPC over TLS%s", ", client certificates required" if s.tls_client_ca else "")
        else:
            self.port = server.add_insecure_port(address)
        await server.start()
        self._server = server
        if s.metrics_port >= 0:
            self.metrics_port = self.metrics.serve(s.metrics_host or s.host, s.metrics_port)
        if s.http_port != 0:
            deps = HttpDeps(self.generator, limits, self.metrics, self.operator_token, s.client_tokens,
                            serving=lambda: self._serving)
            # Same address and TLS files as gRPC: settings refuse plaintext off loopback for both.
            self.http = HttpFront(deps, s.host, s.http_port, s.max_message_bytes, s.grace_seconds,
                                  s.tls_cert, s.tls_key, s.tls_client_ca)
            self.http_port = self.http.bind()
            self.http.start()
        logger.info("listening on %s:%d (metrics on %s, http on %s)", s.host, self.port, self.metrics_port,
                    self.http_port)
        if s.health_port >= 0:
            await self._serve_health(s)
        self._load_task = asyncio.create_task(self._load_model())

    async def _serve_health(self, s: Settings) -> None:
        """grpc.health.v1 alone, in plaintext, for probes that cannot present a client
        certificate (the kubelet's, Docker's): it tells nothing but SERVING / NOT_SERVING."""
        server = grpc.aio.server(maximum_concurrent_rpcs=16)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        self.health_port = server.add_insecure_port(f"{s.metrics_host or s.host}:{s.health_port}")
        await server.start()
        self._health_server = server
        logger.info("health-only listener on %s:%d", s.metrics_host or s.host, self.health_port)

    def _resolve_and_load(self) -> LoadedModel:
        # Load the guard's sentence encoder now (ONNX export on first run) so the first Forget
        # is blocked in milliseconds, not after a model load.
        self.guard.warm_up()
        self.model_dir = resolve_model_dir(self.settings)
        if not self.coordinator.resolver.ready:  # the default demo model: its corpus is known now
            self.coordinator.resolver.load(corpus_file(self.settings.corpus, self.model_dir))
        return self._loader(self.model_dir)

    async def _load_model(self) -> None:
        try:
            loaded = await asyncio.to_thread(self._resolve_and_load)
            await asyncio.to_thread(check_corpus, self.ledger, self.coordinator.resolver)
            self.runtime.attach(loaded)
            assert self.runtime.scheduler is not None
            await self.coordinator.restore_stack(AdapterStackManager(self.runtime.scheduler, loaded.fingerprint))
            await self.follower.reconcile()  # everything the shared ledger holds, before SERVING
        except SettingsError as exc:  # e.g. a corpus other replicas do not share: stop, saying why
            self.load_error = exc
            logger.error("refusing to serve: %s", exc)
            self._stop.set()
            return
        except Exception as exc:
            self.load_error = exc
            logger.exception("model or adapter stack load failed; the server stays NOT_SERVING")
            return
        self._coordinator_task = asyncio.create_task(self.coordinator.run())
        if self.settings.monitor_interval_seconds > 0:
            self._monitor_task = asyncio.create_task(self.monitor.run())
        if self.settings.worker:
            self.worker = WorkerSupervisor(self._worker_args(), self.metrics, self.data.worker_log)
            self.worker.start()
        self.metrics.build_info.labels(__version__, loaded.name, loaded.device.type,
                                       str(loaded.dtype).removeprefix("torch.")).set(1)
        self.metrics.model_loaded.set(1)
        # Everything loaded so far (torch, transformers, the model) lives as long as the process:
        # freezing it keeps the cyclic GC from rescanning it on every full collection, which
        # otherwise stalls streams for tens of ms at a time (most visibly over HTTP, whose
        # per-chunk Python objects trigger collections more often).
        gc.collect()
        gc.freeze()
        self._loaded = True
        if not self.follower.too_far_behind:
            await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        logger.info("model %s ready", loaded.name)

    def _worker_args(self) -> list[str]:
        s = self.settings
        args = ["--data-dir", str(s.data_dir), "--model", str(self.model_dir), "--log-level", s.log_level,
                "--device", s.device, "--worker-threads", str(thread_budget(s)[1]), "--exit-with-parent"]
        if s.corpus is not None:
            args += ["--corpus", str(s.corpus)]
        if s.ledger_url is not None:  # no new exposure: it is in our own flags or environment already
            args += ["--ledger-url", s.ledger_url]
        return args

    async def wait_ready(self) -> None:
        if self._load_task is not None:
            await self._load_task
        if self.load_error is not None:
            raise RuntimeError("model failed to load") from self.load_error

    async def _on_replica_lag(self, too_far_behind: bool) -> None:
        """Readiness follows the shared ledger: a replica far behind it sends no traffic's way."""
        if not self._loaded or self._draining:
            return  # still loading (it reports SERVING itself when done), failed, or stopping
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING if too_far_behind
                               else health_pb2.HealthCheckResponse.SERVING)

    async def _set_health(self, status: int) -> None:
        self._serving = status == health_pb2.HealthCheckResponse.SERVING
        for name in ["", *(svc.full_name for svc in SERVICES)]:
            await self.health.set(name, status)

    async def drain(self) -> None:
        """Graceful stop: NOT_SERVING, refuse new work, finish in-flight within the grace period."""
        self._draining = True
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.runtime.stop_accepting()
        stopping = [self._server.stop(self.settings.grace_seconds)] if self._server is not None else []
        if self.http is not None:
            stopping.append(self.http.stop())  # the same grace period (its config), concurrently
        await asyncio.gather(*stopping)
        await self.close()

    async def close(self) -> None:
        self.follower.close()
        for task in (self._load_task, self._coordinator_task, self._monitor_task, self._hits_task,
                     self._follower_task):
            if task is not None and not task.done():
                task.cancel()
        if self.worker is not None:
            await self.worker.stop()
        if self._server is not None:
            await self._server.stop(0)
        if self.http is not None:
            self.http.abort()
            await self.http.stop()
        if self._health_server is not None:
            await self._health_server.stop(0)
        await asyncio.to_thread(self.runtime.shutdown)
        await self.coordinator.close()  # background guard embeddings: none may write after the ledger closes
        await asyncio.to_thread(self.hits.flush)  # hits counted since the last flush
        self.ledger.close()
        self.metrics.close()

    async def serve_forever(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        await self._stop.wait()
        if isinstance(self.load_error, SettingsError):
            await self.close()
            raise self.load_error  # the CLI prints it and exits 2
        logger.info("signal received: draining for up to %.0f s", self.settings.grace_seconds)
        await self.drain()
