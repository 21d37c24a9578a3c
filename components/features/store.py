"""The Feast feature store of a workspace: write tables, apply, materialize, look up.

The declarations live only in ``feature_repo/definitions.py``; the store settings come
from ``feature_repo/feature_store*.yaml`` selected by :class:`FeaturesConfig`, with the
repo path set to ``workspace.features_dir`` so the Parquet sources, the SQLite online
store and the file registry of one workspace stay inside it.

The serving path (:func:`online_recent_items`) keeps one ``FeatureStore`` per
(workspace, config) alive for the process and lets Feast cache the registry for
``registry_cache_ttl_seconds``, so a lookup is one online-store read.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import math
import os
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, ConfigDict

from components.data.schema import EVENT, ITEM, TIME, USER
from components.errors import FeatureStoreError
from components.features.config import FeaturesConfig
from components.features.item_content import TextSettings, content_table
from components.features.partitions import (
    DAY,
    MANIFEST,
    Manifest,
    day_files,
    days_within,
    edge_timestamp,
    event_day_digests,
    partition_root,
    read_window,
    window_rows,
    write_partitions,
)
from components.features.tables import (
    CATEGORY,
    EVENT_TS,
    TITLE,
    item_feature_table,
    user_feature_table,
)
from components.secrets import resolve
from components.workspace import Workspace

if TYPE_CHECKING:
    import feast

log = logging.getLogger(__name__)

DEFAULT_REPO_DIR = Path(__file__).resolve().parents[2] / "feature_repo"
DEFINITIONS_FILE = "definitions.py"
USER_VIEW = "user_features"
# an entity no event can produce (ids never contain a space): written at every
# materialization, so an online store that lost its data (a Redis restarted empty) is
# told apart from a store that answers with cold starts for everyone
MARKER_USER = "__recops materialized__"
ITEM_VIEW = "item_features"
ITEM_CONTENT_VIEW = "item_content"
CONTENT_SERVICE = "recommender_item_content"
# Parquet metadata key of the item_content source: digest of (catalogue, encoder)
CONTENT_DIGEST = b"recops.content_digest"
SERVING_SERVICE = "recommender_serving"
TRAINING_SERVICE = "recommender_training"
# Feast joins the newest row with timestamp <= the entity time; we ask for one tick
# earlier so a label event is never part of its own features.
PIT_EPSILON = timedelta(microseconds=1)
#: the digest of the last successful apply in this workspace (:func:`ensure_applied`)
APPLIED_FILE = ".applied"


class ViewMaterialization(BaseModel):
    """What one feature view's materialization covered."""

    model_config = ConfigDict(extra="forbid")

    view: str
    start: datetime
    end: datetime
    rows: int  # offline snapshot rows with start <= event_timestamp <= end
    entities: int  # distinct entities among them (what the online store received)


class MaterializeResult(BaseModel):
    """The outcome of a materialization, recorded by the retrain flow."""

    model_config = ConfigDict(extra="forbid")

    end: datetime
    incremental: bool
    online_store: str
    seconds: float
    views: list[ViewMaterialization]

    @property
    def rows(self) -> int:
        return sum(view.rows for view in self.views)


# --- importing Feast -------------------------------------------------------------------
_IMPORT_LOCK = threading.Lock()


def _unchecked(target: Any = None, **_options: Any) -> Any:
    """``typeguard.typechecked`` as it is under ``python -O``: the target unchanged."""
    return (lambda found: found) if target is None else target


def import_feast() -> ModuleType:
    """``import feast`` without typeguard instrumenting Feast's classes on the way in.

    Feast decorates its public classes with ``typeguard.typechecked``, which re-parses and
    recompiles a whole module's source once per decorated method: 3.9 of the 4.2 CPU s
    that importing Feast adds to a process that already holds torch (measured). Under
    ``python -O`` the decorator is a no-op (typeguard's documented behaviour for
    production); this gives Feast's import exactly that, and nothing else: the decorator
    is restored as soon as the import returns, so only the run-time argument type checks
    of Feast's own API are skipped.
    """
    import sys

    found = sys.modules.get("feast")
    if found is not None:
        return found
    with _typeguard_off():
        import feast
    return feast


#: Feast modules imported lazily inside calls recops makes, with ``typechecked`` classes:
#: Feast's ibis offline stores (DuckDB) import the MLflow source at every historical read
#: (typeguard's recompiling took 0.16-0.19 CPU s of the first read; 1 ms without it)
LAZY_TYPECHECKED = ("feast.infra.data_sources.mlflow.mlflow_dataset_source",)


@contextlib.contextmanager
def _typeguard_off() -> Iterator[None]:
    """Imports inside see ``typeguard.typechecked`` as under ``python -O`` (the target
    unchanged); restored on exit. Serialised: the decorator is process-wide."""
    with _IMPORT_LOCK:
        import typeguard

        decorator = typeguard.typechecked
        typeguard.typechecked = _unchecked
        try:
            yield
        finally:
            typeguard.typechecked = decorator


def import_lazy_feast_modules() -> None:
    """Import :data:`LAZY_TYPECHECKED` the way :func:`import_feast` imports Feast (a
    module missing from this Feast version is skipped: Feast then does not import it)."""
    import importlib
    import sys

    missing = [name for name in LAZY_TYPECHECKED if name not in sys.modules]
    if not missing:
        return
    with _typeguard_off():
        for name in missing:
            try:
                importlib.import_module(name)
            except ImportError:
                log.debug("feast module %s not importable; skipped", name)


