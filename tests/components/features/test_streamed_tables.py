"""Feature tables built in passes over the users and items of partitioned Parquet
(components.features.streamed): the one-frame path's rows, online features and
point-in-time features; incremental by day; a budget too small names its config key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from components.data.schema import TIME, USER
from components.data.stream import list_event_files, scan_events
from components.errors import DataError
from components.features.config import FeaturesConfig
from components.features.partitions import PART_GLOB, day_keys
from components.features.store import (
    ITEM_VIEW,
    USER_VIEW,
    apply_repo,
    historical_features,
    materialize,
    online_user_features,
    source_paths,
    write_feature_tables,
)
from components.features.streamed import (
    ITEM_ROW_BYTES,
    USER_ROW_BYTES,
    feature_passes,
    write_feature_tables_streamed,
)
from components.workspace import Workspace

HISTORY = 4
#: a budget leaving about 1 MB beside the process: several passes over ~6k events
TINY_BUDGET_MB = 901


def _scan(events: pd.DataFrame, folder: Path, parts: int = 3):
    """``events`` as ``parts`` Parquet files, scanned lazily as the stream engine does."""
    folder.mkdir(parents=True)
    size = -(-len(events) // parts)
    for n in range(parts):
        chunk = events.iloc[n * size : (n + 1) * size]
        pq.write_table(
            pa.Table.from_pandas(chunk, preserve_index=False),
            folder / f"part-{n:05d}.parquet",
        )
    return scan_events(list_event_files(folder))


def _view_rows(workspace: Workspace, cfg: FeaturesConfig, view: str) -> pd.DataFrame:
    """Every row of a view's partitions (all passes' files), in entity and time order."""
    root = source_paths(workspace, cfg)[view]
    files = sorted(str(p) for p in root.glob(f"day=*/{PART_GLOB}"))
    frame = ds.dataset(files, format="parquet").to_table().to_pandas()
    key = frame.columns[0]
    return frame.sort_values([key, "event_timestamp"], kind="stable").reset_index(drop=True)


def _inodes(workspace: Workspace, cfg: FeaturesConfig, view: str) -> dict[str, int]:
    root = source_paths(workspace, cfg)[view]
    return {str(p.relative_to(root)): p.stat().st_ino for p in root.glob(f"day=*/{PART_GLOB}")}


def test_tables_built_in_passes_equal_the_one_frame_tables_and_serve_the_same(
    tmp_path, tiny_events
):
    cfg = FeaturesConfig(history_length=HISTORY)
    assert feature_passes(len(tiny_events), USER_ROW_BYTES, TINY_BUDGET_MB) > 3
    assert feature_passes(len(tiny_events), ITEM_ROW_BYTES, TINY_BUDGET_MB) > 1
    lazy = _scan(tiny_events, tmp_path / "events")  # the event contract: no side columns
    side = tiny_events[["item_id", "category"]].drop_duplicates("item_id", keep="last")
    streamed = Workspace.at(tmp_path / "streamed").ensure()
    write_feature_tables_streamed(lazy, streamed, cfg, TINY_BUDGET_MB, side)
    frame = Workspace.at(tmp_path / "frame").ensure()
    write_feature_tables(tiny_events, frame, cfg, side)
    for view in (USER_VIEW, ITEM_VIEW):
        pd.testing.assert_frame_equal(
            _view_rows(streamed, cfg, view), _view_rows(frame, cfg, view), check_dtype=False
        )
    root = source_paths(workspace=streamed, cfg=cfg)[USER_VIEW]
    assert len({p.name for p in root.glob(f"day=*/{PART_GLOB}")}) > 3  # one file per pass

    end = tiny_events[TIME].max() + timedelta(seconds=1)
    for workspace in (streamed, frame):
        apply_repo(workspace, cfg)
        materialize(workspace, cfg, end=end, incremental=False)
    users = sorted(tiny_events[USER].astype(str).unique())
    assert online_user_features(streamed, cfg, users) == online_user_features(frame, cfg, users)
    labels = tiny_events.sample(n=300, random_state=3)[[USER, "item_id", TIME]]
    labels = labels.rename(columns={TIME: "event_timestamp"})
    pd.testing.assert_frame_equal(
        historical_features(streamed, cfg, labels), historical_features(frame, cfg, labels)
    )


def test_a_new_batch_rewrites_only_its_days_in_every_pass(tmp_path, tiny_events):
    cfg = FeaturesConfig(history_length=HISTORY)
    days = day_keys(tiny_events[TIME])
    cut = sorted(set(days))[int(len(set(days)) * 0.6)]
    old = tiny_events[days < cut]
    incremental = Workspace.at(tmp_path / "incremental").ensure()
    write_feature_tables_streamed(_scan(old, tmp_path / "old"), incremental, cfg, TINY_BUDGET_MB)
    before = _inodes(incremental, cfg, USER_VIEW)
    everything = _scan(tiny_events, tmp_path / "all")
    write_feature_tables_streamed(everything, incremental, cfg, TINY_BUDGET_MB)
    after = _inodes(incremental, cfg, USER_VIEW)
    kept = {name for name, inode in before.items() if after.get(name) == inode}
    assert kept == {name for name in before if name[len("day=") : len("day=") + 10] < cut}
    assert kept and set(after) > set(before)
    # a rerun with nothing new rewrites nothing
    write_feature_tables_streamed(everything, incremental, cfg, TINY_BUDGET_MB)
    assert _inodes(incremental, cfg, USER_VIEW) == after
    full = Workspace.at(tmp_path / "full").ensure()
    write_feature_tables_streamed(everything, full, cfg, TINY_BUDGET_MB)
    for view in (USER_VIEW, ITEM_VIEW):
        pd.testing.assert_frame_equal(
            _view_rows(incremental, cfg, view), _view_rows(full, cfg, view)
        )
    assert not list(source_paths(incremental, cfg)[USER_VIEW].glob("day=*/*.pending"))


def test_a_budget_too_small_for_the_tables_names_the_config_key(tmp_path, tiny_events):
    lazy = _scan(tiny_events, tmp_path / "events")
    workspace = Workspace.at(tmp_path / "ws").ensure()
    with pytest.raises(DataError, match=r"data\.memory_budget_mb=800 is too small"):
        write_feature_tables_streamed(lazy, workspace, FeaturesConfig(), 800)
    assert not list(workspace.features_dir.rglob("*.parquet"))
