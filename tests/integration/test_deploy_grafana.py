"""The Grafana dashboard (deploy/grafana/lethe.json) and its provisioning, checked offline.

Every panel query must parse as PromQL and read only metrics in the catalogue
(`ServerMetrics().registry`, so series that no code path feeds yet are still checked by name);
the sections the issue asks for must be there; and the provisioning files must point at what
docker-compose.yml mounts. Whether the queries also run in a real Prometheus is checked in
test_prometheus_live.py. No Grafana server runs here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from server.metrics import ServerMetrics
from tests.integration.test_prometheus_rules import DEPLOY, catalogue_sample_names, promql_metric_names, unknown_metrics

DASHBOARD = DEPLOY / "grafana" / "lethe.json"
PROVISIONING = DEPLOY / "grafana" / "provisioning"

# Grafana's built-in interval variables -> a duration PromQL accepts; dashboard variables are
# only used as label-matcher regexes, where ".*" stands for "All".
_BUILTIN = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}

# Sections the issue lists -> the row title that holds them.
REQUIRED_ROWS = {
    "traffic": "Traffic",
    "latency": "Latency",
    "leakage before and after adapters": "Leakage: before and after adapters",
    "residual leakage per job class": "Residual leakage per job class",
    "swaps": "Adapter swaps",
    "job pipeline": "Forget job pipeline",
    "guard overhead": "Guard overhead",
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def promql_of(expr: str, variables: set[str]) -> str:
    """A panel query as Prometheus would receive it from Grafana (variables substituted)."""
    for name, value in _BUILTIN.items():
        expr = expr.replace(name, value)
    for name in variables:
        expr = expr.replace("${" + name + "}", ".*").replace("$" + name, ".*")
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def panel_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield f"{panel['title']} [{target['refId']}]", promql_of(target["expr"], variables)


def test_every_panel_query_parses_and_reads_catalogue_metrics(dashboard: dict[str, Any]) -> None:
    queries = list(panel_queries(dashboard))
    assert len(queries) >= 30
    for where, expr in queries:
        assert promql_metric_names(expr), f"{where}: selects no metric"
    assert unknown_metrics(queries) == []


def test_every_catalogue_family_is_on_the_dashboard(dashboard: dict[str, Any]) -> None:
    # The other direction: a metric added to server/metrics.py should get a panel (or be listed here).
    not_charted = {"grpc_server_started", "grpc_server_handling_seconds", "grpc_server_msg_received",
                   "grpc_server_msg_sent", "lethe_build_info", "lethe_verification_score"}
    used = set().union(*(promql_metric_names(e) for _, e in panel_queries(dashboard)))
    families = {f.name for f in ServerMetrics().registry.collect()}
    uncharted = {f for f in families if not any(u == f or u.startswith(f + "_") for u in used)}
    assert uncharted - not_charted == set()


def test_template_variables_use_a_prometheus_datasource_and_catalogue_metrics(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    query = variables["instance"]["query"]["query"]
    metric = re.fullmatch(r"label_values\((\w+), instance\)", query)
    assert metric and metric.group(1) in catalogue_sample_names()
    # unlabelled, so the variable lists an instance as soon as it is scraped, before any traffic
    assert metric.group(1) == "lethe_model_loaded"


def test_panels_use_the_datasource_variable_and_a_valid_grid(dashboard: dict[str, Any]) -> None:
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        cell = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cell & cells, f"{p['title']} overlaps another panel"
        cells |= cell
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"] and p.get("description"), p["title"]


def rows(dashboard: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Row title -> the panels under it (Grafana's flat layout: a row owns what follows it)."""
    out: dict[str, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] = []
    for p in sorted(dashboard["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"])):
        if p["type"] == "row":
            current = out.setdefault(p["title"], [])
        else:
            current.append(p)
    return out


def test_the_issue_sections_exist_and_chart_what_they_say(dashboard: dict[str, Any]) -> None:
    by_row = rows(dashboard)
    for need, title in REQUIRED_ROWS.items():
        assert by_row.get(title), f"{need}: no row {title!r} with panels"

    def exprs(title: str) -> str:
        return "\n".join(t["expr"] for p in by_row[title] for t in p["targets"])

    leakage = exprs("Leakage: before and after adapters")
    assert "lethe_guard_hits_total" in leakage and re.search(r"by \([^)]*phase", leakage)
    residual = exprs("Residual leakage per job class")
    assert re.search(r"by \(job_class\) \(lethe_residual_leakage_ratio", residual)
    assert "lethe_adapter_swaps_total" in exprs("Adapter swaps")
    assert re.search(r"by \(state\) \(lethe_forget_jobs", exprs("Forget job pipeline"))
    assert "lethe_guard_check_seconds" in exprs("Guard overhead")
    assert "lethe_requests_total" in exprs("Traffic")
    assert "histogram_quantile" in exprs("Latency")


def test_provisioning_matches_the_compose_mounts(dashboard: dict[str, Any]) -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in compose["services"]["grafana"]["volumes"]
                  if v.startswith("./"))
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "lethe.yml").read_text())["providers"][0]
    dashboard_in_container = mounts["./grafana/lethe.json"]
    assert Path(dashboard_in_container).parent == Path(provider["options"]["path"])
    assert mounts["./grafana/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"
    assert mounts["./grafana/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"
    for source in mounts:
        assert (DEPLOY / source).exists(), source

    datasource = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["isDefault"]
    prometheus_port = compose["services"]["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert datasource["url"] == f"http://prometheus:{prometheus_port}"
    assert dashboard["uid"] and dashboard["title"] == "Lethe"
