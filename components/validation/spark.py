"""The event-contract suite on Spark (``data.engine=spark``): GX's native Spark datasource.

The batch (a Parquet file or folder) is read by :func:`components.data.spark.spark_events`
and validated as ONE Spark frame by the same expectation suite the other engines run
(Spark type names, :data:`~components.validation.suite.SPARK_TYPES`): GX computes every
expectation's metrics on the executors. The batch-wide inputs are computed by Spark too:
``is_duplicate`` by a window over the duplicate key (the first row of a key in input
order is the original), ``item_in_catalogue`` by a broadcast join, and the drift checks'
statistics (rows, distinct users and items, time range) by one aggregation. Results go
through the same merge and report as the pandas and stream paths, so the verdict, the
failed checks and their shares are the same (tested).

The heap stays bounded whatever the batch's size: the frame GX scans (about 24 jobs) is
shuffled once, by the duplicate key, into partitions of at most ``validation.chunk_rows``
rows (the stream engine's chunk), and persisted on disk only. A cache in memory
(``MEMORY_AND_DISK``, serialized in PySpark) unrolls each partition's block in the heap
before spilling it: with the session's 4 shuffle partitions that block grew with the
batch (N/4 rows), and ran out of a 512 MB heap at 10M events and of a 4 GB heap at 100M.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from filelock import FileLock

from components.data.config import ColumnMapping
from components.data.schema import ITEM, TIME, USER
from components.validation.config import ValidationConfig
from components.validation.report import BatchStats, ValidationReport
from components.validation.runner import (
    SPARK_DATASOURCE,
    _add_drift,
    _events_report,
    _site_index,
    _validate_chunks,
    gx_context,
)
from components.validation.suite import (
    DUPLICATE_KEY,
    IN_CATALOGUE,
    IS_DUP,
    SPARK_TYPES,
    TS_UTC,
    event_expectations,
)
from components.workspace import Workspace

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def spark_batch_stats(events: DataFrame, batch_id: str | None) -> BatchStats:
    """Rows, distinct users and items and the time range of a contract frame (time as
    int64 nanoseconds), in one aggregation on the executors."""
    from pyspark.sql import functions as F

    row = events.agg(
        F.count(F.lit(1)).alias("rows"),
        F.countDistinct(USER).alias("users"),
        F.countDistinct(ITEM).alias("items"),
        F.min(TIME).alias("first"),
        F.max(TIME).alias("last"),
    ).collect()[0]

    def stamp(nanos: int | None) -> pd.Timestamp | None:
        return None if nanos is None else pd.Timestamp(nanos, unit="ns", tz="UTC")

    return BatchStats(
        batch_id=batch_id,
        n_rows=int(row["rows"]),
        n_users=int(row["users"]),
        n_items=int(row["items"]),
        min_timestamp=stamp(row["first"]),
        max_timestamp=stamp(row["last"]),
    )


def validation_partitions(n_rows: int, chunk_rows: int) -> int:
    """Partitions of at most ``chunk_rows`` rows (``validation.chunk_rows``) for a batch
    of ``n_rows``: at least one."""
    return max(1, -(-n_rows // chunk_rows))


def with_spark_derived_columns(
    spark: SparkSession, events: DataFrame, catalogue: set[str] | None, partitions: int
) -> DataFrame:
    """The suite's view of ``events`` (from :func:`components.data.spark.spark_events`):
    the contract columns with the time as a Spark timestamp, plus ``timestamp_utc``,
    ``is_duplicate`` (a later row of a duplicate key, input order) and, with a catalogue,
    ``item_in_catalogue``; hash-partitioned by the duplicate key into ``partitions``
    (the window's one shuffle)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from components.data.spark import FILE, POS

    stamp = F.timestamp_micros(F.floor(F.col(TIME) / 1000).cast("long"))
    first_of_key = Window.partitionBy(*DUPLICATE_KEY).orderBy(FILE, POS)
    keyed = events.repartition(partitions, *DUPLICATE_KEY)
    out = keyed.withColumn(IS_DUP, F.row_number().over(first_of_key) > 1)
    out = out.withColumn(TIME, stamp).withColumn(TS_UTC, F.col(TIME))
    if catalogue is not None:
        known = spark.createDataFrame([(item,) for item in sorted(catalogue)], f"{ITEM} string")
        known = known.withColumn(IN_CATALOGUE, F.lit(True))
        out = out.join(F.broadcast(known), on=ITEM, how="left").withColumn(
            IN_CATALOGUE, F.coalesce(F.col(IN_CATALOGUE), F.lit(False))
        )
    return out.drop(FILE, POS)


def validate_spark_files(
    path: str | Path,
    cfg: ValidationConfig,
    workspace: Workspace,
    *,
    batch_id: str,
    master: str,
    driver_memory_mb: int,
    columns: ColumnMapping | None = None,
    default_event_type: str = "interaction",
    catalogue_items: set[str] | None = None,
    previous: BatchStats | None = None,
) -> ValidationReport:
    """:func:`components.validation.runner.validate_events` for a Parquet file or folder,
    run by Spark at ``master`` (``data.spark_master``; the driver's heap
    ``driver_memory_mb``, ``data.spark_driver_memory_mb``) through GX's Spark datasource.

    Never raises for bad rows; a file that is not readable Parquet raises
    :class:`~components.errors.DataError` naming it (before Spark reads anything)."""
    from pyspark import StorageLevel

    from components.data.spark import cached, spark_events, spark_session

    started = time.perf_counter()
    spark = spark_session(master, driver_memory_mb)
    events = spark_events(spark, path, columns, default_event_type)
    workspace.lock_dir.mkdir(parents=True, exist_ok=True)
    context = gx_context(workspace)
    stats = spark_batch_stats(events, batch_id)
    id_type, time_type, value_type = SPARK_TYPES
    expectations = event_expectations(
        cfg,
        with_catalogue=catalogue_items is not None,
        id_type=id_type,
        time_type=time_type,
        value_type=value_type,
    )
    partitions = validation_partitions(stats.n_rows, cfg.chunk_rows)
    derived = with_spark_derived_columns(spark, events, catalogue_items, partitions)
    # every expectation reads it, from disk (module doc); a session that stopped meanwhile
    # is the heap's error, not GX's "every check failed"
    with (
        cached(derived, f"validating batch {batch_id}", StorageLevel.DISK_ONLY) as rows,
        FileLock(str(workspace.lock_dir / "gx.lock")),
    ):
        results, pages = _validate_chunks(
            context, expectations, [rows], batch_id, source_name=SPARK_DATASOURCE
        )
        _add_drift(context, stats, previous, cfg, batch_id, results, pages)
    docs = pages[0] if len(pages) == 1 else _site_index(pages)
    return _events_report(batch_id, stats, results, pages, docs, 1, started)
