"""``data.engine=spark`` end to end in local mode: GX's Spark datasource gives the stream
engine's verdicts, ingest versions the same events, Feast's Spark offline store gives the
DuckDB store's features. One Spark session (one JVM) for the whole module: starting one
costs 10-30 s on two shared cores."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from components.config import load_config
from components.data.config import DataConfig
from components.data.schema import ITEM, TIME, USER
from components.errors import ValidationFailed
from components.features.config import FeaturesConfig
from components.features.store import (
    historical_features,
    online_user_features,
    refresh_features,
)
from components.lifecycle.ingest import ingest_events
from components.validation.config import ValidationConfig
from components.validation.report import BatchStats
from components.validation.runner import validate_event_files
from components.validation.spark import (
    validate_spark_files,
    validation_partitions,
    with_spark_derived_columns,
)
from components.validation.suite import IS_DUP, duplicate_flags
from components.versioning.config import VersioningConfig
from components.versioning.dvc_store import DatasetStore
from components.workspace import Workspace
from tests.components.validation.conftest import make_events

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_spark")]

MASTER = "local[1]"
SPARK = DataConfig(engine="spark", spark_master=MASTER)
STREAM = DataConfig(engine="stream")


def _parts(frame: pd.DataFrame, folder: Path, rows: int = 300) -> Path:
    folder.mkdir(parents=True)
    for number, lo in enumerate(range(0, len(frame), rows)):
        frame.iloc[lo : lo + rows].to_parquet(folder / f"part-{number:05d}.parquet", index=False)
    return folder


def _outcome(report) -> dict[str, tuple[bool, object]]:
    return {r.name: (r.success, r.observed) for r in report.results}


def _bad_batch() -> pd.DataFrame:
    """Duplicates over the 5 % allowed (across files), an unknown event type, one event
    after the future bound and one before the floor."""
    clean = make_events(900, seed=3)
    batch = pd.concat([clean, clean.iloc[100:180]], ignore_index=True)
    batch.loc[7, "event_type"] = "teleport"
    batch.loc[8, "timestamp"] = pd.Timestamp("2100-01-01", tz="UTC")
    batch.loc[9, "timestamp"] = pd.Timestamp("1980-01-01", tz="UTC")
    return batch


def test_spark_suite_gives_the_stream_engines_verdicts(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path / "ws").ensure()
    cfg = ValidationConfig()
    previous = BatchStats(batch_id="before", n_rows=50, n_users=4, n_items=9)
    catalogue = {f"i{i}" for i in range(36)}  # i36..i39 unknown: over 5 % of the rows
    for name, frame, known in (
        ("good", make_events(900, seed=1), None),
        ("bad", _bad_batch(), catalogue),
    ):
        folder = _parts(frame, tmp_path / name)
        kwargs = {"batch_id": name, "catalogue_items": known, "previous": previous}
        on_spark = validate_spark_files(
            folder, cfg, ws, master=MASTER, driver_memory_mb=SPARK.spark_driver_memory_mb, **kwargs
        )
        streamed = validate_event_files(folder, cfg, ws, memory_budget_mb=2048, **kwargs)
        assert _outcome(on_spark) == _outcome(streamed), name
        assert on_spark.passed == streamed.passed == (name == "good")
        counts = ("n_rows", "n_users", "n_items")
        assert [getattr(on_spark, c) for c in counts] == [getattr(streamed, c) for c in counts]
        assert on_spark.data_docs_path and Path(on_spark.data_docs_path).is_file()
    failed = {r.name for r in on_spark.failures}
    assert {
        "duplicate_share_below_threshold",
        "event_type_known",
        "timestamp_not_in_future",
        "timestamp_after_floor",
        "unknown_item_share_below_threshold",
        "volume_change_within_bounds",
    } <= failed | {r.name for r in on_spark.warnings}


def test_a_batch_in_several_partitions_keeps_the_stream_engines_duplicates(
    tmp_path: Path,
) -> None:
    """The suite's frame is shuffled by the duplicate key into partitions of at most
    ``chunk_rows`` rows (the bounded heap): every duplicate, across files and
    partitions, is flagged as the stream engine flags it, and the verdicts are equal."""
    from components.data.spark import spark_events, spark_session

    clean = make_events(2_600, seed=5)
    batch = pd.concat([clean, clean.iloc[::17], clean.iloc[2_000:2_150]], ignore_index=True)
    folder = _parts(batch, tmp_path / "batch", rows=700)  # duplicates span files
    cfg = ValidationConfig(chunk_rows=1_000)
    partitions = validation_partitions(len(batch), cfg.chunk_rows)
    assert partitions == 3

    spark = spark_session(MASTER, SPARK.spark_driver_memory_mb)
    rows = with_spark_derived_columns(spark, spark_events(spark, folder), None, partitions)
    assert rows.rdd.getNumPartitions() == partitions
    flagged = rows.filter(rows[IS_DUP]).count()
    assert flagged == int(duplicate_flags(batch).sum()) == 153 + 150

    ws = Workspace.at(tmp_path / "ws").ensure()
    on_spark = validate_spark_files(
        folder,
        cfg,
        ws,
        batch_id="parts",
        master=MASTER,
        driver_memory_mb=SPARK.spark_driver_memory_mb,
    )
    streamed = validate_event_files(folder, cfg, ws, batch_id="parts", memory_budget_mb=2048)
    assert _outcome(on_spark) == _outcome(streamed)
    assert not on_spark.passed  # 303 of 2,903 rows repeat one: over the 5 % allowed


def test_spark_ingest_versions_the_stream_engines_events(tmp_path: Path) -> None:
    cfgs = (ValidationConfig(), VersioningConfig(push=False))
    folder = _parts(make_events(900, seed=2), tmp_path / "parts")
    digests = {}
    for engine, data_cfg in (("spark", SPARK), ("stream", STREAM)):
        ws = Workspace.at(tmp_path / engine).ensure()
        got = ingest_events(folder, ws, data_cfg, *cfgs, batch_id="b1")
        assert got.appended and got.report is not None and got.report.passed
        digests[engine] = got.version.batch_digests["b1"]
    assert digests["spark"] == digests["stream"]

    ws = Workspace.at(tmp_path / "spark").ensure()
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "part-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValidationFailed, match="file_loads_as_event_contract"):
        ingest_events(broken, ws, SPARK, *cfgs, batch_id="b2")
    report = next(ws.quarantine_dir.glob("b2*/report.json")).read_text()
    assert "part-00001.parquet: not a readable Parquet file" in report
    assert "batch row 301 onwards" in report
    assert list(DatasetStore(ws, cfgs[1]).current().batches) == ["b1"]


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """Array features as lists (Spark hands back numpy arrays, DuckDB lists), rows sorted."""
    out = frame.copy()
    for column in out.columns:
        if out[column].map(lambda v: hasattr(v, "__len__") and not isinstance(v, str)).any():
            out[column] = out[column].map(lambda v: None if v is None else list(v))
    return out.sort_values(list(out.columns[:3])).reset_index(drop=True)


def test_feast_spark_offline_store_gives_the_duckdb_features(tmp_path: Path, tiny_events) -> None:
    sample = tiny_events[tiny_events[USER].isin(tiny_events[USER].unique()[:50])]
    first = sample[sample[TIME] < sample[TIME].quantile(0.6)]
    end = sample[TIME].max() + timedelta(seconds=1)
    duck_cfg = FeaturesConfig(history_length=5)
    spark_cfg = FeaturesConfig(
        history_length=5, offline_store="spark", spark_master=MASTER, materialize_engine="feast"
    )
    duck = Workspace.at(tmp_path / "duckdb").ensure()
    refresh_features(sample, duck, duck_cfg, end=end)
    on_spark = Workspace.at(tmp_path / "spark").ensure()
    refresh_features(first, on_spark, spark_cfg, end=first[TIME].max() + timedelta(seconds=1))
    second = refresh_features(sample, on_spark, spark_cfg, end=end)  # Feast's incremental run
    assert second.incremental and all(v.start < v.end for v in second.views)
    users = sorted(sample[USER].astype(str).unique())
    assert online_user_features(on_spark, spark_cfg, users) == online_user_features(
        duck, duck_cfg, users
    )
    labels = sample.sample(n=300, random_state=3)[[USER, ITEM, TIME]]
    labels = labels.rename(columns={TIME: "event_timestamp"})
    found = _comparable(historical_features(on_spark, spark_cfg, labels))
    pd.testing.assert_frame_equal(found, _comparable(historical_features(duck, duck_cfg, labels)))
    assert found["user_features__n_events"].notna().mean() > 0.8  # most labels have a past


def test_retrain_flow_runs_its_data_stages_on_spark(tmp_path: Path, tiny_events) -> None:
    """The real retrain flow (Prefect's test harness) with ``data.engine=spark``: GX on
    Spark, the version's sequences and split by Spark. (Feast's Spark store is compared
    with DuckDB above; here the features stay on DuckDB to keep the test short.)"""
    from prefect.testing.utilities import prefect_test_harness

    from flows.retrain import retrain_flow

    sample = tiny_events[tiny_events[USER].isin(tiny_events[USER].unique()[:80])]
    folder = _parts(sample.reset_index(drop=True), tmp_path / "events", rows=1000)
    cfg = load_config(
        overrides=[
            f"workspace={tmp_path / 'ws'}",
            "data.engine=spark",
            f"data.spark_master={MASTER}",
            "model.name=itemknn",
            "train.progress_bar=false",
            "explain.report=false",
            "deploy.target=none",
            "gate.test=none",
            "gate.guardrails={}",
        ]
    )
    with prefect_test_harness(server_startup_timeout=180):
        result = retrain_flow(config=cfg.model_dump(mode="json"), data_path=str(folder))
    assert result.outcome.status == "champion"
    ws = Workspace.at(tmp_path / "ws")
    version = DatasetStore(ws, cfg.versioning).current()
    assert version is not None and version.last_batch.n_rows == len(sample)
    gx_config = (ws.gx_dir / "gx" / "great_expectations.yml").read_text()
    assert "recops-spark" in gx_config  # validated through GX's Spark datasource
    labels = pd.read_parquet(result.record.training_features)
    assert set(labels["split"]) == {"valid", "test"}
    assert labels["user_features__n_events"].notna().all()
