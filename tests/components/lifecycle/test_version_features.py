"""lifecycle.features: a dataset version's feature tables built in passes from its files
(data.engine=stream) serve what the one-frame path (data.engine=memory) serves."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

from components.data.config import DataConfig
from components.features.config import FeaturesConfig
from components.features.store import ITEM_VIEW, USER_VIEW, online_user_features, source_paths
from components.lifecycle.features import refresh_version_features
from components.lifecycle.ingest import ingest_events
from components.validation.config import ValidationConfig
from components.versioning.config import VersioningConfig
from components.workspace import Workspace
from tests.components.validation.conftest import make_events


def _item_rows(ws: Workspace, cfg: FeaturesConfig) -> pd.DataFrame:
    import pyarrow.dataset as ds

    root = source_paths(ws, cfg)[ITEM_VIEW]
    files = sorted(str(p) for p in root.glob("day=*/part-*.parquet"))
    frame = ds.dataset(files, format="parquet").to_table().to_pandas()
    return frame.sort_values(["item_id", "event_timestamp"]).reset_index(drop=True)


def test_a_stream_version_gets_the_memory_engines_features(tmp_path):
    events = make_events(2000, seed=5)
    # spread over about two weeks, so the tables have many day partitions
    start = pd.Timestamp("2025-06-01", tz="UTC")
    events["timestamp"] = start + pd.to_timedelta(np.arange(len(events)) * 600, unit="s")
    parts = tmp_path / "parts"
    parts.mkdir()
    for number, lo in enumerate(range(0, len(events), 500)):
        events.iloc[lo : lo + 500].to_parquet(parts / f"part-{number:05d}.parquet", index=False)
    features = FeaturesConfig(history_length=5)
    end = events["timestamp"].max().to_pydatetime() + timedelta(seconds=1)
    served = {}
    for engine, source in (("stream", parts), ("memory", events)):
        ws = Workspace.at(tmp_path / engine).ensure()
        # 901 MB leaves about a megabyte beside the process: tables built in passes
        data = DataConfig(engine=engine, memory_budget_mb=901)
        version = ingest_events(
            source, ws, data, ValidationConfig(), VersioningConfig(), batch_id="b"
        ).version.version
        result = refresh_version_features(ws, data, features, VersioningConfig(), version, end)
        assert {v.view: v.entities for v in result.views}["user_features"] == 60
        users = sorted(events["user_id"].unique())
        served[engine] = (online_user_features(ws, features, users), _item_rows(ws, features))
    assert served["stream"][0] == served["memory"][0]
    pd.testing.assert_frame_equal(served["stream"][1], served["memory"][1])
    stream_root = source_paths(Workspace.at(tmp_path / "stream"), features)[USER_VIEW]
    assert any(stream_root.glob("day=*/part-1.parquet"))  # built in several passes
