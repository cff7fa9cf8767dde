"""The `lethe` command line: serve, generate, and the engine's demo / unlearn / evaluate tools.

Each sub-command is a small function; engine commands are mounted from unlearn_engine so the
engine keeps its own CLI. Exit codes: 0 ok, 1 failure, 2 usage error (argparse). Building the
parser and the client commands (generate, forget, forgets, adapters, deactivate, receipt) import no torch
or transformers: serve, worker and the engine's commands import them when they run
(tests/unit/test_cli_imports.py checks).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import grpc

from server.settings import (Settings, SettingsError, add_model_arguments, add_serve_arguments, client_defaults,
                             load_settings, thread_budget)
from server.receipt_cli import add_receipt_commands
from unlearn_engine.method_names import METHOD_NAMES
from unlearn_engine.pretrained import FetchError


def _process_settings(args: argparse.Namespace) -> Settings:
    """Settings of a long-running process (serve, worker), which is hardened before it opens
    anything (server/hardening.py). A setting it refuses exits with the message saying why."""
    from server.hardening import harden_process

    try:
        settings = load_settings(args)
    except SettingsError:
        raise
    except ValueError as exc:
        raise SystemExit(f"lethe: {exc}") from None
    harden_process(settings.data_dir)
    return settings


def _cmd_serve(args: argparse.Namespace) -> int:
    import torch

    from server.app import LetheServer, resolve_model_dir

    settings = _process_settings(args)
    if settings.model is not None:  # an unfetched registry name fails now, not after listening
        resolve_model_dir(settings)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(thread_budget(settings)[0])
    asyncio.run(LetheServer(settings).serve_forever())
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    import torch

    from server.app import resolve_model_dir
    from server.forget.worker import UnlearningWorker, WorkerConfig

    settings = _process_settings(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(thread_budget(settings)[1])
    torch.set_flush_denormal(True)  # denormals slow late training steps ~2x; the demo adapter came out the same
    worker = UnlearningWorker(WorkerConfig(
        data_dir=settings.data_dir, model_dir=resolve_model_dir(settings), corpus=settings.corpus,
        ledger_url=settings.ledger_url,
        parent_pid=os.getppid() if args.exit_with_parent else None, crash_at=settings.crash_at))
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    worker.run(once=args.once)
    return 0


def _finish_name(value: int) -> str:
    from server.api import inference_pb2 as pb

    return pb.FinishReason.Name(value).removeprefix("FINISH_REASON_").lower()


def _cmd_generate(args: argparse.Namespace) -> int:
    params = dict(max_new_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                  top_k=args.top_k, seed=args.seed, stop=args.stop or ())
    with _client(args) as client:
        if args.stream:
            finish = 0
            for chunk in client.stream(args.prompt, **params):
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
                finish = chunk.finish_reason or finish
            sys.stdout.write("\n")
            if args.verbose:
                print(f"[finish: {_finish_name(finish)}]", file=sys.stderr)
        else:
            resp = client.generate(args.prompt, **params)
            print(resp.text)
            if args.verbose:
                print(f"[finish: {_finish_name(resp.finish_reason)}, tokens: {resp.usage.completion_tokens}, "
                      f"stack v{resp.stack_version}]", file=sys.stderr)
    return 0


def _client(args: argparse.Namespace):
    """A client for --target with --token, else LETHE_TOKEN, else a local server's operator.token."""
    from server.client import LetheClient, find_token

    from server.tls import TlsFiles

    defaults = client_defaults()
    token = find_token(args.token or defaults.token, defaults.data_dir)
    ca, cert, key = (args.tls_ca or defaults.tls_ca, args.tls_cert or defaults.tls_cert,
                     args.tls_key or defaults.tls_key)
    tls = TlsFiles(cert, key, ca) if ca or cert else None
    return LetheClient(args.target or defaults.target, token, timeout=args.timeout, tls=tls)


def _state(value: int) -> str:
    from server.api import admin_pb2 as apb

    return apb.ForgetState.Name(value).removeprefix("FORGET_STATE_")


