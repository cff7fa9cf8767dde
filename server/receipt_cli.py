"""`lethe receipt get | key | verify`: fetch a forget's signed deletion receipt, the public key
that verifies it, and verify a receipt file offline (server/forget/receipts.py has the format).

`verify` needs no server when given `--public-key`; with `--request` and `--commitment-key` it
also checks that the receipt covers that request. Exit codes of `verify`: 0 valid, 1 invalid
(or the request is not the one committed to), 3 valid but revoked (the adapter was removed).
Imports no torch; the client commands import gRPC only when they run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

REVOKED_EXIT = 3


def add_receipt_commands(sub: Any, add_target: Callable[[argparse.ArgumentParser], None],
                         client: Callable[[argparse.Namespace], Any]) -> None:
    receipt = sub.add_parser("receipt", help="signed deletion receipts: get, key, verify (operator)")
    rsub = receipt.add_subparsers(dest="receipt_command", required=True)
    get = rsub.add_parser("get", help="save a forget's signed deletion receipt (once it is ACTIVE)")
    get.add_argument("forget_id")
    get.add_argument("-o", "--output", type=Path, help="receipt file to write (default: stdout)")
    add_target(get)
    get.set_defaults(func=lambda a: _cmd_get(a, client))
    key = rsub.add_parser("key", help="save the server's receipt public key (PEM)")
    key.add_argument("-o", "--output", type=Path, help="PEM file to write (default: stdout)")
    add_target(key)
    key.set_defaults(func=lambda a: _cmd_key(a, client))
    verify = rsub.add_parser("verify", help="verify a receipt file, offline with --public-key")
    verify.add_argument("file", type=Path)
    verify.add_argument("--public-key", type=Path, help="PEM public key (else fetched from --target)")
    verify.add_argument("--request", type=Path,
                        help='the request as JSON {"texts": [...], "qa_pairs": [[Q, A]], "subjects": [...]}')
    verify.add_argument("--commitment-key", help="hex key the Forget reply returned (with --request)")
    add_target(verify)
    verify.set_defaults(func=lambda a: _cmd_verify(a, client))


def _write(data: bytes, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(data.decode())
    else:
        output.write_bytes(data)


def _cmd_get(args: argparse.Namespace, client: Callable[[argparse.Namespace], Any]) -> int:
    from server.forget.receipts import to_file

    with client(args) as c:
        receipt = c.receipt(args.forget_id)
    if receipt is None:
        print(f"error: {args.forget_id} has no receipt (it is not ACTIVE)", file=sys.stderr)
        return 1
    _write(to_file(receipt), args.output)
    return 0


def _public_pem(args: argparse.Namespace, client: Callable[[argparse.Namespace], Any]) -> bytes:
    if getattr(args, "public_key", None) is not None:
        return Path(args.public_key).read_bytes()
    with client(args) as c:
        return c.receipt_public_key()


def _cmd_key(args: argparse.Namespace, client: Callable[[argparse.Namespace], Any]) -> int:
    _write(_public_pem(args, client), args.output)
    return 0


def _cmd_verify(args: argparse.Namespace, client: Callable[[argparse.Namespace], Any]) -> int:
    from server.errors import InvalidArgument
    from server.forget.jobs import ForgetPayload
    from server.forget.receipts import InvalidReceipt, check, covers, from_file, load_public_pem

    if (args.request is None) != (args.commitment_key is None):
        print("error: --request and --commitment-key go together", file=sys.stderr)
        return 2
    try:
        doc, revocation = check(from_file(args.file.read_bytes()), load_public_pem(_public_pem(args, client)))
    except (InvalidReceipt, ValueError) as exc:
        print(f"INVALID: {exc}", file=sys.stderr)
        return 1
    print(f"valid: {doc['forget_id']} ACTIVE in stack v{doc['stack_version']} at {doc['active_at']}, "
          f"adapter {doc['adapter_id']} sha256 {doc['adapter_sha256']}, key {doc['key_id']}")
    if args.request is not None:
        try:
            req = json.loads(args.request.read_text())
            payload = ForgetPayload.validated(req.get("texts", ()), [tuple(p) for p in req.get("qa_pairs", ())],
                                              req.get("subjects", ()))
            ok = covers(doc, bytes.fromhex(args.commitment_key), payload)
        except (ValueError, InvalidArgument, AttributeError, TypeError) as exc:
            print(f"error: cannot read the request or key: {exc}", file=sys.stderr)
            return 2
        print("covers this request" if ok else "does NOT cover this request")
        if not ok:
            return 1
    if revocation is not None:
        print(f"REVOKED at {revocation['revoked_at']} by {revocation['revoked_by'] or 'unknown'}")
        return REVOKED_EXIT
    return 0