# --- repo and configuration -----------------------------------------------------------
def repo_dir(cfg: FeaturesConfig) -> Path:
    """The Feast repo holding the declarations and the store YAML files."""
    return Path(cfg.repo_dir).expanduser().resolve() if cfg.repo_dir else DEFAULT_REPO_DIR


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(os.path.expandvars(path.read_text()))
    except FileNotFoundError as exc:
        raise FeatureStoreError(f"feature store settings not found: {path}") from exc
    return raw or {}


def redis_connection(cfg: FeaturesConfig) -> str:
    """Feast's Redis connection string: the resolved reference plus socket timeouts
    (``features.online_timeout_s``) and no retries, unless the string sets its own.

    redis-py waits forever on a hung server without a socket timeout, and its default
    policy retries a timeout 10 times with backoff (measured: 9.6 s for one lookup with a
    0.5 s timeout); ``retry=null`` makes one lookup cost at most one timeout, after which
    the request gets the popularity fallback and ``/readyz`` fails."""
    conn = resolve(cfg.redis_connection_string, what="features.redis_connection_string")
    keys = {part.split("=", 1)[0].strip() for part in conn.split(",") if "=" in part}
    wanted = {
        "socket_timeout": str(cfg.online_timeout_s),
        "socket_connect_timeout": str(cfg.online_timeout_s),
        "retry": "null",
    }
    for key, value in wanted.items():
        if key not in keys:
            conn += f",{key}={value}"
    return conn


def first_line(exc: BaseException) -> str:
    """The first line of an error (SQLAlchemy and Feast append "Background on this
    error" lines and reprs of whole requests): the user's message is one line."""
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:300]


def sql_registry_kwargs(
    url: str, cfg: FeaturesConfig, configured: dict[str, Any]
) -> dict[str, Any]:
    """SQLAlchemy engine arguments for a SQL registry at ``url``: for Postgres, libpq's
    ``connect_timeout`` and a server ``statement_timeout`` (unless ``configured`` sets
    them), and no connection pool.

    Without these a hung or blackholed Postgres hangs every recops command and the bento
    forever. A frozen server keeps accepting TCP connections but never answers: only a
    timeout on the connection's start-up ends the wait, so every registry call opens its
    own connection (``NullPool``; Feast caches the registry for ``cache_ttl_seconds``, so
    that is one connection per refresh, not per request)."""
    kwargs = dict(configured)
    if not url.startswith(("postgresql", "postgres:")):
        return kwargs
    from sqlalchemy.pool import NullPool

    connect_args = dict(kwargs.get("connect_args") or {})
    connect_args.setdefault("connect_timeout", max(1, math.ceil(cfg.registry_timeout_s)))
    statement_ms = int(cfg.registry_statement_timeout_s * 1000)
    connect_args.setdefault("options", f"-c statement_timeout={statement_ms}")
    kwargs["connect_args"] = connect_args
    kwargs.setdefault("poolclass", NullPool)
    kwargs.pop("pool_pre_ping", None)  # nothing pooled, nothing to ping
    return kwargs


def store_settings(workspace: Workspace, cfg: FeaturesConfig) -> dict[str, Any]:
    """The feature_store.yaml mapping for this workspace and config (before validation)."""
    base = repo_dir(cfg)
    settings = _read_yaml(base / "feature_store.yaml")
    if cfg.online_store == "redis":
        online = dict(_read_yaml(base / "feature_store.redis.yaml")["online_store"])
        online["connection_string"] = redis_connection(cfg)
        settings["online_store"] = online
    registry = dict(settings["registry"])
    if cfg.registry == "sql":
        registry = dict(_read_yaml(base / "feature_store.sql.yaml")["registry"])
        if not cfg.registry_path:
            raise FeatureStoreError(
                "features.registry is 'sql' but features.registry_path is not set",
                hint="set features.registry_path to a SQLAlchemy URL (postgresql+psycopg://...)",
            )
        registry["path"] = resolve(cfg.registry_path, what="features.registry_path")
        registry["sqlalchemy_config_kwargs"] = sql_registry_kwargs(
            registry["path"], cfg, registry.get("sqlalchemy_config_kwargs") or {}
        )
    elif cfg.registry_path:
        registry["path"] = resolve(cfg.registry_path, what="features.registry_path")
    registry["cache_ttl_seconds"] = cfg.registry_cache_ttl_seconds
    settings["registry"] = registry
    if cfg.offline_store == "file":
        raise FeatureStoreError(
            "features.offline_store=file (Feast's Dask store) joins the day-partitioned "
            "sources wrongly: its de-duplication across Dask partitions does not keep each "
            "entity's newest snapshot (1 of 50 training rows differed from DuckDB's)",
            hint="set features.offline_store=duckdb",
        )
    settings["offline_store"] = {"type": cfg.offline_store}
    if cfg.offline_store == "spark":
        settings["offline_store"]["spark_conf"] = {"spark.master": cfg.spark_master}
    return settings


def repo_config(workspace: Workspace, cfg: FeaturesConfig) -> feast.RepoConfig:
    """A validated Feast RepoConfig rooted at ``workspace.features_dir``."""
    feast = import_feast()
    workspace.features_dir.mkdir(parents=True, exist_ok=True)
    settings = store_settings(workspace, cfg)
    try:
        return feast.RepoConfig(repo_path=workspace.features_dir, **settings)
    except Exception as exc:  # pydantic errors from Feast's config classes
        raise FeatureStoreError(f"invalid feature store settings: {exc}") from exc


@dataclass(frozen=True)
class Definitions:
    """The Feast objects declared in the repo."""

    module: ModuleType
    entities: list[Any]
    feature_views: list[Any]
    feature_services: list[Any]

    @property
    def windows_days(self) -> list[int]:
        return sorted(int(w) for w in self.module.WINDOWS_DAYS)

    @property
    def source_paths(self) -> dict[str, str]:
        """Feature view name -> its (repo-relative) Parquet source path."""
        return {fv.name: fv.batch_source.path for fv in self.feature_views}


