"""infra/compose.yaml: structurally checked here (no Docker engine), and validated by
docker-compose's own `config` when the CLI is installed (it needs no daemon)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from components.config import load_config
from tests.conftest import service_unavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE = REPO_ROOT / "infra" / "compose.yaml"
SERVICES = {
    "prefect-db",
    "prefect-server",
    "prefect-worker",
    "redis",
    "feast-registry",
    "minio",
    "minio-init",
    "recommender",
}
LONG_RUNNING = SERVICES - {"minio-init", "prefect-worker"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_every_engine_is_a_service_with_an_image(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        assert service.get("image"), f"{name} has no image"
    assert (REPO_ROOT / services["prefect-worker"]["build"]["dockerfile"]).is_file()


def test_dependencies_exist_and_wait_for_health(compose: dict) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dep, rule in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], (
                    f"{name} waits on {dep}'s missing healthcheck"
                )
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    worker_deps = services["prefect-worker"]["depends_on"]
    assert worker_deps["minio-init"]["condition"] == "service_completed_successfully"
    for name in LONG_RUNNING:
        assert "healthcheck" in services[name], f"{name} has no healthcheck"


def test_ports_are_loopback_only_and_unique(compose: dict) -> None:
    published = [p for s in compose["services"].values() for p in s.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published)
    host_ports = [p.split(":")[1] for p in published]
    assert len(host_ports) == len(set(host_ports))


def test_host_names_match_the_production_config(compose: dict) -> None:
    prod = load_config([REPO_ROOT / "configs" / "production.yaml"])
    services = compose["services"]
    assert prod.features.redis_connection_string.split(":")[0] in services
    registry_url = compose["x-recops-env"]["RECOPS_FEAST_REGISTRY_URL"]
    assert prod.features.registry_path == "env:RECOPS_FEAST_REGISTRY_URL"
    registry_host = registry_url.split("@")[1].split(":")[0]
    assert registry_host in services
    assert prod.versioning.remote_endpoint_url.split("//")[1].split(":")[0] in services
    assert services["prefect-worker"]["environment"]["PREFECT_API_URL"].startswith(
        "http://prefect-server:4200"
    )
    recommender = services["recommender"]
    assert recommender["ports"] == [f"127.0.0.1:{prod.serve.port}:{prod.serve.port}"]
    assert "/readyz" in " ".join(recommender["healthcheck"]["test"])


def _compose_cli() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        service_unavailable(
            "no docker-compose / docker compose plugin (apt-get install -y docker-compose)"
        )
    done = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    broken = tmp_path / "compose.yaml"  # the check can fail: a misspelt key is rejected
    broken.write_text(COMPOSE.read_text().replace("depends_on:", "depend_on:", 1))
    done = subprocess.run([*cli, "-f", str(broken), "config", "-q"], capture_output=True, text=True)
    assert done.returncode != 0 and "depend_on" in done.stderr
