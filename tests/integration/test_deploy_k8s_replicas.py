"""deploy/k8s/replicas: the scale-out overlay, schema-checked offline and cross-checked.

New objects (worker, PostgreSQL, network policies) are validated strictly like the base's; the
two patches cannot be (kustomize is not here to apply them), so the test checks they name base
objects and wire the shared ledger and keys the same way into servers and workers.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.integration.test_deploy_k8s import K8S, VERSIONS, kustomization as base_kustomization

OVERLAY = K8S / "replicas"


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((OVERLAY / name).read_text()) if d]


def overlay() -> dict[str, Any]:
    return docs("kustomization.yaml")[0]


def new_objects() -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d
            for name in overlay()["resources"] if name != "../" for d in docs(name)}


def test_overlay_lists_every_file_and_builds_on_the_base() -> None:
    k = overlay()
    listed = {r for r in k["resources"] if r != "../"} | {p["path"] for p in k["patches"]}
    assert "../" in k["resources"] and listed == {p.name for p in OVERLAY.glob("*.yaml")} - {"kustomization.yaml"}
    assert k["namespace"] == base_kustomization()["namespace"] and k["images"] == base_kustomization()["images"]


@pytest.mark.parametrize("version", VERSIONS)
def test_new_objects_pass_strict_schema_validation(version: str) -> None:
    for (kind, name), obj in new_objects().items():
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{kind}/{name} {'/'.join(map(str, err.path))}: {err.message}")


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container["env"]}


def test_servers_and_workers_share_one_ledger_and_one_guard_key() -> None:
    (patch,) = docs("server-replicas.yaml")
    base = {d["kind"]: d for d in yaml.safe_load_all((K8S / "deployment.yaml").read_text()) if d}["Deployment"]
    assert patch["metadata"]["name"] == base["metadata"]["name"] and patch["spec"]["replicas"] >= 2
    assert patch["spec"]["strategy"]["type"] == "RollingUpdate"  # no single-writer volume to hand over
    (server,) = patch["spec"]["template"]["spec"]["containers"]
    assert server["name"] == base["spec"]["template"]["spec"]["containers"][0]["name"]
    worker_pod = new_objects()[("Deployment", "lethe-worker")]["spec"]["template"]["spec"]
    (worker,) = worker_pod["containers"]
    assert worker["args"] == ["worker"]
    ledger = {c["name"]: _env(c)["LETHE_LEDGER_URL"]["valueFrom"]["secretKeyRef"] for c in (server, worker)}
    assert ledger["lethe"] == ledger["worker"] == {"name": "lethe-ledger", "key": "url"}
    assert _env(server)["LETHE_WORKER"]["value"] == "0"  # workers are their own Deployment
    data_dir = _env(worker)["LETHE_DATA_DIR"]["value"]
    for c, pod in ((server, patch["spec"]["template"]["spec"]), (worker, worker_pod)):
        key = next(m for m in c["volumeMounts"] if m.get("subPath") == "guard.key")
        volume = next(v for v in pod["volumes"] if v["name"] == key["name"])
        assert key["mountPath"] == f"{data_dir}/guard.key" and volume["secret"]["secretName"] == "lethe-keys"
    receipt = _env(server)["LETHE_RECEIPT_KEY"]["value"]
    assert any(receipt.startswith(m["mountPath"] + "/") for m in server["volumeMounts"] if "subPath" not in m)


def test_the_single_writer_volume_goes_and_postgres_is_reachable_only_from_lethe() -> None:
    (delete,) = docs("no-data-volume.yaml")
    pvc = yaml.safe_load((K8S / "pvc.yaml").read_text())
    assert delete["$patch"] == "delete" and delete["metadata"]["name"] == pvc["metadata"]["name"]
    objs = new_objects()
    service, db = objs[("Service", "lethe-postgres")], objs[("StatefulSet", "lethe-postgres")]
    assert service["spec"]["ports"][0]["port"] == 5432 and service["spec"]["selector"].items() <= \
        db["spec"]["template"]["metadata"]["labels"].items()
    assert "@lethe-postgres:5432/" in (OVERLAY / "kustomization.yaml").read_text()  # the URL the docs give
    egress = objs[("NetworkPolicy", "lethe-ledger-clients")]["spec"]["egress"][0]
    ingress = objs[("NetworkPolicy", "lethe-postgres")]["spec"]["ingress"][0]
    assert egress["to"][0]["podSelector"]["matchLabels"].items() <= db["spec"]["template"]["metadata"]["labels"].items()
    assert ingress["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "lethe"}
