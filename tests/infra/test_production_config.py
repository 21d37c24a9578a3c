"""configs/production.yaml switches recops to Redis, a SQL registry, an S3 remote and
DDP on GPUs by configuration alone: validated by the real config loader, turned into a
real Feast RepoConfig and a real DVC remote, and (with local Postgres + Redis servers)
a full apply / materialize / online lookup through the SQL registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.config import load_config
from components.features.store import repo_config, store_settings
from components.versioning.dvc_store import DatasetStore
from components.workspace import Workspace

REPO_ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = REPO_ROOT / "configs" / "production.yaml"


@pytest.fixture(scope="module")
def production():
    return load_config([PRODUCTION])


def test_production_config_selects_the_scaled_engines(production) -> None:
    assert production.features.online_store == "redis"
    assert production.features.registry == "sql"
    # the URL carries a password, so the config holds a reference to it, never the URL
    assert production.features.registry_path == "env:RECOPS_FEAST_REGISTRY_URL"
    assert production.versioning.remote_url.startswith("s3://")
    assert production.versioning.remote_endpoint_url == "http://minio:9000"
    train = production.train
    assert (train.accelerator, train.devices, train.strategy, train.precision) == (
        "gpu",
        4,
        "ddp",
        "bf16-mixed",
    )
    assert production.deploy.target == "k8s" and production.deploy.gpu
    # only backends changed: the model and data settings are the defaults'
    assert production.fingerprint() != load_config().fingerprint()  # train hardware differs
    assert production.model == load_config().model


def test_feast_repo_config_is_redis_online_and_sql_registry(
    production, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "postgresql+psycopg://feast:s3cret@feast-registry:5432/feast"
    monkeypatch.setenv("RECOPS_FEAST_REGISTRY_URL", url)
    workspace = Workspace.at(tmp_path / "ws")
    settings = store_settings(workspace, production.features)
    assert settings["online_store"]["type"] == "redis"
    assert settings["online_store"]["connection_string"].startswith("redis:6379,")
    assert settings["registry"]["registry_type"] == "sql"
    config = repo_config(workspace, production.features)  # Feast's own validation
    assert type(config.online_store).__name__ == "RedisOnlineStoreConfig"
    assert "socket_timeout=2.0" in config.online_store.connection_string
    assert config.registry.registry_type == "sql"
    assert config.registry.path == url  # resolved where the connection is made
    assert config.registry.cache_ttl_seconds == 60


def test_dvc_remote_is_s3_with_the_minio_endpoint(production, tmp_path: Path) -> None:
    workspace = Workspace.at(tmp_path / "ws").ensure()
    store = DatasetStore(workspace, production.versioning)
    store.init()  # writes the remote; nothing is pushed until a batch is accepted
    text = (workspace.data_dir / ".dvc" / "config").read_text()
    assert "['remote \"storage\"']" in text
    assert "url = s3://recops-dvc/datasets" in text
    assert "endpointurl = http://minio:9000" in text
    assert "remote = storage" in text
    store.init()  # idempotent: a second init leaves the same config
    assert (workspace.data_dir / ".dvc" / "config").read_text() == text


@pytest.mark.slow
def test_sql_registry_on_postgres_with_redis_online_store(
    production,
    postgres_url: str,
    redis_url: str,
    tmp_path: Path,
    tiny_events,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from components.features.store import (
        forget_stores,
        online_recent_items,
        refresh_features,
    )

    cfg = load_config(
        [PRODUCTION],
        [
            "features.registry_path=env:RECOPS_TEST_REGISTRY_URL",
            f"features.redis_connection_string={redis_url}",
            "features.history_length=5",
        ],
    ).features
    workspace = Workspace.at(tmp_path / "ws").ensure()
    monkeypatch.setenv("RECOPS_TEST_REGISTRY_URL", postgres_url)
    try:
        result = refresh_features(tiny_events, workspace, cfg)
        assert result.online_store == "redis" and result.rows > 0
        user = str(tiny_events["user_id"].iloc[0])
        recent = online_recent_items(workspace, cfg, [user])[user]
        last = tiny_events[tiny_events["user_id"] == tiny_events["user_id"].iloc[0]]
        expected = [str(i) for i in last.sort_values("timestamp")["item_id"].tail(5)]
        assert recent == expected
    finally:
        forget_stores()
    # a second process-independent reader sees the registry in Postgres, not in a file
    import psycopg

    with psycopg.connect(postgres_url.replace("postgresql+psycopg", "postgresql")) as conn:
        views = {row[0] for row in conn.execute("SELECT feature_view_name FROM feature_views")}
    assert {"user_features", "item_features"} <= views
    assert not (workspace.features_dir / "registry.db").exists()
