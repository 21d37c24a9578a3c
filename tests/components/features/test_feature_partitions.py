"""Feature sources as day partitions: a second batch rewrites and materializes only its days.

Every test compares the incremental path (a first batch, then the whole data) with a
fresh workspace that wrote the whole data at once: same partition rows, same
point-in-time training features, same online answers.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.data.schema import ITEM, TIME, USER
from components.features.config import FeaturesConfig
from components.features.partitions import PART_FILE, day_keys, written_days
from components.features.store import (
    historical_features,
    online_user_features,
    refresh_features,
    source_paths,
    write_feature_tables,
)
from components.workspace import Workspace

HISTORY = 4


def _split_at_day(events: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, str]:
    """The events of the days before the day at ``fraction`` of the time range, and that day."""
    days = day_keys(events[TIME])
    cut = sorted(set(days))[int(len(set(days)) * fraction)]
    return events[days < cut], cut


def _partition_files(workspace: Workspace, cfg: FeaturesConfig, view: str) -> dict[str, Path]:
    root = source_paths(workspace, cfg)[view]
    return {day: root / f"day={day}" / PART_FILE for day in written_days(root)}


def _inodes(workspace: Workspace, cfg: FeaturesConfig, view: str) -> dict[str, int]:
    """Each day's partition file's inode: a rewritten (atomically replaced) file gets a new one."""
    return {day: path.stat().st_ino for day, path in _partition_files(workspace, cfg, view).items()}


def _rows(path: Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


def _assert_same_partitions(a: Workspace, b: Workspace, cfg: FeaturesConfig) -> None:
    for view in ("user_features", "item_features"):
        left, right = _partition_files(a, cfg, view), _partition_files(b, cfg, view)
        assert sorted(left) == sorted(right)
        for day, path in left.items():
            pd.testing.assert_frame_equal(_rows(path), _rows(right[day]))


def _labels(events: pd.DataFrame, n: int = 400) -> pd.DataFrame:
    """Label rows (user, item, time) spread over the whole range, for point-in-time joins."""
    sample = events.sample(n=min(n, len(events)), random_state=3)
    return sample[[USER, ITEM, TIME]].rename(columns={TIME: "event_timestamp"})


def test_a_new_batch_rewrites_only_the_days_from_its_first_event(tmp_path, tiny_events):
    cfg = FeaturesConfig(history_length=HISTORY)
    old, cut = _split_at_day(tiny_events, 0.6)
    incremental = Workspace.at(tmp_path / "incremental").ensure()
    write_feature_tables(old, incremental, cfg)
    before = _inodes(incremental, cfg, "user_features")
    write_feature_tables(tiny_events, incremental, cfg)
    after = _inodes(incremental, cfg, "user_features")
    kept = {d for d in before if after.get(d) == before[d]}
    assert kept == {d for d in before if d < cut}  # every older day untouched, no newer one
    assert max(after) > max(before)
    full = Workspace.at(tmp_path / "full").ensure()
    write_feature_tables(tiny_events, full, cfg)
    _assert_same_partitions(incremental, full, cfg)


def test_a_late_event_rewrites_from_its_own_day(tmp_path, tiny_events):
    cfg = FeaturesConfig(history_length=HISTORY)
    workspace = Workspace.at(tmp_path / "late").ensure()
    write_feature_tables(tiny_events, workspace, cfg)
    days = sorted(_partition_files(workspace, cfg, "user_features"))
    late = tiny_events.iloc[[0]].copy()
    late[TIME] = pd.Timestamp(f"{days[len(days) // 2]}T12:00:00Z")
    late[ITEM] = "a-late-item"
    grown = pd.concat([tiny_events, late], ignore_index=True)
    before = _inodes(workspace, cfg, "user_features")
    write_feature_tables(grown, workspace, cfg)
    after = _inodes(workspace, cfg, "user_features")
    assert {d for d in days if after[d] == before[d]} == set(days[: len(days) // 2])
    full = Workspace.at(tmp_path / "full").ensure()
    write_feature_tables(grown, full, cfg)
    _assert_same_partitions(workspace, full, cfg)


def test_nothing_is_rewritten_when_no_day_changed(tmp_path, tiny_events):
    cfg = FeaturesConfig(history_length=HISTORY)
    workspace = Workspace.at(tmp_path / "same").ensure()
    write_feature_tables(tiny_events, workspace, cfg)
    before = _inodes(workspace, cfg, "item_features")
    write_feature_tables(tiny_events, workspace, cfg)
    after = _inodes(workspace, cfg, "item_features")
    assert before == after
    # a setting the rows depend on rewrites every day
    write_feature_tables(tiny_events, workspace, FeaturesConfig(history_length=HISTORY + 1))
    again = _inodes(workspace, cfg, "item_features")
    assert not set(again.items()) & set(before.items())


@pytest.mark.parametrize("engine", ["arrow", "feast"])
def test_incremental_materialization_reads_only_new_days_and_answers_as_a_full_one(
    tmp_path, tiny_events, engine
):
    sample = tiny_events[tiny_events[USER].isin(tiny_events[USER].unique()[:60])]
    cfg = FeaturesConfig(history_length=HISTORY, materialize_engine=engine)
    old, cut = _split_at_day(sample, 0.6)
    incremental = Workspace.at(tmp_path / "incremental").ensure()
    first = refresh_features(old, incremental, cfg, end=old[TIME].max() + timedelta(seconds=1))
    files = _partition_files(incremental, cfg, "user_features")
    middle = files[sorted(files)[len(files) // 3]]
    saved = middle.read_bytes()
    if engine == "arrow":  # an old day made unreadable: the arrow engine must not read it
        middle.write_bytes(b"not parquet")  # (Feast's DuckDB scan opens every file's footer)
    later = sample[TIME].max() + timedelta(seconds=1)
    second = refresh_features(sample, incremental, cfg, end=later)
    middle.write_bytes(saved)
    assert all(v.start == first.end for v in second.views)
    new_snapshots = sample[sample[TIME] > first.end][[USER, TIME]].drop_duplicates()
    assert {v.view: v.rows for v in second.views}["user_features"] == len(new_snapshots)

    full = Workspace.at(tmp_path / "full").ensure()
    refresh_features(sample, full, cfg, end=second.end)
    users = sorted(sample[USER].astype(str).unique())
    assert online_user_features(incremental, cfg, users) == online_user_features(full, cfg, users)
    labels = _labels(sample)
    pd.testing.assert_frame_equal(
        historical_features(incremental, cfg, labels), historical_features(full, cfg, labels)
    )


def test_the_dask_offline_store_is_refused_with_the_reason(tmp_path):
    from components.errors import FeatureStoreError
    from components.features.store import feature_store

    workspace = Workspace.at(tmp_path / "ws").ensure()
    with pytest.raises(FeatureStoreError, match=r"offline_store=file .*partition"):
        feature_store(workspace, FeaturesConfig(offline_store="file"))


def test_compare_sources_finds_a_changed_value_and_a_changed_list(tmp_path, tiny_events):
    from components.features.partitions import Manifest, compare_sources, write_partitions
    from components.features.tables import user_feature_table

    table = user_feature_table(tiny_events, 5, [1, 7, 30])
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    write_partitions(arrow, tmp_path / "a", Manifest("b", {"1970-01-01": "x"}))
    assert compare_sources(tmp_path / "a", tmp_path / "a", USER).equal
    changed = table.copy()
    changed.loc[3, "seconds_since_prev"] += 1e-3
    changed.loc[5, "recent_items"] = ["nope"]
    write_partitions(
        pa.Table.from_pandas(changed, preserve_index=False),
        tmp_path / "b",
        Manifest("b", {"1970-01-01": "x"}),
    )
    found = compare_sources(tmp_path / "a", tmp_path / "b", USER)
    assert not found.equal
    assert found.differing["seconds_since_prev"] == 1 and found.differing["recent_items"] == 1
    assert found.max_float_difference == pytest.approx(1e-3)
    assert found.rows[0] == found.rows[1] == len(table)
