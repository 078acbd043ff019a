"""deploy/k8s/*.yaml against the Kubernetes API schemas (``kubernetes-validate``, strict).

Every built-in resource is validated strictly (unknown fields refused) against two API
versions; KEDA's ScaledObject/TriggerAuthentication have no schema in that package, so
they are checked here against KEDA's documented fields and against the objects they name.
Then what the deployment promises: a DICOM Service in front of the listener's port,
workers that request a GPU, secrets referenced but never written, every container probed,
non-root everywhere. No cluster runs here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import DEPLOY
from triage import health
from triage.queue import INFERENCE_QUEUE

K8S = DEPLOY / "k8s"
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
KEDA_SCALED_OBJECT_SPEC = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}


def _documents() -> list[tuple[Path, dict[str, Any]]]:
    docs: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend((path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


DOCUMENTS = _documents()


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in DOCUMENTS if doc["kind"] == kind]


def _named(kind: str, name: str) -> dict[str, Any]:
    return next(doc for doc in _of_kind(kind) if doc["metadata"]["name"] == name)


def _pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for _, doc in DOCUMENTS:
        if doc["kind"] in ("Deployment", "Job", "StatefulSet"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def _builtin(doc: dict[str, Any]) -> bool:
    return not doc["apiVersion"].startswith("keda.sh/")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    ("path", "doc"),
    [(p, d) for p, d in DOCUMENTS if _builtin(d)],
    ids=[f"{p.name}:{d['kind']}/{d['metadata']['name']}" for p, d in DOCUMENTS if _builtin(d)],
)
def test_builtin_resources_pass_strict_schema_validation(
    path: Path, doc: dict[str, Any], version: str
) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_strict_validation_refuses_an_unknown_field() -> None:
    """The validator above is not a rubber stamp."""
    doc = yaml.safe_load((K8S / "00-config.yaml").read_text())
    doc["spec"] = {"replicas": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[0], strict=True)


def test_the_manifests_cover_every_service() -> None:
    kinds = {(doc["kind"], doc["metadata"]["name"]) for _, doc in DOCUMENTS}
    for expected in [
        ("Deployment", "triage-listener"),
        ("Service", "triage-dicom"),
        ("Deployment", "triage-web"),
        ("Deployment", "triage-worker"),
        ("Deployment", "triage-delivery"),
        ("Job", "pacs-triage-migrate"),
        ("ScaledObject", "triage-worker"),
    ]:
        assert expected in kinds


def test_the_dicom_service_reaches_the_listener_port() -> None:
    service = _named("Service", "triage-dicom")
    listener = _named("Deployment", "triage-listener")
    pod = listener["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    container_ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    assert port["targetPort"] in container_ports and container_ports[port["targetPort"]] == 11112
    assert listener["spec"]["replicas"] == 1 and listener["spec"]["strategy"]["type"] == "Recreate"


def test_gpu_workers_request_a_gpu() -> None:
    (container,) = _named("Deployment", "triage-worker")["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].startswith("pacs-triage-worker-gpu:")


def test_secrets_are_referenced_never_written() -> None:
    assert _of_kind("Secret") == []
    referenced: set[str] = set()
    for _, pod in _pod_specs():
        for container in pod["containers"]:
            referenced |= {
                s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s
            }
        for volume in pod.get("volumes", []):
            for source in volume.get("projected", {}).get("sources", []):
                referenced.add(source["secret"]["name"])
    assert {
        "pacs-triage-db",
        "pacs-triage-broker",
        "pacs-triage-dicom-tls",
        "pacs-triage-tokens",
    } <= referenced
    for _, doc in DOCUMENTS:
        text = yaml.safe_dump(doc)
        assert "postgresql+psycopg://" not in text and "redis://:" not in text


def test_the_listener_takes_its_tls_files_from_the_secret() -> None:
    pod = _named("Deployment", "triage-listener")["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    for name in ("TRIAGE_TLS_CERT", "TRIAGE_TLS_KEY", "TRIAGE_TLS_CA"):
        assert env[name].startswith(mounts["tls"] + "/")


@pytest.mark.parametrize(
    "name", [name for name, _ in _pod_specs() if name != "pacs-triage-migrate"]
)
def test_every_long_running_container_is_probed_with_a_real_probe(name: str) -> None:
    pod = dict(_pod_specs())[name]
    for container in pod["containers"]:
        assert "livenessProbe" in container and (
            "readinessProbe" in container or "startupProbe" in container
        ), f"{name}/{container['name']}"
        for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
            command = container.get(kind, {}).get("exec", {}).get("command")
            if command:
                assert command[:3] == ["python", "-m", "triage.health"]
                assert command[3] in health.main.commands  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", [name for name, _ in _pod_specs()])
def test_every_pod_runs_as_non_root(name: str) -> None:
    pod = dict(_pod_specs())[name]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    for container in pod["containers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_every_spool_mount_is_at_the_recorded_path() -> None:
    config = _named("ConfigMap", "pacs-triage")["data"]
    for name, pod in _pod_specs():
        spool_volumes = {
            v["name"]
            for v in pod.get("volumes", [])
            if v.get("persistentVolumeClaim", {}).get("claimName") == "triage-spool"
        }
        for container in pod["containers"]:
            for mount in container.get("volumeMounts", []):
                if mount["name"] in spool_volumes:
                    assert mount["mountPath"] == config["TRIAGE_SPOOL_DIR"], name
                    # the listener spools instances, inference workers spool result documents
                    writes = name in ("triage-listener", "triage-worker", "triage-reconciler")
                    assert mount.get("readOnly", False) == (not writes), name


def test_keda_scales_the_gpu_workers_on_the_inference_queue() -> None:
    scaled = _named("ScaledObject", "triage-worker")
    assert set(scaled["spec"]) <= KEDA_SCALED_OBJECT_SPEC
    assert scaled["spec"]["scaleTargetRef"]["name"] == "triage-worker"
    _named("Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == INFERENCE_QUEUE
    assert int(trigger["metadata"]["listLength"]) >= 1
    auth = _named("TriggerAuthentication", trigger["authenticationRef"]["name"])
    (secret,) = auth["spec"]["secretTargetRef"]
    assert secret["parameter"] == "password" and secret["name"] == "pacs-triage-broker"


@pytest.mark.parametrize("name", [name for name, _ in _pod_specs()])
def test_a_read_only_root_still_has_writable_home_and_tmp(name: str) -> None:
    """HOME is /var/lib/pacs-triage in the images (library caches); with the root file
    system read-only, it and /tmp must be volumes."""
    pod = dict(_pod_specs())[name]
    for container in pod["containers"]:
        if not container["securityContext"].get("readOnlyRootFilesystem"):
            continue
        mounted = {
            m["mountPath"] for m in container.get("volumeMounts", []) if not m.get("readOnly")
        }
        assert {"/var/lib/pacs-triage", "/tmp"} <= mounted, name
