"""The lifecycle layer: each test pins a divergence the three front doors once had."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from components.config import load_config
from components.data.config import DataConfig
from components.deploy.config import KubernetesDeployConfig, LocalDeployConfig, ServeConfig
from components.deploy.targets import KubernetesTarget, LocalTarget, NoTarget, deploy_target
from components.errors import ConfigError, DeployFailed
from components.evaluation.config import EvalConfig
from components.evaluation.gate import GateDecision, rescore_on
from components.evaluation.metrics import HEADLINE_METRICS, evaluate
from components.features.config import FeaturesConfig
from components.lifecycle.ingest import batch_from_file, ingest
from components.lifecycle.prepare import load_dataset, load_version
from components.lifecycle.promote import gate_and_promote
from components.lifecycle.rollback import rollback
from components.net import free_port
from components.registry.store import ModelRegistry
from components.validation.config import ValidationConfig
from components.versioning.config import VersioningConfig
from components.workspace import Workspace
from tests.components.registry.conftest import register_n

DECISION = GateDecision(
    promote=True, reasons=["ndcg@10 improved"], primary_metric="ndcg@10", challenger={}
)


def _csv_without_event_type(path: Path, events: pd.DataFrame) -> Path:
    frame = events[["user_id", "item_id", "timestamp"]].copy()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).dt.strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    frame.to_csv(path, index=False)
    return path


def test_default_event_type_reaches_every_ingest_path(
    workspace: Workspace, tiny_events: pd.DataFrame, tmp_path: Path
) -> None:
    """`recops run`/`data add` (ingest) and `recops stage prepare` (load_dataset) both
    apply data.default_event_type to a file without an event_type column."""
    csv = _csv_without_event_type(tmp_path / "batch.csv", tiny_events)
    data_cfg = DataConfig(path=str(csv), format="csv", default_event_type="purchase")
    assert set(load_dataset(data_cfg)["event_type"]) == {"purchase"}
    done = ingest(
        batch_from_file(csv, "csv"), workspace, data_cfg, ValidationConfig(), VersioningConfig()
    )
    stored = load_version(workspace, VersioningConfig(), done.version.version)
    assert set(stored["event_type"]) == {"purchase"}
    again = ingest(
        batch_from_file(csv, "csv"), workspace, data_cfg, ValidationConfig(), VersioningConfig()
    )
    assert not again.appended and again.version.version == done.version.version


def test_headline_metrics_are_all_produced_by_evaluation(tiny_events: pd.DataFrame) -> None:
    """Every headline name (the bento's labels among others) is a key evaluation reports."""
    from components.data.prepare import prepare
    from components.training.trainer import build_bundle

    prepared = prepare(tiny_events, DataConfig(max_len=20))
    from components.models.config import ModelConfig

    bundle = build_bundle(prepared, ModelConfig(name="pop"))
    summary = evaluate(bundle, prepared.split.test, ks=EvalConfig().ks).summary
    assert set(HEADLINE_METRICS) <= set(summary)


def test_one_unknown_user_policy_for_cli_and_gate(tiny_events: pd.DataFrame) -> None:
    """`recops evaluate` (lifecycle.evaluate) scores an older model on new data exactly as
    the gate does, unknown users and items counted."""
    from components.data.prepare import prepare
    from components.lifecycle.evaluate import evaluate_bundle
    from components.models.config import ModelConfig
    from components.training.trainer import build_bundle

    old_users = tiny_events["user_id"].drop_duplicates().iloc[:200]
    old = prepare(tiny_events[tiny_events["user_id"].isin(old_users)], DataConfig(max_len=20))
    bundle = build_bundle(old, ModelConfig(name="pop"))
    new = prepare(tiny_events, DataConfig(max_len=20))
    cli = evaluate_bundle(bundle, new, EvalConfig(), "test").summary
    gate = rescore_on(bundle, new.split.test, new.vocab, EvalConfig()).summary
    assert cli == gate and cli["unknown_users"] == 100


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port held by another program (a plain listening socket)."""
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield port


def _local(port: int) -> LocalTarget:
    return LocalTarget(
        LocalDeployConfig(readiness_timeout_s=30),
        ServeConfig(port=port),
        FeaturesConfig(enabled=False),
    )


def test_failed_deploy_leaves_champion_and_records_rejection(
    workspace: Workspace, busy_port: int
) -> None:
    registry = ModelRegistry(workspace)
    first, second = register_n(registry, 2)
    registry.promote(first, actor="test", reason="first")
    with pytest.raises(DeployFailed, match="in use"):
        gate_and_promote(workspace, second, DECISION, _local(busy_port).deploy, actor="test")
    assert registry.champion().version == first
    assert registry.get(second).status == "rejected"
    assert "deploy failed" in registry.history()[-1].reason


def test_rollback_whose_deploy_fails_keeps_the_current_champion(
    workspace: Workspace, busy_port: int
) -> None:
    registry = ModelRegistry(workspace)
    first, second = register_n(registry, 2)
    registry.promote(first, actor="test", reason="first")
    registry.promote(second, actor="test", reason="second")
    with pytest.raises(DeployFailed):
        rollback(workspace, _local(busy_port).deploy, actor="test")
    assert registry.champion().version == second
    no_target = deploy_target(
        load_config(overrides=["deploy.target=none"]).deploy, ServeConfig(), FeaturesConfig()
    )
    done = rollback(workspace, no_target.deploy, actor="test")
    assert (done.change.before, done.change.after) == (second, first)


def test_deploy_target_is_selected_by_config_with_per_target_settings() -> None:
    def target(*overrides: str) -> object:
        cfg = load_config(overrides=list(overrides))
        return deploy_target(cfg.deploy, cfg.serve, cfg.features)

    assert isinstance(target(), LocalTarget)
    k8s = target("deploy.target=k8s", "deploy.k8s_replicas=3")
    assert isinstance(k8s, KubernetesTarget) and k8s.settings.k8s_replicas == 3
    assert isinstance(target("deploy.target=none"), NoTarget)
    with pytest.raises(ConfigError, match="k8s_replicas"):
        load_config(overrides=["deploy.target=local", "deploy.k8s_replicas=3"])
    with pytest.raises(ConfigError, match="deploy"):
        load_config(overrides=["deploy.target=swarm"])
    assert KubernetesDeployConfig(target="k8s").apply is False


def test_k8s_apply_without_kubectl_is_a_deploy_failure(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from components.deploy.targets import kubectl_apply

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(DeployFailed, match="kubectl is not on PATH"):
        kubectl_apply(workspace.deploy_dir, 5)


def test_training_features_come_from_feast_point_in_time_without_leaks(
    workspace: Workspace, tiny_events: pd.DataFrame
) -> None:
    """The product path (lifecycle.prepare.training_features, called by the retrain flow):
    each label row's user features count only the user's events strictly before it."""
    from components.data.prepare import prepare
    from components.data.schema import TIME, USER
    from components.features.store import refresh_features
    from components.lifecycle.prepare import training_features

    cfg = FeaturesConfig(history_length=5)
    refresh_features(tiny_events, workspace, cfg)
    prepared = prepare(tiny_events, DataConfig(max_len=20))
    frame = training_features(workspace, cfg, prepared).frame
    assert set(frame["split"]) == {"valid", "test"}
    assert len(frame) == 2 * len(prepared.split.test)
    assert "item_features__n_events" in frame.columns
    times = pd.to_datetime(tiny_events[TIME], utc=True)
    for row in frame.sample(40, random_state=0).itertuples():
        before = int(((tiny_events[USER] == row.user_id) & (times < row.event_timestamp)).sum())
        assert row.user_features__n_events == before


def test_training_features_are_cached_per_data_version_and_sources(
    workspace: Workspace, tiny_events: pd.DataFrame
) -> None:
    """A re-run over the same data version reads the point-in-time frame back; another
    data version, or sources rewritten from other events, joins again (provably fresh)."""
    from components.data.prepare import prepare
    from components.features.store import refresh_features
    from components.lifecycle.prepare import training_features

    cfg = FeaturesConfig(history_length=5)
    refresh_features(tiny_events, workspace, cfg)
    prepared = prepare(tiny_events, DataConfig(max_len=20))
    first = training_features(workspace, cfg, prepared, "v1")
    again = training_features(workspace, cfg, prepared, "v1")
    assert not first.cached and again.cached
    pd.testing.assert_frame_equal(first.frame, again.frame)
    assert not training_features(workspace, cfg, prepared, "v2").cached
    fewer = tiny_events.iloc[: len(tiny_events) // 2]
    refresh_features(fewer, workspace, cfg)  # same labels, other feature values
    rewritten = training_features(workspace, cfg, prepared, "v1")
    assert not rewritten.cached
    assert not rewritten.frame["user_features__n_events"].equals(
        first.frame["user_features__n_events"]
    )


def test_training_set_cache_keeps_the_most_recently_used_frames(
    workspace: Workspace, tiny_events: pd.DataFrame
) -> None:
    """The cache is bounded: after a new join only ``training_set_cache_keep`` frames
    remain, and a frame read from the cache counts as recently used."""
    from components.data.prepare import prepare
    from components.features.store import refresh_features
    from components.lifecycle.prepare import training_features

    cfg = FeaturesConfig(history_length=5, training_set_cache_keep=2)
    refresh_features(tiny_events, workspace, cfg)
    prepared = prepare(tiny_events, DataConfig(max_len=20))
    first = training_features(workspace, cfg, prepared, "v1")
    second = training_features(workspace, cfg, prepared, "v2")
    assert training_features(workspace, cfg, prepared, "v1").cached  # v1 used again
    third = training_features(workspace, cfg, prepared, "v3")
    kept = sorted(p.name for p in third.path.parent.glob("*.parquet"))
    assert kept == sorted([first.path.name, third.path.name])
    assert not second.path.exists()


def test_stage_validate_is_ingests_validation(
    workspace: Workspace, tiny_events: pd.DataFrame, tmp_path: Path
) -> None:
    """`recops stage validate` (dvc repro) runs lifecycle.ingest's check: the same report
    as `data add` for a good batch, and a bad batch is quarantined as ingest would."""
    from typer.testing import CliRunner

    import flows.cli  # noqa: F401  (registers the commands)
    from components.lifecycle.ingest import check_batch
    from flows.cli.app import app

    good = tmp_path / "good.parquet"
    tiny_events.to_parquet(good, index=False)
    bad = tmp_path / "bad.parquet"
    tiny_events.assign(user_id=None).to_parquet(bad, index=False)
    runner = CliRunner()

    def stage(path: Path) -> tuple[int, dict]:
        out = tmp_path / f"{path.stem}.json"
        args = ["stage", "validate", "--events", str(path), "--out", str(out)]
        result = runner.invoke(app, [*args, "--workspace", str(workspace.root)])
        return result.exit_code, json.loads(out.read_text())

    code, report = stage(good)
    expected = check_batch(
        tiny_events, workspace, DataConfig(), ValidationConfig(), VersioningConfig()
    ).report
    assert code == 0 and report["passed"] and report["summary"] == expected.summary
    code, report = stage(bad)
    assert code != 0 and not report["passed"]
    assert [p.name for p in workspace.quarantine_dir.iterdir()] == ["bad"]


@pytest.mark.parametrize("split", ["leave_one_out", "temporal"])
def test_label_rows_are_the_splits_targets_at_their_event_times(
    tiny_events: pd.DataFrame, split: str
) -> None:
    """Both split strategies give point-in-time label rows: the valid/test targets, at the
    time of the event that is each target."""
    import numpy as np

    from components.data.prepare import prepare
    from components.lifecycle.prepare import label_rows

    prepared = prepare(tiny_events, DataConfig(max_len=20, split=split))
    rows = label_rows(prepared)
    for name, eval_set in (("valid", prepared.split.valid), ("test", prepared.split.test)):
        part = rows[rows["split"] == name]
        targets = np.asarray(prepared.vocab.items, dtype=object)[eval_set.targets.numpy() - 1]
        assert part["item_id"].tolist() == targets.tolist()
        users = np.asarray(prepared.vocab.users, dtype=object)[eval_set.users]
        events = tiny_events.assign(timestamp=pd.to_datetime(tiny_events["timestamp"], utc=True))
        found = part.merge(events, on=["user_id", "item_id"], suffixes=("", "_event"))
        at_time = found[found["event_timestamp"] == found["timestamp"]]
        assert set(at_time["user_id"]) == set(users)  # each label is a real event at its time
