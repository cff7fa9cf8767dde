"""deploy/k8s manifests, schema-checked offline and cross-checked against each other.

Built-in kinds are validated strictly (unknown fields are errors) with kubernetes-validate's
bundled schemas, for the oldest Kubernetes we support (1.27: gRPC probes went GA) and the newest
it ships. The two non-core kinds get hand-written subset schemas below: ServiceMonitor (Prometheus
Operator CRD) and Kustomization. No cluster, kubectl or kustomize runs here, so the test also
does what `kustomize build` would catch: every resource listed exists and nothing is left out.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from server.settings import Settings
from tests.integration.test_prometheus_rules import DEPLOY

K8S = DEPLOY / "k8s"
VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]

_STR = {"type": "string"}
_LABELS = {"type": "object", "additionalProperties": _STR}
_METADATA = {"type": "object", "required": ["name"], "additionalProperties": False,
             "properties": {"name": _STR, "namespace": _STR, "labels": _LABELS, "annotations": _LABELS}}

# monitoring.coreos.com/v1 ServiceMonitor: the fields this repo uses, as the CRD defines them.
SERVICE_MONITOR = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"},
        "metadata": _METADATA,
        "spec": {"type": "object", "required": ["selector", "endpoints"], "additionalProperties": False, "properties": {
            "jobLabel": _STR,
            "selector": {"type": "object", "additionalProperties": False,
                         "properties": {"matchLabels": _LABELS}},
            "namespaceSelector": {"type": "object"},
            "endpoints": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False, "properties": {
                    "port": _STR, "path": _STR, "scheme": {"enum": ["http", "https"]},
                    "interval": {"type": "string", "pattern": r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                    "scrapeTimeout": _STR, "honorLabels": {"type": "boolean"}}}},
        }},
    },
}

# kustomize.config.k8s.io/v1beta1 Kustomization: the fields this repo uses.
KUSTOMIZATION = {
    "type": "object", "required": ["apiVersion", "kind", "resources"], "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "kustomize.config.k8s.io/v1beta1"}, "kind": {"const": "Kustomization"},
        "namespace": _STR,
        "labels": {"type": "array", "items": {"type": "object", "additionalProperties": False, "properties": {
            "pairs": _LABELS, "includeSelectors": {"type": "boolean"}, "includeTemplates": {"type": "boolean"}}}},
        "resources": {"type": "array", "items": _STR, "uniqueItems": True},
        "images": {"type": "array", "items": {"type": "object", "required": ["name"], "additionalProperties": False,
                                              "properties": {"name": _STR, "newName": _STR, "newTag": _STR,
                                                             "digest": _STR}}},
    },
}


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def kustomization() -> dict[str, Any]:
    return docs("kustomization.yaml")[0]


def resources() -> dict[str, dict[str, Any]]:
    """kind -> the (single) object of that kind across the listed resources."""
    out: dict[str, dict[str, Any]] = {}
    for name in kustomization()["resources"]:
        for doc in docs(name):
            assert doc["kind"] not in out, f"second {doc['kind']} in {name}"
            out[doc["kind"]] = doc
    return out


def test_kustomization_lists_every_manifest_and_nothing_else() -> None:
    jsonschema.validate(kustomization(), KUSTOMIZATION)
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


@pytest.mark.parametrize("version", VERSIONS)
def test_builtin_kinds_pass_strict_schema_validation(version: str) -> None:
    checked = set()
    for kind, obj in resources().items():
        if kind == "ServiceMonitor":
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{kind} {'/'.join(map(str, err.path))}: {err.message}")
        checked.add(kind)
    assert checked == {"Namespace", "Secret", "PersistentVolumeClaim", "Deployment", "Service", "NetworkPolicy"}


def test_strict_validation_catches_a_misspelt_field() -> None:
    deployment = resources()["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)


def test_service_monitor_matches_its_crd_subset_and_the_service() -> None:
    objs = resources()
    monitor, service = objs["ServiceMonitor"], objs["Service"]
    jsonschema.validate(monitor, SERVICE_MONITOR)
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
    assert all(e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])
    # the alert rules select job="lethe"; the operator sets job to the Service name
    assert service["metadata"]["name"] == "lethe"


def container(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (c,) = objs["Deployment"]["spec"]["template"]["spec"]["containers"]
    return c


def test_probes_are_native_grpc_health_checks_on_the_health_port() -> None:
    c = container(resources())
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["grpc"] == Settings.port
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert int(env["LETHE_HEALTH_PORT"]) == ports["health"]  # plaintext: the kubelet has no client cert
    assert int(env["LETHE_HTTP_PORT"]) == ports["http"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"] == {"port": ports["health"]}, probe
    # a slow model load is the startup probe's job, so liveness never kills a loading server
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_service_selects_the_pods_and_targets_named_ports() -> None:
    objs = resources()
    pod_labels = objs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert objs["Service"]["spec"]["selector"].items() <= pod_labels.items()
    container_ports = {p["name"]: p["containerPort"] for p in container(objs)["ports"]}
    for port in objs["Service"]["spec"]["ports"]:
        assert port["targetPort"] in container_ports
        assert port["port"] == container_ports[port["targetPort"]]
    assert container_ports["metrics"] == Settings.metrics_port
    assert container_ports["http"] == Settings.http_port
    assert {p["name"] for p in objs["Service"]["spec"]["ports"]} >= {"grpc", "http", "metrics"}


def test_data_volume_and_token_secret_are_wired_in() -> None:
    objs = resources()
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert list(claims.values()) == [objs["PersistentVolumeClaim"]["metadata"]["name"]]
    c = container(objs)
    env = {e["name"]: e for e in c["env"]}
    data_dir = env["LETHE_DATA_DIR"]["value"]
    assert any(m["mountPath"] == data_dir and m["name"] in claims for m in c["volumeMounts"])
    assert env["LETHE_HOST"]["value"] == "0.0.0.0"
    secret = objs["Secret"]
    for var in ("LETHE_OPERATOR_TOKEN", "LETHE_CLIENT_TOKENS"):
        ref = env[var]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"], var
        assert secret["stringData"][ref["key"]] == "", "never commit a real token"


def test_pod_runs_as_the_image_user_without_privileges_and_drains_in_time() -> None:
    objs = resources()
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"USER {pod['securityContext']['runAsUser']}:" in dockerfile
    sc = container(objs)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    # read-only root (test_deploy_docker checks the server writes nothing there); /tmp is scratch
    assert sc["readOnlyRootFilesystem"] is True
    assert any(m["mountPath"] == "/tmp" for m in container(objs)["volumeMounts"])
    assert objs["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    grace = float({e["name"]: e.get("value") for e in container(objs)["env"]}["LETHE_GRACE_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] > grace + 5  # + the preStop pause
    assert objs["Deployment"]["spec"]["strategy"]["type"] == "Recreate"  # one writer on the RWO volume


def test_kustomize_image_name_matches_the_container() -> None:
    images = {i["name"] for i in kustomization()["images"]}
    assert container(resources())["image"] in images


def test_pod_is_fenced_in_and_bounded() -> None:
    objs = resources()
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    c = container(objs)
    assert "cpu" in c["resources"]["limits"] and "memory" in c["resources"]["limits"]
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert tmp["emptyDir"]["sizeLimit"]
    tls = next(v for v in pod["volumes"] if v["name"] == "tls")
    env = {e["name"]: e.get("value", "") for e in c["env"]}
    mount = next(m for m in c["volumeMounts"] if m["name"] == "tls")
    assert env["LETHE_TLS_CERT"].startswith(mount["mountPath"]) and tls["secret"]["secretName"]
    assert not any("TLS" in e["name"] and "valueFrom" in e for e in c["env"]), "TLS material is mounted, not in env"
    policy = objs["NetworkPolicy"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels(objs).items()
    ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ports == {"grpc", "http", "metrics", "health"} and {p["name"] for p in c["ports"]} >= ports
    grpc_rule = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == "grpc")
    assert grpc_rule["from"], "gRPC only from labelled clients"
    assert {p["port"] for p in grpc_rule["ports"]} == {"grpc", "http"}, "HTTP from the same clients as gRPC"


def pod_labels(objs: dict[str, dict[str, Any]]) -> dict[str, str]:
    return objs["Deployment"]["spec"]["template"]["metadata"]["labels"]
