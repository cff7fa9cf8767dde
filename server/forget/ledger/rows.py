"""Ledger rows -> domain values, one mapping for both backends.

The SQLite and PostgreSQL ledgers keep the same columns and run the same queries (sql_common.py);
how a row becomes a `ForgetJob`, an `AdapterRecord` or an audit entry is mapped here once. Rows
are anything indexable by column name (sqlite3.Row, psycopg's dict rows).
Imports no database driver.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from server.forget.jobs import AdapterRecord, ForgetJob, ForgetPayload, ForgetState, MatchCounts, Transition

Row = Mapping[str, Any]


def job_from_rows(r: Row, transitions: Iterable[Row], hits: Iterable[Row], resolution: Row | None) -> ForgetJob:
    """A forget job from its `forgets` row, its transitions (in order), guard-hit counts and
    resolution row (None when it has none)."""
    return ForgetJob(
        forget_id=r["forget_id"], state=ForgetState(r["state"]), method=r["method"], reason=r["reason"],
        num_texts=r["num_texts"], num_qa_pairs=r["num_qa"], num_subjects=r["num_subjects"],
        created_at=r["created_at"], updated_at=r["updated_at"], failure_reason=r["failure_reason"],
        adapter_id=r["adapter_id"], stack_version=r["stack_version"], attempts=r["attempts"],
        metrics=json.loads(r["metrics"]),
        transitions=tuple(Transition(ForgetState(t["state"]), t["at"], t["detail"]) for t in transitions),
        guard_hits=tuple((h["stage"], h["phase"], h["count"]) for h in hits), claim_epoch=r["claim_epoch"],
        commitment=r["commitment"], matches=match_counts(resolution) if resolution is not None else MatchCounts())


def match_counts(row: Row) -> MatchCounts:
    texts, qa, subjects = json.loads(row["counts"])
    return MatchCounts(tuple(texts), tuple(qa), tuple(subjects), row["corpus_digest"])


def adapter_from_row(row: Row) -> AdapterRecord:
    return AdapterRecord(row["adapter_id"], row["forget_id"], row["path"], row["sha256"], row["method"],
                         row["rank"], row["size_bytes"], row["created_at"], json.loads(row["metrics"]))


def submit_audit(payload: ForgetPayload, method: str, content_digest: str) -> dict[str, object]:
    """The audit details of a Forget: a keyed digest and counts, never content."""
    return {"content_hmac": content_digest, "method": method, "texts": len(payload.texts),
            "qa_pairs": len(payload.qa_pairs), "subjects": len(payload.subjects)}
