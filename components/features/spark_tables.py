"""Feast's offline feature tables built by Spark (``data.engine=spark``).

The same tables as :mod:`components.features.tables` (one row per (entity, event time)
snapshot, the same columns, windows and snapshot rule: the definitions live there and
both builders read them), computed with Spark's DataFrame API from a
:func:`components.data.spark.spark_events` frame and written by the executors as day
partitions (:mod:`components.features.partitions`): the events are hash-partitioned by
entity once (a shuffle of four narrow columns), every window then runs inside those
partitions, and each partition's task writes one file per day
(``day=D/part-<task>.parquet``), as many tasks as the stream engine's passes
(:func:`components.features.streamed.feature_passes`), so the materialization, which
reads one ``part-<k>`` group at a time, holds as much as it does for ``stream``.

Ties in time keep the input order (file, then position in the file), as the stream
engine's row numbers do. Timestamps are written in microseconds (Spark writes no
nanosecond Parquet timestamps; Feast's Spark offline store needs microseconds anyway).

Incremental like the other builders: a digest of each UTC day's events (in input order)
computed by Spark finds the first changed day; only the days from it on are written, as
pending files made live together (:func:`components.features.partitions.commit_passes`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pandas as pd

from components.data.schema import EVENT, ITEM, TIME, USER
from components.data.spark import FILE, POS
from components.data.stream import BUDGET_KEY
from components.features.config import FeaturesConfig
from components.features.partitions import (
    DAY,
    PENDING_SUFFIX,
    Manifest,
    commit_passes,
    start_build,
)
from components.features.store import (
    ITEM_VIEW,
    USER_VIEW,
    check_windows,
    repo_digest,
    source_paths,
)
from components.features.streamed import ITEM_ROW_BYTES, USER_ROW_BYTES, feature_passes
from components.features.tables import (
    CATEGORY,
    CATEGORY_ALIASES,
    DAY_S,
    EVENT_TS,
    FIRST_GAP_S,
    N_EVENTS,
    RECENT_ITEMS,
    RECENT_TYPES,
    SECOND_NS,
    TITLE,
    TITLE_ALIASES,
    TREND_FLOOR,
    item_columns,
    item_side_table,
    item_window_column,
    user_columns,
    user_window_column,
)
from components.workspace import Workspace

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

SECOND = "_second"
#: Spark's staging folder under a source's root (Spark and the ``day=*`` glob skip it)
STAGING = "_spark_staging"
_DAY_NS = DAY_S * SECOND_NS
_SPARK_PART = re.compile(r"part-(\d+)-.*\.parquet$")


def _floor_div(column: str, unit: int) -> Column:
    """``column // unit`` in exact integer arithmetic (floor, also before 1970)."""
    from pyspark.sql import functions as F

    return F.expr(f"(`{column}` - pmod(`{column}`, {unit})) div {unit}")


def _before_windows(
    frame: DataFrame, key: str, counted: Column, windows_days: Sequence[int]
) -> DataFrame:
    """Per row and window ``w``: the sum of ``counted`` over the entity's rows at or
    before ``second - w`` days (``_before_<w>``, a range frame over whole seconds)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    by_second = Window.partitionBy(key).orderBy(SECOND)
    return frame.withColumns(
        {
            f"_before_{days}": F.coalesce(
                F.sum(counted).over(
                    by_second.rangeBetween(Window.unboundedPreceding, -days * DAY_S)
                ),
                F.lit(0),
            )
            for days in windows_days
        }
    )


def _window_counts(
    frame: DataFrame, windows_days: Sequence[int], name: Callable[[int], str]
) -> DataFrame:
    """Per snapshot and window ``w``: the entity's events with ``second > t_second - w``
    days up to the snapshot: ``n_events`` minus those at or before ``t_second - w`` days."""
    from pyspark.sql import functions as F

    return frame.withColumns(
        {
            name(days): (F.col(N_EVENTS) - F.col(f"_before_{days}")).cast("long")
            for days in windows_days
        }
    )


def _seconds(frame: DataFrame) -> DataFrame:
    """``frame`` with each row's whole second (``_second``)."""
    return frame.withColumn(SECOND, _floor_div(TIME, SECOND_NS))


def _stamped(snaps: DataFrame) -> DataFrame:
    """The snapshot's ``event_timestamp`` (microseconds, UTC) and UTC day."""
    from pyspark.sql import functions as F

    return snaps.select(
        "*",
        F.timestamp_micros(_floor_div(TIME, 1000)).alias(EVENT_TS),
        F.date_from_unix_date(_floor_div(TIME, _DAY_NS).cast("int")).alias(DAY),
    )


