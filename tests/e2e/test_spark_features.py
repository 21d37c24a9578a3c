"""``data.engine=spark`` feature tables: Spark builds the same Feast offline tables as the
stream engine (every value of every snapshot, same columns, types and day partitions),
ties in time and item side columns included, and rewrites only the changed days."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from components.data.config import DataConfig
from components.data.schema import ITEM, TIME, USER
from components.data.spark import spark_events, spark_session
from components.data.stream import list_event_files, scan_events
from components.features.config import FeaturesConfig
from components.features.partitions import compare_sources, day_files, written_days
from components.features.spark_tables import spark_side_columns, write_feature_tables_spark
from components.features.store import ITEM_VIEW, USER_VIEW
from components.features.streamed import side_columns_of, write_feature_tables_streamed
from components.workspace import Workspace

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_spark")]

MASTER = "local[1]"
CFG = FeaturesConfig(history_length=5, offline_store="spark", spark_master=MASTER)
#: the stream engine in 3 passes, Spark with 3 files a day
BUDGET_MB = 905


def _events(tiny_events: pd.DataFrame) -> pd.DataFrame:
    """The tiny events with many ties (times floored to 10 minutes) and a category."""
    frame = tiny_events.reset_index(drop=True).copy()
    frame[TIME] = frame[TIME].dt.floor("10min")
    return frame


def _write_parts(frame: pd.DataFrame, folder: Path, first: int = 0, rows: int = 700) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for number, lo in enumerate(range(0, len(frame), rows), start=first):
        part = frame.iloc[lo : lo + rows]
        part.to_parquet(folder / f"part-{number:05d}.parquet", index=False)


def _build_both(folder: Path, stream_ws: Workspace, spark_ws: Workspace) -> None:
    files = list_event_files(folder)
    side = side_columns_of(files.paths)
    write_feature_tables_streamed(scan_events(files), stream_ws, CFG, BUDGET_MB, side)
    spark = spark_session(MASTER, DataConfig().spark_driver_memory_mb)
    events = spark_events(spark, folder).cache()
    try:
        write_feature_tables_spark(
            events, spark_ws, CFG, BUDGET_MB, spark_side_columns(spark, files.paths)
        )
    finally:
        events.unpersist()


def _assert_same_tables(stream_ws: Workspace, spark_ws: Workspace) -> None:
    for view, key in ((USER_VIEW, USER), (ITEM_VIEW, ITEM)):
        root = f"sources/{view}"
        found = compare_sources(stream_ws.features_dir / root, spark_ws.features_dir / root, key)
        assert found.equal, (view, found)
        assert found.rows[0] > 0


def test_spark_feature_tables_equal_the_stream_engines(tmp_path: Path, tiny_events) -> None:
    events = _events(tiny_events).sort_values(TIME, kind="stable")
    cut = events[TIME].quantile(0.7)
    folder = tmp_path / "events"
    _write_parts(events[events[TIME] <= cut], folder)
    stream_ws = Workspace.at(tmp_path / "stream").ensure()
    spark_ws = Workspace.at(tmp_path / "spark").ensure()
    _build_both(folder, stream_ws, spark_ws)
    _assert_same_tables(stream_ws, spark_ws)
    users = spark_ws.features_dir / f"sources/{USER_VIEW}"
    first_day = written_days(users)[0]
    assert [p.name for p in day_files(users, first_day)][:1] == ["part-0.parquet"]
    stamp = day_files(users, first_day)[0].stat().st_mtime_ns
    item_table = pd.read_parquet(spark_ws.features_dir / f"sources/{ITEM_VIEW}")
    assert (item_table["category"] != "").all()  # the events' category column

    # a later batch: only its days are rewritten, and the tables stay equal
    _write_parts(events[events[TIME] > cut], folder, first=100)
    _build_both(folder, stream_ws, spark_ws)
    _assert_same_tables(stream_ws, spark_ws)
    assert day_files(users, first_day)[0].stat().st_mtime_ns == stamp
