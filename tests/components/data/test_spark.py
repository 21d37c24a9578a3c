"""Spark in local mode (one session for the module) gives the single-machine results."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from components.data.config import DataConfig, SyntheticConfig
from components.data.spark import (
    spark_duplicate_rows,
    spark_events,
    spark_prepare,
    spark_session,
    stop_spark_sessions,
)
from components.data.stream import stream_prepare, write_events_dataset
from components.errors import DataError
from tests.conftest import service_unavailable

# starts a JVM (one Spark session for the module): tens of seconds on 2 shared cores
pytestmark = pytest.mark.slow

SYNTH = SyntheticConfig(n_users=120, n_items=50, n_events=4_000, start="2024-01-01T00:00:00Z")
CFG = DataConfig(max_len=5, engine="spark", spark_master="local[1]")


@pytest.fixture(scope="module", autouse=True)
def _spark_available() -> Iterator[None]:
    if importlib.util.find_spec("pyspark") is None or shutil.which("java") is None:
        service_unavailable("Spark needs pyspark (dev extra) and Java 17+ on PATH")
    yield
    stop_spark_sessions()  # one session for this module, none left for the next


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("parts")
    write_events_dataset(SYNTH, folder, events_per_file=1_500)
    return folder


def test_spark_prepare_equals_the_single_machine_path(parts: Path) -> None:
    on_spark = spark_prepare(parts, CFG)
    local = stream_prepare(parts, CFG)
    assert on_spark.vocab == local.vocab
    np.testing.assert_array_equal(on_spark.sequences.offsets, local.sequences.offsets)
    np.testing.assert_array_equal(on_spark.sequences.values, local.sequences.values)
    np.testing.assert_array_equal(on_spark.sequences.timestamps, local.sequences.timestamps)
    np.testing.assert_array_equal(on_spark.sequences.events, local.sequences.events)
    for name in ("valid", "test"):
        ours, theirs = getattr(on_spark.split, name), getattr(local.split, name)
        assert torch.equal(ours.histories, theirs.histories)
        assert torch.equal(ours.targets, theirs.targets)
        assert ours.events is not None and theirs.events is not None
        assert torch.equal(ours.events, theirs.events)


def test_duplicates_are_counted_by_the_engine(parts: Path, tmp_path: Path) -> None:
    first = sorted(parts.glob("*.parquet"))[0]
    frame = pd.read_parquet(first)
    frame.iloc[:7].to_parquet(tmp_path / "repeat.parquet", index=False)
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "a.parquet").write_bytes(first.read_bytes())
    (folder / "b.parquet").write_bytes((tmp_path / "repeat.parquet").read_bytes())
    events = spark_events(spark_session(CFG.spark_master), folder)
    assert spark_duplicate_rows(events) == 7


def test_unreadable_part_is_named_before_spark_reads(parts: Path, tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    for path in sorted(parts.glob("*.parquet")):
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "part-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="part-00001.parquet: not a readable Parquet file"):
        spark_prepare(folder, CFG)


def test_integer_unix_seconds_are_read_as_seconds(tmp_path: Path) -> None:
    """An int64 time column is unix seconds (as the other engines read it), not the
    nanoseconds Spark makes of a Parquet nanosecond timestamp."""
    frame = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["i1", "i2"]})
    frame["timestamp"] = np.array([1_700_000_000, 1_700_000_060], dtype=np.int64)
    frame.to_parquet(tmp_path / "seconds.parquet", index=False)
    stamped = frame.assign(timestamp=pd.to_datetime(frame["timestamp"], unit="s", utc=True))
    stamped.to_parquet(tmp_path / "stamped.parquet", index=False)
    spark = spark_session(CFG.spark_master)
    for name in ("seconds", "stamped"):
        rows = spark_events(spark, tmp_path / f"{name}.parquet").select("timestamp").collect()
        assert [r[0] for r in rows] == [1_700_000_000 * 10**9, 1_700_000_060 * 10**9], name
