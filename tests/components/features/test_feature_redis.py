"""The same online contract against a real redis-server (started by the test on loopback)."""

from __future__ import annotations

import pytest

from components.data.schema import USER
from components.features.config import FeaturesConfig
from components.features.store import (
    apply_repo,
    is_reachable,
    online_recent_items,
    online_user_features,
    refresh_features,
)
from components.workspace import Workspace

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_redis_online_store_serves_last_n_items(
    tmp_path, redis_url, tiny_events, reference_last_items
):
    workspace = Workspace.at(tmp_path / "ws").ensure()
    cfg = FeaturesConfig(history_length=4, online_store="redis", redis_connection_string=redis_url)
    result = refresh_features(tiny_events, workspace, cfg)
    assert result.online_store == "redis"
    assert not (workspace.features_dir / "online_store.db").exists()  # nothing went to SQLite
    expected = reference_last_items(tiny_events, 4)
    users = sorted(expected)
    got = online_recent_items(workspace, cfg, [*users, "nobody"])
    assert {u: got[u] for u in users} == expected
    assert got["nobody"] == []
    first = users[0]
    row = online_user_features(workspace, cfg, [first])[0]
    assert row[USER] == first
    assert row["n_events"] == int((tiny_events[USER] == first).sum())
    assert is_reachable(workspace, cfg)


def test_unreachable_redis_is_reported_not_raised(tmp_path):
    workspace = Workspace.at(tmp_path / "ws").ensure()
    cfg = FeaturesConfig(online_store="redis", redis_connection_string="127.0.0.1:1")
    apply_repo(workspace, cfg)  # the registry is fine; only the online store is down
    assert is_reachable(workspace, cfg) is False
