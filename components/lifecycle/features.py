"""Features: an accepted dataset version -> Feast's offline tables, applied and
materialized (the one path the flow's materialize task and other front doors call).

With ``data.engine=stream`` the tables are built in passes from the version's own
Parquet files within ``data.memory_budget_mb`` (:mod:`components.features.streamed`:
no frame of all events); with ``data.engine=spark`` Spark builds and writes them from
those files (:mod:`components.features.spark_tables`); ``memory`` builds them from the
version as one frame.
Either way the version's item catalogue (when it has one) is published as item content,
and the materialization is incremental.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from components.data.config import DataConfig
from components.features.config import FeaturesConfig
from components.versioning.config import VersioningConfig
from components.versioning.dvc_store import DatasetStore
from components.workspace import Workspace

if TYPE_CHECKING:
    from components.features.store import MaterializeResult


def refresh_version_features(
    ws: Workspace,
    data_cfg: DataConfig,
    features_cfg: FeaturesConfig,
    versioning_cfg: VersioningConfig,
    version: str,
    end: datetime | None = None,
) -> MaterializeResult:
    """Write the feature tables of dataset ``version`` (only the days that changed since
    the last write), publish its catalogue's item content, materialize incrementally."""
    from components.features.store import publish_and_materialize, refresh_features

    store = DatasetStore(ws, versioning_cfg)
    catalogue = store.load_catalogue(version)
    if data_cfg.engine == "memory":
        events = store.load_events(version)
        return refresh_features(events, ws, features_cfg, end=end, catalogue=catalogue)
    if data_cfg.engine == "spark":
        _write_spark_tables(ws, data_cfg, features_cfg, store.event_files(version))
        return publish_and_materialize(ws, features_cfg, end, catalogue)
    from components.data.stream import files_of, scan_events
    from components.features.streamed import side_columns_of, write_feature_tables_streamed

    files = files_of(store.event_files(version))
    side = side_columns_of(files.paths)  # category/title columns the events carry
    lazy = scan_events(files)
    write_feature_tables_streamed(lazy, ws, features_cfg, data_cfg.memory_budget_mb, side)
    return publish_and_materialize(ws, features_cfg, end, catalogue)


def _write_spark_tables(
    ws: Workspace, data_cfg: DataConfig, features_cfg: FeaturesConfig, files: list[Path]
) -> None:
    """The version's feature tables built and written by Spark at ``data.spark_master``."""
    from components.data.spark import cached, spark_events, spark_session
    from components.features.spark_tables import spark_side_columns, write_feature_tables_spark

    spark = spark_session(data_cfg.spark_master, data_cfg.spark_driver_memory_mb)
    side = spark_side_columns(spark, files)  # category/title columns the events carry
    # the version's files in the event contract
    with cached(spark_events(spark, files), "building the feature tables") as events:
        write_feature_tables_spark(events, ws, features_cfg, data_cfg.memory_budget_mb, side)
