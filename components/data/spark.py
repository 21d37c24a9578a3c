"""The data stages on Apache Spark (``data.engine=spark``): the path beyond one machine.

Spark is the engine Great Expectations (Spark datasources) and Feast (Spark offline store
and materialization engine) both support natively, so the same cluster can run all the
data stages; Prefect still orchestrates, calling these functions from its tasks. Dask
and Ray were not chosen: GX 1.x has no Dask or Ray datasource, and Feast's Dask path is
its local file store (measured slow in round 1), not a cluster engine.

``data.spark_master`` selects the cluster (``local[N]`` runs Spark inside this process's
JVM: what the tests and a single machine use). The work mirrors
:mod:`components.data.stream` so the results are equal: the vocabulary is every distinct
user and item (sorted), and each user's last ``max_len + 3`` events come from a window
ranked by (time, file, position in file) newest first, computed on the executors; only
the tails travel to the driver.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd

from components.data.config import ColumnMapping, DataConfig
from components.data.prepare import PreparedData, checked_catalogue
from components.data.schema import EVENT, ITEM, TIME, USER, VALUE
from components.data.sequences import PAD, UNKNOWN_USER, Sequences, Vocabulary
from components.data.splits import leave_one_out
from components.data.stream import (
    EventFiles,
    csr_sequences,
    list_event_files,
    require_leave_one_out,
    tail_length,
)
from components.errors import DataError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

FILE = "_file"
POS = "_pos"
_SESSIONS: dict[str, SparkSession] = {}
_GUARD = threading.Lock()


def spark_session(master: str) -> SparkSession:
    """One Spark session per master per process (UTC, few shuffle partitions, Arrow
    transfers, Parquet nanosecond timestamps read as int64 nanoseconds, timestamps written
    as Parquet microseconds, not INT96)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise DataError(
            "data.engine=spark needs pyspark (and Java 17+)",
            hint="pip install 'recops[spark]', or set data.engine=stream",
        ) from None
    with _GUARD:
        if master not in _SESSIONS:
            _SESSIONS[master] = (
                SparkSession.builder.master(master)
                .appName("recops")
                .config("spark.sql.session.timeZone", "UTC")
                .config("spark.sql.shuffle.partitions", "4")
                .config("spark.sql.execution.arrow.pyspark.enabled", "true")
                .config("spark.sql.legacy.parquet.nanosAsLong", "true")
                .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
                .config("spark.ui.enabled", "false")
                .config("spark.ui.showConsoleProgress", "false")
                .getOrCreate()
            )
            _SESSIONS[master].sparkContext.setLogLevel("ERROR")
        return _SESSIONS[master]


def stop_spark_sessions() -> None:
    """Stop every session this process started (tests, and a CLI run that is done)."""
    with _GUARD:
        for session in _SESSIONS.values():
            session.stop()
        _SESSIONS.clear()


