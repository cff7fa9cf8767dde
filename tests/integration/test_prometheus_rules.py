"""The alert rules and Prometheus configs in deploy/prometheus, checked by promtool and the catalogue.

`promtool check rules|config` parses them as Prometheus will; `promtool test rules` runs the
scenarios in rules.test.yml (each alert fires when it should, and a healthy server fires none);
and every metric a rule reads must exist in `ServerMetrics` (server/metrics.py, the catalogue).
The catalogue helpers here are shared with the dashboard check (test_deploy_grafana.py).
Running the rules in a real Prometheus against a real server is test_prometheus_live.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterable

import promql_parser
import pytest
import yaml

from server.metrics import ServerMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yml"

# Series Prometheus makes itself rather than scraping them from Lethe.
PROMETHEUS_OWN_SERIES = frozenset({"up", "scrape_duration_seconds", "ALERTS", "ALERTS_FOR_STATE"})

# What the issue asks alerts for, mapped to the rules that cover it.
REQUIRED_ALERTS = {
    "residual leakage > 0": {"LetheResidualLeakage", "LetheGuardHitsAfterAdapter"},
    "forget stuck in TRAINING": {"LetheForgetStuckInTraining"},
    "swap failures": {"LetheAdapterSwapFailures"},
    "worker down": {"LetheWorkerDown"},
    "high filtered-response rate": {"LetheHighFilteredResponseRate"},
}

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def catalogue_sample_names() -> frozenset[str]:
    """Every sample name ServerMetrics can expose, whether or not it has samples yet.

    Labelled metrics expose no sample until a label set is used, so names come from each
    family's type as well as from the samples present.
    """
    names: set[str] = set()
    for family in ServerMetrics().registry.collect():
        names.update(s.name for s in family.samples)
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return frozenset(names)


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects, from its parse tree (raises on a syntax error)."""
    out: set[str] = set()
    _walk(promql_parser.parse(expr), out)
    return out


def _walk(node: Any, out: set[str]) -> None:
    if type(node).__name__ == "VectorSelector":
        name = node.name or next((m.value for m in node.matchers.matchers
                                  if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal), None)
        if name is None:
            raise AssertionError(f"selector without a literal metric name cannot be checked: {node}")
        out.add(name)
        return
    for attr in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(node, attr, None)
        if child is not None:
            _walk(child, out)
    for arg in getattr(node, "args", None) or ():
        _walk(arg, out)


def unknown_metrics(exprs: Iterable[tuple[str, str]]) -> list[str]:
    """'where: name' for each metric an expression reads that is neither Lethe's nor Prometheus's."""
    known = catalogue_sample_names() | PROMETHEUS_OWN_SERIES
    return [f"{where}: {name}" for where, expr in exprs for name in sorted(promql_metric_names(expr))
            if name not in known]


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool not installed (Debian package `prometheus`; .ci/run installs it)")
    return subprocess.run([exe, *args], input=stdin, capture_output=True, text=True, timeout=120)


def test_rules_parse_with_promtool() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("config", ["prometheus.yml", "local.yml"])
def test_prometheus_configs_parse_and_load_the_rules(config: str) -> None:
    result = promtool("check", "config", str(PROMETHEUS_DIR / config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_every_alert_fires_in_its_scenario_and_none_on_a_healthy_server() -> None:
    result = promtool("test", "rules", str(PROMETHEUS_DIR / "rules.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    scenarios = yaml.safe_load((PROMETHEUS_DIR / "rules.test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in scenarios for case in test["alert_rule_test"] if case["exp_alerts"]}
    alerts = {r["alert"] for r in rules() if "alert" in r}
    assert alerts - fired == set(), "alerts without a scenario in rules.test.yml where they fire"


def test_the_issue_alerts_exist_with_severity_and_summary() -> None:
    by_name = {r["alert"]: r for r in rules() if "alert" in r}
    for need, names in REQUIRED_ALERTS.items():
        assert names <= by_name.keys(), f"{need}: missing {names - by_name.keys()}"
    for name, rule in by_name.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_rules_read_only_catalogue_metrics() -> None:
    exprs = [(r.get("alert") or r["record"], r["expr"]) for r in rules()]
    assert unknown_metrics(exprs) == []
    # and the leakage alerts read the residual-leakage series, not something near it
    used = set().union(*(promql_metric_names(e) for _, e in exprs))
    assert {"lethe_residual_leakage_ratio", "lethe_guard_hits_total", "lethe_adapter_swaps_total",
            "lethe_forget_jobs", "lethe_worker_up", "lethe_generations_finished_total"} <= used


def test_catalogue_check_catches_a_misspelt_metric() -> None:
    # The checker itself: a typo or a histogram read without its suffix must be reported.
    assert unknown_metrics([("typo", "rate(lethe_guard_hit_total[5m])"),
                            ("bare histogram", "lethe_request_duration_seconds"),
                            ("ok", "rate(lethe_request_duration_seconds_bucket[5m]) + up")]) == [
        "typo: lethe_guard_hit_total", "bare histogram: lethe_request_duration_seconds"]
