"""deploy/docker-compose*.yml against the Compose Specification schema, plus what a schema can't see.

The schema is the one check-jsonschema vendors (`vendor.compose-spec`), so this runs offline.
There is no Docker engine here, so nothing is built or started: the test checks the files the
engine would read exist, and that services, ports and mounts agree with each other and with the
Dockerfile and server defaults.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from server.settings import Settings
from tests.integration.test_prometheus_rules import DEPLOY

COMPOSE_FILES = ["docker-compose.yml", "docker-compose.gpu.yml", "docker-compose.replicas.yml"]


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / name).read_text())


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    path = resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_file_is_valid_against_the_compose_spec(name: str, compose_schema: dict[str, Any]) -> None:
    validator_cls = jsonschema.validators.validator_for(compose_schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator_cls(compose_schema).iter_errors(load(name))]
    assert errors == []


def test_schema_check_catches_a_broken_file(compose_schema: dict[str, Any]) -> None:
    broken = load("docker-compose.yml")
    broken["services"]["lethe"]["ports"] = {"grpc": 50051}  # a map where a list belongs
    broken["services"]["lethe"]["helthcheck"] = {}
    validator = jsonschema.validators.validator_for(compose_schema)(compose_schema)
    assert len(list(validator.iter_errors(broken))) >= 2


def test_stack_has_lethe_prometheus_and_grafana_wired_together() -> None:
    services = load("docker-compose.yml")["services"]
    assert set(services) == {"lethe", "prometheus", "grafana"}
    lethe = services["lethe"]
    build = DEPLOY / lethe["build"]["context"]
    assert (build / lethe["build"]["dockerfile"]).is_file() and (build / "pyproject.toml").is_file()
    # the published ports are the server's defaults, which the image keeps
    published = {int(p.rsplit(":", 1)[1]) for p in lethe["ports"]}
    assert published == {Settings.port, Settings.http_port, Settings.metrics_port}
    assert any(v.endswith(":/var/lib/lethe") for v in lethe["volumes"])
    assert lethe["stop_grace_period"] == "30s"  # longer than the image's LETHE_GRACE_SECONDS=20

    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    targets = {t for job in scrape if job["job_name"] == "lethe" for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"lethe:{Settings.metrics_port}"}  # the compose service name and metrics port


@pytest.mark.parametrize("service", ["prometheus", "grafana"])
def test_bind_mounts_exist_and_images_are_pinned(service: str) -> None:
    spec = load("docker-compose.yml")["services"][service]
    image, _, tag = spec["image"].partition(":")
    assert tag and tag != "latest", f"{service}: pin the image tag"
    for volume in spec["volumes"]:
        source = volume.split(":", 1)[0]
        if source.startswith("./"):
            assert (DEPLOY / source).exists(), f"{service}: {source} does not exist"
            assert volume.endswith(":ro"), f"{service}: mount config read-only: {volume}"


def test_prometheus_loads_the_rules_file_it_is_given() -> None:
    spec = load("docker-compose.yml")["services"]["prometheus"]
    config_in_container = next(a.split("=", 1)[1] for a in spec["command"] if a.startswith("--config.file="))
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in spec["volumes"] if v.startswith("./"))
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert mounts["./prometheus/prometheus.yml"] == config_in_container
    for rule_file in config["rule_files"]:  # relative to the config file, inside the container
        assert str(Path(config_in_container).parent / rule_file) in mounts.values()


def test_gpu_override_builds_the_cuda_variant_and_reserves_a_gpu() -> None:
    lethe = load("docker-compose.gpu.yml")["services"]["lethe"]
    assert "/whl/cu" in lethe["build"]["args"]["TORCH_INDEX_URL"]
    assert "TORCH_INDEX_URL" in (DEPLOY / "Dockerfile").read_text()
    devices = lethe["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_lethe_runs_locked_down() -> None:
    svc = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["lethe"]
    assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in svc["security_opt"]
    assert any(t.startswith("/tmp:") and "size=" in t for t in svc["tmpfs"])


def test_replicas_override_shares_one_ledger_and_one_set_of_keys() -> None:
    """Two replicas and a worker: every one on the postgres service's ledger, on the volume that
    holds the shared keys, none with a worker of its own, and the second replica on other ports."""
    base, over = load("docker-compose.yml")["services"], load("docker-compose.replicas.yml")["services"]
    url = over["lethe"]["environment"]["LETHE_LEDGER_URL"]
    assert "@postgres:5432/" in url and over["postgres"]["environment"]["POSTGRES_DB"] == url.rsplit("/", 1)[1]
    for name in ("lethe-2", "worker"):
        assert over[name]["environment"]["LETHE_LEDGER_URL"] == url, name
        assert over[name]["volumes"] == base["lethe"]["volumes"], name  # guard.key, receipt.key, tokens
        assert over[name]["image"] == base["lethe"]["image"], name
    assert over["lethe"]["environment"]["LETHE_WORKER"] == over["lethe-2"]["environment"]["LETHE_WORKER"] == "0"
    assert over["worker"]["command"] == ["worker"]
    ports = [p.rsplit(":", 2)[1] for s in (base["lethe"], over["lethe-2"]) for p in s["ports"]]
    assert len(ports) == 6 and len(set(ports)) == len(ports), ports  # gRPC, HTTP, metrics each; none twice