def _nanosecond_stamps(path: Path, column: str) -> bool:
    """Whether ``column`` of the Parquet file is a nanosecond timestamp (which Spark reads
    as int64 nanoseconds, indistinguishable from an int64 column of unix seconds)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    if column not in schema.names:
        return False
    kind = schema.field(column).type
    return bool(pa.types.is_timestamp(kind) and kind.unit == "ns")


def _nanos(frame: DataFrame, column: str, nanosecond_stamps: bool):
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, NumericType, TimestampType

    kind = frame.schema[column].dataType
    if isinstance(kind, LongType) and nanosecond_stamps:  # TIMESTAMP(NANOS), as int64 ns
        return F.col(column)
    if isinstance(kind, TimestampType):
        return F.unix_micros(F.col(column)) * 1000
    if isinstance(kind, NumericType):  # unix seconds, as the other engines read numbers
        return F.round(F.col(column).cast("double") * 1e9).cast("long")
    # try_: under ANSI mode (Spark 4's default) a bad string fails the job; null instead,
    # which the suite's timestamp_parseable check reports
    return F.unix_micros(F.try_to_timestamp(F.col(column))) * 1000


def _event_files(source: str | Path | Sequence[Path]) -> EventFiles:
    """:func:`list_event_files` of a file or folder, or of several files in the given
    order (a dataset version's batches)."""
    if isinstance(source, (str, Path)):
        return list_event_files(source)
    parts = [list_event_files(path) for path in source]
    if not parts:
        raise DataError("no event files to read")
    return EventFiles(
        tuple(p for part in parts for p in part.paths),
        tuple(r for part in parts for r in part.rows),
    )


def spark_events(
    spark: SparkSession,
    path: str | Path | Sequence[Path],
    columns: ColumnMapping | None = None,
    default_event_type: str = "interaction",
) -> DataFrame:
    """The Parquet file or folder as a Spark frame in the event contract (time as int64
    nanoseconds) plus ``_file`` and ``_pos`` (the input order). Unreadable files are
    named by :func:`components.data.stream.list_event_files` before Spark reads them."""
    from pyspark.sql import functions as F

    files = _event_files(path)
    mapping = (columns or ColumnMapping()).model_dump()
    raw = spark.read.parquet(*[str(p) for p in files.paths])
    missing = [c for c in (USER, ITEM, TIME) if mapping[c] not in raw.columns]
    if missing:
        raise DataError(f"{path}: missing required column {', '.join(map(repr, missing))}")
    event = mapping.get(EVENT)
    value = mapping.get(VALUE)
    return raw.select(
        F.col(mapping[USER]).cast("string").alias(USER),
        F.col(mapping[ITEM]).cast("string").alias(ITEM),
        _nanos(raw, mapping[TIME], _nanosecond_stamps(files.paths[0], mapping[TIME])).alias(TIME),
        (
            F.coalesce(F.lower(F.col(event).cast("string")), F.lit(default_event_type))
            if event in raw.columns
            else F.lit(default_event_type)
        ).alias(EVENT),
        (F.col(value).cast("double") if value in raw.columns else F.lit(None).cast("double")).alias(
            VALUE
        ),
        F.input_file_name().alias(FILE),
        F.monotonically_increasing_id().alias(POS),
    )


def _distinct_tokens(events: DataFrame, column: str) -> tuple[str, ...]:
    """The column's distinct values, sorted in Python (the other engines' order). They
    reach the driver as one Arrow column, not as a Row object per value (10 s of driver
    CPU for 250k tokens at 10M events)."""
    values = cast(pd.DataFrame, events.select(column).distinct().toPandas())[column]
    return tuple(sorted(values.tolist()))


def spark_vocabulary(events: DataFrame) -> Vocabulary:
    """Sorted distinct user and item tokens (computed on the executors)."""
    return Vocabulary(
        _distinct_tokens(events, USER),
        _distinct_tokens(events, ITEM),
        _distinct_tokens(events, EVENT),
    )


USER_IDX, ITEM_IDX, EVENT_IDX, RANK = "_user_idx", "_item_idx", "_event_idx", "_rank"


def _token_index(
    spark: SparkSession, tokens: tuple[str, ...], indices: np.ndarray, column: str, index: str
) -> DataFrame:
    """(token, index) pairs of a vocabulary part."""
    frame = pd.DataFrame({column: pd.Series(tokens, dtype=object), index: indices.astype(np.int64)})
    return spark.createDataFrame(frame, schema=f"{column} string, {index} long")


def _indexed(spark: SparkSession, frame: DataFrame, vocab: Vocabulary) -> DataFrame:
    """``frame`` with the vocabulary's user, item and event-type indices beside the
    tokens, joined on the executors (broadcast). The indices are the vocabulary's own
    (:meth:`Vocabulary.user_index` and the others), and so is the value of an unknown
    token (``UNKNOWN_USER``, ``PAD``)."""
    from pyspark.sql import functions as F

    parts = (
        (USER, USER_IDX, vocab.users, vocab.user_index, UNKNOWN_USER),
        (ITEM, ITEM_IDX, vocab.items, vocab.item_index, PAD),
        (EVENT, EVENT_IDX, vocab.event_types, vocab.event_index, PAD),
    )
    for column, index, tokens, lookup, missing in parts:
        known = F.broadcast(_token_index(spark, tokens, lookup(tokens), column, index))
        frame = frame.join(known, on=column, how="left")
        frame = frame.withColumn(index, F.coalesce(F.col(index), F.lit(missing).cast("long")))
    return frame


def spark_tails(events: DataFrame, vocab: Vocabulary, keep: int) -> pd.DataFrame:
    """Each user's last ``keep`` events as vocabulary indices (user, item, event type)
    and time in ns, oldest first per user. Tokens become indices on the executors, so
    only four int64 columns reach the driver (not two string columns per event)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    newest_first = Window.partitionBy(USER).orderBy(
        F.col(TIME).desc(), F.col(FILE).desc(), F.col(POS).desc()
    )
    ranked = events.withColumn(RANK, F.row_number().over(newest_first))
    tails = ranked.filter(F.col(RANK) <= keep).select(USER, ITEM, TIME, EVENT, RANK)
    indexed = _indexed(events.sparkSession, tails, vocab)
    frame = _to_driver(indexed.select(USER_IDX, ITEM_IDX, TIME, EVENT_IDX, RANK))
    return frame.sort_values([USER_IDX, RANK], ascending=[True, False], kind="stable")


def _to_driver(frame: DataFrame) -> pd.DataFrame:
    """A large result on the driver. In local mode the executors write it as Parquet to
    a temporary folder that pyarrow reads: collected through the JVM (``toPandas``) the
    task results of 10M tails (about 100 MB a task) sit in the block manager of a 1 GB
    heap beside the cached events, and a run at 10M failed with ``TaskResultLost``. On a
    cluster the executors cannot write to the driver's disk: ``toPandas``."""
    import pyarrow.parquet as pq

    master = frame.sparkSession.sparkContext.master or ""
    if not master.startswith("local"):
        return cast(pd.DataFrame, frame.toPandas())
    with tempfile.TemporaryDirectory(prefix="recops-spark-") as spill:
        frame.write.parquet(f"{spill}/part")
        return pq.read_table(f"{spill}/part").to_pandas()


def spark_sequences(events: DataFrame, vocab: Vocabulary, keep: int) -> Sequences:
    """CSR sequences of every vocabulary user's last ``keep`` events."""
    tails = spark_tails(events, vocab, keep)
    return csr_sequences(
        tails[USER_IDX].to_numpy(dtype=np.int64),
        tails[ITEM_IDX].to_numpy(dtype=np.int64),
        tails[TIME].to_numpy(dtype=np.int64),
        tails[EVENT_IDX].to_numpy(dtype=np.int64),
        vocab,
    )


def spark_prepare(
    path: str | Path | Sequence[Path],
    cfg: DataConfig,
    catalogue: pd.DataFrame | None = None,
) -> PreparedData:
    """:func:`components.data.stream.stream_prepare` on Spark (``data.spark_master``)."""
    require_leave_one_out(cfg, "spark")
    spark = spark_session(cfg.spark_master)
    events = spark_events(spark, path, cfg.columns, cfg.default_event_type).cache()
    try:
        vocab = spark_vocabulary(events)
        if vocab.n_users == 0:
            raise DataError(f"{path}: the dataset has no events")
        vocab, catalogue, report = checked_catalogue(vocab, catalogue)
        seqs = spark_sequences(events, vocab, tail_length(cfg))
    finally:
        events.unpersist()
    split = leave_one_out(seqs, vocab.n_items, cfg.max_len, cfg.min_user_events)
    return PreparedData(vocab, seqs, split, catalogue, report)


def spark_duplicate_rows(events: DataFrame) -> int:
    """Rows repeating an earlier (user, item, time, event type) row: the validation
    suite's batch-wide duplicate count, done by the engine."""
    from pyspark.sql import functions as F

    groups = events.groupBy(USER, ITEM, TIME, EVENT).count()
    row = groups.select(F.sum(F.col("count") - 1).alias("dups")).collect()[0]
    return int(row["dups"] or 0)
