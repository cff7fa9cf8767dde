"""Crypto-shredding on a real `lethe serve`: what a Forget names is never on disk in the clear,
and once the forget is ACTIVE its payload key is gone; DeactivateAdapter takes the probes' key.

A second SQLite connection (the stand-in worker's, open throughout) reads every row of every
table, and a raw byte scan reads the database, its WAL, every file of the data directory and
the server's log: none holds a forgotten string (as sent, case-folded or NFKC-normalised), nor
an unkeyed SHA-256 / SHA-1 / MD5 of one (hex or raw), nor of the request as a whole.
"""

from __future__ import annotations

import hashlib
import sqlite3
import unicodedata
from pathlib import Path

from server.api import admin_pb2 as apb
from server.client import LetheClient
from server.forget.jobs import ForgetPayload
from server.forget.layout import LEDGER_FILE
from server.forget.ledger import SqliteLedger
from tests.procs import ServeProcess
from tests.support.standin_worker import train_standin, wait_state

SUBJECT = "Quillon Varratesh"
TEXT = "Quillon Varratesh grew up in Drossenkeld and mended clocks for the Marrowgate guild."
QUESTION = "Which guild did Quillon Varratesh mend clocks for?"
ANSWER = "The Marrowgate guild"
WORDS = ("Varratesh", "Drossenkeld", "Marrowgate")  # distinctive on their own


def _needles() -> list[bytes]:
    payload = ForgetPayload.validated([TEXT], [(QUESTION, ANSWER)], [SUBJECT])
    strings = {SUBJECT, TEXT, QUESTION, ANSWER, *WORDS}
    forms = {f for s in strings for f in (s, s.casefold(), unicodedata.normalize("NFKC", s).casefold())}
    out = [f.encode() for f in forms]
    for data in [f.encode() for f in forms] + [payload.to_json().encode()]:
        for algo in (hashlib.sha256, hashlib.sha1, hashlib.md5):
            digest = algo(data)
            out += [digest.hexdigest().encode(), digest.hexdigest().upper().encode(), digest.digest()]
    return out


NEEDLES = _needles()


def _assert_no_trace(data_dir: Path, log: list[str]) -> None:
    with sqlite3.connect(f"file:{data_dir / LEDGER_FILE}?mode=ro", uri=True) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in db.execute(f"SELECT * FROM {table}"):  # noqa: S608 - names from sqlite_master
                for value in row:
                    raw = value if isinstance(value, bytes) else str(value).encode()
                    for needle in NEEDLES:
                        assert needle not in raw and needle not in raw.lower(), (table, needle)
    db.close()
    files = [f for f in data_dir.rglob("*") if f.is_file()]
    assert any(f.name == LEDGER_FILE for f in files)
    for f in files:
        raw = f.read_bytes()
        for needle in NEEDLES:
            assert needle not in raw and needle not in raw.lower(), (f.name, needle)
    text = "".join(log).encode()
    assert not any(needle in text for needle in NEEDLES)


def _key_purposes(data_dir: Path, forget_id: str) -> set[str]:
    with sqlite3.connect(f"file:{data_dir / LEDGER_FILE}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT purpose FROM forget_keys WHERE forget_id = ?", (forget_id,)).fetchall()
    db.close()
    return {r[0] for r in rows}


def test_forgotten_content_is_sealed_and_shredded(demo_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    sp = ServeProcess(demo_model_dir, data, "--no-worker", "--monitor-interval-seconds", "0")
    worker = None
    try:
        sp.wait_serving()
        with LetheClient(sp.target, sp.token, timeout=60) as c:
            md = c._metadata
            reply = c.admin.Forget(apb.ForgetRequest(
                texts=[TEXT], qa_pairs=[apb.QAPair(question=QUESTION, answer=ANSWER)], subjects=[SUBJECT],
                reason="erasure test"), metadata=md)
            fid = reply.job.forget_id
            _assert_no_trace(data, sp.log)  # sealed from the first write, not only after erasure
            assert _key_purposes(data, fid) == {"payload"}

            worker = SqliteLedger(data / LEDGER_FILE)  # the second connection, open from here on
            payload = train_standin(worker, data, demo_model_dir)
            assert payload.subjects == (SUBJECT,) and payload.texts == (TEXT,)  # the key opened it
            assert _key_purposes(data, fid) == {"payload", "probes"}

            job = wait_state(c, fid, apb.FORGET_STATE_ACTIVE)
            assert job.num_texts == 1 and job.num_qa_pairs == 1 and job.num_subjects == 1  # counts stay
            assert _key_purposes(data, fid) == {"probes"}  # the payload key is destroyed
            assert (data / "receipt.key").stat().st_mode & 0o777 == 0o600  # generated: no key was mounted
            assert worker.armed_payloads() == [] and worker.pending_payloads() == []
            _assert_no_trace(data, sp.log)

            c.admin.DeactivateAdapter(apb.DeactivateAdapterRequest(adapter_id=job.adapter_id, reason="test"),
                                      metadata=md)
            assert _key_purposes(data, fid) == set()  # the probes' key went with the adapter
            assert worker.monitor_probes() == []
            _assert_no_trace(data, sp.log)
    finally:
        if worker is not None:
            worker.close()
        sp.kill()
    _assert_no_trace(data, sp.log)
