"""deploy/compose.yaml rendered by Debian's ``docker-compose config`` (no engine needed).

``docker-compose config`` interpolates the environment, resolves the YAML anchors and
validates the result against the Compose schema; the tests then read the rendered model
for what the deployment promises: Redis that neither forgets nor evicts queued studies,
migrations before any service, secrets only from the environment, the spool at one path,
GPU workers behind a profile with a device reservation. Images are not built or run here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY

SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret-1",
    "REDIS_PASSWORD": "redis-secret-2",
    "GRAFANA_ADMIN_PASSWORD": "grafana-secret-3",
    "ORTHANC_PASSWORD": "orthanc-secret-4",
}
TRIAGE_SERVICES = ("listener", "web", "worker", "worker-gpu", "delivery")
COMPOSE = DEPLOY / "compose.yaml"


def _compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is not installed (.ci/ensure-system.sh installs it)"
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS and k != "DOCKER_HOST"}
    return subprocess.run(
        [binary, "-f", str(COMPOSE), "--profile", "gpu", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def rendered() -> dict[str, Any]:
    done = _compose("config", env=SECRETS)
    assert done.returncode == 0, done.stderr
    model = yaml.safe_load(done.stdout)
    assert isinstance(model, dict)
    return model


def test_config_quiet_validates_without_a_docker_engine() -> None:
    done = _compose("config", "-q", env=SECRETS)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_each_secret_is_required_from_the_environment(missing: str) -> None:
    done = _compose("config", "-q", env={k: v for k, v in SECRETS.items() if k != missing})
    assert done.returncode != 0
    assert missing in done.stderr


def test_no_secret_is_written_in_the_file() -> None:
    text = COMPOSE.read_text()
    values = [
        value
        for key, value in re.findall(r"^\s*(\w+):\s*(\S[^\n]*)", text, re.M)
        if re.search(r"PASSWORD|SECRET|TOKEN|REGISTERED_USERS|_AUTH$", key)
    ]
    values += re.findall(r"--requirepass\s*\n\s*-\s*(\S[^\n]*)", text)
    values += re.findall(r"://[^:/@\s]*:(\$\{[^}]*\}|[^@\s]+)@", text)  # passwords inside URLs
    assert len(values) >= 7
    for value in values:
        # required (${VAR:?}) or optional with no default (${VAR:-}): never a value here
        assert re.fullmatch(r"['\"]?.*\$\{\w+:(\?[^}]*|-)\}.*", value), f"literal secret: {value}"
    assert not any(secret in text for secret in SECRETS.values())


def test_redis_persists_and_never_evicts(rendered: dict[str, Any]) -> None:
    command = rendered["services"]["redis"]["command"]
    args = dict(zip(command[1::2], command[2::2], strict=False))
    assert args["--appendonly"] == "yes"
    assert args["--maxmemory-policy"] == "noeviction"
    assert args["--requirepass"] == SECRETS["REDIS_PASSWORD"]
    assert _mount(rendered["services"]["redis"], "/data") == ("redisdata", False)


def test_migrations_run_once_before_every_triage_service(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    migrate = services["migrate"]
    assert migrate["command"] == ["triage", "db", "upgrade"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate.get("restart", "no") == "no"
    for name in TRIAGE_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name


def test_triage_services_share_database_broker_and_spool_path(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    for name in ("migrate", *TRIAGE_SERVICES):
        env = services[name]["environment"]
        assert env["TRIAGE_DATABASE_URL"] == (
            f"postgresql+psycopg://triage:{SECRETS['POSTGRES_PASSWORD']}@postgres:5432/triage"
        )
        if name != "migrate":
            assert env["TRIAGE_BROKER_URL"] == f"redis://:{SECRETS['REDIS_PASSWORD']}@redis:6379/0"
            assert env["TRIAGE_SPOOL_DIR"] == "/spool"
    # the listener spools instances and the inference workers result documents; the
    # delivery worker only reads what it sends
    for name in ("listener", "worker", "worker-gpu"):
        assert _mount(services[name], "/spool") == ("spool", False), name
    assert _mount(services["delivery"], "/spool") == ("spool", True)


def test_gpu_workers_reserve_a_gpu_behind_a_profile(rendered: dict[str, Any]) -> None:
    gpu = rendered["services"]["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert gpu["build"]["target"] == "worker-gpu"
    assert gpu["environment"]["TRIAGE_MODEL_BUNDLE"] == "/bundles/current"
    assert _mount(gpu, "/bundles")[1] is True
    cpu = rendered["services"]["worker"]
    assert cpu["deploy"]["replicas"] >= 1 and "profiles" not in cpu


def test_worker_count_comes_from_the_environment() -> None:
    done = _compose("config", env={**SECRETS, "TRIAGE_CPU_WORKERS": "3", "TRIAGE_GPU_WORKERS": "4"})
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert services["worker"]["deploy"]["replicas"] == 3
    assert services["worker-gpu"]["deploy"]["replicas"] == 4


def test_each_service_builds_the_dockerfile_target_it_needs(rendered: dict[str, Any]) -> None:
    targets = {
        "migrate": "listener",
        "listener": "listener",
        "web": "web",
        "worker": "worker-cpu",
        "worker-gpu": "worker-gpu",
        "delivery": "delivery",
    }
    dockerfile_stages = re.findall(r"^FROM \S+ AS (\S+)", (DEPLOY / "Dockerfile").read_text(), re.M)
    for service, target in targets.items():
        build = rendered["services"][service]["build"]
        assert build["target"] == target and target in dockerfile_stages
        assert Path(build["context"]) / build["dockerfile"] == DEPLOY / "Dockerfile"


def test_monitoring_files_mounted_exist(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    for name in ("prometheus", "grafana"):
        for volume in _volumes(services[name]):
            source = volume.split(":")[0]
            if source.startswith("/"):
                assert Path(source).exists(), f"{name} mounts missing {source}"
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        target
        for job in prometheus["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert "web:8000" in targets and "redis-exporter:9121" in targets
    assert services["web"]["environment"]["TRIAGE_WEB_PORT"] == "8000"
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "pacs-triage.yaml").read_text()
    )
    dashboards_in_container = provider["providers"][0]["options"]["path"]
    assert _mount(services["grafana"], dashboards_in_container)[0] == str(DEPLOY / "grafana")


def test_prometheus_alert_rules_parse_and_name_a_query() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert len(alerts) >= 4
    assert all(rule["alert"] and rule["expr"] and rule["annotations"]["summary"] for rule in alerts)


def _volumes(service: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            out.append(volume)
        else:
            mode = ":ro" if volume.get("read_only") else ""
            out.append(f"{volume['source']}:{volume['target']}{mode}")
    return out


def _mount(service: dict[str, Any], target: str) -> tuple[str, bool]:
    for volume in _volumes(service):
        parts = volume.split(":")
        if parts[1] == target:
            return parts[0], len(parts) > 2 and "ro" in parts[2].split(",")
    raise AssertionError(f"nothing mounted at {target}")
