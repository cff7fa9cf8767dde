"""A real Prometheus (Debian's `prometheus` package) scraping a real Lethe server on loopback.

Prometheus runs as its own process with a 1 s scrape and rule-evaluation interval, the repo's
alert rules loaded, and a temp TSDB. The server runs in-process on the small demo model with its
unlearning worker off: a Forget here is blocked by the guard (FILTERING) and never trains, which
keeps the module fast and its CPU use flat. The tests read the server's activity back through
Prometheus's HTTP query API: a Generate, then a Forget and the guard hit it causes, as the
dashboard's leakage panels chart them. They also run every dashboard query and check every alert
rule evaluates. Also here: `promtool check metrics` on a live scrape. Skips only when
prometheus/promtool are not installed (.ci/run installs them).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from server.api import admin_pb2
from server.api import inference_pb2 as pb
from server.client import LetheClient
from tests.conftest import ServerThread, make_settings
from tests.integration.test_deploy_grafana import DASHBOARD, panel_queries
from tests.integration.test_deploy_docker import free_port
from tests.integration.test_prometheus_rules import RULES, catalogue_sample_names, promtool
from unlearn_engine.demo.config import DemoConfig
from unlearn_engine.demo.corpus import generate_corpus

SCRAPE_SECONDS = 1


class PrometheusServer:
    """`prometheus` on 127.0.0.1:<free port>, scraping one Lethe metrics endpoint."""

    def __init__(self, exe: str, workdir: Path, metrics_target: str):
        config = {
            "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": f"{SCRAPE_SECONDS}s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "lethe", "static_configs": [{"targets": [metrics_target]}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = workdir / "prometheus.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [exe, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                 f"--web.listen-address={self.url.removeprefix('http://')}"],
                stdout=out, stderr=subprocess.STDOUT)
        self.wait_until(lambda: self.get("/-/ready", raw=True), "ready")

    def get(self, path: str, raw: bool = False, **params: str) -> Any:
        """GET a Prometheus URL: parsed JSON (or bytes with raw), None while it does not answer."""
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                body = resp.read()
        except (urllib.error.URLError, ConnectionError):
            return None
        return body if raw else json.loads(body)

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the `data` of a successful answer (fails the test otherwise)."""
        answer = self.get(f"/api/v1/{path}", **params)
        assert answer is not None, f"no answer from Prometheus:\n{self.log.read_text()[-2000:]}"
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query: the result vector (empty when nothing matches)."""
        return self.api("query", query=expr)["result"]

    def value(self, expr: str) -> float:
        """A single-series query's value; 0 when it has no series yet (a counter not yet incremented)."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr} returned {len(result)} series"
        return float(result[0]["value"][1]) if result else 0.0

    def wait_until(self, condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
        """Poll condition until it returns something other than None; returns that."""
        deadline = time.monotonic() + timeout
        while (result := condition()) is None:
            assert self.proc.poll() is None, f"prometheus exited:\n{self.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(SCRAPE_SECONDS / 4)  # wait-ok: polls Prometheus's API, up to a deadline
        return result

    def wait_for_value(self, expr: str, at_least: float, timeout: float = 30) -> float:
        """Wait until a scrape (and rule evaluation) shows expr >= at_least; returns the value."""
        return self.wait_until(lambda: v if (v := self.value(expr)) >= at_least else None,
                               f"{expr} >= {at_least}", timeout)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def lethe_server(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """Overrides conftest's: the same real server, without the worker (see the docstring)."""
    st = ServerThread(make_settings(tmp_path_factory.mktemp("srv"), demo_model_dir, worker=False))
    st.wait_ready()
    yield st
    st.stop()


@pytest.fixture()
def client(lethe_server: ServerThread) -> Iterator[LetheClient]:
    """Carries the operator token, so it can call Admin too."""
    with LetheClient(lethe_server.target, lethe_server.server.operator_token, timeout=60) as c:
        c.wait_ready()
        yield c


@pytest.fixture(scope="module")
def prometheus(lethe_server: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.skip("prometheus not installed (Debian package `prometheus`; .ci/run installs it)")
    prom = PrometheusServer(exe, tmp_path_factory.mktemp("prometheus"), f"127.0.0.1:{lethe_server.server.metrics_port}")
    prom.wait_for_value('up{job="lethe"}', 1)
    yield prom
    prom.stop()


def scrape(lethe_server: ServerThread) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{lethe_server.server.metrics_port}/metrics", timeout=10) as r:
        return r.read().decode()


def test_live_scrape_passes_promtool_check_metrics(lethe_server: ServerThread, client: LetheClient) -> None:
    client.generate("Where was", max_new_tokens=4)  # so the labelled request series exist too
    text = scrape(lethe_server)
    result = promtool("check", "metrics", stdin=text)  # the exposition format and naming lint
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), \
        result.stdout + result.stderr
    samples = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert {"lethe_requests_total", "grpc_server_handled_total", "lethe_model_loaded"} <= samples
    assert samples <= catalogue_sample_names()  # the live endpoint exposes nothing off-catalogue


def test_generate_is_read_back_through_the_prometheus_query_api(prometheus: PrometheusServer,
                                                                client: LetheClient) -> None:
    requests = 'sum(lethe_requests_total{job="lethe", method="Generate", code="OK"})'
    handled = 'sum(grpc_server_handled_total{job="lethe", grpc_method="Generate", grpc_code="OK"})'
    before_requests, before_handled = prometheus.value(requests), prometheus.value(handled)
    resp = client.generate("Where was", max_new_tokens=4)
    assert resp.usage.completion_tokens >= 1
    assert prometheus.wait_for_value(requests, before_requests + 1) == before_requests + 1
    assert prometheus.wait_for_value(handled, before_handled + 1) == before_handled + 1
    # the model is served, and the dashboard's instance variable finds this server
    assert prometheus.value('lethe_model_loaded{job="lethe"}') == 1
    instances = prometheus.api("label/instance/values", **{"match[]": "lethe_model_loaded"})
    assert instances == [prometheus.query('up{job="lethe"}')[0]["metric"]["instance"]]


def test_every_alert_rule_evaluates_cleanly_against_live_series(prometheus: PrometheusServer) -> None:
    def evaluated_rules() -> list[dict[str, Any]] | None:
        groups = prometheus.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r["lastEvaluation"][:4] != "0001" for r in rules) else None

    rules = prometheus.wait_until(evaluated_rules, "every rule evaluated once")
    expected = {r.get("alert") for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert {r["name"] for r in rules} == expected
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    # a healthy server with nothing forgotten leaks nothing and swaps nothing
    state = {r["name"]: r["state"] for r in rules}
    for quiet in ("LetheResidualLeakage", "LetheGuardHitsAfterAdapter", "LetheAdapterSwapFailures",
                  "LetheHighFilteredResponseRate", "LetheDown", "LetheModelNotLoaded"):
        assert state[quiet] == "inactive", quiet


def test_every_dashboard_query_runs_in_prometheus(prometheus: PrometheusServer) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    failures = []
    for where, expr in panel_queries(dashboard):
        answer = prometheus.get("/api/v1/query", query=expr)
        if answer is None or answer.get("status") != "success":
            failures.append((where, answer))
    assert failures == []
    # panels over unlabelled series show data from the first scrape, before any traffic
    assert prometheus.query("max(lethe_adapter_stack_version)") and prometheus.query("sum(lethe_requests_waiting)")


def panel_query(title: str) -> str:
    """The PromQL a dashboard panel sends (its first query), as Grafana would send it."""
    dashboard = json.loads(DASHBOARD.read_text())
    return next(expr for where, expr in panel_queries(dashboard) if where.startswith(f"{title} ["))


# Last in the module: the forget blocks a demo person for every test after it.
def test_forget_and_guard_hit_show_on_the_leakage_panels(prometheus: PrometheusServer, client: LetheClient,
                                                         lethe_server: ServerThread) -> None:
    qa = next(r for r in generate_corpus(DemoConfig.small().corpus_spec()).qa if r.split == "train")
    assert qa.fact in client.generate(qa.question, max_new_tokens=32).text  # the model knows it

    forget = client.admin.Forget(
        admin_pb2.ForgetRequest(qa_pairs=[admin_pb2.QAPair(question=qa.question, answer=qa.answer)],
                                reason="test: right to erasure", idempotency_key="prometheus-live-1"),
        metadata=(("authorization", f"Bearer {lethe_server.server.operator_token}"),), timeout=60)
    assert forget.created
    blocked = client.generate(qa.question, max_new_tokens=32)
    assert blocked.finish_reason == pb.FINISH_REASON_FILTERED and qa.fact not in blocked.text

    # Read back through Prometheus: the guard hit, before any adapter exists ...
    assert prometheus.wait_for_value('sum(lethe_guard_hits_total{job="lethe", phase="before_adapter"})', 1) >= 1
    assert prometheus.wait_for_value('sum(lethe_generations_finished_total{job="lethe", reason="filtered"})', 1) >= 1
    assert prometheus.wait_for_value('lethe_forget_jobs{job="lethe", state="FILTERING"}', 1) == 1
    assert prometheus.value('sum(lethe_forget_requests_total{job="lethe", result="created"})') == 1
    # ... and as the dashboard's panels query it
    by_phase: dict[str, float] = {}
    for sample in prometheus.query(panel_query("Guard hits in range: before vs after adapter")):
        phase = sample["metric"]["phase"]  # one series per stage and phase: add the stages up
        by_phase[phase] = by_phase.get(phase, 0.0) + float(sample["value"][1])
    assert by_phase.get("before_adapter", 0) > 0 and by_phase.get("after_adapter", 0) == 0
    states = {s["metric"]["state"]: float(s["value"][1]) for s in prometheus.query(panel_query("Forget jobs by state"))}
    assert states["FILTERING"] == 1 and states["ACTIVE"] == 0
    assert prometheus.value(panel_query("Guard hits after adapter (range)")) == 0  # the overview stat
    p50 = panel_query("Time to block (p50 / p99)")  # NaN until a scrape after the forget is in the rate window
    to_block = prometheus.wait_until(lambda: None if math.isnan(v := prometheus.value(p50)) else v, "time to block")
    assert 0 < to_block < 1  # the guard blocked it within the Forget call: milliseconds
    # A hit before the adapter is the filter doing its job, not residual leakage: no alert.
    rules = {r["name"]: r for g in prometheus.api("rules")["groups"] for r in g["rules"]}
    assert rules["LetheGuardHitsAfterAdapter"]["state"] == "inactive"
    assert rules["LetheResidualLeakage"]["state"] == "inactive"

