"""Signed deletion receipts on a real `lethe serve` whose key is mounted (`--receipt-key`): the
Forget reply returns the commitment key once; an ACTIVE forget's GetForget carries a receipt that
verifies under GetReceiptKey's public key and names the live adapter; `lethe receipt get` /
`verify` check it offline, with the request it covers; DeactivateAdapter revokes it."""

from __future__ import annotations

import json
from pathlib import Path

from server import cli
from server.api import admin_pb2 as apb
from server.client import LetheClient
from server.forget.layout import LEDGER_FILE
from server.forget.ledger import SqliteLedger
from server.forget.receipts import ReceiptSigner, SignedReceipt, check, covers, load_public_pem
from server.forget.jobs import ForgetPayload
from server.receipt_cli import REVOKED_EXIT
from tests.procs import ServeProcess
from tests.support.standin_worker import train_standin, wait_state

QA = ("Where did Orla Penhallow study?", "the Drummond Conservatory")


def _receipt(job: apb.ForgetJob) -> SignedReceipt:
    r = job.receipt
    return SignedReceipt(r.body, r.signature, r.key_id, r.revoked, r.revocation_body, r.revocation_signature)


def test_an_active_forget_has_a_receipt_that_verifies_offline(demo_model_dir: Path, tmp_path: Path,
                                                              capsys) -> None:
    data, mounted = tmp_path / "data", tmp_path / "secret" / "receipt.pem"
    mounted.parent.mkdir()
    mounted.write_bytes(ReceiptSigner.generate_pem())
    signer = ReceiptSigner.from_pem(mounted.read_bytes())
    sp = ServeProcess(demo_model_dir, data, "--no-worker", "--monitor-interval-seconds", "0",
                      "--receipt-key", str(mounted))
    worker = None
    try:
        sp.wait_serving()
        with LetheClient(sp.target, sp.token, timeout=60) as c:
            md = c._metadata
            request = apb.ForgetRequest(qa_pairs=[apb.QAPair(question=QA[0], answer=QA[1])], reason="receipt",
                                        idempotency_key="ticket-r1")
            reply = c.admin.Forget(request, metadata=md)
            key, fid = reply.commitment_key, reply.job.forget_id
            assert len(key) == 32
            assert c.admin.Forget(request, metadata=md).commitment_key == b""  # returned once only
            assert not c.admin.GetForget(apb.GetForgetRequest(forget_id=fid), metadata=md).HasField("receipt")
            base = ["--target", sp.target, "--token", sp.token]
            assert cli.main(["forget", "--qa", "Where was Orla Penhallow born?|Tressick", *base]) == 0
            shown = capsys.readouterr().out.split("shown once): ")[1].split()[0]
            assert len(bytes.fromhex(shown)) == 32  # `lethe forget` prints the key it got, once

            worker = SqliteLedger(data / LEDGER_FILE)
            train_standin(worker, data, demo_model_dir)
            job = wait_state(c, fid, apb.FORGET_STATE_ACTIVE)
            public = c.admin.GetReceiptKey(apb.GetReceiptKeyRequest(), metadata=md)
            assert public.key_id == signer.key_id and public.algorithm == "Ed25519"
            assert not (data / "receipt.key").exists()  # the mounted key signs; none is generated

            doc, revocation = check(_receipt(job), load_public_pem(public.public_key_pem.encode()))
            live = c.admin.ListAdapters(apb.ListAdaptersRequest(), metadata=md)
            assert revocation is None and doc["forget_id"] == fid and doc["adapter_id"] == job.adapter_id
            assert doc["adapter_sha256"] == live.adapters[0].sha256 and doc["stack_version"] == live.stack_version
            assert doc["guard_entries"]["digests"] > 0 and doc["items"] == {"texts": 0, "qa_pairs": 1, "subjects": 0}
            assert covers(doc, key, ForgetPayload(qa_pairs=(QA,)))
            again = c.admin.GetForget(apb.GetForgetRequest(forget_id=fid), metadata=md)
            assert again.receipt.body == job.receipt.body  # signed once, then kept

            # the CLI: save it, then verify offline with the public key and the request it covers
            file, pem, req = tmp_path / "r.json", tmp_path / "pub.pem", tmp_path / "req.json"
            assert cli.main(["receipt", "get", fid, "-o", str(file), *base]) == 0
            assert cli.main(["receipt", "key", "-o", str(pem), *base]) == 0
            req.write_text(json.dumps({"qa_pairs": [list(QA)]}))
            offline = ["receipt", "verify", str(file), "--public-key", str(pem)]
            assert cli.main([*offline, "--request", str(req), "--commitment-key", key.hex()]) == 0
            assert "covers this request" in capsys.readouterr().out
            req.write_text(json.dumps({"qa_pairs": [[QA[0], "somewhere else"]]}))
            assert cli.main([*offline, "--request", str(req), "--commitment-key", key.hex()]) == 1
            assert cli.main(["receipt", "verify", str(file), *base]) == 0  # key fetched from the server
            tampered = json.loads(file.read_text())
            tampered["signature"] = tampered["revocation_signature"] or "AAAA"
            file.write_text(json.dumps(tampered))
            assert cli.main(offline) == 1

            c.admin.DeactivateAdapter(apb.DeactivateAdapterRequest(adapter_id=job.adapter_id, reason="undo"),
                                      metadata=md)
            revoked = c.admin.GetForget(apb.GetForgetRequest(forget_id=fid), metadata=md)
            assert revoked.receipt.revoked and revoked.receipt.body == job.receipt.body
            _, revocation = check(_receipt(revoked), signer.public)
            assert revocation is not None and revocation["revoked_by"] == "operator"
            assert cli.main(["receipt", "get", fid, "-o", str(file), *base]) == 0
            assert cli.main(offline) == REVOKED_EXIT
    finally:
        if worker is not None:
            worker.close()
        sp.kill()
