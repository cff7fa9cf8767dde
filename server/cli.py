"""The `lethe` command line: serve, generate, and the engine's demo / unlearn / evaluate tools.

Each sub-command is a small function; engine commands are mounted from unlearn_engine so the
engine keeps its own CLI. Exit codes: 0 ok, 1 failure, 2 usage error (argparse).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import grpc
import torch

from server.settings import (add_model_arguments, add_serve_arguments, client_defaults, load_settings,
                             thread_budget)


def _cmd_serve(args: argparse.Namespace) -> int:
    from server.app import LetheServer

    settings = load_settings(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(thread_budget(settings)[0])
    asyncio.run(LetheServer(settings).serve_forever())
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from server.app import resolve_model_dir
    from server.worker import UnlearningWorker, WorkerConfig

    settings = load_settings(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(thread_budget(settings)[1])
    worker = UnlearningWorker(WorkerConfig(
        data_dir=settings.data_dir, model_dir=resolve_model_dir(settings), corpus=settings.corpus))
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    worker.run(once=args.once)
    return 0


def _finish_name(value: int) -> str:
    from server.api import inference_pb2 as pb

    return pb.FinishReason.Name(value).removeprefix("FINISH_REASON_").lower()


def _cmd_generate(args: argparse.Namespace) -> int:
    from server.client import LetheClient, find_token

    defaults = client_defaults()
    token = find_token(args.token or defaults.token, defaults.data_dir)
    params = dict(max_new_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                  top_k=args.top_k, seed=args.seed, stop=args.stop or ())
    with LetheClient(args.target or defaults.target, token, timeout=args.timeout) as client:
        try:
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
        except grpc.RpcError as err:
            print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lethe", description="Lethe: an inference server that can forget.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server (demo model by default)")
    add_serve_arguments(serve)
    serve.set_defaults(func=_cmd_serve)

    work = sub.add_parser("worker", help="run an unlearning worker against a data directory")
    add_model_arguments(work)
    work.add_argument("--once", action="store_true", help="exit when the queue is empty")
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
    gen.set_defaults(func=_cmd_generate)

    from unlearn_engine.demo.cli import add_demo_commands

    add_demo_commands(sub, default_cache_dir=load_settings().cache_dir)
    try:
        from unlearn_engine.cli import add_engine_commands
    except ImportError:  # engine CLI not installed in this build
        pass
    else:
        add_engine_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