def _cmd_forget(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn

    from server.api import admin_pb2 as apb

    pairs = []
    for qa in args.qa or ():
        question, sep, answer = qa.partition("|")
        if not sep or not question.strip() or not answer.strip():
            print(f"error: --qa needs 'QUESTION|ANSWER', got {qa!r}", file=sys.stderr)
            return 2
        pairs.append(apb.QAPair(question=question.strip(), answer=answer.strip()))
    request = apb.ForgetRequest(texts=args.text or [], qa_pairs=pairs, subjects=args.subject or [],
                                method=args.method or "", reason=args.reason or "",
                                idempotency_key=args.idempotency_key or "")
    with _client(args) as client:
        if args.dry_run:
            return _print_dry_run(client.admin.ForgetDryRun(request, metadata=client._metadata,
                                                            timeout=args.timeout))
        reply = client.admin.Forget(request, metadata=client._metadata, timeout=args.timeout)
        job = reply.job
        print(f"{job.forget_id} {_state(job.state)}{'' if reply.created else ' (existing)'} "
              f"matched {_matches(job)}")
        if reply.commitment_key:  # the server keeps no copy: this is the only time it is shown
            print(f"commitment key (keep it; shown once): {reply.commitment_key.hex()}")
        if not args.wait:
            return 0
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      transient=True) as bar:
            task = bar.add_task(_state(job.state), total=None)
            scores: dict[str, float] = {}
            for ev in client.watch_forget(job.forget_id):  # reopened across connection ages and restarts
                job = ev.job
                if ev.HasField("progress") and ev.progress.total_steps:
                    p = ev.progress
                    scores = dict(p.metrics) or (scores if p.step else {})  # a new attempt starts clean
                    bar.update(task, description=_progress_line(p, scores), completed=p.step,
                               total=p.total_steps)
                elif ev.HasField("transition"):
                    bar.update(task, description=_state(ev.transition.state))
    print(f"{job.forget_id} {_state(job.state)}" + (f": {job.failure_reason}" if job.failure_reason else ""))
    return 0 if job.state == apb.FORGET_STATE_ACTIVE else 1


def _progress_line(p: Any, metrics: dict[str, float]) -> str:
    """'TRAINING attempt 1 (forget 0.20, retain 0.98) ETA 0:41': a TrainingProgress and the
    latest probe scores (only evaluation steps carry them)."""
    scores = [f"{label} {metrics[key]:.2f}" for label, key in (
        ("forget", "forget.fact_span_accuracy"), ("retain", "retain.fact_span_accuracy")) if key in metrics]
    eta = f" ETA {int(p.eta_seconds) // 60}:{int(p.eta_seconds) % 60:02d}" if p.eta_seconds >= 0 else ""
    return f"TRAINING attempt {p.attempt}" + (f" ({', '.join(scores)})" if scores else "") + eta


def _matches(job: Any) -> str:
    """Corpus entries each request item matched, e.g. "subjects=[31] qa=[3]"."""
    parts = [f"{name}={list(counts)}" for name, counts in (
        ("texts", job.text_matches), ("qa", job.qa_matches), ("subjects", job.subject_matches)) if counts]
    return " ".join(parts) or "-"


def _print_dry_run(reply: Any) -> int:
    """What a Forget would match; exit 0 when it would be accepted, 1 when refused."""
    corpus = reply.corpus_digest[:12] or "none (the request's own items only)"
    print(f"corpus {corpus}: {reply.total_entries} entries matched; {_matches(reply)}")
    for e in reply.entries:
        print(f"  {e.entry_id}  [{e.subject}]  " + (f"{e.question} -> " if e.question else "") + e.text)
    if len(reply.entries) < reply.total_entries:
        print(f"  ... and {reply.total_entries - len(reply.entries)} more")
    for problem in reply.problems:
        print(f"refused: {problem}")
    print("nothing was stored (dry run)")
    return 1 if reply.problems else 0


def _blocked(job: Any) -> str:
    """Outputs the guard blocked for a job: before / after its adapter went live."""
    n = {"before_adapter": 0, "after_adapter": 0}
    for h in job.guard_hits:
        n[h.phase] = n.get(h.phase, 0) + h.count
    return f"{n['before_adapter']}/{n['after_adapter']}"


def _cmd_forgets(args: argparse.Namespace) -> int:
    from server.api import admin_pb2 as apb

    with _client(args) as client:
        page = client.admin.ListForgets(apb.ListForgetsRequest(page_size=args.limit), metadata=client._metadata)
    for job in page.forgets:
        created = job.created_at.ToDatetime().isoformat(timespec="seconds")
        print(f"{job.forget_id}  {_state(job.state):<11} {job.method:<8} {created}  "
              f"texts={job.num_texts} qa={job.num_qa_pairs} subjects={job.num_subjects}  "
              f"matched={_matches(job)}  blocked={_blocked(job)}  {job.failure_reason}")
    return 0


def _cmd_adapters(args: argparse.Namespace) -> int:
    from server.api import admin_pb2 as apb

    with _client(args) as client:
        stack = client.admin.ListAdapters(apb.ListAdaptersRequest(), metadata=client._metadata)
    print(f"stack v{stack.stack_version}: {len(stack.adapters)} adapter(s)")
    for a in stack.adapters:
        print(f"  {a.position}: {a.adapter_id}  forget={a.forget_id} method={a.method} rank={a.rank} "
              f"{a.size_bytes} bytes")
    return 0


def _cmd_deactivate(args: argparse.Namespace) -> int:
    from server.api import admin_pb2 as apb

    with _client(args) as client:
        stack = client.admin.DeactivateAdapter(
            apb.DeactivateAdapterRequest(adapter_id=args.adapter_id, reason=args.reason or ""),
            metadata=client._metadata)
    print(f"stack v{stack.stack_version}: {len(stack.adapters)} adapter(s)")
    return 0


