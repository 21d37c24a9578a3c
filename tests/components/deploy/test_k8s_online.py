"""Shadow and canary on the Kubernetes target without a cluster: real bentos built for
two registered versions, the manifests rendered and validated, both arms' answers in the
serving log the pods share (written by the real log writer, one per pod), compared, and
concluded: promote renders the promoted champion and the champion-only VirtualService,
retire does the same without a promotion; the registry history records both."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml

from benchmarks.serving import _register_untrained
from components.deploy.config import ChallengerConfig, KubernetesDeployConfig, ServeConfig
from components.deploy.k8s import RECORD_FILE, bucket_regex
from components.deploy.split import bucket_header, user_bucket
from components.deploy.targets import KubernetesTarget
from components.errors import DeployFailed
from components.features.config import FeaturesConfig
from components.lifecycle.online import compare_online, conclude, start
from components.monitoring.config import ServingLogConfig
from components.monitoring.servelog import (
    FEEDBACK,
    FEEDBACK_SCHEMA,
    SERVED,
    SERVED_SCHEMA,
    ParquetLog,
)
from components.registry.store import ModelRegistry
from components.workspace import Workspace

pytestmark = pytest.mark.slow  # two bento builds


def _pod_log(folder: Path, rows: list[tuple]) -> None:
    """What one pod's bento writes: its answers, through the real Parquet log."""
    log = ParquetLog(folder, SERVED, SERVED_SCHEMA, ServingLogConfig(flush_interval_s=0.05))
    for row in rows:
        assert log.record(row)
    log.close()


def _served(rid: str, version: str, items: list[str]) -> tuple:
    now = int(time.time() * 1_000_000)
    return (rid, now, "u", 3, 0, "model", version, items, [0.0] * len(items), ["i1"])


def _feedback(folder: Path, clicks: dict[str, str]) -> None:
    log = ParquetLog(
        folder / FEEDBACK, FEEDBACK, FEEDBACK_SCHEMA, ServingLogConfig(flush_interval_s=0.05)
    )
    now = int(time.time() * 1_000_000)
    for rid, item in clicks.items():
        assert log.record(("u", item, now, "click", None, rid, now))
    log.close()


def test_k8s_shadow_is_compared_from_the_shared_log_and_concluded(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path / "ws").activate()
    v1 = _register_untrained(ws, 40, seed=0)
    v2 = _register_untrained(ws, 40, seed=1)
    ModelRegistry(ws).promote(v1, actor="test", reason="first champion")
    shared = tmp_path / "claim" / "serving-log"  # the pods' claim, as this machine sees it
    cfg = KubernetesDeployConfig(
        target="k8s",
        gpu=False,
        k8s_serving_log_dir=str(shared),
        challenger=ChallengerConfig(k=3, min_lists=30, alpha=0.05),
    )
    target = KubernetesTarget(cfg, ServeConfig(), FeaturesConfig(enabled=False))
    done = start(ws, target, v2, "shadow", actor="test")
    assert done.previous_version == v1 and (ws.deploy_dir / RECORD_FILE).exists()
    with pytest.raises(DeployFailed, match="already rendered"):
        start(ws, target, v2, "canary", actor="test")
    with pytest.raises(DeployFailed, match="undecided"):
        conclude(ws, target, cfg.challenger, actor="test")  # no answers logged yet

    # 40 requests mirrored by Istio: each pod logs its answer under the same request id;
    # the feedback clicks an item only the challenger's list held
    ids = [f"req-{i}" for i in range(40)]
    _pod_log(shared, [_served(r, v1, ["i1", "i2", "i3"]) for r in ids])
    _pod_log(shared, [_served(r, v2, ["i1", "i2", f"x{i}"]) for i, r in enumerate(ids)])
    _feedback(shared, {r: f"x{i}" for i, r in enumerate(ids)})
    comparison = compare_online(ws, target, cfg.challenger)
    assert (comparison.champion.version, comparison.challenger.version) == (v1, v2)
    assert comparison.n == 40 and comparison.agreement == pytest.approx(2 / 3)
    assert comparison.decision == "promote" and comparison.champion.requests is None

    concluded = conclude(ws, target, cfg.challenger, actor="test")
    assert concluded.decision == "promote" and concluded.promotion.status == "champion"
    out = ws.deploy_dir / "k8s"
    dep = yaml.safe_load((out / "deployment.yaml").read_text())
    assert dep["metadata"]["labels"]["recops/model-version"] == v2  # the promoted champion
    vs = yaml.safe_load((out / "virtualservice.yaml").read_text())
    assert vs["spec"]["http"] == [
        {"route": [{"destination": {"host": "recops-recommender", "port": {"number": 80}}}]}
    ]
    assert (out / "retired" / "challenger.yaml").exists() and not (out / "challenger.yaml").exists()
    assert not (ws.deploy_dir / RECORD_FILE).exists()
    history = ModelRegistry(ws).history()
    assert [(e.action, e.version) for e in history[-3:]] == [
        ("shadow", v2),
        ("challenger_stop", v2),
        ("promote", v2),
    ]
    assert "promoted" in history[-2].reason
    assert (
        history[-1].gate is not None and history[-1].gate["primary_metric"] == "online_hit_rate@3"
    )

    # a sticky canary of the old champion, retired by hand: routing back to the champion
    start(ws, target, v1, "canary", actor="test")
    vs = yaml.safe_load((out / "virtualservice.yaml").read_text())
    assert vs["metadata"]["labels"]["recops/mode"] == "canary"
    retired = conclude(ws, target, cfg.challenger, actor="test", force="retire")
    assert retired.decision == "retire" and ModelRegistry(ws).champion().version == v2  # type: ignore[union-attr]
    vs = yaml.safe_load((out / "virtualservice.yaml").read_text())
    assert vs["metadata"]["labels"]["recops/mode"] == "replace"
    assert ModelRegistry(ws).history()[-2].action == "challenger_stop"
    assert target.challenger(ws) is None


def test_the_canary_bucket_header_matches_the_local_proxys_users() -> None:
    """The header a client sends is the user's bucket of the local proxy's hash, so the
    same users are in a 20 % canary on both targets."""
    regex = bucket_regex(0.2)
    users = [f"user-{i}" for i in range(400)]
    local = {u for u in users if user_bucket(f"user:{u}") < 0.2}
    header = {u for u in users if re.fullmatch(regex, bucket_header(u))}
    assert header == local and 40 < len(local) < 120
