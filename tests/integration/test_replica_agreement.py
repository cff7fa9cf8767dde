"""Processes sharing a ledger must share its secrets (issue 17, item 5): a replica or worker
whose guard key differs from the one the shared ledger records refuses to start with a message
that says why; so does a replica with another receipt-signing key, or serving another corpus."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from server.app import LetheServer
from server.forget.agreement import CORPUS, RECEIPT_KEY, check_guard_key
from server.forget.ledger.postgres import PostgresLedger
from server.guard.keys import GuardKeys
from server.keyfile import GUARD_KEY_FILE
from server.settings import SettingsError
from tests.conftest import ServerThread, make_settings
from tests.procs import LETHE


def _data_dir(path: Path, key: bytes) -> Path:
    path.mkdir(mode=0o700, parents=True)
    (path / GUARD_KEY_FILE).write_bytes(key)
    return path


def test_a_replica_or_worker_with_another_guard_key_refuses_to_start(demo_model_dir: Path, tmp_path: Path,
                                                                      postgres_url: str) -> None:
    ledger = PostgresLedger(postgres_url)
    check_guard_key(ledger, GuardKeys(b"a" * 32))  # the first replica recorded its key's fingerprint
    check_guard_key(ledger, GuardKeys(b"a" * 32))  # the same key agrees
    env = {**os.environ, "LETHE_LEDGER_URL": postgres_url}
    for command in (["serve", "--no-worker", "--port", "0", "--metrics-port", "-1", "--http-port", "0"], ["worker"]):
        done = subprocess.run([*LETHE, *command, "--model", str(demo_model_dir),
                               "--data-dir", str(_data_dir(tmp_path / command[0], b"b" * 32))],
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr[-2000:]
        assert "guard key fingerprint" in done.stderr and "same guard.key" in done.stderr, done.stderr[-2000:]
    ledger.close()


def test_a_replica_with_another_receipt_key_refuses_to_start(demo_model_dir: Path, tmp_path: Path,
                                                              postgres_url: str) -> None:
    settings = make_settings(tmp_path, demo_model_dir, ledger_url=postgres_url, worker=False)
    ledger = PostgresLedger(postgres_url)
    ledger.agree(RECEIPT_KEY, "another-deployment-key")  # recorded by the replicas already serving
    with pytest.raises(SettingsError, match="receipt-signing key id.*--receipt-key"):
        LetheServer(settings)
    ledger.close()


def test_a_replica_with_another_corpus_refuses_to_serve(demo_model_dir: Path, tmp_path: Path,
                                                        postgres_url: str) -> None:
    ledger = PostgresLedger(postgres_url)
    ledger.agree(CORPUS, "0" * 64)  # the other replicas resolve forgets against another corpus
    st = ServerThread(make_settings(tmp_path, demo_model_dir, ledger_url=postgres_url, worker=False))
    try:
        with pytest.raises(RuntimeError, match="failed to load"):
            st.wait_ready()
        assert "corpus digest" in str(st.server.load_error) and "--corpus" in str(st.server.load_error)
    finally:
        st.stop()
        ledger.close()
