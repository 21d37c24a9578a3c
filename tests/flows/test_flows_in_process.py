"""The retrain and rollback flows in-process (Prefect's test harness), through the real
lifecycle layer: a deploy that fails inside either flow leaves the champion and serving
as they were; a rollback deploys through the configured target, then moves the champion."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from components.config import RecopsConfig, load_config
from components.deploy.local import read_state
from components.errors import DeployFailed
from components.lifecycle.ingest import fetch_batch, ingest
from components.lifecycle.prepare import prepare_version
from components.lifecycle.promote import promote_by_hand
from components.lifecycle.train import train
from components.net import free_port
from components.registry.store import ModelRegistry
from components.workspace import Workspace

SMALL = [
    "data.synthetic.n_users=200",
    "data.synthetic.n_items=60",
    "data.synthetic.n_events=4000",
    "data.synthetic.n_clusters=4",
    "model.name=itemknn",  # fits in seconds and clearly beats pop
    "train.progress_bar=false",
    "features.enabled=false",
    "explain.report=false",
    "gate.test=none",  # the deploy step is under test, not the significance rule
    "gate.guardrails={}",
]


@pytest.fixture(scope="module")
def harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port held by another program: a local deploy there must fail."""
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield port


def _config(ws: Path, *overrides: str) -> RecopsConfig:
    return load_config(overrides=[f"workspace={ws}", *SMALL, *overrides])


def _flow_config(cfg: RecopsConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


def _pop_champion(cfg: RecopsConfig) -> str:
    """A pop model trained on the first accepted batch, made champion by hand."""
    ws = Workspace.at(cfg.workspace).activate()
    batch = fetch_batch(ws, cfg.data, cfg.versioning)
    version = ingest(batch, ws, cfg.data, cfg.validation, cfg.versioning).version.version
    prepared = prepare_version(ws, cfg.data, cfg.versioning, version)
    pop_cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"name": "pop"})})
    trained = train(prepared, pop_cfg, ws.runs_dir / "pop", data_version=version)
    registered = ModelRegistry(ws).register(trained.result.bundle, trained.record).version
    promote_by_hand(ws, registered, actor="test", reason="starting champion")
    return registered


@pytest.mark.slow
def test_retrain_and_rollback_flows_keep_serving_on_failed_deploys(
    harness: None, tmp_path: Path, busy_port: int
) -> None:
    from flows.retrain import retrain_flow
    from flows.rollback import rollback_flow

    ws_root = tmp_path / "ws"
    pop = _pop_champion(_config(ws_root))
    registry = ModelRegistry(Workspace.at(ws_root))

    failing = _config(ws_root, "deploy.target=local", f"serve.port={busy_port}")
    with pytest.raises(DeployFailed, match="in use"):
        retrain_flow(config=_flow_config(failing))
    assert registry.champion().version == pop  # champion unchanged
    assert read_state(Workspace.at(ws_root)) is None  # nothing new serves
    rejected = registry.history()[-1]
    assert rejected.action == "reject" and "deploy failed" in rejected.reason

    k8s = _config(ws_root, "deploy.target=k8s", "deploy.gpu=false", "features.enabled=true")
    result = retrain_flow(config=_flow_config(k8s))
    assert result.outcome.status == "champion"
    # deploy.target=k8s deploys through its target: a bento and validated manifests
    assert result.outcome.deploy_target == "k8s"
    manifests = Path(result.outcome.deploy_detail["manifests"])
    assert (manifests / "deployment.yaml").is_file()
    assert result.record.model_version in (manifests / "deployment.yaml").read_text()
    # the training set's point-in-time features came from Feast's offline store
    labels = pd.read_parquet(result.record.training_features)
    assert len(labels) > 0 and "user_features__n_events" in labels.columns
    knn = result.record.model_version
    assert registry.champion().version == knn

    with pytest.raises(DeployFailed, match="in use"):
        rollback_flow(config=_flow_config(failing))
    assert registry.champion().version == knn  # the current champion keeps its place

    done = rollback_flow(config=_flow_config(_config(ws_root, "deploy.target=none")))
    assert (done.before, done.after) == (knn, pop)
    assert registry.champion().version == pop
    assert [e.action for e in registry.history()][-1] == "rollback"


@pytest.mark.slow
def test_a_corrupt_champion_does_not_stop_the_influence_report_or_the_gate(
    harness: None, tmp_path: Path
) -> None:
    from flows.retrain import retrain_flow

    ws_root = tmp_path / "ws"
    pop = _pop_champion(_config(ws_root))
    registry = ModelRegistry(Workspace.at(ws_root))
    Path(registry.get(pop).path, "weights.pt").write_bytes(b"\x80not a checkpoint")

    cfg = _config(ws_root, "deploy.target=none", "explain.report=true", "explain.report_users=20")
    result = retrain_flow(config=_flow_config(cfg))
    assert "cannot be loaded" in result.record.gate["champion_error"]
    assert result.outcome.status == "champion"
    report = Workspace.at(ws_root).runs_dir / result.record.run_id / "influence.json"
    reports = json.loads(report.read_text())
    assert [r["label"] for r in reports] == ["challenger"]


@pytest.mark.slow
def test_materialize_flow_returns_what_it_materialized(harness: None, tmp_path: Path) -> None:
    from flows.materialize import materialize_flow

    cfg = _config(tmp_path / "ws", "features.enabled=true")
    ws = Workspace.at(cfg.workspace).activate()
    batch = fetch_batch(ws, cfg.data, cfg.versioning)
    version = ingest(batch, ws, cfg.data, cfg.validation, cfg.versioning).version.version
    run = materialize_flow(config=_flow_config(cfg))
    assert run.data_version == version
    assert run.materialized.views and run.materialized.rows > 0
    assert all(view.entities > 0 for view in run.materialized.views)