def spark_user_table(
    events: DataFrame, history_length: int, windows_days: Sequence[int], tasks: int
) -> DataFrame:
    """:func:`components.features.tables.user_feature_table` on Spark: one row per
    (user, event time) with :func:`user_columns` plus ``day``, in ``tasks`` partitions by
    user. ``events``: a ``spark_events`` frame (time in ns, ``_file``/``_pos``)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    in_order = Window.partitionBy(USER).orderBy(TIME, FILE, POS)
    recent = in_order.rowsBetween(1 - history_length, Window.currentRow)
    pair_order = Window.partitionBy(USER, ITEM).orderBy(TIME, FILE, POS)
    # every window but the last runs on narrow rows; the lists come last
    narrow = _seconds(events.select(USER, ITEM, TIME, EVENT, FILE, POS).repartition(tasks, USER))
    flagged = narrow.withColumn(
        "_first", (F.row_number().over(pair_order) == 1).cast("long")
    )  # the user's first event of this item
    flagged = _before_windows(flagged, USER, F.lit(1), windows_days)
    per_event = flagged.select(
        USER,
        TIME,
        SECOND,
        *[f"_before_{days}" for days in windows_days],
        F.row_number().over(in_order).cast("long").alias(N_EVENTS),
        F.collect_list(ITEM).over(recent).alias(RECENT_ITEMS),
        F.collect_list(F.coalesce(F.col(EVENT), F.lit(""))).over(recent).alias(RECENT_TYPES),
        F.sum("_first").over(in_order).cast("long").alias("distinct_items"),
        F.lead(TIME).over(in_order).alias("_next"),
    )
    # a snapshot is the last event of each (user, time): it holds every event at t
    snaps = _stamped(per_event.filter(F.col("_next").isNull() | (F.col("_next") != F.col(TIME))))
    previous = F.lag(TIME).over(Window.partitionBy(USER).orderBy(TIME))
    gap = (F.col(TIME) - previous).cast("double") / SECOND_NS
    snaps = snaps.withColumns(
        {
            "last_event_unix": F.col(SECOND),
            "seconds_since_prev": F.coalesce(gap, F.lit(FIRST_GAP_S)),
        }
    )
    snaps = _window_counts(snaps, windows_days, user_window_column)
    return snaps.select(*user_columns(list(windows_days)), DAY)


def spark_item_table(
    events: DataFrame,
    windows_days: Sequence[int],
    side: pd.DataFrame | None,
    tasks: int,
) -> DataFrame:
    """:func:`components.features.tables.item_feature_table` on Spark: one row per
    (item, event time) with :func:`item_columns` plus ``day``, in ``tasks`` partitions by
    item; ``side``: :func:`item_side_table`'s rows (category, title), joined broadcast."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    counted = _seconds(
        events.select(ITEM, TIME)
        .repartition(tasks, ITEM)
        .groupBy(ITEM, TIME)
        .agg(F.count(F.lit(1)).alias("_at"))
    )
    by_time = Window.partitionBy(ITEM).orderBy(TIME)
    counted = _before_windows(counted, ITEM, F.col("_at"), windows_days)
    snaps = _stamped(
        counted.withColumn(N_EVENTS, F.sum("_at").over(by_time).cast("long")).withColumn(
            "first_seen_unix",
            F.min(SECOND).over(by_time),  # a running min: no group frame
        )
    )
    snaps = _window_counts(snaps, windows_days, item_window_column)
    trend = F.lit(0.0)
    if windows_days:
        short, long = min(windows_days), max(windows_days)
        rate_short = F.col(item_window_column(short)) / short
        rate_long = F.col(item_window_column(long)) / long
        trend = F.when(rate_long > 0, rate_short / F.greatest(rate_long, F.lit(TREND_FLOOR)))
        trend = trend.otherwise(F.lit(0.0))
    snaps = snaps.withColumn("trend", trend.cast("double"))
    texts = _side_frame(events.sparkSession, side)
    snaps = snaps.join(F.broadcast(texts), on=ITEM, how="left").fillna("", [CATEGORY, TITLE])
    return snaps.select(*item_columns(list(windows_days)), DAY)


def _side_frame(spark: SparkSession, side: pd.DataFrame | None) -> DataFrame:
    """``side`` (item_id, category, title strings) as a Spark frame; empty without one."""
    rows = side if side is not None else pd.DataFrame(columns=[ITEM, CATEGORY, TITLE])
    frame = pd.DataFrame({c: rows[c].astype(str).astype(object) for c in (ITEM, CATEGORY, TITLE)})
    return spark.createDataFrame(frame, schema=f"{ITEM} string, {CATEGORY} string, {TITLE} string")