def _add_target(parser: argparse.ArgumentParser, timeout: float | None = 60.0) -> None:
    parser.add_argument("--target", help="HOST:PORT (default 127.0.0.1:50051 or LETHE_TARGET)")
    parser.add_argument("--token", help="bearer token (default LETHE_TOKEN, else <data dir>/operator.token)")
    parser.add_argument("--timeout", type=float, default=timeout, help="deadline in seconds")
    _add_tls(parser)


def _add_tls(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-ca", type=Path, help="connect over TLS trusting this PEM CA (env LETHE_TLS_CA)")
    parser.add_argument("--tls-cert", type=Path, help="PEM client certificate for mutual TLS (env LETHE_CLIENT_CERT)")
    parser.add_argument("--tls-key", type=Path, help="PEM key of --tls-cert (env LETHE_CLIENT_KEY)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lethe", description="Lethe: an inference server that can forget.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server (demo model by default)")
    add_serve_arguments(serve)
    serve.set_defaults(func=_cmd_serve)

    work = sub.add_parser("worker", help="run an unlearning worker against a data directory")
    add_model_arguments(work)
    work.add_argument("--once", action="store_true", help="exit when the queue is empty")
    work.add_argument("--exit-with-parent", action="store_true",
                      help="exit when the process that started this one dies (set by the server)")
    work.set_defaults(func=_cmd_worker)

    gen = sub.add_parser("generate", help="generate text from a running server")
    gen.add_argument("prompt")
    gen.add_argument("--target", help="HOST:PORT (default 127.0.0.1:50051 or LETHE_TARGET)")
    gen.add_argument("--token", help="bearer token (default LETHE_TOKEN)")
    gen.add_argument("--max-tokens", type=int, default=None, help="max new tokens (server default if unset)")
    gen.add_argument("--temperature", type=float, default=None, help="0 or unset = greedy")
    gen.add_argument("--top-p", type=float, default=None)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--stop", action="append", help="stop sequence (repeatable)")
    gen.add_argument("--stream", action="store_true", help="print tokens as they arrive")
    gen.add_argument("--timeout", type=float, default=120.0, help="deadline in seconds")
    gen.add_argument("-v", "--verbose", action="store_true", help="print finish reason and usage to stderr")
    _add_tls(gen)
    gen.set_defaults(func=_cmd_generate)

    forget = sub.add_parser("forget", help="forget texts, QA pairs or subjects (operator)")
    forget.add_argument("--text", action="append", help="a passage to forget (repeatable)")
    forget.add_argument("--qa", action="append", metavar="Q|A", help="a question|answer pair (repeatable)")
    forget.add_argument("--subject", action="append", help="a name to forget (repeatable)")
    forget.add_argument("--method", choices=METHOD_NAMES, help="unlearning method (server default if unset)")
    forget.add_argument("--reason", help="ticket / legal basis, kept in the audit log")
    forget.add_argument("--idempotency-key", help="retries with the same key return the same job")
    forget.add_argument("--wait", action="store_true", help="follow progress; exit 0 only on ACTIVE")
    forget.add_argument("--dry-run", action="store_true",
                        help="show the corpus entries the request matches (and why it would be refused); store nothing")
    _add_target(forget)
    forget.set_defaults(func=_cmd_forget)
    forgets = sub.add_parser("forgets", help="list forget jobs, newest first (operator)")
    forgets.add_argument("--limit", type=int, default=50)
    _add_target(forgets)
    forgets.set_defaults(func=_cmd_forgets)
    adapters = sub.add_parser("adapters", help="show the active adapter stack (operator)")
    _add_target(adapters)
    adapters.set_defaults(func=_cmd_adapters)
    deactivate = sub.add_parser("deactivate", help="remove an adapter from the stack (operator)")
    deactivate.add_argument("adapter_id")
    deactivate.add_argument("--reason", required=True, help="why (required; kept in the audit log with the actor)")
    _add_target(deactivate)
    deactivate.set_defaults(func=_cmd_deactivate)
    add_receipt_commands(sub, _add_target, _client)

    from unlearn_engine.cli import add_engine_commands
    from unlearn_engine.demo.cli import add_demo_commands
    from unlearn_engine.pretrained.cli import add_model_commands

    cache_dir = load_settings(check=False).cache_dir  # defaults only: no server setting is validated
    add_demo_commands(sub, default_cache_dir=cache_dir)
    add_engine_commands(sub, default_cache_dir=cache_dir)
    add_model_commands(sub, default_cache_dir=cache_dir)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except grpc.RpcError as err:  # every client command reports a failed call the same way
        print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    except ConnectionError as err:  # server.client.WatchLost: `forget --wait` lost the server for good
        print(f"error: {err}", file=sys.stderr)
        return 1
    except SettingsError as exc:  # e.g. a short token: refused at start-up, with how to fix it
        print(f"lethe: {exc}", file=sys.stderr)
        return 2
    except FetchError as err:  # e.g. `--model smollm2` before `lethe model fetch smollm2`
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
