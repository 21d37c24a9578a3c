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
ranked by (time, file, position in file) newest first, computed on the executors and
written by them as Parquet in the stream engine's user-bucket layout: the driver (or each
data-parallel rank) reads its buckets in passes, never every tail at once.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
from collections.abc import Iterator, Sequence
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
    BUCKET,
    EVENT_IDX,
    ITEM_IDX,
    RANK,
    TAIL_SCHEMA,
    USER_IDX,
    EventFiles,
    Shard,
    list_event_files,
    plan_passes,
    require_bucket_dir,
    require_leave_one_out,
    shared_buckets,
    tail_length,
    tail_sequences,
    user_buckets_of,
)
from components.errors import ConfigError, DataError

if TYPE_CHECKING:
    from pyspark import StorageLevel
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

FILE = "_file"
POS = "_pos"
_SESSIONS: dict[str, SparkSession] = {}
_GUARD = threading.Lock()


#: the config key of the driver's heap, named by the error when a session stops
DRIVER_MEMORY_KEY = "data.spark_driver_memory_mb"


def spark_session(master: str, driver_memory_mb: int) -> SparkSession:
    """One Spark session per master per process (UTC, few shuffle partitions, Arrow
    transfers, Parquet nanosecond timestamps read as int64 nanoseconds, timestamps written
    as Parquet microseconds, not INT96). ``driver_memory_mb`` (``data.spark_driver_memory_mb``)
    is the JVM's heap, set when the process's first session starts the JVM: every session
    recops starts (the data stages, the Feast store's, the benchmarks') comes here."""
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
                .config("spark.driver.memory", f"{driver_memory_mb}m")
                .getOrCreate()
            )
            _SESSIONS[master].sparkContext.setLogLevel("ERROR")
        return _SESSIONS[master]


#: the JVM's message for any call on a stopped SparkContext (``assertNotStopped``)
_STOPPED = "Cannot call methods on a stopped SparkContext"


def context_stopped(spark: SparkSession) -> bool:
    """Whether ``spark``'s context has stopped (the JVM stops it after a task runs out of
    heap; PySpark's side does not know).

    PySpark has no public ``isStopped`` (Scala's ``SparkContext.isStopped`` is reached
    only through the private ``_jsc``, and ``SparkSession.getActiveSession`` is per
    thread). ``SparkContext.defaultParallelism`` is public and asks the JVM's context,
    which first asserts that it is not stopped: one Py4J call, no job. Any other failure
    of the call is raised as it is."""
    from py4j.protocol import Py4JJavaError

    try:
        _ = spark.sparkContext.defaultParallelism
    except Py4JJavaError as exc:
        if _STOPPED in str(exc):
            return True
        raise
    return False


def stopped_session_error(spark: SparkSession, work: str) -> ConfigError | None:
    """The error to raise when ``spark``'s context has stopped during ``work`` (a task out
    of heap stops a local session: its jobs then fail with unrelated messages), naming
    the config key; None while the session runs. Not a :class:`DataError`: the batch is
    not at fault (ingest would reject it as unreadable)."""
    if not context_stopped(spark):
        return None
    heap = spark.sparkContext.getConf().get("spark.driver.memory", "1g")
    return ConfigError(
        f"Spark stopped while {work} (the driver's heap of {heap} ran out?)",
        hint=f"raise {DRIVER_MEMORY_KEY} (a new process starts the JVM with it)",
    )


@contextlib.contextmanager
def cached(frame: DataFrame, work: str, level: StorageLevel | None = None) -> Iterator[DataFrame]:
    """``frame`` cached (or persisted at ``level``) for the block and released after it.
    A block that ran while the session stopped (a task out of heap stops a local
    context; its later calls fail with unrelated Py4J errors, or are swallowed: GX then
    reports every check failed) raises :func:`stopped_session_error` naming the heap's
    key, whether the block failed or returned; after a stop nothing is left to release
    (``unpersist`` would raise over it)."""
    kept = frame.cache() if level is None else frame.persist(level)
    stopped: ConfigError | None = None
    try:
        yield kept
    except Exception as exc:
        stopped = stopped_session_error(frame.sparkSession, work)
        if stopped is None:
            raise
        raise stopped from exc
    else:
        stopped = stopped_session_error(frame.sparkSession, work)
        if stopped is not None:
            raise stopped
    finally:
        if stopped is None:
            kept.unpersist()


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


def _token_index(
    spark: SparkSession,
    tokens: tuple[str, ...],
    indices: np.ndarray,
    column: str,
    index: str,
    buckets: np.ndarray | None = None,
) -> DataFrame:
    """(token, index) pairs of a vocabulary part, with each token's user bucket when
    ``buckets`` is given."""
    frame = pd.DataFrame({column: pd.Series(tokens, dtype=object), index: indices.astype(np.int64)})
    schema = f"{column} string, {index} long"
    if buckets is not None:
        frame[BUCKET] = buckets.astype(np.int64)
        schema += f", {BUCKET} long"
    return spark.createDataFrame(frame, schema=schema)


def _indexed(frame: DataFrame, parts: Sequence[tuple[str, str, DataFrame, int]]) -> DataFrame:
    """``frame`` joined (broadcast, on the executors) to each part's (token, index)
    table; a token the table lacks gets the part's unknown value."""
    from pyspark.sql import functions as F

    for column, index, known, missing in parts:
        frame = frame.join(F.broadcast(known), on=column, how="left")
        frame = frame.withColumn(index, F.coalesce(F.col(index), F.lit(missing).cast("long")))
    return frame