def spark_side_columns(spark: SparkSession, paths: Sequence[Path]) -> pd.DataFrame | None:
    """:func:`components.features.streamed.side_columns_of` by Spark: the item side
    columns the event files carry, each item's last value in input order (file, then
    position), one row per item on the driver; None without any."""
    from pyspark.sql import functions as F

    if not paths:
        return None
    raw = spark.read.parquet(*[str(p) for p in paths])
    found = [c for c in (*CATEGORY_ALIASES, *TITLE_ALIASES) if c in raw.columns]
    if not found:
        return None
    ordered = raw.select(
        F.col(ITEM).cast("string").alias(ITEM),
        F.struct(*found).alias("_side"),
        F.struct(F.input_file_name(), F.monotonically_increasing_id()).alias("_order"),
    )
    last = ordered.groupBy(ITEM).agg(F.max_by("_side", "_order").alias("_side"))
    return cast(pd.DataFrame, last.select(ITEM, "_side.*").toPandas())


def spark_day_digests(events: DataFrame) -> dict[str, str]:
    """Per UTC day of the events: a digest of that day's rows in input order (each row's
    hash weighted by its position inside its own day), computed by Spark."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    day = F.date_from_unix_date(_floor_div(TIME, _DAY_NS).cast("int")).cast("string")
    row_hash = F.xxhash64(USER, ITEM, TIME, EVENT).bitwiseAND(F.lit(0x7FFFFFFF))
    rows = events.select(day.alias(DAY), row_hash.alias("_h"), FILE, POS)
    position = F.row_number().over(Window.partitionBy(DAY).orderBy(FILE, POS))
    weighted = rows.withColumn("_w", F.col("_h") * position)  # < 2^31 * 2^32: no overflow
    found = weighted.groupBy(DAY).agg(
        F.count(F.lit(1)).alias("n"), F.bit_xor("_w").alias("x"), F.sum("_h").alias("s")
    )
    return {
        str(row[DAY]): f"{row['n']}:{int(row['x']):016x}:{int(row['s']):016x}"
        for row in found.orderBy(DAY).collect()
    }


def _basis(cfg: FeaturesConfig, view: str, side: pd.DataFrame | None) -> str:
    """What a view's rows depend on besides the days' events (the repo and settings, the
    item side table); the day digests differ from the other builders', so switching
    engines rebuilds every day."""
    digest = hashlib.sha256(f"{view}\0{repo_digest(cfg)}\0us\0spark\0".encode())
    if side is not None:
        digest.update(pd.util.hash_pandas_object(side, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _write_view(root: Path, manifest: Manifest, table: DataFrame, key: str) -> list[str]:
    """Write ``table``'s rows of the days from the first changed one on: each task of
    ``table`` writes one file per day (sorted by entity and time), moved into the
    partitions as pending files, then made live together. Returns the days now live
    from there on (none when no day changed)."""
    from pyspark.sql import functions as F

    start = start_build(root, manifest, "by Spark")
    if start is None:
        return []
    staging = root / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    chosen = table.filter(F.col(DAY) >= F.lit(start).cast("date"))
    ordered = chosen.sortWithinPartitions(DAY, key, EVENT_TS)
    ordered.write.partitionBy(DAY).parquet(str(staging))
    for written in staging.glob(f"{DAY}=*/part-*.parquet"):
        task = _SPARK_PART.match(written.name)
        if task is None:
            continue
        folder = root / written.parent.name
        folder.mkdir(exist_ok=True)
        written.replace(folder / f"part-{int(task.group(1))}.parquet{PENDING_SUFFIX}")
    shutil.rmtree(staging)
    return commit_passes(root, start, manifest)


def write_feature_tables_spark(
    events: DataFrame,
    workspace: Workspace,
    cfg: FeaturesConfig,
    budget_mb: int,
    item_side: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """The user and item tables of ``events`` (a ``spark_events`` frame, best cached)
    built and written by Spark as day partitions, as many files per day as
    :func:`feature_passes` gives for ``budget_mb`` (``data.memory_budget_mb``) and at
    least Spark's default parallelism. Same rows and values as
    :func:`components.features.streamed.write_feature_tables_streamed` on the same events
    with ``features.offline_store=spark`` (tested)."""
    check_windows(cfg)
    paths = source_paths(workspace, cfg)
    n_rows = events.count()
    parallel = events.sparkSession.sparkContext.defaultParallelism
    user_tasks = max(parallel, feature_passes(n_rows, USER_ROW_BYTES, budget_mb))
    item_tasks = max(parallel, feature_passes(n_rows, ITEM_ROW_BYTES, budget_mb))
    days = spark_day_digests(events)
    side = item_side_table(item_side) if item_side is not None else None
    log.info(
        "feature tables of %d events on Spark: %d user file(s), %d item file(s) a day (%s=%d)",
        n_rows,
        user_tasks,
        item_tasks,
        BUDGET_KEY,
        budget_mb,
    )
    users = spark_user_table(events, cfg.history_length, cfg.windows_days, user_tasks)
    _write_view(paths[USER_VIEW], Manifest(_basis(cfg, USER_VIEW, None), days), users, USER)
    items = spark_item_table(events, cfg.windows_days, side, item_tasks)
    _write_view(paths[ITEM_VIEW], Manifest(_basis(cfg, ITEM_VIEW, side), days), items, ITEM)
    return paths
