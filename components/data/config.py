"""Configuration of the data section: where events come from and how they are split."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: the event types the contract knows (validation accepts these by default)
EVENT_TYPES: tuple[str, ...] = ("view", "click", "cart", "purchase", "rating", "interaction")

InputFormat = Literal["auto", "csv", "parquet", "recbole", "seq", "pairs", "movielens"]


class CatalogueColumns(BaseModel):
    """Names of the catalogue columns in a csv/parquet item file.

    ``text`` may name several columns; their non-empty values are joined with ". "."""

    model_config = ConfigDict(extra="forbid")

    item_id: str = "item_id"
    text: list[str] = ["title"]
    category: str | None = "category"


class ColumnMapping(BaseModel):
    """Names of the contract columns in a generic csv/parquet input."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = "user_id"
    item_id: str = "item_id"
    timestamp: str = "timestamp"
    event_type: str | None = "event_type"
    value: str | None = "value"


class SyntheticConfig(BaseModel):
    """The bundled synthetic generator (used when ``data.path`` is not set)."""

    model_config = ConfigDict(extra="forbid")

    n_users: int = Field(2000, ge=1)
    n_items: int = Field(500, ge=2)
    n_events: int = Field(60_000, ge=1)
    n_clusters: int = Field(8, ge=1)
    zipf_a: float = Field(1.1, gt=0)
    markov_strength: float = Field(0.7, ge=0, le=1)
    drift: float = Field(0.05, ge=0, le=1)
    start: str = "auto"  # ISO time of the first event, or "auto" = 120 days before today
    seed: int = 7
    funnel: bool = Field(
        False,
        description="event types that carry signal: each event is a view or a cart, and "
        "purchases follow of items the user carted recently (see synthetic.purchase_funnel); "
        "off: types are drawn independently of the items",
    )


class DataConfig(BaseModel):
    """Where the events come from and how they are turned into training examples."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    format: InputFormat = "auto"
    columns: ColumnMapping = ColumnMapping()
    default_event_type: str = "interaction"
    synthetic: SyntheticConfig = SyntheticConfig()
    # The item catalogue (text, category): a RecBole .item, csv or Parquet file; null ->
    # the .item beside a RecBole .inter, or the synthetic world's catalogue.
    items: str | None = None
    item_columns: CatalogueColumns = CatalogueColumns()
    split: Literal["leave_one_out", "temporal"] = "leave_one_out"
    temporal_test_fraction: float = Field(0.1, gt=0, lt=1)
    max_len: int = Field(50, ge=2, le=4096)
    min_user_events: int = Field(3, ge=1)
    # "memory": one pandas frame of all events (small data); "stream": polars over
    # Parquet files, per-user tails only, peak memory bounded by memory_budget_mb;
    # "spark": the same stages on Apache Spark at spark_master (local[N] or a cluster)
    engine: Literal["memory", "stream", "spark"] = "memory"
    memory_budget_mb: int = Field(2048, ge=64)
    spark_master: str = "local[2]"
    # the Spark driver's JVM heap (spark.driver.memory; in local mode the executors share
    # it): set by the first session of the process. GX on Spark validates 100M events in
    # 512 MB; Spark's feature tables needed 3 GB at 10M; a session that stops out of heap
    # is an error naming this key
    spark_driver_memory_mb: int = Field(1024, ge=512)
    # where bucketed events and tails are written (null: the system's temporary folder,
    # and <workspace>/buckets for train.shard_data): storage every data-parallel rank
    # and, on a Spark cluster, the executors and the driver share
    bucket_dir: str | None = None
