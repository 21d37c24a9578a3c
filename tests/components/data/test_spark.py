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
    cached,
    context_stopped,
    spark_duplicate_rows,
    spark_events,
    spark_prepare,
    spark_session,
    stop_spark_sessions,
    stopped_session_error,
)
from components.data.stream import (
    TAIL_SCHEMA,
    Shard,
    read_user_buckets,
    stream_prepare,
    write_events_dataset,
)
from components.errors import ConfigError, DataError
from tests.conftest import service_unavailable

# starts a JVM (one Spark session for the module): tens of seconds on 2 shared cores
pytestmark = pytest.mark.slow

SYNTH = SyntheticConfig(n_users=120, n_items=50, n_events=4_000, start="2024-01-01T00:00:00Z")
CFG = DataConfig(max_len=5, engine="spark", spark_master="local[1]", spark_driver_memory_mb=768)


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


def test_each_rank_reads_its_own_bucket_of_the_spark_tails(parts: Path, tmp_path: Path) -> None:
    """Spark writes every user's tail once, in the stream engine's user-bucket layout;
    each data-parallel rank reads only its buckets and gets what the stream engine's
    sharded read gives that rank."""
    shared = tmp_path / "spark-tails"
    ranks = [spark_prepare(parts, CFG, shard=Shard(rank, 2), bucket_dir=shared) for rank in (0, 1)]
    n_buckets = int((shared / "_done").read_text())
    assert sorted(p.name for p in shared.glob("_bucket=*")) == sorted(
        f"_bucket={k}" for k in range(n_buckets)
    )
    for rank, on_spark in enumerate(ranks):
        local = stream_prepare(parts, CFG, shard=Shard(rank, 2), bucket_dir=tmp_path / "stream")
        assert on_spark.sharded and on_spark.vocab == local.vocab
        for name in ("offsets", "values", "timestamps", "events"):
            ours, theirs = getattr(on_spark.sequences, name), getattr(local.sequences, name)
            np.testing.assert_array_equal(ours, theirs)
        for name in ("valid", "test"):
            ours, theirs = getattr(on_spark.split, name), getattr(local.split, name)
            np.testing.assert_array_equal(ours.users, theirs.users)
            assert torch.equal(ours.histories, theirs.histories)
            assert torch.equal(ours.targets, theirs.targets)
    users = [set(r.split.test.users.tolist()) for r in ranks]
    assert users[0] and users[1] and not users[0] & users[1]
    # rank 1 never opens rank 0's buckets
    tails = read_user_buckets(shared, n_buckets, schema=TAIL_SCHEMA)
    for k in Shard(0, 2).buckets(n_buckets):
        for path in tails.files[k]:
            path.write_bytes(b"not parquet")
    again = spark_prepare(parts, CFG, shard=Shard(1, 2), bucket_dir=shared)
    np.testing.assert_array_equal(again.sequences.values, ranks[1].sequences.values)


def test_a_budget_too_small_for_the_tails_names_the_key(parts: Path) -> None:
    with pytest.raises(DataError, match="data.memory_budget_mb=64 is too small"):
        spark_prepare(parts, CFG.model_copy(update={"memory_budget_mb": 64}))


def test_duplicates_are_counted_by_the_engine(parts: Path, tmp_path: Path) -> None:
    first = sorted(parts.glob("*.parquet"))[0]
    frame = pd.read_parquet(first)
    frame.iloc[:7].to_parquet(tmp_path / "repeat.parquet", index=False)
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "a.parquet").write_bytes(first.read_bytes())
    (folder / "b.parquet").write_bytes((tmp_path / "repeat.parquet").read_bytes())
    events = spark_events(spark_session(CFG.spark_master, CFG.spark_driver_memory_mb), folder)
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
    spark = spark_session(CFG.spark_master, CFG.spark_driver_memory_mb)
    for name in ("seconds", "stamped"):
        rows = spark_events(spark, tmp_path / f"{name}.parquet").select("timestamp").collect()
        assert [r[0] for r in rows] == [1_700_000_000 * 10**9, 1_700_000_060 * 10**9], name


def test_a_session_that_stops_is_an_error_naming_the_heap_key() -> None:
    """A task out of heap stops a local session's context in the JVM (its later jobs fail
    with unrelated messages): the error names the key that sets the heap."""
    spark = spark_session(CFG.spark_master, CFG.spark_driver_memory_mb)
    assert spark.sparkContext.getConf().get("spark.driver.memory") == "768m"
    assert stopped_session_error(spark, "testing") is None and not context_stopped(spark)
    spark.sparkContext._jsc.sc().stop()  # what the JVM does after an OutOfMemoryError
    try:
        assert context_stopped(spark)  # told by a public call, not the private handle
        error = stopped_session_error(spark, "testing")
        assert isinstance(error, ConfigError)
        assert "data.spark_driver_memory_mb" in str(error.hint)
        assert "768m" in str(error)
    finally:
        stop_spark_sessions()  # the next test starts a fresh session


def test_a_cached_frame_is_released_and_a_stop_inside_its_block_names_the_heap_key() -> None:
    """``cached`` releases the frame after its block; when the block fails because the
    JVM stopped the context (out of heap), the error is the one naming the heap key, not
    the Py4J error of a job or of ``unpersist`` on a stopped context."""
    spark = spark_session(CFG.spark_master, CFG.spark_driver_memory_mb)
    with cached(spark.range(10), "counting") as kept:
        assert kept.count() == 10
        assert kept.is_cached
    assert not kept.is_cached
    try:
        with (
            pytest.raises(ConfigError, match="while counting") as raised,
            cached(spark.range(10), "counting") as kept,
        ):
            spark.sparkContext._jsc.sc().stop()  # what the JVM does after an OutOfMemoryError
            kept.count()
        assert "data.spark_driver_memory_mb" in str(raised.value.hint)
        assert raised.value.__cause__ is not None  # Spark's own error stays attached
    finally:
        stop_spark_sessions()  # the next test starts a fresh session
