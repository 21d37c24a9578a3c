"""``recops bench data``: generate, load, normalise and split N synthetic events.

Two engines (``data.engine``): ``memory`` (one pandas frame of all events, the small-data
path) and ``stream`` (partitioned Parquet read lazily by polars, per-user tails only,
memory bounded by ``data.memory_budget_mb``: :mod:`components.data.stream`). Each stage's
peak RSS is the whole process's peak while the stage runs (what the machine must hold).
"""

from __future__ import annotations

import gc
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.common import StageFigures, measure, measurement_lock, print_table, write_report
from components.data.config import DataConfig, SyntheticConfig

if TYPE_CHECKING:
    import pandas as pd

    from components.data.sequences import Sequences, Vocabulary
    from components.data.splits import Split
    from components.data.stream import UserBuckets
    from components.features.config import FeaturesConfig
    from components.validation.report import ValidationReport
    from components.workspace import Workspace

ENGINES = ("memory", "stream", "spark")


def bench_synthetic(n_events: int, seed: int = 7) -> SyntheticConfig:
    """About 50 events per user and 200 per item."""
    return SyntheticConfig(
        n_users=max(1, n_events // 50),
        n_items=max(100, n_events // 200),
        n_events=n_events,
        seed=seed,
        start="2024-01-01T00:00:00Z",
    )


def _memory_stages(synth: SyntheticConfig, folder: Path, cfg: DataConfig) -> list[StageFigures]:
    from components.data.loaders import load_events
    from components.data.prepare import prepare
    from components.data.synthetic import write_events_parquet

    path = folder / "events.parquet"
    stages = []
    with measure("generate+write parquet") as fig:
        write_events_parquet(synth, path)
    stages.append(fig)
    with measure("load+normalise") as fig:
        events = load_events(path, "parquet")
    stages.append(fig)
    with measure("sequences+split") as fig:
        prepared = prepare(events, cfg)
    fig.extra = prepared.split.summary()
    stages.append(fig)
    return stages


#: the stream engine's stages, in order; ``--stages`` runs a subset, each reusing what
#: the earlier stages left in ``--keep-dir`` (so a long run is measured stage by stage)
STREAM_STAGES = (
    "generate",
    "load",
    "bucket",
    "vocabulary",
    "validate",
    "version",
    "features",
    "sequences",
)


def _stream_stages(
    synth: SyntheticConfig,
    folder: Path,
    cfg: DataConfig,
    events_per_file: int,
    only: tuple[str, ...] = STREAM_STAGES[1:],
) -> list[StageFigures]:
    """The stages in ``only`` (the events are generated when asked or missing)."""
    from components.data.stream import (
        check_files,
        list_event_files,
        scan_events,
        write_events_dataset,
    )

    stages = []
    if "generate" in only or not (folder / "events").exists():
        shutil.rmtree(folder / "events", ignore_errors=True)
        with measure("generate+write parquet (partitioned)") as fig:
            write_events_dataset(synth, folder / "events", events_per_file)
        stages.append(fig)
    gc.collect()
    with measure("load+normalise (scan + row checks)") as fig:
        files = list_event_files(folder / "events")
        if "load" in only:
            check_files(files, cfg.columns, cfg.default_event_type)
        lazy = scan_events(files, cfg.columns, cfg.default_event_type)
    fig.extra = {"files": len(files.paths)}
    if "load" in only:
        stages.append(fig)
    if not {"bucket", "validate", "version", "features", "sequences"} & set(only):
        return stages
    buckets, figure = _bucket_stage(lazy, files.n_rows, folder, "bucket" in only)
    stages += figure
    if "validate" in only or "version" in only:
        stages += _ingest_stages(folder, cfg, buckets, only)
    if "features" in only:
        stages += _feature_stages(lazy, buckets, folder, cfg)
    if "vocabulary" in only or "sequences" in only:
        stages += _sequence_stages(lazy, files.n_rows, buckets, cfg, only)
    return stages


def _bucket_stage(
    lazy: Any, n_rows: int, folder: Path, measured: bool
) -> tuple[UserBuckets, list[StageFigures]]:
    """The user buckets under ``folder/buckets``: written (and measured) when asked or
    missing, else read back."""
    from components.data.stream import bucket_count, read_user_buckets, write_user_buckets

    done = folder / "buckets" / "_done"
    if not measured and done.exists():
        return read_user_buckets(folder / "buckets", int(done.read_text())), []
    shutil.rmtree(folder / "buckets", ignore_errors=True)
    with measure("bucket by user hash (once)") as fig:
        buckets = write_user_buckets(lazy, folder / "buckets", bucket_count(n_rows))
    done.write_text(str(buckets.n_buckets))
    fig.extra = {"buckets": buckets.n_buckets}
    return buckets, [fig]


def _feature_stages(
    lazy: Any, buckets: UserBuckets, folder: Path, cfg: DataConfig
) -> list[StageFigures]:
    """Feast's offline tables built in passes (user passes over the user buckets, item
    passes over the files) within ``data.memory_budget_mb``, written as day partitions
    into a fresh workspace under ``folder``; then ``apply`` and a full materialization
    into the SQLite online store (one pass's files at a time)."""
    from components.features.config import FeaturesConfig
    from components.features.store import apply_repo, definitions, forget_stores, materialize
    from components.features.streamed import write_feature_tables_streamed
    from components.workspace import Workspace

    shutil.rmtree(folder / "features-ws", ignore_errors=True)
    ws = Workspace.at(folder / "features-ws").ensure()
    features = FeaturesConfig()
    definitions(features)  # importing Feast is a fixed cost, not the stage's
    gc.collect()
    with measure("feature tables (passes, day partitions)") as tables:
        write_feature_tables_streamed(lazy, ws, features, cfg.memory_budget_mb, buckets=buckets)
    files = list(ws.features_dir.rglob("part-*.parquet"))
    tables.extra = {
        "files": len(files),
        "days": len({f.parent for f in files}),
        "bytes_on_disk": sum(f.stat().st_size for f in files),
    }
    gc.collect()
    with measure("materialize (apply + full, SQLite online)") as mat:
        apply_repo(ws, features)
        result = materialize(ws, features, incremental=False)
    mat.extra = {
        "rows": {v.view: v.rows for v in result.views},
        "entities": {v.view: v.entities for v in result.views},
    }
    forget_stores()
    return [tables, mat]


def _sequence_stages(
    lazy: Any, n_rows: int, buckets: UserBuckets, cfg: DataConfig, only: tuple[str, ...]
) -> list[StageFigures]:
    from components.data.splits import leave_one_out
    from components.data.stream import (
        plan_passes,
        stream_sequences,
        stream_vocabulary,
        tail_length,
    )

    stages = []
    with measure("vocabulary") as fig:
        vocab = stream_vocabulary(lazy)
    if "vocabulary" in only:
        stages.append(fig)
    if "sequences" not in only:
        return stages
    gc.collect()
    keep = tail_length(cfg)
    plan = plan_passes(n_rows, vocab.n_users, vocab.n_items, keep, cfg.memory_budget_mb)
    with measure("sequences+split") as fig:
        seqs = stream_sequences(buckets, vocab, keep, plan.passes)
        split = leave_one_out(seqs, vocab.n_items, cfg.max_len, cfg.min_user_events)
    fig.extra = {**split.summary(), "passes": plan.passes, "budget_mb": plan.budget_mb}
    stages.append(fig)
    return stages


#: the Spark engine's stages, in order; ``compare`` runs the stream engine on the same
#: files and checks the results are equal (same verdict, accepted rows, sequences, every
#: feature value and Feast's point-in-time answers)
SPARK_STAGES = ("generate", "load", "validate", "version", "sequences", "features", "compare")
#: entity rows (events drawn evenly from every file) of the point-in-time comparison
PIT_SAMPLE = 2_000
#: relative tolerance of the float features' comparison (seconds_since_prev, trend)
FEATURE_REL_TOL = 1e-9


@contextmanager
def _stage(name: str, lock: Path | None, children: bool = False) -> Iterator[StageFigures]:
    """:func:`measure` holding the shared measurement ``lock`` (when given), one stage at a
    time, so a long run leaves the machine's other measurements room between its stages;
    the load average when the lock was taken goes into the figures."""
    with measurement_lock(lock) as load, measure(name, children=children) as fig:
        fig.extra["load_avg"] = load
        yield fig


@dataclass
class EngineRun:
    """What one engine made of the batch: its validation report, the version it stored,
    and the prepared vocabulary, sequences and split."""

    report: Any = None
    version: Any = None
    vocab: Vocabulary | None = None
    sequences: Sequences | None = None
    split: Split | None = None
    features: Workspace | None = None  # where its Feast offline tables were written
    features_cfg: FeaturesConfig | None = None


def _spark_stages(
    synth: SyntheticConfig,
    folder: Path,
    cfg: DataConfig,
    events_per_file: int,
    only: tuple[str, ...] = SPARK_STAGES[1:],
    lock: Path | None = None,
) -> tuple[list[StageFigures], dict[str, Any]]:
    """The stream engine's files through Spark at ``cfg.spark_master``: load + normalise +
    vocabulary, GX validation on Spark, versioning (as ingest's spark branch does), and
    sequences + split by a Spark window; with ``compare``, the stream engine's stages on
    the same files and a comparison of the outputs. Peak RSS and CPU count Spark's JVM (a
    child process) beside this process. Returns the figures and the comparison."""
    from components.data.spark import spark_session
    from components.data.stream import write_events_dataset

    stages: list[StageFigures] = []
    if "generate" in only or not (folder / "events").exists():
        shutil.rmtree(folder / "events", ignore_errors=True)
        with _stage("generate+write parquet (partitioned)", lock) as fig:
            write_events_dataset(synth, folder / "events", events_per_file)
        stages.append(fig)
    with _stage("spark session start", lock, children=True) as fig:
        spark_session(cfg.spark_master, cfg.spark_driver_memory_mb)
    stages.append(fig)
    stages.append(_spark_warmup(folder, cfg, lock))
    ours = EngineRun()
    stages += _spark_engine(folder, cfg, only, lock, ours)
    if "compare" not in only:
        return stages, {}
    theirs = EngineRun()
    stages += stream_reference(folder, cfg, lock, theirs, features=ours.features is not None)
    compared = same_outputs(ours, theirs)
    if ours.features is not None:
        checks, details, figures = same_features(ours, theirs, folder / "events", lock)
        stages += figures
        compared = {
            **compared,
            **checks,
            "all_equal": compared["all_equal"] and all(checks.values()),
        }
        compared["feature_details"] = details
    return stages, compared


def _validate_on_spark(
    events_dir: Path, ws: Workspace, cfg: DataConfig, batch_id: str
) -> ValidationReport:
    """The files validated by GX on Spark as ingest does (the default suite, the
    session at ``data.spark_master`` with ``data.spark_driver_memory_mb``)."""
    from components.validation.config import ValidationConfig
    from components.validation.spark import validate_spark_files

    return validate_spark_files(
        events_dir,
        ValidationConfig(),
        ws,
        batch_id=batch_id,
        master=cfg.spark_master,
        driver_memory_mb=cfg.spark_driver_memory_mb,
    )


def _spark_warmup(folder: Path, cfg: DataConfig, lock: Path | None) -> StageFigures:
    """Every Spark stage once on 2,000 events: the JVM compiles Spark's and GX's code on
    first use (a fixed cost, tens of seconds on two shared cores, not the batch's)."""
    from components.data.spark import spark_prepare
    from components.data.stream import write_events_dataset
    from components.workspace import Workspace

    warm = folder / "warmup"
    shutil.rmtree(warm, ignore_errors=True)
    write_events_dataset(bench_synthetic(2_000), warm / "events", 1_000)
    ws = Workspace.at(warm / "ws").ensure()
    with _stage("warm-up (2,000 events, every spark stage)", lock, children=True) as fig:
        _validate_on_spark(warm / "events", ws, cfg, "warmup")
        spark_prepare(warm / "events", cfg)
        _spark_feature_tables(warm / "events", ws, cfg, _spark_features_cfg(cfg))
    return fig


def _spark_feature_tables(
    events_dir: Path, ws: Workspace, cfg: DataConfig, features: FeaturesConfig
) -> None:
    """Feast's offline tables of the files, built and written by Spark into ``ws``."""
    from components.data.spark import cached, spark_events, spark_session
    from components.features.spark_tables import write_feature_tables_spark

    spark = spark_session(cfg.spark_master, cfg.spark_driver_memory_mb)
    with cached(spark_events(spark, events_dir), "building the feature tables") as events:
        write_feature_tables_spark(events, ws, features, cfg.memory_budget_mb)


def _spark_features_cfg(cfg: DataConfig) -> FeaturesConfig:
    """Feast's Spark offline store on the bench's Spark session."""
    from components.features.config import FeaturesConfig

    return FeaturesConfig(offline_store="spark", spark_master=cfg.spark_master)


def _spark_engine(
    folder: Path, cfg: DataConfig, only: tuple[str, ...], lock: Path | None, out: EngineRun
) -> list[StageFigures]:
    from components.data.spark import cached, spark_events, spark_session, spark_vocabulary

    stages = []
    if {"validate", "version", "compare"} & set(only):
        # as ingest does: GX reads the files itself, with no other cached frame in the heap
        ws = _fresh_workspace(folder / "ws-spark")
        with _stage("validate (GX on spark)", lock, children=True) as fig:
            out.report = _validate_on_spark(folder / "events", ws, cfg, "bench")
        fig.extra = {**fig.extra, "passed": out.report.passed}
        stages.append(fig)
        if {"version", "compare"} & set(only):
            stages.append(_version_stage("version (spark engine)", folder, ws, cfg, out, lock))
    if {"load", "sequences", "compare"} & set(only):
        spark = spark_session(cfg.spark_master, cfg.spark_driver_memory_mb)
        with cached(spark_events(spark, folder / "events"), "the bench's stages") as events:
            with _stage("load+normalise+vocabulary (spark)", lock, children=True) as fig:
                out.vocab = spark_vocabulary(events)
            fig.extra = {**fig.extra, "users": out.vocab.n_users, "items": out.vocab.n_items}
            stages.append(fig)
            if {"sequences", "compare"} & set(only):
                stages += _spark_sequence_stages(events, folder, cfg, lock, out, only)
    if {"features", "compare"} & set(only):
        stages.append(_spark_feature_stage(folder, cfg, lock, out))
    return stages


def _spark_feature_stage(
    folder: Path, cfg: DataConfig, lock: Path | None, out: EngineRun
) -> StageFigures:
    """Feast's offline tables built and written by Spark (day partitions, as many files
    a day as the stream engine's passes) into a fresh workspace, from a fresh read of
    the files (cached as the flow's feature task does)."""
    from components.features.store import definitions

    ws = _fresh_workspace(folder / "features-spark")
    features = _spark_features_cfg(cfg)
    definitions(features)  # importing Feast is a fixed cost, not the stage's
    with _stage("feature tables (spark, day partitions)", lock, children=True) as fig:
        _spark_feature_tables(folder / "events", ws, cfg, features)
    out.features, out.features_cfg = ws, features
    fig.extra = {**fig.extra, **_files_written(ws)}
    return fig


def _files_written(ws: Workspace) -> dict[str, Any]:
    files = list(ws.features_dir.rglob("part-*.parquet"))
    return {
        "files": len(files),
        "days": len({f.parent for f in files}),
        "bytes_on_disk": sum(f.stat().st_size for f in files),
    }


#: the sharded read is measured with this many data-parallel ranks
RANKS = 4


def _spark_sequence_stages(
    events: Any,
    folder: Path,
    cfg: DataConfig,
    lock: Path | None,
    out: EngineRun,
    only: tuple[str, ...],
) -> list[StageFigures]:
    """Sequences + split from the tails Spark writes bucketed by user into
    ``folder/spark-tails``, read as :data:`RANKS` data-parallel ranks do: rank 0 (Spark
    writes every user's tail, the rank reads only its buckets), then ranks 1.. one after
    the other (each rank's result dropped before the next: the peak is one rank's).
    With ``compare``, also every user at once on the driver (all the buckets, in passes:
    the result the comparison needs, as large as the stream engine's)."""
    from components.data.spark import spark_sequences
    from components.data.stream import Shard, list_event_files

    assert out.vocab is not None
    vocab = out.vocab
    tails = folder / "spark-tails"
    shutil.rmtree(tails, ignore_errors=True)
    n_rows = list_event_files(folder / "events").n_rows

    def rank_split(shard: Shard) -> dict[str, Any]:
        seqs = spark_sequences(events, vocab, n_rows, cfg, shard=shard, bucket_dir=tails)
        return _split(seqs, vocab, cfg).summary()

    name = f"sequences+split, rank 0 of {RANKS} (spark writes the tails by bucket)"
    with _stage(name, lock, children=True) as first:
        first.extra.update(rank_split(Shard(0, RANKS)))
    gc.collect()
    with _stage(f"sequences+split, ranks 1-{RANKS - 1} (each alone)", lock, children=True) as rest:
        for rank in range(1, RANKS):
            rest.extra[f"rank_{rank}"] = rank_split(Shard(rank, RANKS))
            gc.collect()
    stages = [first, rest]
    if "compare" in only:
        with _stage("sequences+split, every user (all buckets)", lock, children=True) as fig:
            out.sequences = spark_sequences(events, vocab, n_rows, cfg, bucket_dir=tails)
            out.split = _split(out.sequences, vocab, cfg)
        fig.extra = {**fig.extra, **out.split.summary()}
        stages.append(fig)
    return stages


def _fresh_workspace(root: Path) -> Workspace:
    from components.workspace import Workspace

    shutil.rmtree(root, ignore_errors=True)
    return Workspace.at(root).ensure()


def _version_stage(
    name: str, folder: Path, ws: Workspace, cfg: DataConfig, out: EngineRun, lock: Path | None
) -> StageFigures:
    """Version the validated folder as ingest does for a file batch (polars' streaming
    sink in as many passes as the budget needs for the digest, then DVC)."""
    from components.data.stream import GX_ROW_BYTES, plan_passes
    from components.versioning.config import VersioningConfig
    from components.versioning.dvc_store import DatasetStore, FileBatch

    report = out.report
    passes = plan_passes(
        report.n_rows, report.n_users, report.n_items, 0, cfg.memory_budget_mb, GX_ROW_BYTES
    ).passes
    with _stage(name, lock) as fig:
        out.version = DatasetStore(ws, VersioningConfig(push=False)).accept(
            FileBatch(folder / "events", passes), "bench", report
        )
    fig.extra = {**fig.extra, "passes": passes, "version": out.version.short}
    return fig


def _split(seqs: Sequences, vocab: Vocabulary, cfg: DataConfig) -> Split:
    from components.data.splits import leave_one_out

    return leave_one_out(seqs, vocab.n_items, cfg.max_len, cfg.min_user_events)


def stream_reference(
    folder: Path, cfg: DataConfig, lock: Path | None, out: EngineRun, features: bool = False
) -> list[StageFigures]:
    """The stream engine on the same files (validate in passes, version, prepare; with
    ``features`` its Feast offline tables in passes, DuckDB offline store), for the
    comparison."""
    from components.data.stream import stream_prepare
    from components.validation.config import ValidationConfig
    from components.validation.runner import gx_context, validate_event_files

    ws = _fresh_workspace(folder / "ws-stream")
    gx_context(ws)
    with _stage("stream engine: validate (GX, passes)", lock) as fig:
        out.report = validate_event_files(
            folder / "events",
            ValidationConfig(),
            ws,
            batch_id="bench",
            memory_budget_mb=cfg.memory_budget_mb,
        )
    stages = [fig, _version_stage("stream engine: version", folder, ws, cfg, out, lock)]
    with _stage("stream engine: load+sequences+split", lock) as fig:
        prepared = stream_prepare(folder / "events", cfg)
    out.vocab, out.sequences, out.split = prepared.vocab, prepared.sequences, prepared.split
    stages.append(fig)
    if features:
        stages.append(_stream_feature_stage(folder, cfg, lock, out))
    return stages


def _stream_feature_stage(
    folder: Path, cfg: DataConfig, lock: Path | None, out: EngineRun
) -> StageFigures:
    from components.data.stream import list_event_files, scan_events
    from components.features.config import FeaturesConfig
    from components.features.store import definitions
    from components.features.streamed import write_feature_tables_streamed

    ws = _fresh_workspace(folder / "features-stream")
    features = FeaturesConfig()
    definitions(features)  # importing Feast is a fixed cost, not the stage's
    lazy = scan_events(list_event_files(folder / "events"))
    with _stage("stream engine: feature tables (passes)", lock) as fig:
        write_feature_tables_streamed(lazy, ws, features, cfg.memory_budget_mb)
    out.features, out.features_cfg = ws, features
    fig.extra = {**fig.extra, **_files_written(ws)}
    return fig


def same_features(
    ours: EngineRun, theirs: EngineRun, events_dir: Path, lock: Path | None
) -> tuple[dict[str, bool], dict[str, Any], list[StageFigures]]:
    """Every value of both engines' feature tables (day by day, rows sorted by entity and
    time; floats within :data:`FEATURE_REL_TOL`), and Feast's point-in-time features for
    :data:`PIT_SAMPLE` entity rows through each engine's offline store (Spark's for
    ``ours``). Returns the checks, their details and the retrievals' figures."""
    from components.data.schema import ITEM, USER
    from components.features.partitions import compare_sources
    from components.features.store import ITEM_VIEW, USER_VIEW, source_paths

    assert ours.features and theirs.features and ours.features_cfg and theirs.features_cfg
    checks: dict[str, bool] = {}
    details: dict[str, Any] = {"rel_tol": FEATURE_REL_TOL}
    mine = source_paths(ours.features, ours.features_cfg)
    other = source_paths(theirs.features, theirs.features_cfg)
    for view, key in ((USER_VIEW, USER), (ITEM_VIEW, ITEM)):
        found = compare_sources(other[view], mine[view], key, FEATURE_REL_TOL)
        checks[f"feature_values_{view}"] = found.equal
        details[view] = found.__dict__
    labels = pit_sample(events_dir, PIT_SAMPLE)
    frames, figures = [], []
    for name, run in (("spark offline store", ours), ("stream engine's duckdb store", theirs)):
        frame, fig = _pit_retrieval(run, labels, name, lock)
        frames.append(frame)
        figures.append(fig)
    checks["pit_retrieval"], details["pit_retrieval"] = _same_frames(frames[0], frames[1])
    details["pit_rows"] = len(labels)
    return checks, details, figures


def pit_sample(events_dir: Path, n: int, seed: int = 11) -> pd.DataFrame:
    """``n`` events (user, item, time) drawn evenly from every file of the batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from components.data.schema import ITEM, TIME, USER
    from components.data.stream import list_event_files

    files = list_event_files(events_dir)
    rng = np.random.default_rng(seed)
    share = max(1, n // len(files.paths))
    parts = []
    for path, rows in zip(files.paths, files.rows, strict=True):
        table = pq.read_table(path, columns=[USER, ITEM, TIME])
        parts.append(table.take(rng.choice(rows, size=min(share, rows), replace=False)))
    sample = pa.concat_tables(parts).to_pandas()
    return sample.rename(columns={TIME: "event_timestamp"})


def _pit_retrieval(
    run: EngineRun, labels: pd.DataFrame, name: str, lock: Path | None
) -> tuple[pd.DataFrame, StageFigures]:
    from components.features.store import apply_repo, historical_features

    assert run.features is not None and run.features_cfg is not None
    apply_repo(run.features, run.features_cfg)
    with _stage(f"Feast point-in-time, {len(labels):,} rows ({name})", lock, children=True) as fig:
        frame = historical_features(run.features, run.features_cfg, labels)
    return frame, fig


def _same_frames(a: pd.DataFrame, b: pd.DataFrame) -> tuple[bool, str]:
    """Whether two point-in-time frames hold the same rows and values (array features as
    lists, floats within :data:`FEATURE_REL_TOL`), and the first difference."""
    import pandas as pd

    def comparable(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.copy()
        for column in out.columns:
            if out[column].map(lambda v: hasattr(v, "__len__") and not isinstance(v, str)).any():
                out[column] = out[column].map(lambda v: None if v is None else list(v))
        keys = [c for c in ("user_id", "item_id", "event_timestamp") if c in out.columns]
        return out.sort_values(keys).reset_index(drop=True)

    try:
        pd.testing.assert_frame_equal(
            comparable(a), comparable(b), check_dtype=False, rtol=FEATURE_REL_TOL
        )
    except AssertionError as exc:
        return False, str(exc).splitlines()[0]
    return True, ""


def same_outputs(ours: EngineRun, theirs: EngineRun) -> dict[str, Any]:
    """Which outputs of two engines on the same batch are equal: the validation verdict
    with every check's outcome and the batch statistics; the accepted rows (the stored
    version's row, user and item counts and its content digest); the vocabulary; the
    per-user sequences (items, times, event types, offsets); the split's training
    sequences and evaluation tensors. Each is compared in full, element by element."""
    checks = {
        "validation_verdict": ours.report.passed == theirs.report.passed,
        "validation_checks": _outcomes(ours.report) == _outcomes(theirs.report),
        "batch_stats": _stats(ours.report) == _stats(theirs.report),
        "accepted_rows": _accepted(ours.version) == _accepted(theirs.version),
        "vocabulary": ours.vocab == theirs.vocab,
        "sequences": _same_sequences(ours.sequences, theirs.sequences),
        "split": _same_split(ours.split, theirs.split),
    }
    return {"all_equal": all(checks.values()), **checks}


def _outcomes(report: Any) -> dict[str, tuple[bool, Any]]:
    return {r.name: (r.success, r.observed) for r in report.results}


def _stats(report: Any) -> tuple[Any, ...]:
    return (report.n_rows, report.n_users, report.n_items)


def _accepted(version: Any) -> tuple[Any, ...]:
    return (version.n_rows, version.n_users, version.n_items, version.batch_digests)


def _same_sequences(a: Sequences | None, b: Sequences | None) -> bool:
    if a is None or b is None:
        return False
    return all(
        _same_array(getattr(a, name), getattr(b, name))
        for name in ("offsets", "values", "timestamps", "events")
    )


def _same_array(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def _same_split(a: Split | None, b: Split | None) -> bool:
    if a is None or b is None:
        return False
    evals = all(
        _same_array(getattr(getattr(a, part), name), getattr(getattr(b, part), name))
        for part in ("valid", "test")
        for name in ("users", "histories", "targets", "events", "target_events")
    )
    return evals and _same_sequences(a.train, b.train)


def _ingest_stages(
    folder: Path, cfg: DataConfig, buckets: UserBuckets, only: tuple[str, ...]
) -> list[StageFigures]:
    """GX validation of the folder in passes over its user buckets (its report kept in
    ``folder/report.json``), then versioning it with DVC (from that report)."""
    from components.data.stream import GX_ROW_BYTES, plan_passes
    from components.errors import DataError
    from components.validation.config import ValidationConfig
    from components.validation.report import ValidationReport
    from components.validation.runner import gx_context, validate_event_files
    from components.versioning.config import VersioningConfig
    from components.versioning.dvc_store import DatasetStore, FileBatch
    from components.workspace import Workspace

    stages = []
    saved = folder / "report.json"
    if "validate" in only:
        shutil.rmtree(folder / "ws", ignore_errors=True)
        ws = Workspace.at(folder / "ws").ensure()
        gx_context(ws)  # context creation is a fixed cost, not the stage's
        with measure("validate (GX, passes over buckets)") as fig:
            report = validate_event_files(
                folder / "events",
                ValidationConfig(),
                ws,
                batch_id="bench",
                memory_budget_mb=cfg.memory_budget_mb,
                buckets=buckets,
            )
        fig.extra = {"passed": report.passed, "chunks": report.n_chunks}
        saved.write_text(report.model_dump_json())
        stages.append(fig)
    if "version" not in only:
        return stages
    if not saved.exists():
        raise DataError(f"{saved}: no validation report; run the validate stage first")
    report = ValidationReport.model_validate_json(saved.read_text())
    ws = Workspace.at(folder / "ws").ensure()
    passes = plan_passes(
        report.n_rows, report.n_users, report.n_items, 0, cfg.memory_budget_mb, GX_ROW_BYTES
    ).passes
    with measure("version (digest + sink + dvc add)") as fig:
        version = DatasetStore(ws, VersioningConfig(push=False)).accept(
            FileBatch(folder / "events", passes, buckets=buckets), "bench", report
        )
    fig.extra = {"passes": passes, "version": version.short}
    stages.append(fig)
    return stages


def run_split_benchmark(
    n_events: int, json_out: Path | None = None, per_user: int = 50, seed: int = 7
) -> dict[str, Any]:
    """Peak RSS and time of leave-one-out alone over ``n_events`` CSR events already in
    memory (``n_events // per_user`` users of ``per_user`` random items each, max_len 50):
    the assembly step that dominated the stream engine's memory at 100M events, measured
    at that size in a minute instead of the hours generating 100M events takes here."""
    from components.data.sequences import Sequences
    from components.data.splits import leave_one_out

    n_users = max(1, n_events // per_user)
    offsets = np.arange(n_users + 1, dtype=np.int64) * per_user
    total = int(offsets[-1])
    rng = np.random.default_rng(seed)
    seqs = Sequences(
        rng.integers(1, 500_001, total),
        offsets,
        np.arange(total, dtype=np.int64),
        rng.integers(1, 5, total),
    )
    gc.collect()
    with measure("leave-one-out split (sequences in memory)") as fig:
        split = leave_one_out(seqs, 500_000, 50)
    fig.extra = split.summary()
    print_table(
        f"bench data --split-only: {total:,} events, {n_users:,} users",
        ["stage", "seconds", "CPU s", "peak RSS MB (with the input sequences)"],
        [(fig.name, fig.seconds, fig.cpu_seconds, fig.peak_rss_mb)],
    )
    return write_report(
        json_out,
        "data-split",
        {
            "events": total,
            "users": n_users,
            "seconds": fig.seconds,
            "cpu_seconds": fig.cpu_seconds,
            "peak_rss_mb": fig.peak_rss_mb,
            **fig.extra,
        },
    )


def run_data_benchmark(
    n_events: int,
    json_out: Path | None = None,
    seed: int = 7,
    *,
    engine: str = "memory",
    budget_mb: int = 2048,
    events_per_file: int = 1_000_000,
    keep_dir: Path | None = None,
    stages: tuple[str, ...] | None = None,
    spark_master: str = "local[2]",
    spark_driver_memory_mb: int = 1024,
    lock: Path | None = None,
) -> dict[str, Any]:
    """Measure each data stage on ``n_events`` synthetic events with ``engine``.

    With ``keep_dir`` (stream and spark engines) the partitioned files, user buckets,
    workspace and validation report are kept there, and a later run with the same folder
    skips generating the events; ``stages`` (a subset of :data:`STREAM_STAGES`, or of
    :data:`SPARK_STAGES` for spark) then measures only those stages, each reusing what the
    earlier ones left (so a long run is measured stage by stage). ``lock``: each stage is
    measured holding this shared lock file (the other stages run without it)."""
    synth = bench_synthetic(n_events, seed)
    cfg = DataConfig(
        max_len=50,
        engine=engine,
        memory_budget_mb=budget_mb,
        spark_master=spark_master,
        spark_driver_memory_mb=spark_driver_memory_mb,
    )
    compared: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="recops-bench-") as tmp:
        if engine in ("stream", "spark"):
            folder = keep_dir or Path(tmp)
            folder.mkdir(parents=True, exist_ok=True)
            if engine == "stream":
                figures = _stream_stages(
                    synth, folder, cfg, events_per_file, stages or STREAM_STAGES[1:]
                )
            else:
                figures, compared = _spark_stages(
                    synth, folder, cfg, events_per_file, stages or SPARK_STAGES[1:], lock
                )
        else:
            figures = _memory_stages(synth, Path(tmp), cfg)
    _print_stages(n_events, engine, budget_mb, figures, compared)
    return write_report(
        json_out,
        "data",
        {
            "events": n_events,
            "users": synth.n_users,
            "engine": engine,
            "memory_budget_mb": budget_mb if engine != "memory" else None,
            "spark_master": spark_master if engine == "spark" else None,
            "stages": [_stage_json(s, n_events) for s in figures],
            **({"equal_to_stream": compared} if compared else {}),
        },
    )


def _stage_json(s: StageFigures, n_events: int) -> dict[str, Any]:
    return {
        "stage": s.name,
        "seconds": s.seconds,
        "events_per_s": n_events / s.seconds if s.seconds else None,
        "cpu_seconds": s.cpu_seconds,
        "children_cpu_seconds": s.children_cpu_seconds,
        "events_per_cpu_s": n_events / s.cpu_seconds if s.cpu_seconds else None,
        "peak_rss_mb": s.peak_rss_mb,
        **s.extra,
    }


def _print_stages(
    n_events: int,
    engine: str,
    budget_mb: int,
    figures: list[StageFigures],
    compared: dict[str, Any],
) -> None:
    title = f"bench data: {n_events:,} synthetic events, engine {engine}" + (
        f", budget {budget_mb} MB" if engine == "stream" else ""
    )
    if engine != "spark":
        rows = [
            (
                s.name,
                s.seconds,
                n_events / s.seconds if s.seconds else 0.0,
                s.cpu_seconds,
                n_events / s.cpu_seconds if s.cpu_seconds else 0.0,
                s.peak_rss_mb,
            )
            for s in figures
        ]
        columns = ["stage", "seconds", "events/s", "CPU s", "events/CPU s", "peak RSS MB"]
        print_table(title, columns, rows)
        return
    rows = [
        (
            s.name,
            s.seconds,
            s.cpu_seconds,
            s.children_cpu_seconds,
            s.peak_rss_mb,
            s.extra.get("load_avg", ""),
        )
        for s in figures
    ]
    columns = [
        "stage",
        "seconds",
        "CPU s (python)",
        "CPU s (JVM)",
        "peak RSS MB (python + JVM)",
        "load avg",
    ]
    print_table(title, columns, rows)
    if compared:
        print_table(
            "equal to the stream engine on the same files",
            ["output", "equal"],
            [
                (name, "yes" if same else "NO")
                for name, same in compared.items()
                if isinstance(same, bool)
            ],
        )
