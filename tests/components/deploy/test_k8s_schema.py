"""The rendered manifests against the Kubernetes API schemas (kubernetes-validate ships
the OpenAPI schemas, so no cluster and no network are needed; ``kubectl apply
--dry-run=client`` still needs an API server for discovery)."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from components.deploy.config import KubernetesDeployConfig, ServeConfig
from components.deploy.k8s import render_challenger, render_manifests
from components.workspace import Workspace

K8S_VERSION = "1.32"
# CRDs the Kubernetes schemas do not describe (checked by validate_challenger instead)
ISTIO_KINDS = {"VirtualService"}


def _documents(files: list[Path]) -> list[dict]:
    return [doc for path in files for doc in yaml.safe_load_all(path.read_text()) if doc]


def _validate(docs: list[dict]) -> list[str]:
    checked = []
    for doc in docs:
        if doc["kind"] in ISTIO_KINDS:
            assert doc["apiVersion"].startswith("networking.istio.io/")
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        checked.append(doc["kind"])
    return checked


@pytest.mark.parametrize("gpu", [True, False])
def test_replace_manifests_match_the_kubernetes_schemas(tmp_path: Path, gpu: bool) -> None:
    ws = Workspace.at(tmp_path).ensure()
    deploy_cfg = KubernetesDeployConfig(target="k8s", gpu=gpu, k8s_namespace="recs")
    out = render_manifests(ws, "v1", "recops-recommender:abc", ServeConfig(), deploy_cfg)
    assert {"Deployment", "Service"} <= set(_validate(_documents(out.files)))


@pytest.mark.parametrize("mode", ["shadow", "canary"])
def test_challenger_manifests_match_the_kubernetes_schemas(tmp_path: Path, mode: str) -> None:
    ws = Workspace.at(tmp_path).ensure()
    deploy_cfg = KubernetesDeployConfig(target="k8s", gpu=False)
    out = render_challenger(ws, "v2", "recops-recommender:def", mode, ServeConfig(), deploy_cfg)
    assert "Deployment" in _validate(_documents(out.files))


def test_a_schema_violation_is_caught(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path).ensure()
    deploy_cfg = KubernetesDeployConfig(target="k8s", gpu=False)
    out = render_manifests(ws, "v1", "recops-recommender:abc", ServeConfig(), deploy_cfg)
    deployment = next(d for d in _documents(out.files) if d["kind"] == "Deployment")
    deployment["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
