"""``user_id`` requests read each recent event's type from the online store (Feast), over
real HTTP against a real bento serving a model trained with event types."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
import torch

from components.data.config import SyntheticConfig
from components.data.sequences import Vocabulary
from components.data.synthetic import generate_events
from components.deploy.config import LocalDeployConfig, ServeConfig
from components.deploy.local import Deployment, deploy_version, stop_local
from components.features.config import FeaturesConfig
from components.features.store import RecentHistory, online_recent_history, refresh_features
from components.models.bundle import ModelBundle
from components.net import free_port
from components.registry.store import ModelRegistry
from components.workspace import Workspace
from tests.services.conftest import PARAMS, make_bundle, register_bundle

pytestmark = pytest.mark.slow


@dataclass
class TypedWorkspace:
    workspace: Workspace
    events: pd.DataFrame
    features: FeaturesConfig
    deployment: Deployment


def _typed_bundle(events: pd.DataFrame) -> ModelBundle:
    """An untrained SASRec that reads event types, with their embedding and seen-item
    offsets drawn large enough that a history's types visibly change its scores."""
    n_event_types = Vocabulary.from_events(events).n_event_types
    bundle = make_bundle(
        events, seed=0, params={**PARAMS, "event_types": True, "n_event_types": n_event_types}
    )
    with torch.no_grad():
        bundle.model.item_input.event_emb.weight[1:].normal_(std=1.0)
        bundle.model.seen_bias_table_raw.normal_(std=0.05)
    return bundle


@pytest.fixture(scope="module")
def typed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TypedWorkspace]:
    ws = Workspace.at(Path(tmp_path_factory.mktemp("typed-ws"))).activate()
    events = generate_events(SyntheticConfig(n_users=40, n_items=30, n_events=900, funnel=True))
    registry = ModelRegistry(ws)
    version = register_bundle(registry, _typed_bundle(events), "run-typed").version
    registry.promote(version, actor="test", reason="first champion")
    features = FeaturesConfig()
    refresh_features(events, ws, features)
    serve = ServeConfig(port=free_port(), max_k=100, max_history=50, explain_max_k=10)
    deployment = deploy_version(
        ws, version, serve, LocalDeployConfig(readiness_timeout_s=90), features
    )
    yield TypedWorkspace(ws, events, features, deployment)
    stop_local(ws)


@pytest.fixture()
def client(typed: TypedWorkspace) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=typed.deployment.url, timeout=30) as c:
        yield c


def _stored(typed: TypedWorkspace, user: str) -> RecentHistory:
    return online_recent_history(typed.workspace, typed.features, [user])[user]


def _scored(answer: dict) -> list[tuple[str, float]]:
    return [(i["item_id"], round(i["score"], 4)) for i in answer["items"]]


def test_the_online_store_keeps_each_recent_events_type(typed: TypedWorkspace) -> None:
    user = typed.events["user_id"].iloc[0]
    stored = _stored(typed, user)
    mine = typed.events[typed.events["user_id"] == user].sort_values("timestamp", kind="stable")
    n = len(stored.items)
    assert n > 0 and stored.event_types is not None
    assert stored.items == mine["item_id"].tolist()[-n:]
    assert stored.event_types == mine["event_type"].tolist()[-n:]
    assert online_recent_history(typed.workspace, typed.features, ["nobody"])["nobody"] == (
        RecentHistory([], None)
    )


def test_recommend_by_user_id_reads_the_stored_event_types(typed: TypedWorkspace, client) -> None:
    user = typed.events["user_id"].iloc[0]
    stored = _stored(typed, user)
    assert stored.event_types is not None
    k = {"k": 8, "exclude_seen": False}
    by_user = client.post("/recommend", json={"user_id": user, **k}).json()
    typed_history = {"history": stored.items, "event_types": stored.event_types, **k}
    by_history = client.post("/recommend", json=typed_history).json()
    untyped = client.post("/recommend", json={"history": stored.items, **k}).json()
    assert by_user["source"] == "model" and not by_user["warnings"]
    assert _scored(by_user) == _scored(by_history)
    assert _scored(by_user) != _scored(untyped)  # the types were read, not dropped


def test_explanations_of_a_user_show_the_stored_event_types(typed: TypedWorkspace, client) -> None:
    user = typed.events["user_id"].iloc[1]
    stored = _stored(typed, user)
    assert stored.event_types is not None
    item = sorted(set(typed.events["item_id"]) - set(stored.items))[0]
    answer = client.post("/explain", json={"user_id": user, "item_id": item, "top": 3}).json()
    events = answer["because"] + answer["against"]
    assert events, answer
    for event in events:
        assert stored.items[event["position"]] == event["item_id"]
        assert event["event_type"] == stored.event_types[event["position"]]