@lru_cache(maxsize=8)
def _load_definitions(path: Path) -> Definitions:
    feast = import_feast()
    spec = importlib.util.spec_from_file_location("recops_feature_repo_definitions", path)
    if spec is None or spec.loader is None:
        raise FeatureStoreError(f"cannot import Feast definitions from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    values = list(vars(module).values())
    return Definitions(
        module=module,
        entities=[v for v in values if isinstance(v, feast.Entity)],
        feature_views=[v for v in values if isinstance(v, feast.FeatureView)],
        feature_services=[v for v in values if isinstance(v, feast.FeatureService)],
    )


def definitions(cfg: FeaturesConfig) -> Definitions:
    """Import ``definitions.py`` of the repo once per process."""
    path = repo_dir(cfg) / DEFINITIONS_FILE
    if not path.exists():
        raise FeatureStoreError(f"Feast definitions not found: {path}")
    return _load_definitions(path)


def check_windows(cfg: FeaturesConfig) -> Definitions:
    defs = definitions(cfg)
    if sorted(cfg.windows_days) != defs.windows_days:
        raise FeatureStoreError(
            f"features.windows_days {sorted(cfg.windows_days)} differs from the windows "
            f"declared in the feature repo {defs.windows_days}",
            hint=f"edit WINDOWS_DAYS in {repo_dir(cfg) / DEFINITIONS_FILE} or the config",
        )
    return defs


# --- the store object -----------------------------------------------------------------
_STORES: dict[tuple[str, str], feast.FeatureStore] = {}
_STORES_LOCK = threading.Lock()


def feature_store(workspace: Workspace, cfg: FeaturesConfig) -> feast.FeatureStore:
    """The process-wide FeatureStore for (workspace, cfg); created on first use."""
    key = (str(workspace.root), cfg.model_dump_json())
    store = _STORES.get(key)
    if store is not None:
        return store
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            if cfg.offline_store == "spark":
                _start_spark(cfg)
            config = repo_config(workspace, cfg)
            try:
                store = import_feast().FeatureStore(
                    repo_path=str(workspace.features_dir), config=config
                )
            except Exception as exc:  # a SQL registry that cannot be reached (timeouts above)
                raise FeatureStoreError(
                    f"cannot open the feature registry ({cfg.registry}): {first_line(exc)}",
                    hint="check that the registry database runs and answers "
                    "(features.registry_path, features.registry_timeout_s)",
                ) from exc
            _STORES[key] = store
    return store


def _start_spark(cfg: FeaturesConfig) -> None:
    """Start (or reuse) recops' Spark session at ``features.spark_master`` before Feast
    looks for one: Feast's Spark store takes the active session, and ours runs in UTC
    (Feast writes its time bounds as UTC literals). The JVM's heap is
    ``data.spark_driver_memory_mb``."""
    from components.data.spark import spark_session

    spark_session(cfg.spark_master, cfg.spark_driver_memory_mb)


def forget_stores() -> None:
    """Drop cached FeatureStore objects (tests; after a workspace is deleted)."""
    with _STORES_LOCK:
        _STORES.clear()


# --- offline tables -------------------------------------------------------------------
def source_paths(workspace: Workspace, cfg: FeaturesConfig) -> dict[str, Path]:
    """Feature view name -> absolute path of its Parquet source in this workspace: the
    folder of day partitions for a source declared as ``<folder>/day=*/*.parquet``
    (:mod:`components.features.partitions`), the file otherwise."""
    return {
        name: workspace.features_dir / (partition_root(rel) or rel)
        for name, rel in definitions(cfg).source_paths.items()
    }


def write_feature_tables(
    events: pd.DataFrame,
    workspace: Workspace,
    cfg: FeaturesConfig,
    item_side: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """Compute the user and item tables from ``events`` and (over)write their Parquet sources.

    Returns feature view name -> written path. Writes to a temporary file first, so a
    concurrent reader never sees a half-written source. (The ``item_content`` source is
    written by :func:`publish_item_content` from a catalogue.)
    """
    check_windows(cfg)
    paths = source_paths(workspace, cfg)
    tables = {
        USER_VIEW: user_feature_table(events, cfg.history_length, cfg.windows_days),
        ITEM_VIEW: item_feature_table(events, cfg.windows_days, item_side),
    }
    # the rows depend on these columns of the events; side columns (category, title)
    # reach the item view's basis through its table
    days = event_day_digests(events[[c for c in (USER, ITEM, TIME, EVENT) if c in events]], TIME)
    for name in list(tables):
        table, path = tables.pop(name), paths[name]  # one pandas table alive at a time
        basis = _table_basis(cfg, name, table)
        # plain Arrow schema: pandas metadata (ArrowDtype) confuses Feast's Dask reader
        arrow = pa.Table.from_pandas(table, preserve_index=False).replace_schema_metadata(None)
        arrow = engine_timestamps(arrow, cfg)
        del table
        if path.suffix != ".parquet":  # a folder of day partitions
            write_partitions(arrow, path, Manifest(basis, days))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(arrow, tmp)
        tmp.replace(path)
        log.info("wrote %s rows of %s to %s", arrow.num_rows, name, path)
    return paths


def engine_timestamps(table: pa.Table, cfg: FeaturesConfig) -> pa.Table:
    """``table`` with its timestamps in microseconds for the Spark offline store (Spark
    cannot read Parquet nanosecond timestamps as timestamps; the online store keeps
    microseconds anyway), unchanged for the others."""
    if cfg.offline_store != "spark":
        return table
    for index, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.unit == "ns":
            column = table.column(index).cast(pa.timestamp("us", field.type.tz), safe=False)
            table = table.set_column(index, field.name, column)
    return table


def _table_basis(cfg: FeaturesConfig, view: str, table: pd.DataFrame) -> str:
    """Everything besides the day's events that a view's rows depend on: the feature repo
    and table settings (the timestamp unit included), and for the item view each item's
    category and title (one value per item over all its snapshots, taken from the newest
    side data)."""
    import hashlib

    unit = "us" if cfg.offline_store == "spark" else "ns"
    digest = hashlib.sha256(f"{view}\0{repo_digest(cfg)}\0{unit}\0".encode())
    if view == ITEM_VIEW:
        side = table[[ITEM, CATEGORY, TITLE]].drop_duplicates(ITEM).sort_values(ITEM)
        digest.update(pd.util.hash_pandas_object(side, index=False).to_numpy().tobytes())
    return digest.hexdigest()


# --- apply / materialize --------------------------------------------------------------
def apply_repo(workspace: Workspace, cfg: FeaturesConfig) -> None:
    """Register the repo's entities, feature views and services (a programmatic ``feast apply``)."""
    defs = check_windows(cfg)
    store = feature_store(workspace, cfg)
    try:
        with _feast_output_to_log():
            views = workspace_views(workspace, defs, spark=cfg.offline_store == "spark")
            store.apply([*defs.entities, *views, *defs.feature_services])
    except Exception as exc:
        raise FeatureStoreError(f"feast apply failed: {first_line(exc)}") from exc
    _record_apply(workspace, cfg)
    log.info(
        "applied %d entities, %d feature views, %d services",
        len(defs.entities),
        len(defs.feature_views),
        len(defs.feature_services),
    )


def ensure_applied(workspace: Workspace, cfg: FeaturesConfig) -> bool:
    """:func:`apply_repo` unless this workspace's file registry already holds what it
    would register: the last apply recorded the same digest (repo declarations, store
    YAML, features config, workspace) and the registry still has the user view. Returns
    whether it applied. A SQL registry (shared beyond this workspace) is always applied."""
    if (
        cfg.registry == "file"
        and _last_apply(workspace) == apply_digest(workspace, cfg)
        and _registered(workspace, cfg, USER_VIEW)
    ):
        log.info("feature repo unchanged since the last apply: not applied again")
        return False
    apply_repo(workspace, cfg)
    return True


def apply_digest(workspace: Workspace, cfg: FeaturesConfig) -> str:
    """What an apply registers: :func:`repo_digest`, the features config, the workspace."""
    import hashlib

    blob = f"{repo_digest(cfg)}\0{cfg.model_dump_json()}\0{workspace.features_dir}"
    return hashlib.sha256(blob.encode()).hexdigest()


def _last_apply(workspace: Workspace) -> str | None:
    path = workspace.features_dir / APPLIED_FILE
    return path.read_text().strip() if path.exists() else None


def _record_apply(workspace: Workspace, cfg: FeaturesConfig) -> None:
    path = workspace.features_dir / APPLIED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{APPLIED_FILE}.{os.getpid()}.tmp")
    tmp.write_text(apply_digest(workspace, cfg))
    tmp.replace(path)


def workspace_views(workspace: Workspace, defs: Definitions, spark: bool = False) -> list[Any]:
    """The declared feature views with their Parquet sources at absolute paths in this
    workspace: the DuckDB offline store reads a relative path against the process's
    working directory (not the repo path, as the file store does). ``spark``: the sources
    as :func:`spark_source`."""
    import copy

    views = []
    for declared in defs.feature_views:
        view = copy.deepcopy(declared)
        source = view.batch_source
        source.file_options.uri = str(workspace.features_dir / source.path)
        if spark:
            view.batch_source = spark_source(workspace, source)
        views.append(view)
    return views


def spark_source(workspace: Workspace, declared: Any) -> Any:
    """The declared Parquet ``FileSource`` as Feast's ``SparkSource`` over the same files
    (``features.offline_store=spark``): a day-partitioned source is read from its folder
    with ``day`` as Feast's date partition column, so Spark reads only the days a query's
    time range needs."""
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    root = partition_root(declared.path)
    return SparkSource(
        name=declared.name,
        path=str(workspace.features_dir / (root or declared.path)),
        file_format="parquet",
        timestamp_field=declared.timestamp_field,
        date_partition_column=DAY if root else None,
        description=declared.description,
    )


def _source_window(
    path: Path, key: str, start: datetime | None, end: datetime
) -> tuple[int, int, datetime | None]:
    """(rows, distinct entities, earliest timestamp) of a source within [start, end],
    read one group of files at a time (:func:`_file_groups`)."""
    earliest = _edge_timestamp(path, newest=False)
    if earliest is None:
        return 0, 0, None
    rows, keys = 0, []
    for files in _file_groups(path, start, end):
        inside = window_rows(ds.dataset(files, format="parquet"), [key], start, end)
        rows += inside.num_rows
        keys.append(pc.unique(inside[key]))
    entities = pc.count_distinct(pa.chunked_array(keys)).as_py() if keys else 0
    return rows, entities, earliest.to_pydatetime()


def _file_groups(path: Path, start: datetime | None, end: datetime | None) -> list[list[str]]:
    """A source's files of the days in [start, end], grouped by pass (``part-<k>`` across
    the days; a source built in one piece is one group), so a group is what one pass of
    the build held; a plain file is one group."""
    if not path.is_dir():
        return [[str(path)]] if path.exists() else []
    groups: dict[str, list[str]] = {}
    for day in days_within(path, start, end):
        for file in day_files(path, day):
            groups.setdefault(file.name, []).append(str(file))
    return list(groups.values())


def _edge_timestamp(path: Path, newest: bool) -> pd.Timestamp | None:
    """A source's earliest or newest snapshot time (None: no source or no rows)."""
    if path.is_dir():
        return edge_timestamp(path, newest)
    if not path.exists():
        return None
    ts = pq.read_table(path, columns=[EVENT_TS])[EVENT_TS]
    value = (pc.max(ts) if newest else pc.min(ts)).as_py()
    return pd.Timestamp(value) if value is not None else None


def source_rows(
    path: Path,
    columns: list[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pa.Table:
    """A source's rows with ``start <= event_timestamp <= end`` (bounds optional); a
    partitioned source reads only the partitions of the days in the window."""
    if path.is_dir():
        return read_window(path, columns, start, end)
    return window_rows(ds.dataset(path, format="parquet"), columns, start, end)


def _default_end(paths: dict[str, Path]) -> datetime:
    """Now, or just past the newest snapshot when the data's clock runs ahead of ours."""
    end = datetime.now(timezone.utc)
    for path in paths.values():
        newest = _edge_timestamp(path, newest=True)
        if newest is not None:
            end = max(end, newest.to_pydatetime() + timedelta(seconds=1))
    return end


def latest_snapshot_chunks(
    path: Path, key: str, start: datetime, end: datetime
) -> Iterator[pd.DataFrame]:
    """Each entity's newest snapshot with ``start <= event_timestamp <= end``, one frame
    per group of files (:func:`_file_groups`): only the days in the window are read, and
    only one group's rows are held. The newest time of each entity is found over all
    groups first (keys and times only), so an entity whose days were written by builds
    in different passes still gets its newest row once."""
    groups = _file_groups(path, start, end)
    newest = []
    for number, files in enumerate(groups):
        keys = window_rows(ds.dataset(files, format="parquet"), [key, EVENT_TS], start, end)
        frame = keys.to_pandas().groupby(key, sort=False)[EVENT_TS].max().reset_index()
        newest.append(frame.assign(_group=number))
    if not newest:
        return
    winners = pd.concat(newest, ignore_index=True).sort_values(EVENT_TS, kind="stable")
    winners = winners.drop_duplicates(key, keep="last")
    for number, files in enumerate(groups):
        mine = winners[winners["_group"] == number]
        if mine.empty:
            continue
        inside = window_rows(ds.dataset(files, format="parquet"), None, start, end)
        keys = inside.select([key, EVENT_TS]).to_pandas().reset_index()
        chosen = keys.merge(mine[[key, EVENT_TS]], on=[key, EVENT_TS])["index"].to_numpy()
        yield inside.take(pa.array(chosen)).to_pandas()


def _materialize_view(
    store: feast.FeatureStore,
    cfg: FeaturesConfig,
    view: str,
    path: Path,
    key: str,
    start: datetime,
    end: datetime,
    incremental: bool,
) -> None:
    """Load one view's snapshots in [start, end] into the online store; record the
    interval. ``incremental``: ``start`` is the end the registry recorded last time."""
    if cfg.materialize_engine == "feast":
        with _feast_output_to_log():
            if incremental:
                # Feast's own incremental run: from the recorded end (== start) to end
                store.materialize_incremental(end_date=end, feature_views=[view])
            else:
                store.materialize(start_date=start, end_date=end, feature_views=[view])
        return
    for rows in latest_snapshot_chunks(path, key, start, end):
        with warnings.catch_warnings():
            # the online store keeps microseconds; nanosecond clocks lose nothing we read
            warnings.filterwarnings("ignore", "Discarding nonzero nanoseconds", UserWarning)
            store.write_to_online_store(view, rows)
    store.registry.apply_materialization(store.get_feature_view(view), store.project, start, end)


def _lost_its_data(store: feast.FeatureStore, defs: Definitions) -> bool:
    """True when a view was materialized before but the online store has no marker (a
    Redis restarted empty): an incremental run would then restore only the newest rows."""
    try:
        done_before = any(
            store.get_feature_view(fv.name).most_recent_end_time is not None
            for fv in defs.feature_views
        )
    except Exception:  # views not registered yet: materialize reports that itself
        return False
    return done_before and not _marker_present(store)


def _marker_present(store: feast.FeatureStore) -> bool:
    try:
        found = store.get_online_features(
            features=[f"{USER_VIEW}:recent_items"], entity_rows=[{USER: MARKER_USER}]
        ).to_dict()["recent_items"][0]
    except Exception as exc:  # an unreachable store is reported by the write that follows
        log.debug("marker lookup failed: %s", exc)
        return True
    return bool(found)


def _write_marker(store: feast.FeatureStore, user_table: Path) -> None:
    """Write :data:`MARKER_USER` (a copy of one real user snapshot) to the online store."""
    newest = _edge_timestamp(user_table, newest=True)
    if newest is None:
        return
    row = source_rows(user_table, None, start=newest.to_pydatetime()).slice(0, 1).to_pandas()
    row[USER] = MARKER_USER
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Discarding nonzero nanoseconds", UserWarning)
            store.write_to_online_store(USER_VIEW, row)
    except Exception as exc:
        raise FeatureStoreError(
            f"writing the materialization marker failed: {first_line(exc)}"
        ) from exc


def materialize(
    workspace: Workspace,
    cfg: FeaturesConfig,
    end: datetime | None = None,
    incremental: bool = True,
) -> MaterializeResult:
    """Load snapshots up to ``end`` (UTC; default now) into the online store.

    Incremental: each view starts where its last materialization ended; the first run
    (or ``incremental=False``) starts at the view's earliest snapshot. Progress is kept
    in the Feast registry. Returns what was covered, with offline row counts.
    """
    store = feature_store(workspace, cfg)
    defs = definitions(cfg)
    paths = source_paths(workspace, cfg)
    end = as_utc(end if end is not None else _default_end(paths))
    if incremental and _lost_its_data(store, defs):
        log.warning("the online store lost its data (no marker): materializing in full")
        incremental = False
    started = time.perf_counter()
    views: list[ViewMaterialization] = []
    for fv in defs.feature_views:
        try:
            registered = store.get_feature_view(fv.name)
        except Exception as exc:
            raise FeatureStoreError(
                f"feature view {fv.name!r} is not registered", hint="run `recops features apply`"
            ) from exc
        key = fv.entity_columns[0].name if fv.entity_columns else fv.join_keys[0]
        previous = registered.most_recent_end_time if incremental else None
        previous = as_utc(previous) if previous is not None else None
        rows, entities, earliest = _source_window(paths[fv.name], key, previous, end)
        start = previous or (earliest - timedelta(seconds=1) if earliest else end)
        if earliest is None:
            log.info(
                "no source table for %s at %s; nothing to materialize", fv.name, paths[fv.name]
            )
            continue
        if start < end:
            try:
                _materialize_view(
                    store, cfg, fv.name, paths[fv.name], key, start, end, previous is not None
                )
            except Exception as exc:
                raise FeatureStoreError(
                    f"materializing {fv.name} failed: {first_line(exc)}"
                ) from exc
        views.append(
            ViewMaterialization(view=fv.name, start=start, end=end, rows=rows, entities=entities)
        )
    _write_marker(store, paths[USER_VIEW])
    result = MaterializeResult(
        end=end,
        incremental=incremental,
        online_store=cfg.online_store,
        seconds=round(time.perf_counter() - started, 3),
        views=views,
    )
    log.info("materialized %d rows up to %s in %.1fs", result.rows, end.isoformat(), result.seconds)
    return result


def refresh_features(
    events: pd.DataFrame,
    workspace: Workspace,
    cfg: FeaturesConfig,
    item_side: pd.DataFrame | None = None,
    end: datetime | None = None,
    catalogue: pd.DataFrame | None = None,
) -> MaterializeResult:
    """Write the tables from ``events`` (and ``catalogue``'s item content), apply the repo,
    materialize incrementally."""
    write_feature_tables(events, workspace, cfg, item_side)
    return publish_and_materialize(workspace, cfg, end, catalogue)


def publish_and_materialize(
    workspace: Workspace,
    cfg: FeaturesConfig,
    end: datetime | None = None,
    catalogue: pd.DataFrame | None = None,
) -> MaterializeResult:
    """After the tables are written: ``catalogue``'s item content published (or the repo
    applied), then an incremental materialization."""
    if catalogue is None or not publish_item_content(workspace, cfg, catalogue):
        ensure_applied(workspace, cfg)  # (publishing applies it)
    return materialize(workspace, cfg, end=end, incremental=True)


# --- item content (catalogue -> Feast -> models) -----------------------------------------
def text_settings(workspace: Workspace, cfg: FeaturesConfig) -> TextSettings:
    """How item texts become vectors: the configured encoder, cached in the workspace."""
    return TextSettings(
        cfg.text_encoder, workspace.features_dir / "text_vectors", cfg.text_batch_size
    )


def content_digest(catalogue: pd.DataFrame, cfg: FeaturesConfig) -> str:
    """What an ``item_content`` source holds: the catalogue's (item, text, category) rows
    and the encoder that made the vectors."""
    import hashlib

    from components.data.catalogue import CATALOGUE_COLUMNS

    rows = pd.util.hash_pandas_object(catalogue[list(CATALOGUE_COLUMNS)].astype(str), index=False)
    blob = rows.to_numpy().tobytes() + cfg.text_encoder.encode()
    return hashlib.sha256(blob).hexdigest()


def published_content_digest(workspace: Workspace, cfg: FeaturesConfig) -> str | None:
    """The digest recorded in the workspace's ``item_content`` source (None: none written)."""
    path = source_paths(workspace, cfg)[ITEM_CONTENT_VIEW]
    if not path.exists():
        return None
    metadata = pq.read_schema(path).metadata or {}
    digest = metadata.get(CONTENT_DIGEST)
    return digest.decode() if digest else None


def publish_item_content(
    workspace: Workspace, cfg: FeaturesConfig, catalogue: pd.DataFrame
) -> bool:
    """Write ``catalogue``'s ``item_content`` rows (text vectors from the configured
    encoder, cached by text hash) as the view's source and register the repo; nothing is
    written when the source already holds this catalogue and encoder. Returns whether it
    wrote. The rows are stamped now: content is what the catalogue says from now on."""
    digest = content_digest(catalogue, cfg)
    if digest == published_content_digest(workspace, cfg) and _registered(
        workspace, cfg, ITEM_CONTENT_VIEW
    ):
        return False
    table = content_table(catalogue, text_settings(workspace, cfg), datetime.now(timezone.utc))
    path = source_paths(workspace, cfg)[ITEM_CONTENT_VIEW]
    path.parent.mkdir(parents=True, exist_ok=True)
    arrow = engine_timestamps(pa.Table.from_pandas(table, preserve_index=False), cfg)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(arrow.replace_schema_metadata({CONTENT_DIGEST: digest.encode()}), tmp)
    tmp.replace(path)
    apply_repo(workspace, cfg)
    log.info("published the content of %d catalogue items to %s", len(table), path)
    return True


def _registered(workspace: Workspace, cfg: FeaturesConfig, view: str) -> bool:
    try:
        feature_store(workspace, cfg).get_feature_view(view)
    except Exception:  # not applied yet (Feast raises its own not-found error)
        return False
    return True


def item_content_rows(workspace: Workspace, cfg: FeaturesConfig, items: list[str]) -> pd.DataFrame:
    """Every item's ``text_vector``, ``category`` and ``text`` as the offline store holds
    them now (``get_historical_features`` of the content service; the offline store, not
    the online one: training must not depend on what serving's store holds). Items the
    catalogue lacks come back with nulls. Columns: ``item_id`` plus the feature names."""
    store = feature_store(workspace, cfg)
    import_lazy_feast_modules()
    service = store.get_feature_service(CONTENT_SERVICE)
    entity = pd.DataFrame(
        {
            ITEM: pd.Series(items, dtype=object).astype(str).astype(object),
            EVENT_TS: pd.Timestamp.now(tz="UTC"),
        }
    ).drop_duplicates(ITEM)
    try:
        found = store.get_historical_features(entity_df=entity, features=service).to_df()
    except Exception as exc:
        raise FeatureStoreError(f"item content retrieval failed: {exc}") from exc
    found[ITEM] = found[ITEM].astype(str)
    return found.drop(columns=[EVENT_TS])


# --- online ---------------------------------------------------------------------------
def _serving_features(workspace: Workspace, cfg: FeaturesConfig) -> list[str]:
    fv = next(v for v in definitions(cfg).feature_views if v.name == USER_VIEW)
    return [f"{USER_VIEW}:{field.name}" for field in fv.features]


def _online(
    workspace: Workspace, cfg: FeaturesConfig, user_ids: list[str], features: list[str]
) -> dict[str, list[Any]]:
    store = feature_store(workspace, cfg)
    try:
        response = store.get_online_features(
            features=features, entity_rows=[{USER: str(u)} for u in user_ids]
        )
        return response.to_dict()
    except Exception as exc:
        raise FeatureStoreError(f"online feature lookup failed: {first_line(exc)}") from exc


def online_recent_items(
    workspace: Workspace, cfg: FeaturesConfig, user_ids: list[str]
) -> dict[str, list[str]]:
    """Each user's last-N item ids (oldest -> newest) from the online store; unknown -> []."""
    if not user_ids:
        return {}
    values = _online(workspace, cfg, user_ids, [f"{USER_VIEW}:recent_items"])["recent_items"]
    return {str(u): list(v) if v is not None else [] for u, v in zip(user_ids, values, strict=True)}


@dataclass(frozen=True)
class RecentHistory:
    """A user's recent history from the online store: raw item ids, oldest -> newest, and
    their event types (aligned; None when the store holds none for this user)."""

    items: list[str]
    event_types: list[str] | None


def online_recent_history(
    workspace: Workspace, cfg: FeaturesConfig, user_ids: list[str]
) -> dict[str, RecentHistory]:
    """Each user's last-N items with their event types, in one online lookup; unknown
    users get an empty history. Types are None when they are missing or not aligned
    (rows materialized before the store kept them, events without types)."""
    if not user_ids:
        return {}
    features = [f"{USER_VIEW}:recent_items", f"{USER_VIEW}:recent_event_types"]
    found = _online(workspace, cfg, user_ids, features)
    out = {}
    for user, items, kinds in zip(
        user_ids, found["recent_items"], found["recent_event_types"], strict=True
    ):
        items = list(items) if items is not None else []
        aligned = kinds is not None and len(kinds) == len(items) and len(items) > 0
        out[str(user)] = RecentHistory(items, list(kinds) if aligned else None)
    return out


def online_user_features(
    workspace: Workspace, cfg: FeaturesConfig, user_ids: list[str]
) -> list[dict[str, Any]]:
    """All user features per user, in input order; unknown users get ``None`` values."""
    if not user_ids:
        return []
    features = _serving_features(workspace, cfg)
    columns = _online(workspace, cfg, user_ids, features)
    names = [USER, *(feature.split(":", 1)[1] for feature in features)]  # declared order
    return [{name: columns[name][i] for name in names} for i in range(len(user_ids))]


# --- offline (training) ---------------------------------------------------------------
def historical_features(
    workspace: Workspace, cfg: FeaturesConfig, entity_df: pd.DataFrame
) -> pd.DataFrame:
    """Point-in-time features for each row of ``entity_df``, rows in input order.

    ``entity_df`` has ``user_id`` and ``event_timestamp`` (or ``timestamp``) and
    optionally ``item_id``. A feature row is joined only when its timestamp is strictly
    before the entity row's (so a label event is never in its own features). With
    ``item_id`` the training service (user + item views) is used, otherwise the user
    view only. Feature columns are named ``<view>__<feature>``.
    """
    store = feature_store(workspace, cfg)
    import_lazy_feast_modules()
    frame = entity_df.copy()
    if EVENT_TS not in frame.columns and TIME in frame.columns:
        frame = frame.rename(columns={TIME: EVENT_TS})
    if USER not in frame.columns or EVENT_TS not in frame.columns:
        raise FeatureStoreError(
            f"entity_df needs columns '{USER}' and '{EVENT_TS}'; got {list(entity_df.columns)}"
        )
    keys = [USER, ITEM] if ITEM in frame.columns else [USER]
    for key in keys:
        frame[key] = frame[key].astype(str).astype(object)
    frame[EVENT_TS] = pd.to_datetime(frame[EVENT_TS], utc=True).astype("datetime64[ns, UTC]")
    service = store.get_feature_service(TRAINING_SERVICE if ITEM in keys else SERVING_SERVICE)
    for projection in service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        join_keys = [column.name for column in view.entity_columns]
        features = [f"{view.name}:{feature.name}" for feature in projection.features]
        found = _point_in_time(store, frame[[*join_keys, EVENT_TS]], features)
        frame = frame.merge(found, on=[*join_keys, EVENT_TS], how="left", validate="many_to_one")
    return frame


@dataclass(frozen=True)
class TrainingSet:
    """A point-in-time training frame and where its cached copy lies."""

    frame: pd.DataFrame
    path: Path
    cached: bool  # True: read from the cache, no join ran


def repo_digest(cfg: FeaturesConfig) -> str:
    """Digest of the feature repo (declarations and store settings) and of the config
    fields the offline tables depend on."""
    import hashlib

    digest = hashlib.sha256()
    base = repo_dir(cfg)
    for path in sorted([base / DEFINITIONS_FILE, *base.glob("feature_store*.yaml")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    tables = cfg.model_dump(include={"history_length", "windows_days"}, mode="json")
    digest.update(repr(sorted(tables.items())).encode())
    return digest.hexdigest()


def training_set_key(
    workspace: Workspace, cfg: FeaturesConfig, entity_df: pd.DataFrame, data_version: str | None
) -> str:
    """What a point-in-time training frame depends on: the data version, the feature repo
    digest, the offline sources as written (size and modification time of each file: a
    source rewritten from other events is another key) and the entity rows themselves."""
    import hashlib

    digest = hashlib.sha256()
    digest.update(f"{data_version}\0{repo_digest(cfg)}\0".encode())
    for name, path in sorted(source_paths(workspace, cfg).items()):
        written = path / MANIFEST if path.is_dir() else path  # rewritten with every write
        stat = written.stat() if written.exists() else None
        digest.update(f"{name}:{stat and (stat.st_size, stat.st_mtime_ns)}\0".encode())
    rows = pd.util.hash_pandas_object(entity_df.astype(str), index=False)
    digest.update(rows.to_numpy().tobytes())
    return digest.hexdigest()[:32]


def training_set(
    workspace: Workspace,
    cfg: FeaturesConfig,
    entity_df: pd.DataFrame,
    data_version: str | None = None,
) -> TrainingSet:
    """:func:`historical_features` for ``entity_df``, cached in the workspace
    (``features/training_sets/<key>.parquet``) under :func:`training_set_key`: the same
    labels over the same data version, feature repo and sources never join twice."""
    key = training_set_key(workspace, cfg, entity_df, data_version)
    path = workspace.features_dir / "training_sets" / f"{key}.parquet"
    if path.exists():
        log.info("training features from the cache %s", path)
        path.touch()  # most recently used: kept by the next prune
        return TrainingSet(pd.read_parquet(path), path, cached=True)
    frame = historical_features(workspace, cfg, entity_df)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    prune_training_sets(path.parent, keep=cfg.training_set_cache_keep)
    return TrainingSet(pd.read_parquet(path), path, cached=False)


def prune_training_sets(folder: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` most recently used cached training frames in
    ``folder`` (by modification time, which a cache hit refreshes); return the deleted."""
    frames = sorted(folder.glob("*.parquet"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    stale = frames[keep:]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("training-set cache: %d old frame(s) deleted, %d kept", len(stale), keep)
    return stale


def _point_in_time(
    store: feast.FeatureStore, entities: pd.DataFrame, features: list[str]
) -> pd.DataFrame:
    """One view's features for unique (join keys, time) rows, strictly before each time.

    Queried one view at a time: Feast's file store drops an entity row when every
    snapshot of *one* view is later than the row's time (and collapses duplicate rows),
    so the caller left-joins the unique answers back onto its frame.
    """
    query = entities.drop_duplicates().reset_index(drop=True)
    keys = [column for column in query.columns if column != EVENT_TS]
    query[EVENT_TS] = query[EVENT_TS] - PIT_EPSILON
    try:
        found = store.get_historical_features(
            entity_df=query, features=features, full_feature_names=True
        ).to_df()
    except Exception as exc:
        raise FeatureStoreError(f"historical feature retrieval failed: {first_line(exc)}") from exc
    for key in keys:
        found[key] = found[key].astype(str).astype(object)
    found[EVENT_TS] = (
        pd.to_datetime(found[EVENT_TS], utc=True).astype("datetime64[ns, UTC]") + PIT_EPSILON
    )
    return found[[*keys, EVENT_TS, *[f.replace(":", "__") for f in features]]]


def is_reachable(workspace: Workspace, cfg: FeaturesConfig) -> bool:
    """True when the registry holds the user view and the online store answers a lookup
    *and still holds what was materialized* (the :data:`MARKER_USER` row): a store that
    lost its data would otherwise turn every user into a silent cold start."""
    try:
        feature_store(workspace, cfg).get_feature_view(USER_VIEW)
        marker = online_recent_items(workspace, cfg, [MARKER_USER])[MARKER_USER]
    except Exception as exc:  # readiness probes report, they do not raise
        log.warning("feature store not reachable: %s", exc)
        return False
    if not marker:
        log.warning(
            "the online store holds no materialized features (emptied or restarted?): "
            "run `recops features materialize` (it notices and reloads everything)"
        )
        return False
    return True


@contextlib.contextmanager
def _feast_output_to_log() -> Iterator[None]:
    """Feast prints progress to stdout; library code logs instead."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    text = buffer.getvalue().strip()
    if text:
        log.debug("feast: %s", text)


def as_utc(moment: datetime) -> datetime:
    """A tz-aware UTC ``datetime`` at microsecond precision (what the registry stores)."""
    stamp = pd.Timestamp(moment)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.floor("us").to_pydatetime()
