"""TLS and mutual TLS on a real `lethe serve` process, with certificates made at test time: the
client certificate's name is the audit log's actor; a wrong-CA, certificate-less or plaintext
client is refused; the CLI and the health probe speak TLS; plaintext off loopback is refused."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from server.api import admin_pb2 as apb
from server.client import LetheClient
from server.tls import TlsFiles
from tests.certs import Pki, make_pki
from tests.procs import LETHE, ServeProcess


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls_server(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, pki: Pki):
    data = tmp_path_factory.mktemp("srv") / "data"
    s = pki.server
    sp = ServeProcess(demo_model_dir, data, "--no-worker", "--tls-cert", str(s.cert), "--tls-key", str(s.key),
                      "--tls-client-ca", str(s.ca), "--health-port", "0")
    sp.wait_serving(tls=pki.alice)
    yield sp
    sp.kill()


def test_the_client_certificate_names_the_actor_in_the_audit_log(mtls_server: ServeProcess, pki: Pki) -> None:
    with LetheClient(mtls_server.target, mtls_server.token, timeout=60, tls=pki.alice) as c:
        job = c.admin.Forget(apb.ForgetRequest(subjects=["Quentin Marlowe"]), metadata=c._metadata).job
        assert c.generate("Where was", max_new_tokens=2).usage.completion_tokens >= 1
    with sqlite3.connect(mtls_server.data_dir / "ledger.db") as db:
        actors = db.execute("SELECT actor FROM audit WHERE target = ?", (job.forget_id,)).fetchall()
    db.close()
    assert actors == [("cert:alice",)]


@pytest.mark.parametrize("who", ["mallory", "no_cert", "plaintext"])
def test_clients_without_a_certificate_from_the_ca_are_refused(mtls_server: ServeProcess, pki: Pki, who: str) -> None:
    tls: TlsFiles | None = None if who == "plaintext" else getattr(pki, who)
    with LetheClient(mtls_server.target, mtls_server.token, timeout=10, tls=tls) as c:
        with pytest.raises(grpc.RpcError) as err:
            c.health()
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError):
            c.generate("Where was", max_new_tokens=2)


def test_cli_and_health_probe_speak_mutual_tls(mtls_server: ServeProcess, pki: Pki) -> None:
    env = {**os.environ, "LETHE_TOKEN": mtls_server.token}
    tls = ["--tls-ca", str(pki.ca), "--tls-cert", str(pki.alice.cert), "--tls-key", str(pki.alice.key)]
    out = subprocess.run([*LETHE, "forgets", "--target", mtls_server.target, *tls],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    probe = [sys.executable, "-m", "server.healthcheck", "--target", mtls_server.target]
    assert subprocess.run([*probe, *tls], timeout=60).returncode == 0
    assert subprocess.run(probe, capture_output=True, timeout=60).returncode == 2  # plaintext: refused
    with LetheClient(mtls_server.target, timeout=10, tls=pki.alice) as c:
        assert c.health() == health_pb2.HealthCheckResponse.SERVING


def test_plaintext_off_loopback_is_refused_unless_insecure(demo_model_dir: Path, tmp_path: Path) -> None:
    cmd = [*LETHE, "serve", "--model", str(demo_model_dir), "--host", "0.0.0.0", "--port", "0",
           "--metrics-port", "-1", "--data-dir", str(tmp_path / "data"), "--no-worker"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "without TLS" in out.stderr and "--insecure" in out.stderr and "Traceback" not in out.stderr


def test_probes_without_a_certificate_use_the_health_only_port(mtls_server: ServeProcess) -> None:
    port = next(int(m.group(1)) for line in mtls_server.log
                if (m := re.search(r"health-only listener on [\d.]+:(\d+)", line)))
    probe = [sys.executable, "-m", "server.healthcheck", "--target", f"127.0.0.1:{port}"]
    assert subprocess.run(probe, timeout=60).returncode == 0  # plaintext, no certificate: SERVING
    with LetheClient(f"127.0.0.1:{port}", mtls_server.token, timeout=10) as c:
        with pytest.raises(grpc.RpcError) as err:  # nothing but health is served there
            c.admin.ListAdapters(apb.ListAdaptersRequest(), metadata=c._metadata)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