def write_spark_tails(
    events: DataFrame, vocab: Vocabulary, keep: int, directory: Path, n_buckets: int
) -> None:
    """Each user's last ``keep`` events, written by the executors into ``directory`` as
    Parquet partitioned by the user's bucket: the stream engine's layout
    (``_bucket=<k>/``, the bucket :func:`components.data.stream.write_user_buckets` gives
    the user), with :data:`components.data.stream.TAIL_SCHEMA`'s columns.

    The indices are the vocabulary's own (:meth:`Vocabulary.user_index` and the others,
    ``UNKNOWN_USER`` and ``PAD`` for an unknown token), joined on the executors from
    broadcast tables. The events are shuffled once, by bucket: the window ranking each
    user's events (time, file, position; newest first) runs within a bucket's
    partition, and the write finds each bucket in one partition (one file a bucket)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    spark = events.sparkSession
    users = _token_index(
        spark,
        vocab.users,
        vocab.user_index(vocab.users),
        USER,
        USER_IDX,
        user_buckets_of(vocab.users, n_buckets),
    )
    keyed = _indexed(events, [(USER, USER_IDX, users, UNKNOWN_USER)])
    newest_first = Window.partitionBy(BUCKET, USER_IDX).orderBy(
        F.col(TIME).desc(), F.col(FILE).desc(), F.col(POS).desc()
    )
    ranked = keyed.repartition(BUCKET).withColumn(RANK, F.row_number().over(newest_first))
    tails = ranked.filter(F.col(RANK) <= keep)
    others = [
        (column, index, _token_index(spark, tokens, lookup(tokens), column, index), PAD)
        for column, index, tokens, lookup in (
            (ITEM, ITEM_IDX, vocab.items, vocab.item_index),
            (EVENT, EVENT_IDX, vocab.event_types, vocab.event_index),
        )
    ]
    out = _indexed(tails, others).select(
        BUCKET, USER_IDX, ITEM_IDX, F.col(TIME).cast("long").alias(TIME), EVENT_IDX, RANK
    )
    out.write.partitionBy(BUCKET).parquet(str(directory))


def spark_sequences(
    events: DataFrame,
    vocab: Vocabulary,
    n_rows: int,
    cfg: DataConfig,
    *,
    shard: Shard | None = None,
    bucket_dir: str | Path | None = None,
) -> Sequences:
    """CSR sequences of the vocabulary users' last ``max_len + 3`` events (``shard``'s
    users only, when given): Spark writes every user's tail bucketed
    (:func:`write_spark_tails`, once for all the ranks into ``bucket_dir``), and this
    process reads only its buckets, in as many passes as ``data.memory_budget_mb``
    requires (:func:`components.data.stream.tail_sequences`): never every tail at once.

    Without ``shard`` the tails go to a temporary folder under ``data.bucket_dir`` (the
    system's when unset, which a cluster's executors cannot reach: there the key must
    name storage they share with the driver).
    ``events`` is held by :func:`cached`, whose block names the heap's key when the
    session stops."""
    keep = tail_length(cfg)
    plan = plan_passes(n_rows, vocab.n_users, vocab.n_items, keep, cfg.memory_budget_mb)
    master = events.sparkSession.sparkContext.master or ""
    if bucket_dir is None and cfg.bucket_dir is None and not master.startswith("local"):
        raise ConfigError(
            f"data.spark_master={master}: the executors write the tails where the driver "
            "reads them, and data.bucket_dir is unset",
            hint="set data.bucket_dir to a folder on storage they share",
        )

    def write(directory: Path, n_buckets: int) -> None:
        write_spark_tails(events, vocab, keep, directory, n_buckets)

    with contextlib.ExitStack() as stack:
        if bucket_dir is None:
            if cfg.bucket_dir is not None:
                Path(cfg.bucket_dir).mkdir(parents=True, exist_ok=True)
            temporary = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="recops-spark-", dir=cfg.bucket_dir)
            )
            bucket_dir = Path(temporary) / "tails"
        mine = shared_buckets(write, n_rows, bucket_dir, shard or Shard(0, 1), TAIL_SCHEMA)
        return tail_sequences(mine, vocab, plan.passes)


def spark_prepare(
    path: str | Path | Sequence[Path],
    cfg: DataConfig,
    catalogue: pd.DataFrame | None = None,
    *,
    shard: Shard | None = None,
    bucket_dir: str | Path | None = None,
) -> PreparedData:
    """:func:`components.data.stream.stream_prepare` on Spark (``data.spark_master``),
    with ``shard`` and ``bucket_dir`` as there: the tails are bucketed once for all the
    ranks and each rank reads only its buckets."""
    require_leave_one_out(cfg, "spark")
    require_bucket_dir(shard, bucket_dir)
    spark = spark_session(cfg.spark_master, cfg.spark_driver_memory_mb)
    n_rows = _event_files(path).n_rows
    read = spark_events(spark, path, cfg.columns, cfg.default_event_type)
    with cached(read, "preparing the sequences") as events:
        vocab = spark_vocabulary(events)
        if vocab.n_users == 0:
            raise DataError(f"{path}: the dataset has no events")
        vocab, catalogue, report = checked_catalogue(vocab, catalogue)
        seqs = spark_sequences(events, vocab, n_rows, cfg, shard=shard, bucket_dir=bucket_dir)
    split = leave_one_out(seqs, vocab.n_items, cfg.max_len, cfg.min_user_events)
    return PreparedData(vocab, seqs, split, catalogue, report, sharded=shard is not None)


def spark_duplicate_rows(events: DataFrame) -> int:
    """Rows repeating an earlier (user, item, time, event type) row: the validation
    suite's batch-wide duplicate count, done by the engine."""
    from pyspark.sql import functions as F

    groups = events.groupBy(USER, ITEM, TIME, EVENT).count()
    row = groups.select(F.sum(F.col("count") - 1).alias("dups")).collect()[0]
    return int(row["dups"] or 0)
