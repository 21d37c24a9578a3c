"""Fixtures for the Feast feature store tests: tiny events, a materialized workspace."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest

from components.data.schema import ITEM, USER, sort_events
from components.features.config import FeaturesConfig
from components.features.local_redis import local_redis, redis_server_binary
from components.features.store import forget_stores, refresh_features
from components.workspace import Workspace
from tests.conftest import service_unavailable

HISTORY = 5


def last_items(events: pd.DataFrame, n: int) -> dict[str, list[str]]:
    """Reference: each user's last ``n`` item ids (oldest -> newest), by plain pandas."""
    ordered = sort_events(events)
    tails = ordered.groupby(USER, sort=False).tail(n)
    return {str(u): [str(i) for i in g[ITEM]] for u, g in tails.groupby(USER, sort=False)}


@pytest.fixture
def features_cfg() -> FeaturesConfig:
    return FeaturesConfig(history_length=HISTORY)


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory, tiny_events: pd.DataFrame):
    """A workspace whose features were refreshed from the tiny synthetic events."""
    workspace = Workspace.at(tmp_path_factory.mktemp("features") / "ws").ensure()
    cfg = FeaturesConfig(history_length=HISTORY)
    result = refresh_features(tiny_events, workspace, cfg)
    yield workspace, cfg, result
    forget_stores()


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A throw-away redis-server on a free loopback port (skips when not installed)."""
    if redis_server_binary() is None:
        service_unavailable(
            "redis-server not found on PATH (apt-get install redis-server; .ci/run does)"
        )
    with local_redis() as url:
        yield url


@pytest.fixture
def reference_last_items():
    """The plain-pandas reference for a user's last-N items."""
    return last_items
