"""Progress reports: the ETA of an attempt and the CLI's one-line summary of a job's training."""

from __future__ import annotations

import pytest

from server.api import admin_pb2 as apb
from server.cli import _progress_line
from unlearn_engine.progress import Progress


def test_eta_follows_the_pace_of_the_attempt_so_far():
    assert Progress("f", "train", step=0, max_steps=80).eta_s is None
    assert Progress("f", "train", step=20, max_steps=80, elapsed_s=10.0).eta_s == pytest.approx(30.0)
    assert Progress("f", "train", step=80, max_steps=80, elapsed_s=40.0).eta_s == 0.0


def test_cli_line_shows_attempt_latest_scores_and_eta():
    p = apb.TrainingProgress(attempt=2, step=30, total_steps=120, eta_seconds=75.0)
    scores = {"forget.fact_span_accuracy": 0.2, "retain.fact_span_accuracy": 0.984}
    assert _progress_line(p, scores) == "TRAINING attempt 2 (forget 0.20, retain 0.98) ETA 1:15"
    unknown = apb.TrainingProgress(attempt=1, step=0, total_steps=80, eta_seconds=-1)
    assert _progress_line(unknown, {}) == "TRAINING attempt 1"
