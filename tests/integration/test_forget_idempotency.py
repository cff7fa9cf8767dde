"""Admin edge cases on a real `lethe serve` process: an idempotency key reused with other content
is ALREADY_EXISTS, an unknown state filter is INVALID_ARGUMENT, DeactivateAdapter without a reason
is INVALID_ARGUMENT, and no unkeyed digest of a request's content reaches the data directory."""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import pytest

from server.api import admin_pb2 as apb
from server.client import LetheClient
from server.forget.jobs import ForgetPayload
from tests.procs import ServeProcess


def test_idempotency_conflicts_bad_enums_and_no_plain_digest(demo_model_dir: Path, tmp_path: Path) -> None:
    sp = ServeProcess(demo_model_dir, tmp_path / "data", "--no-worker")
    try:
        sp.wait_serving()
        with LetheClient(sp.target, sp.token, timeout=60) as c:
            md = c._metadata
            first = c.admin.Forget(apb.ForgetRequest(subjects=["Quentin Marlowe"], idempotency_key="ticket-7"),
                                   metadata=md)
            retry = c.admin.Forget(apb.ForgetRequest(subjects=["Quentin  Marlowe"], idempotency_key="ticket-7"),
                                   metadata=md)  # same content once normalised: a retry
            assert first.created and not retry.created and retry.job.forget_id == first.job.forget_id
            with pytest.raises(grpc.RpcError) as err:
                c.admin.Forget(apb.ForgetRequest(subjects=["Someone Else"], idempotency_key="ticket-7"), metadata=md)
            assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
            with pytest.raises(grpc.RpcError) as err:
                c.admin.ListForgets(apb.ListForgetsRequest(states=[99]), metadata=md)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.RpcError) as err:  # undoing a forget needs a reason for the audit log
                c.admin.DeactivateAdapter(apb.DeactivateAdapterRequest(adapter_id="ad_x", reason="  "), metadata=md)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "reason" in (err.value.details() or "")
            listed = c.admin.ListForgets(apb.ListForgetsRequest(states=[apb.FORGET_STATE_FILTERING]), metadata=md)
            assert [j.forget_id for j in listed.forgets] == [first.job.forget_id]
    finally:
        sp.kill()
    plain = hashlib.sha256(ForgetPayload(subjects=("Quentin Marlowe",)).to_json().encode()).hexdigest()
    for f in (tmp_path / "data").rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert plain.encode() not in data and b"content_sha256" not in data, f
