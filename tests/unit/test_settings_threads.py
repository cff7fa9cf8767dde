"""Automatic torch thread counts follow the CPUs a process may use, not the node's count."""

from __future__ import annotations

import os

from server.settings import Settings, thread_budget, usable_cores


def test_a_cgroup_cpu_limit_caps_the_cores(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cores(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU: one thread
    assert usable_cores(tmp_path) == 1
    (tmp_path / "cpu.max").write_text(f"{(affinity + 8) * 100000} 100000\n")  # above affinity
    assert usable_cores(tmp_path) == affinity
    assert usable_cores(tmp_path / "absent") == affinity  # no cgroup v2 file: affinity alone


def test_explicit_thread_counts_win_and_auto_is_at_least_one():
    assert thread_budget(Settings(torch_threads=3, worker_threads=2)) == (3, 2)
    server, worker = thread_budget(Settings())
    assert server >= 1 and worker >= 1
